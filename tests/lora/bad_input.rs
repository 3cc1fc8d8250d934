//! Bad LoRA input, one test per case of the issue, each built from a golden LoRA file: keys that
//! match no weight, a missing half, mismatched rank or shape, a delta for a weight BRLL removed,
//! a non-finite folded result. Every failure names the culprit and leaves no output behind.
//! Also: LoRA pairs on fitted BRLL nodes fold by the node's weight name.

use crate::check;
use crate::support::*;
use fastflux::checkpoint::lora::LoraSpec;
use fastflux::compile::{CompileOptions, prepare};
use fastflux::dtype::DType;
use fastflux::ir::{BlockId, Op, Weight, WeightData};
use fastflux::passes::lora;
use std::sync::Arc;

const QKV: &str = "lora_unet_double_blocks_0_img_attn_qkv";

/// Writes `lora` into a fresh folder and compiles the BFL file with it; returns stderr.
fn fails_with(lora: &Lora, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = lora.write(dir.path(), "bad.safetensors");
    let mut args = vec!["--lora", &path];
    args.extend(extra);
    let out = dir.path().join("m.onnx");
    let err = compile_err(&golden_f32_args("flux-bfl.safetensors", &out, &args), &out);
    println!("{err}");
    assert!(
        err.contains("bad.safetensors"),
        "the file is not named: {err}"
    );
    err
}

#[test]
fn keys_that_match_no_weight_are_listed_unless_allowed() {
    let mut kohya = Lora::read("lora-kohya.safetensors");
    let (down, up) = (vec![4, 64], vec![192, 4]);
    let block7 = "lora_unet_double_blocks_7_img_attn_qkv";
    kohya.insert(
        &format!("{block7}.lora_down.weight"),
        down.clone(),
        vec![0.0; 256],
    );
    kohya.insert(&format!("{block7}.lora_up.weight"), up, vec![0.0; 768]);
    let te = "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight";
    kohya.insert(te, down, vec![0.0; 256]);
    let err = fails_with(&kohya, &[]);
    assert!(err.contains("3 LoRA keys match no weight"), "{err}");
    assert!(
        err.contains(&format!("`{block7}.lora_up.weight`")) && err.contains(te),
        "{err}"
    );
    assert!(err.contains("--lora-allow-unmatched"), "{err}");

    // Allowed: a warning with the count, and the rest folds as diffusers folds it.
    let dir = tempfile::tempdir().unwrap();
    let path = kohya.write(dir.path(), "extra.safetensors");
    let summary = check(
        "flux-bfl.safetensors",
        &["--lora", &path, "--lora-allow-unmatched"],
        "expected-lora-kohya.safetensors",
    );
    assert!(summary.contains("warning: skipped 3 keys"), "{summary}");
}

#[test]
fn a_missing_half_is_named() {
    let mut kohya = Lora::read("lora-kohya.safetensors");
    kohya.take("lora_unet_single_blocks_2_linear2.lora_up.weight");
    let err = fails_with(&kohya, &[]);
    assert!(
        err.contains("`lora_unet_single_blocks_2_linear2.lora_down.weight`: has no other half")
            && err.contains("`lora_unet_single_blocks_2_linear2.lora_up.weight` is missing"),
        "{err}"
    );
}

#[test]
fn a_pair_with_mismatched_rank_is_named() {
    let mut kohya = Lora::read("lora-kohya.safetensors");
    let down = kohya.get_mut("lora_unet_double_blocks_1_img_mlp_2.lora_down.weight");
    down.shape = vec![3, 256];
    down.data.truncate(3 * 256);
    let err = fails_with(&kohya, &[]);
    assert!(
        err.contains("`lora_unet_double_blocks_1_img_mlp_2.lora_up.weight`: has rank 4")
            && err.contains("has rank 3"),
        "{err}"
    );
}

#[test]
fn a_pair_with_the_wrong_shape_is_named() {
    let mut kohya = Lora::read("lora-kohya.safetensors");
    let up = kohya.get_mut("lora_unet_double_blocks_0_txt_mod_lin.lora_up.weight");
    up.shape = vec![383, 4];
    up.data.truncate(383 * 4);
    let err = fails_with(&kohya, &[]);
    assert!(
        err.contains("`lora_unet_double_blocks_0_txt_mod_lin.lora_up.weight`: expected [384, 4]")
            && err.contains("found [383, 4]"),
        "{err}"
    );

    let mut kohya = Lora::read("lora-kohya.safetensors");
    let down = kohya.get_mut(&format!("{QKV}.lora_down.weight"));
    down.shape = vec![4, 63];
    down.data.truncate(4 * 63);
    let err = fails_with(&kohya, &[]);
    assert!(
        err.contains(&format!("`{QKV}.lora_down.weight`: expected [4, 64]"))
            && err.contains("found [4, 63]"),
        "{err}"
    );
}

#[test]
fn a_rank_that_disagrees_with_the_header_is_named() {
    let mut peft = Lora::read("lora-peft.safetensors");
    let metadata = peft.metadata.as_mut().unwrap();
    let adapter = metadata.get_mut("lora_adapter_metadata").unwrap();
    assert!(adapter.contains("\"transformer.r\": 8"));
    *adapter = adapter.replace("\"transformer.r\": 8", "\"transformer.r\": 4");
    let err = fails_with(&peft, &[]);
    assert!(
        err.contains(
            ".lora_A.weight`: has rank 8, but the header's `lora_adapter_metadata` gives rank 4"
        ),
        "{err}"
    );
}

#[test]
fn a_non_finite_folded_weight_is_named() {
    // Huge factors overflow f32 …
    let mut kohya = Lora::read("lora-kohya.safetensors");
    kohya.get_mut(&format!("{QKV}.lora_up.weight")).data[0] = f32::MAX;
    kohya.get_mut(&format!("{QKV}.lora_down.weight")).data[..64].fill(10.0);
    let err = fails_with(&kohya, &[]);
    assert!(
        err.contains("into weight `double_blocks.0.img_attn.qkv.weight`, gives inf at [0, 0]"),
        "{err}"
    );
    // … and a NaN poisons its row.
    let mut kohya = Lora::read("lora-kohya.safetensors");
    kohya
        .get_mut("lora_unet_single_blocks_3_linear2.lora_down.weight")
        .data[5] = f32::NAN;
    let err = fails_with(&kohya, &[]);
    assert!(
        err.contains("into weight `single_blocks.3.linear2.weight`, gives NaN"),
        "{err}"
    );
}

fn options() -> CompileOptions {
    CompileOptions {
        dtype: Some(DType::F32),
        axes_dim: Some(vec![4, 6, 6]),
        ..CompileOptions::new(golden("flux-bfl.safetensors"))
    }
}

/// BRLL is another pass; its effect is simulated here: double block 1's weights leave the
/// graph and a fitted node `double_blocks.1.brll.img.weight` arrives.
fn graph_with_block_1_replaced() -> fastflux::compile::Compiled {
    let mut c = prepare(&options()).unwrap();
    let g = &mut c.graph.graph;
    let replaced: Vec<_> = g
        .node_indices()
        .filter(|&n| matches!(&g[n].op, Op::Weight(w) if w.name.starts_with("double_blocks.1.")))
        .collect();
    for n in replaced {
        g.remove_node(n);
    }
    let fitted = Weight::new(
        "double_blocks.1.brll.img.weight",
        vec![64, 64],
        DType::F32,
        WeightData::Owned(Arc::new(vec![0.0; 64 * 64])),
    );
    let name = fitted.name.clone();
    c.graph
        .add(Op::Weight(fitted), name, Some(BlockId::Double(1)), &[])
        .unwrap();
    c
}

#[test]
fn a_delta_for_a_weight_brll_removed_names_the_block() {
    let mut c = graph_with_block_1_replaced();
    let spec = LoraSpec {
        path: golden("lora-kohya.safetensors"),
        scale: 1.0,
    };
    let err = lora::run(&mut c.graph, &c.ckpt.config, &[spec], false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lora-kohya.safetensors: tensor `lora_unet_double_blocks_1_")
            && err.contains("was removed by BRLL (block double_blocks.1 replaced"),
        "{err}"
    );
}

#[test]
fn lora_on_a_fitted_node_folds_by_its_weight_name() {
    let mut c = graph_with_block_1_replaced();
    // Rank 1 on the zero-initialised node: the folded weight is scale · up ⊗ down.
    let down: Vec<f32> = (0..64).map(|j| j as f32 / 64.0).collect();
    let up: Vec<f32> = (0..64).map(|i| 1.0 - i as f32 / 32.0).collect();
    let mut file = Lora::empty();
    file.insert(
        "double_blocks.1.brll.img.lora_A.weight",
        vec![1, 64],
        down.clone(),
    );
    file.insert(
        "double_blocks.1.brll.img.lora_B.weight",
        vec![64, 1],
        up.clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = LoraSpec {
        path: file.write(dir.path(), "fitted.safetensors").into(),
        scale: 0.25,
    };
    let report = lora::run(&mut c.graph, &c.ckpt.config, &[spec], false)
        .unwrap()
        .unwrap();
    assert!(
        report.to_string().contains("into double_blocks.1 (1)"),
        "{report}"
    );
    let node = c.graph.graph.node_weights().find_map(|n| match &n.op {
        Op::Weight(w) if w.name == "double_blocks.1.brll.img.weight" => Some(w),
        _ => None,
    });
    let mut bytes = Vec::new();
    node.unwrap().write_bytes(&c.ckpt, &mut bytes).unwrap();
    for (at, b) in bytes.chunks_exact(4).enumerate() {
        let (i, j) = (at / 64, at % 64);
        let value = f32::from_le_bytes(b.try_into().unwrap());
        assert!(
            (value - 0.25 * up[i] * down[j]).abs() < 1e-7,
            "[{i}, {j}]: {value}"
        );
    }
}
