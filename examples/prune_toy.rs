//! `--prune 0.2` on the trained toy FLUX (`../shared/toy/digits`), measured on held-out digits:
//! velocity error against the full model and flow-matching loss, for every calibration source ×
//! selection rule, against two references: the best pair found by trying every pair (with the
//! same calibration), and removing the chosen blocks outright. Also draws the PNG grid.
//!
//! ```text
//! cargo run --release --example prune_toy -- ../shared/toy/digits --png docs/toy-prune.png
//! ```
//!
//! The held-out set and its two measures are `toy_heldout`'s.

mod toy_heldout;

use clap::Parser;
use fastflux::fit::brll::{BrllOptions, Selection};
use fastflux::fit::select::SelectRule;
use fastflux::ir::BlockId;
use std::path::PathBuf;
use std::time::Instant;
use toy_heldout::{Res, Toy, removal, spec, write_rows};

#[derive(Parser, Debug)]
struct Args {
    /// The toy's folder.
    #[arg(default_value = "../shared/toy/digits")]
    toy: PathBuf,
    #[arg(long, default_value_t = 0.2)]
    prune: f64,
    /// Noise levels per held-out digit.
    #[arg(long, default_value_t = 4)]
    levels: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Calibration sources to measure (comma-separated): `synthetic` (the default inputs),
    /// `train` (the toy's train.safetensors), or `NAME=FILE`, a set in the `--calib` format (e.g.
    /// the trajectories `--calib-cond ... --calib-save FILE` wrote).
    #[arg(long, value_delimiter = ',', default_value = "synthetic,train")]
    sources: Vec<String>,
    /// The sources (by name) to try every pair with [default: all].
    #[arg(long, value_delimiter = ',')]
    pairs: Option<Vec<String>>,
    /// Draw the grid (full, blocks removed, --prune with the defaults) to this PNG.
    #[arg(long)]
    png: Option<PathBuf>,
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

fn main() -> Res<()> {
    let a = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = a.out_dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let toy = Toy::open(&a.toy, &dir, a.levels, a.seed)?;
    let options = |source: &str, selection: Selection, rule: SelectRule| -> Res<BrllOptions> {
        let mut o = BrllOptions {
            selection,
            rule,
            ..Default::default()
        };
        match source.split_once('=') {
            _ if source == "synthetic" => {}
            _ if source == "train" => o.calib = Some(a.toy.join("train.safetensors")),
            Some((_, file)) => o.calib = Some(PathBuf::from(file)),
            None => return Err(format!("unknown calibration source `{source}`").into()),
        }
        o.calibration.threads = 2;
        Ok(o)
    };

    println!(
        "held-out: {} digits x {} noise levels (k+1/2)/{} = {} samples, seed {}",
        toy.digits, a.levels, a.levels, toy.samples, a.seed
    );
    println!("full model: flow-matching loss {:.4}\n", toy.full_loss);
    println!("| calibration | selection | blocks | velocity error | FM loss | ranking (s) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut grid: Vec<Vec<f32>> = vec![toy.draw(&toy.full, a.seed)?];
    let mut grid_labels = vec!["full".to_owned()];
    for source in &a.sources {
        let name = source.split_once('=').map_or(source.as_str(), |(n, _)| n);
        let mut default_fits = Vec::new();
        let mut pooled = Vec::new();
        for (label, rule) in [
            ("local fit", SelectRule::Local),
            ("output effect", SelectRule::Output),
        ] {
            let o = options(source, Selection::Prune(a.prune), rule)?;
            let (model, outcome) = toy.build("pruned.onnx", Some(&o), &[])?;
            let outcome = outcome.expect("fitted");
            let blocks: Vec<BlockId> = outcome.replaced.iter().map(|r| r.block).collect();
            let (err, loss) = toy.score(&model)?;
            let seconds = outcome.ranking.as_ref().map_or(0.0, |r| r.seconds);
            println!(
                "| {name} | {label} | {} | {err:.4} | {loss:.4} | {seconds:.1} |",
                spec(&blocks)
            );
            if rule == SelectRule::Local {
                // The rule before this one: the lowest fit error pooled over a block's streams.
                let mut reports: Vec<_> = outcome.ranking.as_ref().unwrap().reports.clone();
                reports.sort_by(|a, b| a.fit_error.total_cmp(&b.fit_error));
                pooled = reports.iter().take(blocks.len()).map(|r| r.block).collect();
                pooled.sort();
            }
            if rule == SelectRule::default() {
                default_fits = outcome.replaced.iter().map(|r| r.fit.clone()).collect();
                grid.push(toy.draw(&model, a.seed)?);
                grid_labels.push(format!("--prune {} ({name} calibration)", a.prune));
            }
        }
        let o = options(source, Selection::Replace(spec(&pooled)), SelectRule::Local)?;
        let (model, _) = toy.build("pooled.onnx", Some(&o), &[])?;
        let (err, loss) = toy.score(&model)?;
        println!(
            "| {name} | local fit, pooled over streams (the old rule) | {} | {err:.4} | {loss:.4} | - |",
            spec(&pooled)
        );
        let zero = removal(&default_fits);
        let removed: Vec<BlockId> = zero.iter().map(|f| f.block).collect();
        let (model, _) = toy.build("removed.onnx", None, &zero)?;
        let (err, loss) = toy.score(&model)?;
        println!(
            "| {name} | removed outright (output rule's blocks) | {} | {err:.4} | {loss:.4} | - |",
            spec(&removed)
        );
        if source == "synthetic" {
            grid.insert(1, toy.draw(&model, a.seed)?);
            grid_labels.insert(1, format!("{} removed outright", spec(&removed)));
        }
        if a.pairs
            .as_ref()
            .is_some_and(|p| !p.iter().any(|p| p == name))
        {
            continue;
        }
        let start = Instant::now();
        let all: Vec<BlockId> = (0..2)
            .map(BlockId::Double)
            .chain((0..6).map(BlockId::Single))
            .collect();
        let mut pairs = Vec::new();
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                let pair = [all[i], all[j]];
                let o = options(source, Selection::Replace(spec(&pair)), SelectRule::Local)?;
                let (model, _) = toy.build("pair.onnx", Some(&o), &[])?;
                pairs.push((toy.score(&model)?, pair));
            }
        }
        pairs.sort_by(|a, b| a.0.0.total_cmp(&b.0.0));
        let ((err, loss), pair) = pairs[0];
        println!(
            "| {name} | best of all {} pairs ({:.0} s) | {} | {err:.4} | {loss:.4} | - |",
            pairs.len(),
            start.elapsed().as_secs_f64(),
            spec(&pair)
        );
        let listed: Vec<String> = pairs
            .iter()
            .map(|((e, _), p)| format!("{} {e:.4}", spec(p)))
            .collect();
        eprintln!("{name}: every pair, best first: {}", listed.join("; "));
    }
    if let Some(path) = &a.png {
        write_rows(path, &grid)?;
        println!(
            "\nwrote {}: columns digits 0-9, 20 Euler steps from the same noise (seed {}); rows: {}",
            path.display(),
            a.seed,
            grid_labels.join("; ")
        );
    }
    Ok(())
}
