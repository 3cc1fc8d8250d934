//! Checkpoints of another FLUX generation: a FLUX.2 transformer, in each form fastflux reads
//! (BFL, ComfyUI-prefixed BFL, diffusers single-file and sharded), is refused by name, with the
//! tensor that told, instead of as a FLUX.1 model with missing tensors; a file holding both
//! generations' tensors is refused naming one of each.

use super::scratch::*;
use crate::support::*;
use std::path::Path;

/// The refusal of a FLUX.2 checkpoint given as `given`, told by `tensor`: it names the input
/// (a sharded folder by its index, as every error about it does) and the generation, says what is supported, does not read as a FLUX.1 model with missing
/// tensors, and writes nothing.
fn assert_flux2_refused(s: &Scratch, given: &Path, tensor: &str) {
    let out = s.compile(given);
    let named = match given.join(INDEX).is_file() {
        true => given.join(INDEX),
        false => given.to_owned(),
    };
    assert_refused(
        &out,
        &[
            &format!("{}: a FLUX.2 transformer", named.display()),
            &format!("(found `{tensor}`)"),
            "fastflux compiles FLUX.1 only for now: FLUX.2 support is issue 19",
        ],
    );
    assert!(!out.stderr.contains("missing"), "{}", out.stderr);
    s.assert_nothing_written();
}

#[test]
fn flux2_bfl_is_refused() {
    let s = Scratch::new();
    let golden = golden_flux2("flux2-bfl.safetensors");
    assert_flux2_refused(&s, &golden, "double_stream_modulation_img.lin.weight");
    // The trained toy: no guidance embedding, one double block.
    let toy = toy_flux2("flux2-bfl.safetensors");
    assert_flux2_refused(&s, &toy, "double_stream_modulation_img.lin.weight");
    // `--plan` opens the checkpoint too, and writes nothing anyway.
    let plan = compile(&[golden.as_os_str(), "--plan".as_ref()]);
    assert_refused(&plan, &["a FLUX.2 transformer", "issue 19"]);
}

#[test]
fn flux2_with_comfyui_prefix_is_refused() {
    let s = Scratch::new();
    let mut tensors = read_tensors(&golden_flux2("flux2-bfl.safetensors"));
    for t in &mut tensors {
        t.name = format!("model.diffusion_model.{}", t.name);
    }
    let path = s.path("comfyui.safetensors");
    write_tensors(&path, &tensors);
    let key = "model.diffusion_model.double_stream_modulation_img.lin.weight";
    assert_flux2_refused(&s, &path, key);
}

#[test]
fn flux2_diffusers_folder_is_refused() {
    let s = Scratch::new();
    let key = "double_stream_modulation_img.linear.weight";
    assert_flux2_refused(&s, &golden_flux2("diffusers"), key);
}

/// The golden diffusers weights split into two shards with an index, given as the folder and as
/// the index file.
#[test]
fn flux2_sharded_diffusers_folder_is_refused() {
    let s = Scratch::new();
    let folder = s.path("sharded");
    std::fs::create_dir(&folder).unwrap();
    let golden = golden_flux2("diffusers");
    std::fs::copy(golden.join("config.json"), folder.join("config.json")).unwrap();
    let tensors = read_tensors(&golden.join("diffusion_pytorch_model.safetensors"));
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [first, second].into_iter().enumerate() {
        let shard = format!("diffusion_pytorch_model-0000{}-of-00002.safetensors", i + 1);
        write_tensors(&folder.join(&shard), part);
        for t in part {
            weight_map.insert(t.name.clone(), shard.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(folder.join(INDEX), serde_json::to_vec(&index).unwrap()).unwrap();
    let key = "double_stream_modulation_img.linear.weight";
    assert_flux2_refused(&s, &folder, key);
    assert_flux2_refused(&s, &folder.join(INDEX), key);
}

/// The golden FLUX.1 file with one of FLUX.2's shared modulations added: two models' tensors.
#[test]
fn a_file_with_both_generations_is_refused() {
    let s = Scratch::new();
    let flux2 = read_tensors(&golden_flux2("flux2-bfl.safetensors"));
    let key = "double_stream_modulation_img.lin.weight";
    let extra = flux2.into_iter().find(|t| t.name == key).unwrap();
    let path = s.bfl_variant("mixed.safetensors", |tensors| {
        tensors.push(extra);
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
    });
    let out = s.compile(&path);
    assert_refused(
        &out,
        &[
            "mixed.safetensors: holds tensors of two FLUX generations",
            "`double_blocks.0.img_mod.lin.bias` is FLUX.1's",
            &format!("`{key}` is FLUX.2's"),
        ],
    );
    s.assert_nothing_written();
}
