//! Command-line flags that do not fit the model: `--axes-dim` missing for a head width other
//! than 128, or not adding up to the head width in even widths; an execution provider that the
//! loaded ONNX Runtime lacks.

use super::scratch::*;
use crate::support::*;

#[test]
fn axes_dim_required_for_a_head_width_other_than_128() {
    let s = Scratch::new();
    // The BFL file has no config.json beside it to give the axes.
    let out = compile(&[
        golden("flux-bfl.safetensors").as_os_str(),
        "-o".as_ref(),
        s.output().as_os_str(),
        "-q".as_ref(),
    ]);
    assert_refused(
        &out,
        &["flux-bfl.safetensors", "head width is 16", "--axes-dim"],
    );
    s.assert_nothing_written();
}

#[test]
fn axes_dim_that_does_not_fit_the_head() {
    let s = Scratch::new();
    // Sums to 14, not 16; and sums to 16 with odd widths (RoPE rotates pairs).
    for (axes, shown) in [("4,6,4", "[4, 6, 4]"), ("5,5,6", "[5, 5, 6]")] {
        let out = compile(&[
            golden("flux-bfl.safetensors").as_os_str(),
            "-o".as_ref(),
            s.output().as_os_str(),
            "--axes-dim".as_ref(),
            axes.as_ref(),
            "-q".as_ref(),
        ]);
        assert_refused(&out, &[shown, "head width 16", "even"]);
        s.assert_nothing_written();
    }
}

#[test]
fn cuda_execution_provider_absent_from_the_loaded_onnx_runtime() {
    // The pinned CPU wheel has no CUDA provider: asking for it is an error, not a silent
    // fallback to the CPU, and `auto` (the default) calibrates on the CPU.
    let s = Scratch::new();
    let args = |provider: &str| {
        [
            golden("flux-bfl.safetensors").into_os_string(),
            "--axes-dim".into(),
            TINY_AXES.into(),
            "-o".into(),
            s.output().into_os_string(),
            "--replace".into(),
            "double.1".into(),
            "--execution-provider".into(),
            provider.into(),
            "-q".into(),
        ]
    };
    let out = compile(&args("cuda"));
    assert_refused(&out, &["CUDA execution provider", "not enabled"]);
    s.assert_nothing_written();
    compile_ok(&args("auto"));
}
