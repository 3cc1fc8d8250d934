//! Defective diffusers folders: a tensor missing from shard and index, an index that promises
//! what its shard lacks, wrong shapes under diffusers names, a shard missing on disk, a
//! `config.json` of another class.

use super::scratch::*;
use crate::support::*;

/// diffusers naming: the tensor dropped from its shard and from the index, so the folder is
/// consistent but the model lacks `single_blocks.2.linear2.weight` under its diffusers name.
#[test]
fn diffusers_missing_tensor() {
    let s = Scratch::new();
    let folder = s.diffusers_copy();
    let key = "single_transformer_blocks.2.proj_out.weight";
    edit_shard(&folder, key, |tensors| tensors.retain(|t| t.name != key));
    let index_path = folder.join(INDEX);
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["weight_map"].as_object_mut().unwrap().remove(key);
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    let out = s.compile(&folder);
    assert_refused(
        &out,
        &[
            INDEX,
            &format!("tensor `{key}`"),
            "missing",
            "single_blocks.2.linear2.weight",
            "[64, 320]",
        ],
    );
    s.assert_nothing_written();
}

/// The index promises a tensor that its shard does not hold.
#[test]
fn diffusers_index_lists_a_tensor_its_shard_lacks() {
    let s = Scratch::new();
    let folder = s.diffusers_copy();
    let key = "transformer_blocks.1.attn.to_v.weight";
    let shard = edit_shard(&folder, key, |tensors| tensors.retain(|t| t.name != key));
    let out = s.compile(&folder);
    assert_refused(
        &out,
        &[&file_name(&shard), &format!("tensor `{key}`"), INDEX],
    );
    s.assert_nothing_written();
}

#[test]
fn diffusers_wrong_shape() {
    // A tensor diffusers stores as BFL does (only renamed), and one of the three projections
    // it splits BFL's fused `qkv` into: both must be named by their diffusers key and shard.
    for (key, columns, expected, found) in [
        (
            "single_transformer_blocks.2.proj_out.weight",
            319,
            "[64, 320]",
            "[64, 319]",
        ),
        (
            "transformer_blocks.1.attn.to_k.weight",
            63,
            "[64, 64]",
            "[64, 63]",
        ),
    ] {
        let s = Scratch::new();
        let folder = s.diffusers_copy();
        let shard = edit_shard(&folder, key, |tensors| drop_columns(tensors, key, columns));
        let out = s.compile(&folder);
        assert_refused(
            &out,
            &[
                &file_name(&shard),
                &format!("tensor `{key}`"),
                &format!("expected shape {expected}"),
                &format!("found {found}"),
            ],
        );
        s.assert_nothing_written();
    }
}

#[test]
fn diffusers_shard_missing_on_disk() {
    let s = Scratch::new();
    let folder = s.diffusers_copy();
    let shard = shard_of(&folder, "single_transformer_blocks.2.proj_out.weight");
    std::fs::remove_file(&shard).unwrap();
    // Given as the folder and as the index file: the same refusal.
    for given in [folder.clone(), folder.join(INDEX)] {
        let out = s.compile(&given);
        assert_refused(&out, &[&file_name(&shard), "No such file"]);
        s.assert_nothing_written();
    }
}

/// A `config.json` for another diffusers class: the config written beside the export would
/// claim a FLUX.1 transformer under that class's name, so the folder is refused.
#[test]
fn diffusers_config_of_another_class() {
    let s = Scratch::new();
    let folder = s.diffusers_copy();
    let path = folder.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["_class_name"] = "SD3Transformer2DModel".into();
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();

    let out = s.compile(&folder);
    assert_refused(
        &out,
        &[
            "config.json",
            "SD3Transformer2DModel",
            "FluxTransformer2DModel",
        ],
    );
    s.assert_nothing_written();
}
