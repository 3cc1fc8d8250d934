//! Each generation's naming table against the golden files written by diffusers and Black
//! Forest Labs' code: at the configuration a file's `config.json` (or `meta.json`) states, the
//! table's parameters are exactly the file's tensors, names and shapes, in BFL naming and in
//! diffusers naming. The expected lists come from the files, never from the table.

mod support;

use fastflux::generation::table::{Feature, NamingTable, Scope, Sizes, Width};
use fastflux::generation::{flux1, flux2};
use serde_json::Value;
use std::path::Path;
use support::*;

/// The sizes a diffusers `config.json` states, with the constructor's defaults for the keys a
/// generation's config leaves out (FLUX.1 has no `mlp_ratio`, FLUX.2 no pooled vector).
struct ConfigSizes(Value);

impl ConfigSizes {
    fn read(path: &Path) -> Self {
        let json: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        // `meta.json` nests the constructor's arguments under `config`.
        Self(json.get("config").cloned().unwrap_or(json))
    }

    fn get(&self, key: &str) -> Option<usize> {
        self.0.get(key)?.as_u64().map(|v| v as usize)
    }

    fn need(&self, key: &str) -> usize {
        self.get(key)
            .unwrap_or_else(|| panic!("config has no `{key}`"))
    }
}

impl Sizes for ConfigSizes {
    fn width(&self, width: Width) -> usize {
        let hidden = self.need("num_attention_heads") * self.need("attention_head_dim");
        match width {
            Width::Hidden => hidden,
            Width::Mlp => {
                let ratio = self.0.get("mlp_ratio").and_then(Value::as_f64);
                (hidden as f64 * ratio.unwrap_or(4.0)) as usize
            }
            Width::HeadDim => self.need("attention_head_dim"),
            Width::InChannels => self.need("in_channels"),
            Width::OutChannels => self.get("out_channels").unwrap_or(self.need("in_channels")),
            Width::Context => self.need("joint_attention_dim"),
            Width::Pooled => self.need("pooled_projection_dim"),
            Width::TimeEmbed => self.get("timestep_guidance_channels").unwrap_or(256),
        }
    }

    fn blocks(&self, scope: Scope) -> usize {
        match scope {
            Scope::Top => 1,
            Scope::Double => self.need("num_layers"),
            Scope::Single => self.need("num_single_layers"),
        }
    }

    fn has(&self, feature: Feature) -> bool {
        match feature {
            Feature::Guidance => self.0["guidance_embeds"].as_bool().unwrap(),
        }
    }
}

/// Every tensor's name and shape in `path`: one safetensors file, or every one in a folder.
fn stored(path: &Path) -> Vec<(String, Vec<usize>)> {
    let files: Vec<_> = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let mut out: Vec<_> = files
        .iter()
        .flat_map(|f| read_tensors(f))
        .map(|t| (t.name, t.shape))
        .collect();
    out.sort();
    out
}

fn assert_same(table: &NamingTable, what: &str, ours: Vec<(String, Vec<usize>)>, path: &Path) {
    let theirs = stored(path);
    for (name, shape) in &theirs {
        let listed = ours.iter().find(|(n, _)| n == name);
        assert_eq!(
            listed.map(|(_, s)| s),
            Some(shape),
            "{} {what}: `{name}` of {}",
            table.generation,
            path.display()
        );
    }
    assert_eq!(
        ours,
        theirs,
        "{} {what}: {}",
        table.generation,
        path.display()
    );
}

#[test]
fn flux2_table_names_the_golden_tensors_in_both_namings() {
    let sizes = ConfigSizes::read(&golden_flux2("diffusers/config.json"));
    let bfl = flux2::NAMES.parameters(&sizes);
    assert_same(
        &flux2::NAMES,
        "BFL",
        bfl,
        &golden_flux2("flux2-bfl.safetensors"),
    );
    let diffusers = flux2::NAMES.diffusers_parameters(&sizes);
    assert_same(
        &flux2::NAMES,
        "diffusers",
        diffusers,
        &golden_flux2("diffusers"),
    );
}

/// The trained toy has no guidance embedding (a [klein]-like model) and one double block.
#[test]
fn flux2_table_names_the_toy_without_guidance() {
    let sizes = ConfigSizes::read(&toy_flux2("meta.json"));
    let bfl = flux2::NAMES.parameters(&sizes);
    assert_same(
        &flux2::NAMES,
        "BFL",
        bfl,
        &toy_flux2("flux2-bfl.safetensors"),
    );
}

/// The same check for FLUX.1, so that the diffusers listing is tested on fused weights diffusers
/// splits (q, k, v and `proj_mlp`) and on biases.
#[test]
fn flux1_table_names_the_golden_tensors_in_both_namings() {
    let sizes = ConfigSizes::read(&golden("diffusers/config.json"));
    let bfl = flux1::NAMES.parameters(&sizes);
    assert_same(&flux1::NAMES, "BFL", bfl, &golden("flux-bfl.safetensors"));
    let diffusers = flux1::NAMES.diffusers_parameters(&sizes);
    assert_same(&flux1::NAMES, "diffusers", diffusers, &golden("diffusers"));
}
