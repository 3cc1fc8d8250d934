//! The checkpoint types and namings the issue lists beside plain f32 BFL: ComfyUI's prefixed
//! keys, and weights stored as F16, BF16 and F8_E4M3. Each variant is made here from the golden
//! f32 file, must be recognised by `--plan` (naming and stored type), must compile, and must
//! compute what the golden model computes, within what its rounding explains. The conversions
//! (and the e4m3 codec) are written here, independently of `src/dtype.rs`.

mod support;

use half::{bf16, f16};
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use support::*;
use tempfile::TempDir;

const COMFY_PREFIX: &str = "model.diffusion_model.";

/// Compiles `checkpoint` to `dir/name.onnx` with `extra` flags; returns the model's path and
/// the compiler's closing report.
fn compile_to(checkpoint: &Path, dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, String) {
    let output = dir.join(format!("{name}.onnx"));
    let mut args: Vec<&std::ffi::OsStr> = vec![
        checkpoint.as_os_str(),
        "-o".as_ref(),
        output.as_os_str(),
        "--axes-dim".as_ref(),
        TINY_AXES.as_ref(),
        "-q".as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let report = compile_ok(&args);
    assert!(output.is_file() && dir.join(format!("{name}.onnx.data")).is_file());
    (output, report)
}

fn plan(checkpoint: &Path) -> String {
    compile_ok(&[
        checkpoint.as_os_str(),
        "--plan".as_ref(),
        "--axes-dim".as_ref(),
        TINY_AXES.as_ref(),
    ])
}

// ---- float8 e4m3fn, written from the OCP FP8 spec: 1 sign, 4 exponent (bias 7), 3 mantissa
// bits, subnormals, no infinities, S.1111.111 the only NaN, so 0x7e = 448 is the largest. ----

/// The value of a finite e4m3fn code.
fn e4m3_decode(code: u8) -> f32 {
    let magnitude = code & 0x7f;
    assert!(magnitude != 0x7f, "NaN code {code:#04x}");
    let (exponent, mantissa) = (i32::from(magnitude >> 3), f32::from(magnitude & 7));
    let value = if exponent == 0 {
        mantissa * 2f32.powi(-9) // subnormal: 0.mmm × 2^-6
    } else {
        (8.0 + mantissa) * 2f32.powi(exponent - 10) // 1.mmm × 2^(e-7)
    };
    if code & 0x80 != 0 { -value } else { value }
}

/// The nearest e4m3fn code, ties to the even code, saturating at ±448.
fn e4m3_encode(x: f32) -> u8 {
    assert!(x.is_finite(), "{x}");
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    let a = x.abs();
    // The 127 non-negative finite values in code order are ascending.
    let table: Vec<f32> = (0..0x7f).map(e4m3_decode).collect();
    let above = table.partition_point(|&v| v < a);
    let code = if above == table.len() {
        0x7e // past 448: saturate
    } else if above == 0 || table[above] == a {
        above as u8
    } else {
        let (lo, hi) = (above - 1, above);
        match (a - table[lo]).partial_cmp(&(table[hi] - a)).unwrap() {
            std::cmp::Ordering::Less => lo as u8,
            std::cmp::Ordering::Greater => hi as u8,
            std::cmp::Ordering::Equal => (if lo % 2 == 0 { lo } else { hi }) as u8,
        }
    };
    sign | code
}

#[test]
fn e4m3_codec_matches_the_spec() {
    // Every finite code round-trips, and the spec's landmarks.
    for code in (0..=0xffu8).filter(|c| c & 0x7f != 0x7f) {
        let back = e4m3_encode(e4m3_decode(code));
        // ±0 both decode to 0.0 == -0.0; the sign is kept by the encoder anyway.
        assert_eq!(back, code, "{code:#04x}");
    }
    assert_eq!(e4m3_decode(0x38), 1.0);
    assert_eq!(e4m3_decode(0x7e), 448.0);
    assert_eq!(e4m3_decode(0x01), 2f32.powi(-9));
    assert_eq!(e4m3_decode(0x08), 2f32.powi(-6));
    // Halfway between 1 (0x38) and 1.125 (0x39): to the even 0x38; between 1.125 and 1.25: 0x3a.
    assert_eq!(e4m3_encode(1.0625), 0x38);
    assert_eq!(e4m3_encode(1.1875), 0x3a);
    assert_eq!(e4m3_encode(1.07), 0x39);
    assert_eq!(e4m3_encode(-1000.0), 0xfe);
    assert_eq!(e4m3_encode(2f32.powi(-11)), 0x00); // below half the smallest subnormal
}

/// A stored checkpoint type: how to encode an f32, and how a reader must decode it.
#[derive(Copy, Clone, Debug)]
enum Stored {
    F16,
    Bf16,
    F8,
}

impl Stored {
    fn dtype(self) -> Dtype {
        match self {
            Self::F16 => Dtype::F16,
            Self::Bf16 => Dtype::BF16,
            Self::F8 => Dtype::F8_E4M3,
        }
    }

    fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            // half rounds to nearest even, as torch's `.to(torch.float16/bfloat16)` does.
            Self::F16 => values
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                .collect(),
            Self::Bf16 => values
                .iter()
                .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
                .collect(),
            Self::F8 => values.iter().map(|&v| e4m3_encode(v)).collect(),
        }
    }

    fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Self::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            // bf16 is the top half of an f32.
            Self::Bf16 => bytes
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            Self::F8 => bytes.iter().map(|&b| e4m3_decode(b)).collect(),
        }
    }

    /// How `--plan` writes the stored type, and the type it exports by default.
    fn plan_names(self) -> (&'static str, &'static str) {
        match self {
            Self::F16 => ("f16", "f16"),
            Self::Bf16 => ("bf16", "bf16"),
            // ONNX Runtime computes in no fp8: bf16 holds every e4m3 value exactly.
            Self::F8 => ("f8e4m3", "bf16"),
        }
    }
}

/// How much the tiny-dev model may amplify a relative L2 perturbation of all its weights into
/// the relative L2 error of its output: the measured gain with 3x headroom.
///
/// Rounding every weight to nearest in a type with unit roundoff u (2^-11 f16, 2^-8 bf16,
/// 2^-4 e4m3) perturbs the weights by a relative L2 error `eps_w` of about 0.43 u, computed
/// exactly by `weight_error`: 2.1e-4 (f16), 1.7e-3 (bf16), 2.7e-2 (e4m3). The output error over
/// `eps_w`, measured with ONNX Runtime 1.31.1 on CPU, `--dtype f32`: 2.42 (f16), 2.24 (bf16),
/// 2.24 (e4m3). One gain over two decades of perturbation: the model responds linearly, so
/// ~2.5 `eps_w` is what the rounding explains, and 3 x 2.5 is the bound. It is tight enough to
/// fail if, say, the f16 model computed in bf16 (bf16 weights alone give 3.7e-3, 2.3x the f16
/// bound); that each weight is dequantized exactly is `dequantization_is_exact`'s job.
const GAIN_BOUND: f64 = 7.5;

/// The golden BFL tensors with every one converted to `stored`, and the same values decoded
/// back to f32 (the weights a correct reader must see).
fn convert(stored: Stored) -> (Vec<StoredTensor>, Vec<StoredTensor>) {
    let golden_tensors = read_tensors(&golden("flux-bfl.safetensors"));
    let mut converted = Vec::new();
    let mut dequantized = Vec::new();
    for t in golden_tensors {
        let bytes = stored.encode(&t.f32_values());
        dequantized.push(StoredTensor::from_f32(
            &t.name,
            t.shape.clone(),
            &stored.decode(&bytes),
        ));
        converted.push(StoredTensor {
            name: t.name,
            dtype: stored.dtype(),
            shape: t.shape,
            data: bytes,
        });
    }
    (converted, dequantized)
}

/// The relative L2 error of all `dequantized` weights, taken together, against the golden ones.
fn weight_error(dequantized: &[StoredTensor]) -> f64 {
    let golden_tensors = read_tensors(&golden("flux-bfl.safetensors"));
    let flat = |ts: &[StoredTensor]| -> Vec<f32> {
        ts.iter().flat_map(StoredTensor::f32_values).collect()
    };
    // Both sorted by name, so the values line up.
    fastflux::metrics::relative_l2(&flat(dequantized), &flat(&golden_tensors))
}

#[test]
fn comfyui_prefixed_checkpoint() {
    let dir = TempDir::new().unwrap();
    let mut tensors = read_tensors(&golden("flux-bfl.safetensors"));
    for t in &mut tensors {
        t.name = format!("{COMFY_PREFIX}{}", t.name);
    }
    let ckpt = dir.path().join("comfy.safetensors");
    write_tensors(&ckpt, &tensors);

    let plan = plan(&ckpt);
    assert!(
        plan.contains(&format!(
            "naming       Black Forest Labs (original), keys prefixed `{COMFY_PREFIX}`"
        )),
        "{plan}"
    );
    assert!(plan.contains("stored as    f32 (100 tensors"), "{plan}");
    assert!(!plan.contains("ignored"), "{plan}");

    let (model, _) = compile_to(&ckpt, dir.path(), "comfy", &[]);
    let expected = golden_reference("expected.safetensors");
    let err = fastflux::metrics::relative_l2(&run_golden(&model), &expected);
    // The bar for the f32 models compiled from the golden namings.
    assert!(err < 1e-5, "relative L2 error {err:e}");
}

/// Each stored type: `--plan` names it, the default export compiles, and the model compiled
/// with `--dtype f32` is within the rounding's bound of diffusers' output.
fn stored_type_compiles_and_computes(stored: Stored) {
    let dir = TempDir::new().unwrap();
    let (converted, dequantized) = convert(stored);
    let ckpt = dir.path().join("model.safetensors");
    write_tensors(&ckpt, &converted);

    let (stored_name, export_name) = stored.plan_names();
    let plan = plan(&ckpt);
    assert!(
        plan.contains("naming       Black Forest Labs (original)\n"),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("stored as    {stored_name} (100 tensors")),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("exported as  {export_name} ")),
        "{plan}"
    );

    // The default: weights and compute in the export type (not run: ONNX Runtime's CPU
    // provider lacks bf16 kernels; the golden tests cover running f16/bf16 exports).
    let (_, report) = compile_to(&ckpt, dir.path(), "default", &[]);
    assert!(
        report.contains(&format!(" of weights ({export_name})")),
        "{report}"
    );
    let (f32_model, report) = compile_to(&ckpt, dir.path(), "f32", &["--dtype", "f32"]);
    assert!(report.contains(" of weights (f32)"), "{report}");

    let expected = golden_reference("expected.safetensors");
    let err = fastflux::metrics::relative_l2(&run_golden(&f32_model), &expected);
    let eps_w = weight_error(&dequantized);
    eprintln!(
        "{stored:?}: weights {eps_w:e}, output {err:e} ({:.2} x)",
        err / eps_w
    );
    assert!(
        err < GAIN_BOUND * eps_w,
        "{stored:?}: relative L2 error {err:e}, over {GAIN_BOUND} x the weights' {eps_w:e}"
    );
    // The rounding must show at all: no error would mean the converted weights went unused.
    assert!(err > 0.0 && eps_w > 0.0);
}

#[test]
fn f16_checkpoint() {
    stored_type_compiles_and_computes(Stored::F16);
}

#[test]
fn bf16_checkpoint() {
    stored_type_compiles_and_computes(Stored::Bf16);
}

#[test]
fn f8_e4m3_checkpoint() {
    stored_type_compiles_and_computes(Stored::F8);
}

/// Dequantization is exact: a checkpoint stored as `stored`, compiled with `--dtype f32`, holds
/// the very weights of an f32 checkpoint made of the values this test's own decoder reads from
/// it. Their data files are byte for byte the same (same graph, same order, same values), so
/// their outputs agree too.
fn dequantization_is_exact(stored: Stored) {
    let dir = TempDir::new().unwrap();
    let (converted, dequantized) = convert(stored);
    let (quantized_ckpt, f32_ckpt) = (
        dir.path().join("q.safetensors"),
        dir.path().join("f.safetensors"),
    );
    write_tensors(&quantized_ckpt, &converted);
    write_tensors(&f32_ckpt, &dequantized);
    let (from_quantized, _) = compile_to(&quantized_ckpt, dir.path(), "q", &["--dtype", "f32"]);
    let (from_f32, _) = compile_to(&f32_ckpt, dir.path(), "f", &["--dtype", "f32"]);

    let data = |m: &Path| std::fs::read(format!("{}.data", m.display())).unwrap();
    assert!(
        data(&from_quantized) == data(&from_f32),
        "{stored:?}: the dequantized weights differ from the test's decoding"
    );
    let err = fastflux::metrics::relative_l2(&run_golden(&from_quantized), &run_golden(&from_f32));
    assert!(err <= 1e-6, "{stored:?}: outputs differ by {err:e}");
}

#[test]
fn f8_e4m3_dequantization_is_exact() {
    dequantization_is_exact(Stored::F8);
}

#[test]
fn f16_and_bf16_widening_is_exact() {
    dequantization_is_exact(Stored::F16);
    dequantization_is_exact(Stored::Bf16);
}
