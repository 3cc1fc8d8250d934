//! tiny-dev's BRLL calibration as the BRLL tests use it: the options, the checkpoint, the
//! synthetic inputs with the command-line flags that make the compiler calibrate on exactly them,
//! and the references an exported pruned model is checked against.

use super::paths::golden;
use super::python::python_run;
use fastflux::checkpoint::FluxCheckpoint;
use fastflux::dtype::DType;
use fastflux::fit::calibrate::{CalibrationOptions, FitKind, fit_sequentially};
use fastflux::inputs::{InputSet, SyntheticSpec};
use fastflux::ir::BlockId;
use fastflux::lift::{LiftOptions, lift};
use fastflux::passes::brll::apply_fits;
use fastflux::runtime::staged::StagedRunner;
use fastflux::tensor::read_f32_tensors;
use std::collections::BTreeSet;
use std::path::Path;

pub fn calibration(ridge: f64) -> CalibrationOptions {
    CalibrationOptions {
        kind: FitKind::Plain,
        ridge,
        batch: 4,
        threads: 1,
        provider: fastflux::runtime::ExecutionProvider::Cpu,
        show_progress: false,
        effect_samples: 0,
        memory_budget: fastflux::runtime::MemoryBudget::from_machine(),
    }
}

pub fn tiny() -> FluxCheckpoint {
    FluxCheckpoint::open(&golden("diffusers"), None).unwrap()
}

/// The command-line flags that make the compiler calibrate on exactly `inputs()`.
pub const CALIBRATION_FLAGS: [&str; 8] = [
    "--calib-samples",
    "6",
    "--calib-image-tokens",
    "64",
    "--calib-text-tokens",
    "16",
    "--seed",
    "3",
];

pub fn inputs(ckpt: &FluxCheckpoint) -> InputSet {
    let spec = SyntheticSpec {
        samples: 6,
        image_tokens: 64,
        text_tokens: 16,
        seed: 3,
    };
    InputSet::synthetic(&ckpt.config, &spec).unwrap()
}

/// The latent of tiny-dev, lifted in f32 with `blocks` fitted in model order on `inputs()`
/// (`options`) and the fits applied uncollapsed, run stage by stage on the golden inputs: what
/// the compiler's export of the same `--replace` must compute.
pub fn staged_fitted_latent(blocks: &BTreeSet<BlockId>, options: &CalibrationOptions) -> Vec<f32> {
    let ckpt = tiny();
    let mut graph = lift(&ckpt, LiftOptions { dtype: DType::F32 }).unwrap();
    let reports = fit_sequentially(&graph, &ckpt, &inputs(&ckpt), blocks, options).unwrap();
    let fits: Vec<_> = reports.into_iter().map(|r| r.fit).collect();
    apply_fits(&mut graph, &fits).unwrap();
    let golden_inputs = read_f32_tensors(&golden("inputs.safetensors")).unwrap();
    let mut outputs = StagedRunner::new(&graph, &ckpt, 2, 1)
        .run(&golden_inputs)
        .unwrap();
    outputs.remove("latent").unwrap().data
}

/// The initializer names of the ONNX model at `model`, one per line, as the `onnx` package
/// reads them.
pub fn initializer_names(model: &Path) -> String {
    let (ok, text) = python_run(
        "import sys, onnx\nm = onnx.load(sys.argv[1], load_external_data=False)\nprint('\\n'.join(t.name for t in m.graph.initializer))",
        &[model],
    );
    assert!(ok, "{text}");
    text
}
