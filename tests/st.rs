//! Sandwich training end to end through `fastflux-compile`: zero steps change nothing, training
//! lowers the exit loss, the trained model is reproducible, and its adapters, saved as a LoRA
//! file and folded into the emitted checkpoint with `--lora`, give the same ONNX model byte for
//! byte. Training that raises the loss is undone. Bad flags are refused with a clear error. The
//! same inputs compiled in two folders give the same bytes.

mod support;

use std::path::{Path, PathBuf};
use support::*;

/// The tiny-dev BFL checkpoint, f32, double.1 replaced, a small synthetic calibration set.
fn args(out: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut flags = vec![
        "--replace",
        "double.1",
        "--calib-samples",
        "8",
        "--calib-image-tokens",
        "64",
        "--calib-text-tokens",
        "16",
    ];
    flags.extend_from_slice(extra);
    golden_f32_args("flux-bfl.safetensors", out, &flags)
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_same_model(a: &Path, b: &Path, what: &str) {
    for suffix in ["", ".data"] {
        let (x, y) = (
            a.with_extension(format!("onnx{suffix}")),
            b.with_extension(format!("onnx{suffix}")),
        );
        assert!(
            bytes(&x) == bytes(&y),
            "{what}: {} and {} differ",
            x.display(),
            y.display()
        );
    }
}

/// `dir/sub/m.onnx`, its folder made. Models that are compared byte for byte share the file
/// name, since the graph names its data file.
fn model_in(dir: &Path, sub: &str) -> PathBuf {
    std::fs::create_dir(dir.join(sub)).unwrap();
    dir.join(sub).join("m.onnx")
}

#[test]
fn zero_steps_give_plain_brll_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, zero) = (model_in(dir.path(), "plain"), model_in(dir.path(), "zero"));
    compile_ok(&args(&plain, &[]));
    compile_ok(&args(&zero, &["--st-steps", "0"]));
    assert_same_model(&plain, &zero, "--st-steps 0 against plain BRLL");
}

#[test]
fn trained_adapters_fold_like_a_lora_of_the_emitted_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (st, again, re) = (model_in(d, "st"), model_in(d, "again"), model_in(d, "re"));
    let (lora, emitted) = (d.join("st.safetensors"), d.join("emitted.safetensors"));
    let train = [
        "--st-steps",
        "20",
        "--st-batch",
        "4",
        "--st-save",
        lora.to_str().unwrap(),
        "--emit-safetensors",
        emitted.to_str().unwrap(),
    ];
    let report = compile_ok(&args(&st, &train));
    assert!(report.contains("ST: 1 sandwiches trained"), "{report}");
    let losses = report
        .lines()
        .find(|l| l.contains("exit loss"))
        .unwrap_or_else(|| panic!("no loss line:\n{report}"));
    let numbers: Vec<f64> = losses
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        numbers[1] < numbers[0],
        "the exit loss did not fall: {losses}"
    );
    // Every adapter of the sandwich `double_blocks.0 [double_blocks.1] single_blocks.0` was
    // trained: 8 linears of the double neighbour and 2 of the single one, each B moved off
    // its zero start.
    let saved = read_tensors(&lora);
    let ups: Vec<_> = saved
        .iter()
        .filter(|t| t.name.ends_with(".lora_B.weight"))
        .collect();
    for up in &ups {
        assert!(
            up.f32_values().iter().any(|&v| v != 0.0),
            "`{}` is zero after training",
            up.name
        );
    }
    let names: Vec<&str> = ups.iter().map(|t| t.name.as_str()).collect();
    let in_block = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    assert_eq!(
        (in_block("double_blocks.0."), in_block("single_blocks.0.")),
        (8, 2),
        "{names:?}"
    );
    assert_eq!(ups.len(), 10, "{names:?}");

    // The same command again: the same bytes (seeded initialisation and batch order).
    std::fs::remove_file(&lora).unwrap();
    std::fs::remove_file(&emitted).unwrap();
    compile_ok(&args(&again, &train));
    assert_same_model(&st, &again, "the same ST command twice");

    // The emitted checkpoint (the trained fitted weights, untouched neighbours) plus the
    // saved adapters as --lora compiles to the ST run's model.
    let mut recompile = vec![
        emitted.clone().into_os_string(),
        "-o".into(),
        re.clone().into(),
    ];
    for flag in ["--dtype", "f32", "-q", "--axes-dim", TINY_AXES, "--lora"] {
        recompile.push(flag.into());
    }
    recompile.push(lora.clone().into());
    compile_ok(&recompile);
    assert_same_model(&st, &re, "the ST run against emitted + --lora");

    // Training changed the model: it is not plain BRLL.
    let plain = model_in(d, "plain");
    compile_ok(&args(&plain, &[]));
    assert!(bytes(&plain.with_extension("onnx.data")) != bytes(&st.with_extension("onnx.data")));
}

#[test]
fn training_that_raises_the_loss_keeps_the_brll_fit() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, raised) = (
        model_in(dir.path(), "plain"),
        model_in(dir.path(), "raised"),
    );
    compile_ok(&args(&plain, &[]));
    // A learning rate of 50 overshoots on tiny-dev (the loss ends ~57x higher).
    let report = compile_ok(&args(
        &raised,
        &["--st-steps", "5", "--st-batch", "4", "--st-lr", "50"],
    ));
    assert!(
        report.contains("training raised the loss") && report.contains("keeps its BRLL fit"),
        "{report}"
    );
    let data = |p: &Path| bytes(&p.with_extension("onnx.data"));
    assert!(
        data(&plain) == data(&raised),
        "a reverted sandwich changed the weights"
    );
}

#[test]
fn unsaved_adapters_leave_nothing_beside_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    compile_ok(&args(&out, &["--st-steps", "5", "--st-batch", "4"]));
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["config.json", "m.onnx", "m.onnx.data"]);
}

#[test]
fn refuses_what_cannot_train() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    let no_blocks = golden_f32_args("flux-bfl.safetensors", &out, &["--st-steps", "5"]);
    let err = compile_err(&no_blocks, &out);
    assert!(
        err.contains("--st-steps") && err.contains("--replace"),
        "{err}"
    );

    let none_chosen = golden_f32_args(
        "flux-bfl.safetensors",
        &out,
        &["--prune", "0.01", "--st-steps", "5", "--calib-samples", "4"],
    );
    let err = compile_err(&none_chosen, &out);
    assert!(err.contains("no block is replaced"), "{err}");

    let err = compile_err(&args(&out, &["--st-steps", "5", "--st-rank", "65"]), &out);
    assert!(
        err.contains("--st-rank 65") && err.contains("at most 64"),
        "{err}"
    );

    let err = compile_err(&args(&out, &["--st-steps", "5", "--st-batch", "9"]), &out);
    assert!(
        err.contains("8 samples") && err.contains("--st-batch 9"),
        "{err}"
    );

    // Rectified Adam's first 4 steps move nothing: a run that short is refused, not a no-op.
    let err = compile_err(&args(&out, &["--st-steps", "4"]), &out);
    assert!(
        err.contains("--st-steps 4") && err.contains("at least 5"),
        "{err}"
    );
}

/// The exported model names its folded LoRA files by name and content, and sandwich training's
/// adapters like one (saved) or by their options (unsaved), never by a path: the same inputs,
/// copied into two different folders and compiled there, give the same bytes.
#[test]
fn the_same_inputs_compile_to_the_same_bytes_in_any_folder() {
    let dir = tempfile::tempdir().unwrap();
    // The golden kohya LoRA without its adapters of double.1, which BRLL replaces.
    let mut kohya = Lora::read("lora-kohya.safetensors");
    kohya
        .tensors
        .retain(|key, _| !key.starts_with("lora_unet_double_blocks_1_"));
    let mut models = Vec::new();
    for folder in ["first", "second/deeper"] {
        let here = dir.path().join(folder);
        std::fs::create_dir_all(&here).unwrap();
        std::fs::copy(
            golden("flux-bfl.safetensors"),
            here.join("flux-bfl.safetensors"),
        )
        .unwrap();
        kohya.write(&here, "lora-kohya.safetensors");
        let (model, lora, adapters) = (
            here.join("m.onnx"),
            here.join("lora-kohya.safetensors"),
            here.join("st.safetensors"),
        );
        let saved = [
            "--st-steps",
            "5",
            "--st-batch",
            "4",
            "--st-save",
            adapters.to_str().unwrap(),
            "--lora",
            lora.to_str().unwrap(),
        ];
        let mut command = args(&model, &saved);
        command[0] = here.join("flux-bfl.safetensors").into();
        compile_ok(&command);
        let text = String::from_utf8_lossy(&bytes(&model)).into_owned();
        assert!(
            text.contains("lora-kohya.safetensors@sha256:")
                && text.contains("st.safetensors@sha256:"),
            "the metadata does not name the LoRA files by content"
        );
        assert!(
            !text.contains(dir.path().to_str().unwrap()),
            "the model records a path"
        );
        // Unsaved adapters: labelled by the training options.
        let unsaved = here.join("unsaved.onnx");
        let mut command = args(&unsaved, &["--st-steps", "5", "--st-batch", "4"]);
        command[0] = here.join("flux-bfl.safetensors").into();
        compile_ok(&command);
        let text = String::from_utf8_lossy(&bytes(&unsaved)).into_owned();
        assert!(
            text.contains(
                "sandwich-training(steps=5,rank=16,lr=0.064,batch=4,entry=pruned,seed=0):1"
            ),
            "the metadata does not name the training by its options"
        );
        models.push((model, unsaved));
    }
    assert_same_model(
        &models[0].0,
        &models[1].0,
        "--lora and --st-save, two folders",
    );
    assert_same_model(&models[0].1, &models[1].1, "unsaved ST, two folders");
}
