//! LoRA folding (issue 4) against diffusers' own outputs for tiny-dev with a LoRA fused in, in
//! ONNX Runtime: the kohya and the diffusers/peft file, from both checkpoint namings; the other
//! namings (XLabs, original) rebuilt from the kohya file; scales; and every bad input the issue
//! lists, each failing with a message that names the culprit and leaving no files behind.

#[path = "lora/bad_input.rs"]
mod bad_input;
#[path = "lora/formats.rs"]
mod formats;
#[path = "lora/support.rs"]
mod support;

use support::*;

#[test]
fn kohya_lora_from_the_bfl_file_matches_diffusers() {
    let lora = golden("lora-kohya.safetensors");
    let summary = check(
        "flux-bfl.safetensors",
        &["--lora", lora.to_str().unwrap()],
        "expected-lora-kohya.safetensors",
    );
    // The summary says how many deltas, into which blocks, at what scale.
    assert!(summary.contains("16 deltas folded"), "{summary}");
    assert!(
        summary.contains("(kohya): 16 deltas at scale 1 × alpha/rank 0.5"),
        "{summary}"
    );
    assert!(
        summary.contains("into double_blocks.0-1 (4 each), single_blocks.0-3 (2 each)"),
        "{summary}"
    );
}

#[test]
fn kohya_lora_from_the_diffusers_folder_matches_diffusers() {
    let lora = golden("lora-kohya.safetensors");
    check(
        "diffusers",
        &["--lora", lora.to_str().unwrap()],
        "expected-lora-kohya.safetensors",
    );
}

#[test]
fn peft_lora_from_the_bfl_file_matches_diffusers() {
    // Split projections (to_q/to_k/to_v, proj_mlp) land on row ranges of the fused weights.
    let lora = golden("lora-peft.safetensors");
    let summary = check(
        "flux-bfl.safetensors",
        &["--lora", lora.to_str().unwrap()],
        "expected-lora-peft.safetensors",
    );
    assert!(
        summary.contains("(diffusers/peft): 43 deltas at scale 1 × alpha/rank 0.5"),
        "{summary}"
    );
}

#[test]
fn peft_lora_from_the_diffusers_folder_matches_diffusers() {
    let lora = golden("lora-peft.safetensors");
    check(
        "diffusers",
        &["--lora", lora.to_str().unwrap()],
        "expected-lora-peft.safetensors",
    );
}

#[test]
fn the_lora_changes_the_output() {
    // Guards the tests above against a LoRA that is silently ignored: without it, the model is
    // far from the LoRA references.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("base.onnx");
    compile_ok("flux-bfl.safetensors", &out, &[]);
    let latent = run(&out);
    for expected in [
        "expected-lora-kohya.safetensors",
        "expected-lora-peft.safetensors",
    ] {
        let error = fastflux::metrics::relative_l2(&latent, &reference(expected));
        assert!(error > 0.01, "{expected}: base model within {error:.3e}");
    }
}
