//! Benchmark: compiling a checkpoint against copying it.
//!
//! Measures, in the same run and on the same disk, how long `fastflux-compile CHECKPOINT -o
//! DIR/model.onnx -q` takes compared with `cp CHECKPOINT DIR/copy.safetensors`, and the peak
//! resident memory of each, as `/usr/bin/time -v` reports them. Copying the file is the floor for
//! any compiler that has to write every weight once, so the ratio compile/cp says how close to
//! that floor the compiler is, on whatever disk the machine has. Disk speed still moves it (a
//! shared or throttled disk narrows the gap); hence several runs and their median.
//!
//! ```text
//! cargo build --release --bin fastflux-compile --example bench_compile
//! cargo run --release --example bench_compile -- big.safetensors --runs 2 --out-dir /tmp/bench
//! ```
//!
//! Each run drops the page cache before each timed command (needs root; if it cannot, it says so
//! and goes on, and the numbers then measure a warm cache), alternates which command goes first
//! (so neither always benefits from the other's leftovers), and deletes the outputs afterwards.
//! `DIR` defaults to the checkpoint's folder and needs room for one copy of the checkpoint. The
//! time of the `sync` after each command is printed too: neither `cp` nor the compiler waits for
//! its data to reach the disk, so a large number there would mean the comparison is unfair.

use clap::Parser;
use fastflux::metrics::median;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

type Res<T> = Result<T, Box<dyn Error>>;

/// Time `fastflux-compile` against `cp` of the same checkpoint.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The checkpoint to compile (and copy).
    checkpoint: PathBuf,
    /// Number of runs; each run times one copy and one compile.
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Where the copy and the model go [default: the checkpoint's folder].
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

/// What `/usr/bin/time -v` reported for one command, plus the `sync` that followed it.
#[derive(Clone, Copy, Debug)]
struct Measure {
    wall_s: f64,
    max_rss_kib: u64,
    /// Seconds the `sync` after the command took: dirty pages it left for the kernel to write.
    flush_s: f64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Res<()> {
    let compiler = compiler_path()?;
    let ckpt = args
        .checkpoint
        .canonicalize()
        .map_err(|e| format!("checkpoint {}: {e}", args.checkpoint.display()))?;
    let dir = match args.out_dir {
        Some(d) => d,
        None => ckpt.parent().ok_or("checkpoint has no folder")?.to_owned(),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let copy = dir.join("copy.safetensors");
    let model = dir.join("model.onnx");
    let data = dir.join("model.onnx.data");
    // Removes the outputs after every run, and also when a command fails midway: a stray 12 GB
    // copy is not something to leave on a shared disk.
    let cleanup = RemoveOnDrop(vec![copy.clone(), model.clone(), data.clone()]);
    let size = std::fs::metadata(&ckpt)?.len();
    println!(
        "checkpoint {} ({:.2} GB)",
        ckpt.display(),
        size as f64 / 1e9
    );
    println!("compiler   {}", compiler.display());
    println!("out dir    {}", dir.display());

    let mut cache_warned = false;
    let mut rows = Vec::new();
    for run in 0..args.runs.max(1) {
        // Alternate the order so that neither command always runs second, on a disk the other
        // has just filled with dirty pages or a cache the other has just warmed.
        let cp_first = run % 2 == 0;
        let mut cp = None;
        let mut compile = None;
        for step in 0..2 {
            drop_caches(&mut cache_warned);
            if (step == 0) == cp_first {
                let mut c = Command::new("cp");
                c.arg(&ckpt).arg(&copy);
                cp = Some(timed(c, "cp")?);
            } else {
                let mut c = Command::new(&compiler);
                c.arg(&ckpt).arg("-o").arg(&model).arg("-q");
                compile = Some(timed(c, "fastflux-compile")?);
            }
        }
        let (cp, compile) = (cp.expect("cp ran"), compile.expect("compile ran"));
        let written = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
        cleanup.remove();
        println!(
            "run {} ({} first): cp {:.1} s (+{:.1} s sync), compile {:.1} s (+{:.1} s sync), \
             {:.2} GB of weights written, load average {}",
            run + 1,
            if cp_first { "cp" } else { "compile" },
            cp.wall_s,
            cp.flush_s,
            compile.wall_s,
            compile.flush_s,
            written as f64 / 1e9,
            load_average()
        );
        rows.push((cp, compile));
    }
    print_table(&rows);
    Ok(())
}

/// Files deleted on `remove` and again on drop (so an early return cleans up as well).
struct RemoveOnDrop(Vec<PathBuf>);

impl RemoveOnDrop {
    fn remove(&self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `target/release/fastflux-compile`: examples are built into `target/release/examples/`.
fn compiler_path() -> Res<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("fastflux-compile"))
        .ok_or("cannot locate the build folder from this executable's path")?;
    if !path.is_file() {
        return Err(format!(
            "{} not found: build it first with `cargo build --release --bin fastflux-compile`",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// Writes dirty pages out, then empties the page cache, so that each command reads the
/// checkpoint from disk rather than from memory the previous command filled.
fn drop_caches(warned: &mut bool) {
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    let dropped = std::fs::write("/proc/sys/vm/drop_caches", "3\n");
    if (!synced || dropped.is_err()) && !*warned {
        *warned = true;
        let why = dropped
            .err()
            .map_or("sync failed".to_owned(), |e| e.to_string());
        println!("warning: could not drop the page cache ({why}); timings use a warm cache");
    }
}

/// Runs `command` under `/usr/bin/time -v` and parses its report, then times a `sync` so that
/// data a command leaves in dirty pages shows up somewhere.
fn timed(command: Command, what: &str) -> Res<Measure> {
    let report = std::env::temp_dir().join(format!("bench_compile.{}.time", std::process::id()));
    let mut time = Command::new("/usr/bin/time");
    time.arg("-v").arg("-o").arg(&report);
    time.arg(command.get_program()).args(command.get_args());
    let output = time
        .output()
        .map_err(|e| format!("cannot run /usr/bin/time (is GNU time installed?): {e}"))?;
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            text
        )
        .into());
    }
    let start = Instant::now();
    Command::new("sync").status()?;
    let flush_s = start.elapsed().as_secs_f64();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| format!("no `{name}` in /usr/bin/time's report:\n{text}"))
    };
    let wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss):")?;
    let rss = field("Maximum resident set size (kbytes):")?;
    Ok(Measure {
        wall_s: parse_clock(&wall).ok_or_else(|| format!("bad wall clock `{wall}`"))?,
        max_rss_kib: rss.parse().map_err(|e| format!("bad RSS `{rss}`: {e}"))?,
        flush_s,
    })
}

/// The 1-minute load average: other work on the machine is the main source of noise.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `h:mm:ss` or `m:ss.ss` to seconds.
fn parse_clock(s: &str) -> Option<f64> {
    s.split(':').try_fold(0.0, |acc, part| {
        Some(acc * 60.0 + part.parse::<f64>().ok()?)
    })
}

fn print_table(rows: &[(Measure, Measure)]) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!();
    println!(
        "| run | cp (s) | compile (s) | compile / cp | compile peak RSS (MiB) | cp peak RSS (MiB) |"
    );
    println!(
        "|----:|-------:|------------:|-------------:|-----------------------:|------------------:|"
    );
    for (i, (cp, c)) in rows.iter().enumerate() {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.0} | {:.1} |",
            i + 1,
            cp.wall_s,
            c.wall_s,
            c.wall_s / cp.wall_s,
            mib(c.max_rss_kib),
            mib(cp.max_rss_kib)
        );
    }
    let col =
        |f: &dyn Fn(&(Measure, Measure)) -> f64| median(&rows.iter().map(f).collect::<Vec<_>>());
    println!(
        "| median | {:.1} | {:.1} | {:.2} | {:.0} | {:.1} |",
        col(&|r| r.0.wall_s),
        col(&|r| r.1.wall_s),
        col(&|r| r.1.wall_s / r.0.wall_s),
        col(&|r| mib(r.1.max_rss_kib)),
        col(&|r| mib(r.0.max_rss_kib))
    );
}
