//! Every reader of a user's file survives arbitrary bytes: seeded with the fixtures and the
//! golden files, mutated deterministically (`fuzz/mutate.rs`), each reader (`fuzz/targets.rs`)
//! must refuse or accept a mutant without panicking, without an allocation larger than the
//! input justifies (a counting global allocator, this binary only) and within a time limit.
//! Inputs that once failed are kept in `tests/fuzz/regressions/` and read first.
//!
//! CI runs a few thousand mutants; `FASTFLUX_FUZZ_EXECS=1000000` (and `FASTFLUX_FUZZ_SEED`)
//! makes the long run that BENCHMARKS.md records. A failure names the mutant's saved copy.

mod support;
mod fuzz {
    pub mod mutate;
    pub mod targets;
}

use fuzz::mutate::{SplitMix, mutate};
use fuzz::targets::{Models, Reader, Seed, read, seeds};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Passes every request to the system allocator, noting on this thread the largest size asked.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A reader that takes longer than this on a file of a few MB is stuck.
const TIME_LIMIT: Duration = Duration::from_secs(5);
/// Past this the watchdog saves the mutant and aborts the process (a true hang never returns).
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// The most one allocation may be for `input` bytes read: a reader widens stored values to f32
/// or f64 (up to 8x for 8-bit types) and keeps a few copies, plus tables that do not grow with
/// the data.
fn allocation_budget(input: u64) -> usize {
    16 * input as usize + (16 << 20)
}

/// The panic message of the last panic on any thread (the hook replaces printing it).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

struct Workspace {
    dir: tempfile::TempDir,
    /// The copy of each diffusers folder a seed lives in, and its size.
    folders: Vec<(PathBuf, PathBuf, u64)>,
}

impl Workspace {
    fn new(seeds: &[Seed]) -> Self {
        // tmpfs where there is one: a mutant is written per execution.
        let dir = match Path::new("/dev/shm").is_dir() {
            true => {
                tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
            }
            false => tempfile::tempdir().unwrap(),
        };
        let mut folders = Vec::new();
        for folder in seeds.iter().filter_map(|s| s.folder.as_ref()) {
            if folders.iter().any(|(source, _, _)| source == folder) {
                continue;
            }
            let copy = dir.path().join(format!("folder{}", folders.len()));
            std::fs::create_dir(&copy).unwrap();
            let mut size = 0;
            for entry in std::fs::read_dir(folder).unwrap() {
                let entry = entry.unwrap();
                size += std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
            }
            folders.push((folder.clone(), copy, size));
        }
        Self { dir, folders }
    }

    /// Writes `bytes` where `seed`'s reader will find them; returns the path to read and the
    /// input's total size.
    fn place(&self, seed: &Seed, bytes: &[u8]) -> (PathBuf, PathBuf, u64) {
        match &seed.folder {
            None => {
                let path = self.dir.path().join("mutant.safetensors");
                std::fs::write(&path, bytes).unwrap();
                (path.clone(), path, bytes.len() as u64)
            }
            Some(folder) => {
                let (_, copy, size) = self.folders.iter().find(|(s, _, _)| s == folder).unwrap();
                let file = copy.join(seed.file.file_name().unwrap());
                std::fs::write(&file, bytes).unwrap();
                (copy.clone(), file, size + bytes.len() as u64)
            }
        }
    }
}

/// What went wrong with one mutant.
struct Finding {
    what: String,
    saved: PathBuf,
}

/// Where failing mutants are saved: `<reader>@<seed file>@<label>.bin`, the name that
/// `tests/fuzz/regressions/` keeps them under.
fn findings_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn file_label(reader: Reader, seed: &Seed, label: &str) -> String {
    let name = seed.file.file_name().unwrap().to_string_lossy();
    format!("{}@{name}@{label}.bin", reader.name())
}

/// What a reader made of one mutant.
enum Verdict {
    Accepted,
    Refused,
    Failed(Finding),
}

/// Reads one mutant and checks it: a failure is a panic, a too-large allocation or a slow read.
fn check(
    seed: &Seed,
    bytes: &[u8],
    label: &str,
    work: &Workspace,
    models: &Models,
    started: &AtomicU64,
) -> Verdict {
    let (target, written, size) = work.place(seed, bytes);
    let t0 = Instant::now();
    started.store(now_ms(), Ordering::SeqCst);
    LARGEST.with(|l| l.set(0));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read(seed.reader, &target, models)
    }));
    let largest = LARGEST.with(|l| l.get());
    started.store(0, Ordering::SeqCst);
    let elapsed = t0.elapsed();
    if seed.folder.is_some() {
        // The folder's other seeds mutate its other files: put this one back.
        std::fs::copy(&seed.file, &written).unwrap();
    }
    let what = match outcome {
        Err(_) => format!(
            "panicked: {}",
            LAST_PANIC.lock().unwrap().take().unwrap_or_default()
        ),
        Ok(_) if largest > allocation_budget(size) => {
            format!("allocated {largest} bytes at once for a {size}-byte input")
        }
        Ok(_) if elapsed > TIME_LIMIT => format!("took {elapsed:?}"),
        Ok(Ok(())) => return Verdict::Accepted,
        Ok(Err(_)) => return Verdict::Refused,
    };
    let saved = findings_dir().join(file_label(seed.reader, seed, label));
    std::fs::write(&saved, bytes).unwrap();
    Verdict::Failed(Finding { what, saved })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Aborts the process when one read runs past [`HANG_LIMIT`], naming the mutant it was on.
fn watchdog(started: &'static AtomicU64, current: &'static Mutex<String>) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let at = started.load(Ordering::SeqCst);
            if at != 0 && now_ms().saturating_sub(at) > HANG_LIMIT.as_millis() as u64 {
                eprintln!(
                    "hang: {} read for over {HANG_LIMIT:?}",
                    current.lock().unwrap()
                );
                std::process::abort();
            }
        }
    });
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn fuzzed_readers_refuse_without_panicking() {
    static STARTED: AtomicU64 = AtomicU64::new(0);
    static CURRENT: Mutex<String> = Mutex::new(String::new());
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        *LAST_PANIC.lock().unwrap() = Some(format!("{info}"));
    }));
    watchdog(&STARTED, &CURRENT);
    let models = Models::load();
    let seeds = seeds();
    let work = Workspace::new(&seeds);
    let originals: Vec<Vec<u8>> = seeds
        .iter()
        .map(|s| std::fs::read(&s.file).unwrap())
        .collect();
    let mut findings = Vec::new();

    // The inputs that once failed, each under the seed whose reader and file it names.
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions");
    for entry in std::fs::read_dir(&regressions).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let seed = seeds
            .iter()
            .find(|s| name.starts_with(&file_label(s.reader, s, "").replace(".bin", "")))
            .unwrap_or_else(|| panic!("{name}: no seed of that reader and file"));
        *CURRENT.lock().unwrap() = name.clone();
        let bytes = std::fs::read(&path).unwrap();
        let label = format!("regression-{name}");
        if let Verdict::Failed(f) = check(seed, &bytes, &label, &work, &models, &STARTED) {
            findings.push(f);
        }
    }

    let execs = env_number("FASTFLUX_FUZZ_EXECS", 3000);
    let run_seed = env_number("FASTFLUX_FUZZ_SEED", 1);
    let t0 = Instant::now();
    let mut mutant = Vec::new();
    // Per seed, the mutants its reader accepted: how far past the first checks they got.
    let mut accepted = vec![0u64; seeds.len()];
    for i in 0..execs {
        let k = (i % seeds.len() as u64) as usize;
        let mut rng = SplitMix(run_seed.wrapping_mul(0x1_0000_0001) ^ i);
        mutate(&originals[k], &mut rng, &mut mutant);
        *CURRENT.lock().unwrap() = format!("seed {run_seed}, execution {i} ({:?})", seeds[k].file);
        let label = format!("s{run_seed}-{i}");
        match check(&seeds[k], &mutant, &label, &work, &models, &STARTED) {
            Verdict::Accepted => accepted[k] += 1,
            Verdict::Refused => {}
            Verdict::Failed(f) => findings.push(f),
        }
        if (i + 1) % 100_000 == 0 {
            eprintln!(
                "{} executions, {:.0} s, {} findings",
                i + 1,
                t0.elapsed().as_secs_f64(),
                findings.len()
            );
        }
    }
    std::panic::set_hook(default_hook);
    eprintln!(
        "fuzz: {execs} executions over {} seeds in {:.1} s (seed {run_seed})",
        seeds.len(),
        t0.elapsed().as_secs_f64()
    );
    for (seed, accepted) in seeds.iter().zip(&accepted) {
        let name = seed.file.file_name().unwrap().to_string_lossy();
        eprintln!("  {} {name}: {accepted} accepted", seed.reader.name());
    }
    let report: Vec<String> = findings
        .iter()
        .map(|f| format!("{}: {}", f.saved.display(), f.what))
        .collect();
    assert!(
        findings.is_empty(),
        "{} mutants failed:\n{}",
        findings.len(),
        report.join("\n")
    );
}
