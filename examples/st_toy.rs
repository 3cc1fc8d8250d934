//! Sandwich training on the trained toy FLUX (`../shared/toy/digits`), measured on held-out
//! digits: velocity error against the full model and flow-matching loss for the blocks removed
//! outright, BRLL, and BRLL followed by sandwich training (ST), for fixed `--replace` sets and for
//! `--prune`, each ST configuration with its steps, rank, entry and wall time. Also draws the PNG
//! grid (full, removed, BRLL, BRLL + ST).
//!
//! ```text
//! cargo run --release --example st_toy -- ../shared/toy/digits --png docs/toy-st.png
//! ```
//!
//! ST trains on the calibration set (`--calib`, the toy's 1024 noised training digits by
//! default) and is judged on the held-out digits (see `toy_heldout`), which it never sees.

mod toy_heldout;

use clap::Parser;
use fastflux::compile::{self, CompileOptions};
use fastflux::fit::brll::{BrllOptions, Selection};
use fastflux::ir::BlockId;
use fastflux::train::{Entry, StOptions};
use std::path::PathBuf;
use std::time::Instant;
use toy_heldout::{Res, Toy, removal, spec, write_rows};

#[derive(Parser, Debug)]
struct Args {
    /// The toy's folder.
    #[arg(default_value = "../shared/toy/digits")]
    toy: PathBuf,
    /// Block sets to replace (`;`-separated `--replace` specs): by default the best pair (one
    /// sandwich) and a pair that makes two sandwiches, where `--st-entry` matters.
    #[arg(
        long,
        value_delimiter = ';',
        default_value = "single.4,single.5;single.1,single.4"
    )]
    replace: Vec<String>,
    /// Also `--prune` this fraction (0: not).
    #[arg(long, default_value_t = 0.2)]
    prune: f64,
    /// The calibration and training set [default: the toy's train.safetensors].
    #[arg(long)]
    calib: Option<PathBuf>,
    /// ST configurations, `STEPS:RANK:LR:BATCH:ENTRY` (entry `pruned` or `original`), comma
    /// separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500:16:0.064:4:pruned,1000:16:0.064:16:pruned,1000:16:0.064:16:original"
    )]
    st: Vec<String>,
    /// Noise levels per held-out digit.
    #[arg(long, default_value_t = 4)]
    levels: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Draw the grid of the first `--replace` set (full, removed, BRLL, the first ST
    /// configuration) to this PNG.
    #[arg(long)]
    png: Option<PathBuf>,
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

fn st_options(config: &str) -> Res<StOptions> {
    let parts: Vec<&str> = config.split(':').collect();
    let [steps, rank, lr, batch, entry] = parts[..] else {
        return Err(format!("--st `{config}`: expected STEPS:RANK:LR:BATCH:ENTRY").into());
    };
    Ok(StOptions {
        steps: steps.parse()?,
        rank: rank.parse()?,
        lr: lr.parse()?,
        batch: batch.parse()?,
        entry: match entry {
            "pruned" => Entry::Pruned,
            "original" => Entry::Original,
            other => return Err(format!("--st entry `{other}`: pruned or original").into()),
        },
        ..StOptions::default()
    })
}

fn entry_name(entry: Entry) -> &'static str {
    match entry {
        Entry::Pruned => "pruned",
        Entry::Original => "original",
    }
}

fn main() -> Res<()> {
    let a = Args::parse();
    let tmp = tempfile::tempdir()?;
    let folder = a.out_dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&folder)?;
    let toy = Toy::open(&a.toy, &folder, a.levels, a.seed)?;
    let calib = a.calib.clone().unwrap_or(a.toy.join("train.safetensors"));
    let brll = |selection: Selection| {
        let mut o = BrllOptions {
            selection,
            calib: Some(calib.clone()),
            ..Default::default()
        };
        o.calibration.threads = 2;
        o
    };
    let configs: Vec<StOptions> = a.st.iter().map(|c| st_options(c)).collect::<Res<_>>()?;
    println!(
        "held-out: {} digits x {} noise levels = {} samples, seed {}; full model FM loss {:.4}",
        toy.digits, a.levels, toy.samples, a.seed, toy.full_loss
    );
    println!("training set: {}\n", calib.display());
    println!(
        "| selection | blocks | model | velocity error | FM loss | × removal | × BRLL | \
         exit loss before → after | wall (s) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut selections: Vec<(String, Selection)> = a
        .replace
        .iter()
        .map(|r| (format!("--replace {r}"), Selection::Replace(r.clone())))
        .collect();
    if a.prune > 0.0 {
        selections.push((format!("--prune {}", a.prune), Selection::Prune(a.prune)));
    }
    let mut grid = vec![toy.draw(&toy.full, a.seed)?];
    for (k, (label, selection)) in selections.iter().enumerate() {
        let start = Instant::now();
        let (model, outcome) = toy.build("brll.onnx", Some(&brll(selection.clone())), &[])?;
        let brll_seconds = start.elapsed().as_secs_f64();
        let outcome = outcome.expect("fitted");
        let fits: Vec<_> = outcome.replaced.iter().map(|r| r.fit.clone()).collect();
        let blocks: Vec<BlockId> = fits.iter().map(|f| f.block).collect();
        let blocks = spec(&blocks);
        let (brll_err, brll_loss) = toy.score(&model)?;
        if k == 0 {
            grid.push(toy.draw(&model, a.seed)?);
        }
        let (removed, _) = toy.build("removed.onnx", None, &removal(&fits))?;
        let (removed_err, removed_loss) = toy.score(&removed)?;
        if k == 0 {
            grid.insert(1, toy.draw(&removed, a.seed)?);
        }
        println!(
            "| {label} | {blocks} | removed outright | {removed_err:.4} | {removed_loss:.4} | 1 | \
             {:.2} | - | - |",
            removed_err / brll_err
        );
        println!(
            "| {label} | {blocks} | BRLL | {brll_err:.4} | {brll_loss:.4} | {:.2} | 1 | - | \
             {brll_seconds:.1} |",
            brll_err / removed_err
        );
        for (c, st) in configs.iter().enumerate() {
            let options = CompileOptions {
                brll: Some(brll(Selection::Replace(blocks.clone()))),
                st: Some(st.clone()),
                ..toy.options("st.onnx")
            };
            let start = Instant::now();
            let outcome = compile::compile(&options)?;
            let seconds = start.elapsed().as_secs_f64();
            let (err, loss) = toy.score(&outcome.output)?;
            let losses: Vec<String> = outcome
                .st
                .iter()
                .flat_map(|s| &s.outcome.sandwiches)
                .map(|r| format!("{}: {:.5} → {:.5}", r.sandwich, r.loss_before, r.loss_after))
                .collect();
            println!(
                "| {label} | {blocks} | BRLL + ST ({} steps, rank {}, lr {}, batch {}, entry {}) \
                 | **{err:.4}** | {loss:.4} | {:.2} | {:.2} | {} | {seconds:.1} |",
                st.steps,
                st.rank,
                st.lr,
                st.batch,
                entry_name(st.entry),
                err / removed_err,
                err / brll_err,
                losses.join("; ")
            );
            if k == 0 && c == 0 {
                grid.push(toy.draw(&outcome.output, a.seed)?);
            }
        }
    }
    if let Some(path) = &a.png {
        write_rows(path, &grid)?;
        println!(
            "\nwrote {}: columns digits 0-9, 20 Euler steps from the same noise (seed {}); rows: \
             full; {} removed outright; BRLL; BRLL + ST ({})",
            path.display(),
            a.seed,
            selections[0].0,
            a.st[0]
        );
    }
    Ok(())
}
