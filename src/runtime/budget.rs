//! The memory budget (`--memory-budget`): how many bytes of activations a staged walk may hold
//! at once, and what follows from it — how many samples one stage run takes, and how many
//! samples a pass that multiplies its activations (the output effect's variants) carries at a
//! time. Its default comes from the machine: half of its physical memory (or of the cgroup's
//! limit, where one is lower).
//!
//! What the budget does not count: the stored activations between stages. Every walk that grows
//! with the calibration set keeps those in scratch files (`runtime::spill`), which the kernel
//! holds in its page cache while memory is free and writes back when it is not; the process
//! itself holds one stage run's chunk of samples.

use crate::error::{Error, Result};
use crate::metrics::human_bytes;

/// A bound on the bytes of activations held at once.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    bytes: u64,
}

/// The share of the machine's memory the default budget takes: the rest is left to the model's
/// weights (one block at a time), ONNX Runtime's arenas and the page cache the spilled
/// activations live in.
const MACHINE_SHARE: f64 = 0.5;

/// The default when the machine's memory cannot be read.
const FALLBACK_BYTES: u64 = 8 << 30;

impl MemoryBudget {
    pub fn from_bytes(bytes: u64) -> Self {
        Self {
            bytes: bytes.max(1),
        }
    }

    /// Half of the machine's memory: the smaller of `/proc/meminfo`'s `MemTotal` and the
    /// cgroup's `memory.max`, else 8 GiB when neither can be read.
    pub fn from_machine() -> Self {
        let total = machine_memory().unwrap_or((FALLBACK_BYTES as f64 / MACHINE_SHARE) as u64);
        Self::from_bytes((total as f64 * MACHINE_SHARE) as u64)
    }

    /// `12G`, `800M`, `1.5GiB`, `65536` (bytes): a number with an optional binary unit (K, M, G,
    /// T, with or without `iB`/`B`).
    pub fn parse(text: &str) -> Result<Self> {
        let refuse = || {
            Error::Usage(format!(
                "--memory-budget `{text}`: expected a size such as 8G, 512M or 1.5GiB (binary \
                 units K, M, G, T), more than zero"
            ))
        };
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number: f64 = number.parse().map_err(|_| refuse())?;
        let shift = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 0,
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "G" | "GB" | "GIB" => 30,
            "T" | "TB" | "TIB" => 40,
            _ => return Err(refuse()),
        };
        let bytes = number * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(refuse());
        }
        Ok(Self::from_bytes(bytes as u64))
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// How many samples fit when each takes `per_sample` bytes: at least one (a single sample is
    /// the least any walk can hold; the summary then says the budget was exceeded), at most
    /// `limit`.
    pub fn samples(&self, per_sample: u64, limit: usize) -> usize {
        let fit = self.bytes / per_sample.max(1);
        (fit.min(limit as u64) as usize).max(1)
    }

    /// Whether one sample taking `per_sample` bytes already exceeds the budget.
    pub fn exceeded_by(&self, per_sample: u64) -> bool {
        per_sample > self.bytes
    }
}

impl std::fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&human_bytes(self.bytes))
    }
}

/// Physical memory, or the cgroup's limit where it is lower.
fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let total = total_kib * 1024;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |limit| limit.min(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(MemoryBudget::parse("65536").unwrap().bytes(), 65536);
        assert_eq!(MemoryBudget::parse("512M").unwrap().bytes(), 512 << 20);
        assert_eq!(MemoryBudget::parse("8G").unwrap().bytes(), 8 << 30);
        assert_eq!(MemoryBudget::parse("8gib").unwrap().bytes(), 8 << 30);
        assert_eq!(MemoryBudget::parse("1.5GiB").unwrap().bytes(), 3 << 29);
        assert_eq!(MemoryBudget::parse("2 TB").unwrap().bytes(), 2 << 40);
        for bad in ["", "G", "-1G", "0", "1.2.3G", "12X", "0.1B"] {
            let err = MemoryBudget::parse(bad).unwrap_err().to_string();
            assert!(err.contains("--memory-budget"), "{bad}: {err}");
        }
    }

    #[test]
    fn samples_are_at_least_one_and_at_most_the_limit() {
        let budget = MemoryBudget::from_bytes(1000);
        assert_eq!(budget.samples(300, 8), 3);
        assert_eq!(budget.samples(300, 2), 2);
        assert_eq!(budget.samples(5000, 8), 1);
        assert!(budget.exceeded_by(1001));
        assert!(!budget.exceeded_by(1000));
    }

    #[test]
    fn the_default_is_half_the_machine() {
        // The kernel's page count, not /proc/meminfo: a source the code does not read.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let physical = pages as u64 * page as u64;
        let limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        assert_eq!(
            MemoryBudget::from_machine().bytes(),
            physical.min(limit) / 2
        );
    }
}
