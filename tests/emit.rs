//! `--emit-safetensors`: the BRLL-rewritten model written back as a checkpoint in the input's
//! naming. Compiling that checkpoint gives byte for byte the ONNX model that compiling its source
//! with the same fits gave; the file holds the fitted tensors and not the replaced branches', and
//! its header lists the replaced blocks.

mod support;

use std::path::{Path, PathBuf};
use support::*;

/// Compiles `source` with BRLL on double.1 and single.2 into `dir/a/m.onnx`, emitting
/// `dir/emitted.safetensors`; then compiles that into `dir/b/m.onnx`. Returns the emitted path.
fn compile_twice(dir: &Path, source: &Path, fit: &str) -> PathBuf {
    let emitted = dir.join("emitted.safetensors");
    for sub in ["a", "b"] {
        std::fs::create_dir(dir.join(sub)).unwrap();
    }
    let (a, b) = (dir.join("a/m.onnx"), dir.join("b/m.onnx"));
    let report = compile_ok(&[
        source.to_str().unwrap(),
        "--axes-dim",
        TINY_AXES,
        "--dtype",
        "f32",
        "--replace",
        "double.1,single.2",
        "--fit",
        fit,
        "--calib-samples",
        "4",
        "--calib-image-tokens",
        "64",
        "--calib-text-tokens",
        "16",
        "--emit-safetensors",
        emitted.to_str().unwrap(),
        "-o",
        a.to_str().unwrap(),
        "-q",
    ]);
    assert!(
        report.contains("blocks replaced: double_blocks.1, single_blocks.2"),
        "{report}"
    );
    compile_ok(&[
        emitted.to_str().unwrap(),
        "--axes-dim",
        TINY_AXES,
        "--dtype",
        "f32",
        "-o",
        b.to_str().unwrap(),
        "-q",
    ]);
    for file in ["m.onnx.data", "m.onnx"] {
        let (x, y) = (
            std::fs::read(dir.join("a").join(file)).unwrap(),
            std::fs::read(dir.join("b").join(file)).unwrap(),
        );
        assert!(
            x == y,
            "{file} differs: {} bytes from {}, {} from the emitted checkpoint",
            x.len(),
            source.display(),
            y.len()
        );
    }
    emitted
}

/// The header of a safetensors file, after checking the format's own reader accepts the file.
fn header(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    safetensors::SafeTensors::deserialize(&bytes).expect("a valid safetensors file");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + n) % 8, 0, "data section not 8-byte aligned");
    match serde_json::from_slice(&bytes[8..8 + n]).unwrap() {
        serde_json::Value::Object(map) => map,
        other => panic!("header is not an object: {other}"),
    }
}

fn metadata(header: &serde_json::Map<String, serde_json::Value>, key: &str) -> String {
    header["__metadata__"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no `{key}` in {:?}", header["__metadata__"]))
        .to_owned()
}

/// Every stored tensor the emitted file shares with its source has the source's type, shape
/// and bytes.
fn assert_copied_from(emitted: &Path, sources: &[PathBuf]) {
    let bytes = std::fs::read(emitted).unwrap();
    let emitted = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut copied = 0;
    for source in sources {
        let source_bytes = std::fs::read(source).unwrap();
        let source = safetensors::SafeTensors::deserialize(&source_bytes).unwrap();
        for (name, view) in source.tensors() {
            let Ok(copy) = emitted.tensor(&name) else {
                continue;
            };
            assert_eq!(copy.dtype(), view.dtype(), "{name}");
            assert_eq!(copy.shape(), view.shape(), "{name}");
            assert!(copy.data() == view.data(), "{name}: bytes differ");
            copied += 1;
        }
    }
    let fitted = emitted
        .names()
        .iter()
        .filter(|n| n.contains(".brll"))
        .count();
    assert_eq!(copied + fitted, emitted.len(), "tensors from nowhere");
}

#[test]
fn emitted_bfl_checkpoint_compiles_to_the_same_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let source = golden("flux-bfl.safetensors");
    let emitted = compile_twice(dir.path(), &source, "plain");

    let header = header(&emitted);
    assert_eq!(metadata(&header, "format"), "pt");
    assert_eq!(
        metadata(&header, "fastflux.brll"),
        r#"["double_blocks.1","single_blocks.2"]"#
    );
    assert_eq!(metadata(&header, "fastflux.brll.fit"), "plain");
    for gone in [
        "double_blocks.1.img_attn.qkv.weight",
        "double_blocks.1.txt_mlp.2.bias",
        "double_blocks.1.img_mod.lin.weight",
        "single_blocks.2.linear1.weight",
        "single_blocks.2.norm.key_norm.scale",
    ] {
        assert!(!header.contains_key(gone), "{gone} still emitted");
    }
    for kept in [
        "double_blocks.0.img_attn.qkv.weight",
        "single_blocks.1.linear1.weight",
    ] {
        assert!(header.contains_key(kept), "{kept} missing");
    }
    for (name, shape) in [
        ("double_blocks.1.brll.img.weight", vec![64, 64]),
        ("double_blocks.1.brll.img.bias", vec![64]),
        ("double_blocks.1.brll.txt.weight", vec![64, 64]),
        ("double_blocks.1.brll.txt.bias", vec![64]),
        ("single_blocks.2.brll.weight", vec![64, 64]),
        ("single_blocks.2.brll.bias", vec![64]),
    ] {
        let entry = &header[name];
        assert_eq!(entry["dtype"], "F32", "{name}");
        assert_eq!(entry["shape"], serde_json::json!(shape), "{name}");
    }
    assert!(!header.keys().any(|k| k.ends_with("cond_weight")));
    assert_copied_from(&emitted, &[source]);

    let plan = compile_ok(&[emitted.to_str().unwrap(), "--axes-dim", TINY_AXES, "--plan"]);
    assert!(
        plan.contains("replaced     double_blocks.1, single_blocks.2"),
        "{plan}"
    );
    assert!(
        plan.contains("blocks             2 double, 4 single"),
        "{plan}"
    );
}

#[test]
fn emitted_diffusers_checkpoint_compiles_to_the_same_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let emitted = compile_twice(dir.path(), &golden("diffusers"), "plain");
    let header = header(&emitted);
    assert_eq!(
        metadata(&header, "fastflux.brll"),
        r#"["double_blocks.1","single_blocks.2"]"#
    );
    for name in [
        "transformer_blocks.1.brll.img.weight",
        "transformer_blocks.1.brll.txt.bias",
        "single_transformer_blocks.2.brll.weight",
        "transformer_blocks.0.attn.to_q.weight",
        "norm_out.linear.weight",
    ] {
        assert!(header.contains_key(name), "{name} missing");
    }
    for gone in [
        "transformer_blocks.1.attn.to_q.weight",
        "transformer_blocks.1.ff_context.net.2.weight",
        "single_transformer_blocks.2.proj_mlp.weight",
    ] {
        assert!(!header.contains_key(gone), "{gone} still emitted");
    }
    let shards: Vec<PathBuf> = std::fs::read_dir(golden("diffusers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    assert_copied_from(&emitted, &shards);
}

#[test]
fn emitted_conditioned_fit_compiles_to_the_same_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let emitted = compile_twice(dir.path(), &golden("flux-bfl.safetensors"), "conditioned");
    let header = header(&emitted);
    assert_eq!(metadata(&header, "fastflux.brll.fit"), "conditioned");
    for name in [
        "double_blocks.1.brll.img.cond_weight",
        "double_blocks.1.brll.txt.cond_weight",
        "single_blocks.2.brll.cond_weight",
    ] {
        assert_eq!(header[name]["shape"], serde_json::json!([64, 64]), "{name}");
    }
}

#[test]
fn emitting_over_the_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("model.safetensors");
    std::fs::copy(golden("flux-bfl.safetensors"), &source).unwrap();
    let before = std::fs::read(&source).unwrap();
    let out = compile(&[
        source.to_str().unwrap(),
        "--axes-dim",
        TINY_AXES,
        "--emit-safetensors",
        source.to_str().unwrap(),
        "-o",
        dir.path().join("m.onnx").to_str().unwrap(),
    ]);
    let stderr = &out.stderr;
    assert!(!out.success);
    assert!(stderr.contains("would overwrite the input"), "{stderr}");
    assert_eq!(std::fs::read(&source).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "something was written: {names:?}");
}
