//! The other namings and the scales: the kohya file rewritten in XLabs and original (BFL)
//! naming must fold to diffusers' kohya reference; scales add up and scale 0 is the base model.

use crate::check;
use crate::support::*;
use fastflux::checkpoint::lora::LoraSpec;
use fastflux::compile::{CompileOptions, Compiled, prepare};
use fastflux::ir::Op;
use std::collections::BTreeMap;

/// kohya's tiny-dev LoRA: rank 4, alpha 2. Files without alphas must carry alpha/rank in `up`.
const ALPHA_OVER_RANK: f32 = 0.5;

/// A matrix: shape and values.
type Matrix = (Vec<usize>, Vec<f32>);

/// Takes (down, up) of a kohya module out of `kohya`, `up` pre-scaled by alpha/rank when
/// `fold_alpha`.
fn pair(kohya: &mut Lora, module: &str, fold_alpha: bool) -> (Matrix, Matrix) {
    let down = kohya.take(&format!("lora_unet_{module}.lora_down.weight"));
    let mut up = kohya.take(&format!("lora_unet_{module}.lora_up.weight"));
    kohya.take(&format!("lora_unet_{module}.alpha"));
    if fold_alpha {
        up.data.iter_mut().for_each(|v| *v *= ALPHA_OVER_RANK);
    }
    ((down.shape, down.data), (up.shape, up.data))
}

/// Puts `(down, up)` under `prefix` + the two suffixes.
fn put(file: &mut Lora, prefix: &str, suffixes: [&str; 2], (down, up): (Matrix, Matrix)) {
    file.insert(&format!("{prefix}{}", suffixes[0]), down.0, down.1);
    file.insert(&format!("{prefix}{}", suffixes[1]), up.0, up.1);
}

#[test]
fn xlabs_and_original_naming_fold_like_kohya() {
    let mut kohya = Lora::read("lora-kohya.safetensors");
    let (mut xlabs, mut original) = (Lora::empty(), Lora::empty());
    let xl = [".down.weight", ".up.weight"];
    for i in 0..2 {
        let qkv = pair(&mut kohya, &format!("double_blocks_{i}_img_attn_qkv"), true);
        put(
            &mut xlabs,
            &format!("double_blocks.{i}.processor.qkv_lora1"),
            xl,
            qkv,
        );
        let proj = pair(
            &mut kohya,
            &format!("double_blocks_{i}_txt_attn_proj"),
            true,
        );
        put(
            &mut xlabs,
            &format!("double_blocks.{i}.processor.proj_lora2"),
            xl,
            proj,
        );
        // Original naming, with ComfyUI's prefix and lora_A/lora_B plus an alpha …
        let mlp = pair(&mut kohya, &format!("double_blocks_{i}_img_mlp_2"), false);
        let p = format!("diffusion_model.double_blocks.{i}.img_mlp.2");
        put(&mut original, &p, [".lora_A.weight", ".lora_B.weight"], mlp);
        original.insert(&format!("{p}.alpha"), vec![], vec![2.0]);
        // … and with a `transformer.` prefix and lora_down/lora_up, alpha folded in.
        let m = pair(&mut kohya, &format!("double_blocks_{i}_txt_mod_lin"), true);
        let p = format!("transformer.double_blocks.{i}.txt_mod.lin");
        put(
            &mut original,
            &p,
            [".lora_down.weight", ".lora_up.weight"],
            m,
        );
    }
    for i in 0..4 {
        let proj = pair(&mut kohya, &format!("single_blocks_{i}_linear2"), true);
        put(
            &mut xlabs,
            &format!("diffusion_model.single_blocks.{i}.processor.proj_lora"),
            xl,
            proj,
        );
        let (down, up) = pair(&mut kohya, &format!("single_blocks_{i}_linear1"), true);
        if i >= 2 {
            put(
                &mut original,
                &format!("single_blocks.{i}.linear1"),
                [".lora_A.weight", ".lora_B.weight"],
                (down, up),
            );
            continue;
        }
        // linear1's attention rows (0..3h) as XLabs' qkv_lora, its MLP rows (3h..7h) as
        // diffusers' proj_mlp: the two row ranges together are the kohya delta.
        let rank = down.0[0];
        let split = 3 * 64 * rank;
        let qkv_up = (vec![192, rank], up.1[..split].to_vec());
        let mlp_up = (vec![256, rank], up.1[split..].to_vec());
        put(
            &mut xlabs,
            &format!("single_blocks.{i}.processor.qkv_lora"),
            xl,
            (down.clone(), qkv_up),
        );
        let p = format!("transformer.single_transformer_blocks.{i}.proj_mlp");
        put(
            &mut original,
            &p,
            [".lora_A.weight", ".lora_B.weight"],
            (down, mlp_up),
        );
    }
    assert!(
        kohya.tensors.is_empty(),
        "not converted: {:?}",
        kohya.tensors.keys()
    );
    let dir = tempfile::tempdir().unwrap();
    let xlabs = xlabs.write(dir.path(), "xlabs.safetensors");
    let original = original.write(dir.path(), "original.safetensors");
    for (checkpoint, _) in CHECKPOINTS {
        let summary = check(
            checkpoint,
            &["--lora", &xlabs, "--lora", &original],
            "expected-lora-kohya.safetensors",
        );
        assert!(
            summary.contains("(XLabs): 10 deltas at scale 1 × alpha/rank 1"),
            "{summary}"
        );
        assert!(
            summary.contains("(diffusers/peft + original (BFL)): 8 deltas"),
            "{summary}"
        );
    }
}

#[test]
fn two_half_scales_fold_like_one_full_scale() {
    let lora = golden("lora-kohya.safetensors");
    let half = format!("{}:0.5", lora.display());
    check(
        "flux-bfl.safetensors",
        &["--lora", &half, "--lora", &half],
        "expected-lora-kohya.safetensors",
    );
    // And weight by weight: the same values to f32 rounding, on exactly the 16 targets.
    let spec = |scale| LoraSpec {
        path: lora.clone(),
        scale,
    };
    let base = weights(&prepare(&options(vec![])).unwrap());
    let halves = weights(&prepare(&options(vec![spec(0.5), spec(0.5)])).unwrap());
    let full = weights(&prepare(&options(vec![spec(1.0)])).unwrap());
    let mut changed = 0;
    for (name, w) in &full {
        let largest = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = w
            .iter()
            .zip(&halves[name])
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-6 * largest, "{name}: halves differ by {diff}");
        changed += usize::from(w != &base[name]);
    }
    assert_eq!(changed, 16);
}

#[test]
fn scale_zero_is_the_base_model_and_paths_may_hold_colons() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("st:run");
    std::fs::create_dir(&folder).unwrap();
    let copy = folder.join("lora.safetensors");
    std::fs::copy(golden("lora-kohya.safetensors"), &copy).unwrap();
    let copy = copy.to_str().unwrap();
    check(
        "flux-bfl.safetensors",
        &["--lora", &format!("{copy}:0")],
        "expected.safetensors",
    );
    check(
        "flux-bfl.safetensors",
        &["--lora", copy],
        "expected-lora-kohya.safetensors",
    );
}

#[test]
fn norm_out_linear_lands_on_the_final_modulation_with_its_halves_swapped() {
    // diffusers' own kohya conversion swaps the halves of `lora_B` when it renames
    // `final_layer.adaLN_modulation.1` to `norm_out.linear` (scale first there, shift first here).
    let down: Vec<f32> = (0..2 * 64).map(|i| (i as f32 * 0.37).sin() * 0.1).collect();
    let up: Vec<f32> = (0..128 * 2)
        .map(|i| (i as f32 * 0.11).cos() * 0.1)
        .collect();
    let swapped = [&up[128..], &up[..128]].concat();
    let dir = tempfile::tempdir().unwrap();
    let file = |module: &str, up: Vec<f32>, name: &str| {
        let mut lora = Lora::empty();
        lora.insert(
            &format!("{module}.lora_A.weight"),
            vec![2, 64],
            down.clone(),
        );
        lora.insert(&format!("{module}.lora_B.weight"), vec![128, 2], up);
        LoraSpec {
            path: lora.write(dir.path(), name).into(),
            scale: 1.0,
        }
    };
    let original = file("final_layer.adaLN_modulation.1", up, "o.safetensors");
    let diffusers = file("transformer.norm_out.linear", swapped, "d.safetensors");
    let name = "final_layer.adaLN_modulation.1.weight";
    let base = &weights(&prepare(&options(vec![])).unwrap())[name];
    let original = &weights(&prepare(&options(vec![original])).unwrap())[name];
    let diffusers = &weights(&prepare(&options(vec![diffusers])).unwrap())[name];
    assert_ne!(original, base);
    assert_eq!(original, diffusers);
}

fn options(loras: Vec<LoraSpec>) -> CompileOptions {
    CompileOptions {
        dtype: Some(fastflux::dtype::DType::F32),
        axes_dim: Some(vec![4, 6, 6]),
        loras,
        ..CompileOptions::new(golden("flux-bfl.safetensors"))
    }
}

/// Every weight as export writes it (deltas folded), by name.
fn weights(c: &Compiled) -> BTreeMap<String, Vec<f32>> {
    c.graph
        .graph
        .node_weights()
        .filter_map(|n| match &n.op {
            Op::Weight(w) => Some(w),
            _ => None,
        })
        .map(|w| {
            let mut bytes = Vec::new();
            w.write_bytes(&c.ckpt, &mut bytes).unwrap();
            let values = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (w.name.clone(), values)
        })
        .collect()
}
