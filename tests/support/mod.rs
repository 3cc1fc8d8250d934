//! Shared by the integration tests: where the golden references are, running the compiler
//! binary, running a compiled model in ONNX Runtime, and the Python side (`onnx` checker).

#![allow(dead_code, unused_imports)] // each test binary uses its own subset

use fastflux::runtime;
use fastflux::tensor::{self, Tensor};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod paths;
pub use paths::{golden, shared};

/// Runs `fastflux-compile` with `args`; returns its output.
pub fn compile(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fastflux-compile"))
        .args(args)
        .output()
        .expect("fastflux-compile runs")
}

/// Runs `fastflux-compile`, asserting success; returns stdout.
pub fn compile_ok(args: &[&str]) -> String {
    let out = compile(args);
    assert!(
        out.status.success(),
        "fastflux-compile {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The golden inputs, and the reference output diffusers computed in float64.
pub fn golden_io(expected_file: &str) -> (Vec<Tensor>, Vec<f64>) {
    let inputs = tensor::read_f32_tensors(&golden("inputs.safetensors")).expect("golden inputs");
    let expected = std::fs::read(golden(expected_file)).expect("golden expected output");
    let expected = safetensors::SafeTensors::deserialize(&expected).expect("safetensors");
    let reference = expected
        .tensor("output_f64")
        .expect("output_f64 in the golden file");
    let values = reference
        .data()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (inputs, values)
}

/// Runs a compiled model on the golden inputs; returns `latent`.
pub fn run_golden(model: &Path) -> Vec<f32> {
    let (inputs, _) = golden_io("expected.safetensors");
    let outputs = runtime::run_model_file(model, &inputs, 2).expect("model runs in ONNX Runtime");
    let latent = outputs
        .into_iter()
        .find(|t| t.name == "latent")
        .expect("output `latent`");
    latent.data
}

/// The project's Python (scripts/setup.sh's .venv), else python3 from PATH.
pub fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Runs a Python snippet with `args` in `sys.argv[1:]`; returns (success, stdout+stderr).
pub fn python_run(code: &str, args: &[&Path]) -> (bool, String) {
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Writes a FLUX-shaped f32 checkpoint in BFL naming with deterministic pseudo-random values:
/// every parameter `FluxConfig::parameters` lists for `config`.
pub fn synthetic_checkpoint(path: &Path, config: &fastflux::checkpoint::FluxConfig) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = config
        .parameters()
        .into_iter()
        .map(|(name, shape)| {
            let fan_in = *shape.last().unwrap() as f32;
            let bytes = (0..shape.iter().product::<usize>())
                .flat_map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let uniform = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    (uniform * 3.4 / fan_in.sqrt()).to_le_bytes()
                })
                .collect();
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .expect("consistent tensor");
            (name.as_str(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("checkpoint written");
}

/// A FLUX-like configuration of the given width and depth (head width 128, FLUX's RoPE axes).
pub fn flux_like(
    hidden: usize,
    double_blocks: usize,
    single_blocks: usize,
) -> fastflux::checkpoint::FluxConfig {
    fastflux::checkpoint::FluxConfig {
        hidden,
        heads: hidden / 128,
        head_dim: 128,
        mlp_hidden: 4 * hidden,
        double_blocks,
        single_blocks,
        in_channels: 64,
        out_channels: 64,
        context_dim: 256,
        pooled_dim: 64,
        time_embed_dim: 256,
        guidance: false,
        axes_dim: vec![16, 56, 56],
        theta: 10_000,
    }
}
