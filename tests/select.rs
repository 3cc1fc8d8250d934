//! Block selection by output effect: on a model where local fit error and output effect
//! disagree (a block whose branch is scaled down keeps its relative fit error but barely moves
//! the output), `--prune` picks the block whose replacement hurts the output least, as measured
//! independently by replacing each block alone and running the whole model; the effects the
//! ranking pass measures through its variants agree with those runs; `--plan` shows the table.

mod support;

use fastflux::checkpoint::FluxCheckpoint;
use fastflux::dtype::DType;
use fastflux::fit::calibrate::{
    BlockReport, CalibrationOptions, MemoryPlan, fit_sequentially, rank_blocks,
};
use fastflux::fit::select::{SelectRule, choose};
use fastflux::ir::{BlockId, Graph};
use fastflux::lift::{LiftOptions, lift};
use fastflux::metrics::relative_l2;
use fastflux::passes::brll::apply_fits;
use fastflux::runtime::MemoryBudget;
use fastflux::runtime::staged::StagedRunner;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use support::*;

const SCALE: f32 = 0.02;

fn open(path: &Path) -> (FluxCheckpoint, Graph) {
    let ckpt = FluxCheckpoint::open(path, Some(vec![4, 6, 6])).unwrap();
    let graph = lift(&ckpt, LiftOptions { dtype: DType::F32 }).unwrap();
    (ckpt, graph)
}

/// tiny-dev with the gate of single block `block` scaled by `SCALE`: its residual branch is
/// `SCALE` times as large, so its relative fit error stays while its effect on the output shrinks.
fn scaled_gate_checkpoint(dir: &Path, block: usize) -> PathBuf {
    let hidden = 64;
    let mut tensors = read_tensors(&golden("flux-bfl.safetensors"));
    for t in &mut tensors {
        if t.name
            .starts_with(&format!("single_blocks.{block}.modulation.lin."))
        {
            let mut values = t.f32_values();
            let row = values.len() / t.shape[0];
            for v in &mut values[2 * hidden * row..3 * hidden * row] {
                *v *= SCALE;
            }
            *t = StoredTensor::from_f32(&t.name, t.shape.clone(), &values);
        }
    }
    let path = dir.join("scaled-gate.safetensors");
    write_tensors(&path, &tensors);
    path
}

/// The output error of replacing `block` alone, computed the plain way: fit it, rewrite the
/// graph, run the whole rewritten model and the original on the first `samples` calibration
/// inputs.
fn effect_by_full_run(ckpt: &FluxCheckpoint, graph: &Graph, block: BlockId, samples: usize) -> f64 {
    let set = inputs(ckpt);
    let chosen: BTreeSet<_> = [block].into();
    let fits: Vec<_> = fit_sequentially(graph, ckpt, &set, &chosen, &calibration(1e-6))
        .unwrap()
        .into_iter()
        .map(|r| r.fit)
        .collect();
    let mut pruned = graph.clone();
    apply_fits(&mut pruned, &fits).unwrap();
    let measured = set.slice(0, samples);
    let run = |g: &Graph| {
        StagedRunner::new(g, ckpt, 4, 1)
            .run(&measured.tensors)
            .unwrap()
            .remove("latent")
            .unwrap()
            .data
    };
    let reference: Vec<f64> = run(graph).into_iter().map(f64::from).collect();
    relative_l2(&run(&pruned), &reference)
}

fn best(reports: &[BlockReport], rule: SelectRule) -> BlockId {
    *choose(reports, 1, rule).unwrap().iter().next().unwrap()
}

#[test]
fn output_rule_picks_the_block_that_hurts_the_output_least() {
    // The single block with the worst local fit in tiny-dev becomes the one to shrink.
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, graph) = open(&golden("flux-bfl.safetensors"));
    let plain = rank_blocks(&graph, &ckpt, &inputs(&ckpt), &calibration(1e-6), false).unwrap();
    let worst_single = plain
        .iter()
        .filter(|r| matches!(r.block, BlockId::Single(_)))
        .max_by(|a, b| a.worst_stream_error().total_cmp(&b.worst_stream_error()))
        .unwrap()
        .block;
    let BlockId::Single(index) = worst_single else {
        unreachable!()
    };
    let path = scaled_gate_checkpoint(dir.path(), index);
    let (ckpt, graph) = open(&path);
    let reports = rank_blocks(&graph, &ckpt, &inputs(&ckpt), &calibration(1e-6), true).unwrap();

    // Every effect the variants measured is what running the rewritten model gives.
    let mut measured = Vec::new();
    for r in &reports {
        let direct = effect_by_full_run(&ckpt, &graph, r.block, 6);
        let effect = r.output_effect.expect("measured");
        assert!(
            (effect - direct).abs() <= 1e-3 * direct.max(1e-6),
            "{}: variant effect {effect}, full run {direct}",
            r.block
        );
        measured.push((direct, r.block));
    }
    measured.sort_by(|a, b| a.0.total_cmp(&b.0));
    let least_harmful = measured[0].1;

    // The case is one where the two rules disagree.
    assert_eq!(least_harmful, worst_single, "{measured:?}");
    assert_ne!(best(&reports, SelectRule::Local), least_harmful);
    assert_eq!(best(&reports, SelectRule::Output), least_harmful);

    // The command line: --prune's default rule replaces that block, --select local another.
    let out = dir.path().join("pruned.onnx");
    let args = |select: &str| -> Vec<String> {
        let mut a: Vec<String> = [
            path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--axes-dim",
            "4,6,6",
            "--dtype",
            "f32",
            "--prune",
            "0.17",
            "-q",
        ]
        .iter()
        .chain(&CALIBRATION_FLAGS)
        .map(|s| s.to_string())
        .collect();
        if !select.is_empty() {
            a.extend(["--select".into(), select.into()]);
        }
        a
    };
    let default = compile_ok(&args(""));
    assert!(default.contains("1 blocks replaced"), "{default}");
    assert!(
        default.contains(&format!("  {least_harmful} ")),
        "{least_harmful} not replaced:\n{default}"
    );
    assert!(
        default.contains("chosen by          output effect"),
        "{default}"
    );
    let local = compile_ok(&args("local"));
    assert!(
        !local.contains(&format!("  {least_harmful} ")),
        "--select local replaced {least_harmful}:\n{local}"
    );
}

#[test]
fn effect_samples_measures_on_the_first_samples() {
    let (ckpt, graph) = open(&golden("flux-bfl.safetensors"));
    let options = CalibrationOptions {
        effect_samples: 2,
        ..calibration(1e-6)
    };
    let reports = rank_blocks(&graph, &ckpt, &inputs(&ckpt), &options, true).unwrap();
    for r in reports
        .iter()
        .filter(|r| r.block != BlockId::Double(0))
        .take(2)
    {
        let direct = effect_by_full_run(&ckpt, &graph, r.block, 2);
        let effect = r.output_effect.unwrap();
        assert!(
            (effect - direct).abs() <= 1e-3 * direct,
            "{}: variant effect {effect}, full run on 2 samples {direct}",
            r.block
        );
    }
}

/// Under a budget that holds one sample at a time (one sample per stage run, the output effect
/// walked in groups of one), every block's effect is still the one a full run of the model
/// with that block alone replaced gives over all the samples: the groups' sums add up.
#[test]
fn a_tight_budget_walks_one_sample_at_a_time_and_keeps_every_effect() {
    let (ckpt, graph) = open(&golden("flux-bfl.safetensors"));
    let set = inputs(&ckpt);
    let options = CalibrationOptions {
        memory_budget: MemoryBudget::from_bytes(1),
        ..calibration(1e-6)
    };
    let plan = MemoryPlan::new(&graph, &set, options.limits(), Some(graph.blocks().len()));
    let effect = plan.effect.unwrap();
    assert_eq!((plan.batch, effect.group), (1, 1));
    assert_eq!(effect.groups(), set.samples);
    assert!(plan.over_budget());
    let reports = rank_blocks(&graph, &ckpt, &set, &options, true).unwrap();
    assert_eq!(reports.len(), graph.blocks().len());
    for r in &reports {
        let direct = effect_by_full_run(&ckpt, &graph, r.block, set.samples);
        let effect = r.output_effect.unwrap();
        assert!(
            (effect - direct).abs() <= 1e-3 * direct,
            "{}: effect over groups of one {effect}, full run {direct}",
            r.block
        );
    }
}

#[test]
fn plan_shows_stream_fit_errors_output_effect_and_cost() {
    let plan = |extra: &[&str]| {
        let mut args = vec![
            golden("flux-bfl.safetensors").to_str().unwrap().to_owned(),
            "--plan".into(),
            "--axes-dim".into(),
            "4,6,6".into(),
            "--prune".into(),
            "0.34".into(),
            "-q".into(),
        ];
        args.extend(CALIBRATION_FLAGS.iter().chain(extra).map(|s| s.to_string()));
        compile_ok(&args)
    };
    let report = plan(&[]);
    let table: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.starts_with("BRLL ranking"))
        .collect();
    assert!(table[0].contains("by output effect"), "{report}");
    let header: Vec<&str> = table[1].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "block",
            "fit",
            "error",
            "img",
            "txt",
            "output",
            "effect",
            "cos(in,out)",
            "params",
            "saved"
        ]
    );
    // One row per block (2 double, 4 single), ranked by the output effect (column 5).
    let rows: Vec<Vec<&str>> = table[2..8]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let mut blocks: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    blocks.sort();
    assert_eq!(
        blocks,
        [
            "double_blocks.0",
            "double_blocks.1",
            "single_blocks.0",
            "single_blocks.1",
            "single_blocks.2",
            "single_blocks.3"
        ]
    );
    let effects: Vec<f64> = rows.iter().map(|r| r[4].parse().unwrap()).collect();
    assert!(effects.windows(2).all(|w| w[0] <= w[1]), "{report}");
    for r in &rows {
        let double = r[0].starts_with("double");
        // Double blocks show both streams' errors; single blocks have one stream, the pooled one.
        assert_eq!(r[2] != "-" && r[3] != "-", double, "{report}");
        for v in [r[1], r[4], r[5]] {
            v.parse::<f64>().unwrap();
        }
    }
    // 6 blocks: the effect's walk runs each block once for the original samples (6), and each
    // block's variant runs the blocks after it, 5 + 4 + … + 0 = 15; 6 samples fit one walk.
    assert!(
        report.contains("6 block runs of 6 samples + 21 of 6 samples for the output effect"),
        "{report}"
    );
    assert!(report.contains("in 1 walk of 6 samples"), "{report}");
    let tight = plan(&["--memory-budget", "1K"]);
    assert!(tight.contains("in 6 walks of 1 sample"), "{tight}");
    assert!(
        tight.contains("1 sample per stage run") && tight.contains("exceeds the budget"),
        "{tight}"
    );

    let local = plan(&["--select", "local"]);
    assert!(
        local.contains("by local fit error (worst stream)"),
        "{local}"
    );
    assert!(local.contains("output effect not measured"), "{local}");
}
