//! The diffusers `config.json` written beside every export, which optimum's `ORTFluxPipeline`
//! requires in `transformer/`: a diffusers folder's own config carried over; for a BFL single
//! file, the same keys inferred from the tensors; BRLL's replaced blocks listed under a private
//! key with the layer counts unchanged. The expected values are the golden folder's
//! `config.json`, written by diffusers' `save_pretrained`.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use support::*;

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Compiles `checkpoint` to `dir/transformer/model.onnx` with `extra` flags; returns the
/// `config.json` written beside it.
fn compile_config(checkpoint: &Path, dir: &Path, extra: &[&str]) -> Value {
    let folder = dir.join("transformer");
    std::fs::create_dir(&folder).unwrap();
    let out = folder.join("model.onnx");
    let mut args = vec![
        checkpoint.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--axes-dim",
        TINY_AXES,
        "-q",
    ];
    args.extend(extra);
    compile_ok(&args);
    assert_eq!(
        listing(&folder),
        ["config.json", "model.onnx", "model.onnx.data"]
            .map(str::to_owned)
            .into(),
        "what the transformer folder holds"
    );
    read_json(&folder.join("config.json"))
}

#[test]
fn a_diffusers_folder_export_carries_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = compile_config(&golden("diffusers"), dir.path(), &[]);
    assert_eq!(config, read_json(&golden("diffusers/config.json")));
}

#[test]
fn a_bfl_file_export_infers_the_config_diffusers_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let config = compile_config(&golden("flux-bfl.safetensors"), dir.path(), &[]);
    let mut expected = read_json(&golden("diffusers/config.json"));
    let map = expected.as_object_mut().unwrap();
    // Who wrote the file, not what the model is: a single file has no diffusers version.
    map.remove("_diffusers_version");
    // diffusers' `null` means "as many as in_channels"; inferred, the count is written.
    assert_eq!(map["out_channels"], Value::Null);
    map.insert("out_channels".into(), map["in_channels"].clone());
    assert_eq!(config, expected);
}

#[test]
fn a_pruned_export_keeps_the_layer_counts_and_lists_the_replaced_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = vec!["--replace", "double.1,single.2"];
    flags.extend(CALIBRATION_FLAGS);
    let config = compile_config(&golden("diffusers"), dir.path(), &flags);
    let golden_config = read_json(&golden("diffusers/config.json"));
    for key in ["num_layers", "num_single_layers"] {
        assert_eq!(config[key], golden_config[key], "{key}");
    }
    assert_eq!(
        config["_fastflux_replaced_blocks"],
        json!(["double_blocks.1", "single_blocks.2"])
    );
}
