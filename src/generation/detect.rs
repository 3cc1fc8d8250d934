//! Which FLUX generation a checkpoint holds, told from its tensor names by the generations'
//! naming tables: a tensor that only one generation's table names (in BFL or diffusers naming,
//! behind any key prefix) is that generation's. A checkpoint with tensors only FLUX.1 has and
//! tensors only FLUX.2 has is two models in one file, and is refused.

use crate::error::{Error, Result};
use crate::generation::table::{NamingTable, Scope};
use crate::generation::{flux1, flux2};
use std::path::Path;

/// Every generation fastflux knows, the default (FLUX.1) first.
pub const GENERATIONS: [&NamingTable; 2] = [&flux1::NAMES, &flux2::NAMES];

/// A detected generation and the first tensor (in the checkpoint's key order) that only it has.
#[derive(Debug)]
pub struct Detected {
    pub table: &'static NamingTable,
    /// `None` only for the default generation, which is assumed when no tensor tells: its
    /// resolver then reports precisely what the checkpoint lacks.
    pub evidence: Option<String>,
}

/// The generation of the checkpoint `origin` whose tensors are `keys`.
pub fn detect<'k>(origin: &Path, keys: impl IntoIterator<Item = &'k str>) -> Result<Detected> {
    let mut evidence: Vec<Option<&str>> = vec![None; GENERATIONS.len()];
    for key in keys {
        let mut naming = GENERATIONS
            .iter()
            .enumerate()
            .filter(|(_, t)| names(t, key));
        if let (Some((g, _)), None) = (naming.next(), naming.next()) {
            evidence[g].get_or_insert(key);
        }
    }
    let found: Vec<(&NamingTable, &str)> = GENERATIONS
        .iter()
        .zip(&evidence)
        .filter_map(|(t, e)| Some((*t, (*e)?)))
        .collect();
    match found.as_slice() {
        [] => Ok(Detected {
            table: GENERATIONS[0],
            evidence: None,
        }),
        [(table, key)] => Ok(Detected {
            table,
            evidence: Some((*key).to_owned()),
        }),
        [(a, a_key), (b, b_key), ..] => Err(Error::file(
            origin,
            format!(
                "holds tensors of two FLUX generations: `{a_key}` is {}'s and `{b_key}` is \
                 {}'s; pass a file with one transformer",
                a.generation, b.generation
            ),
        )),
    }
}

/// Whether `table` names the stored tensor `key`, in BFL or diffusers naming, behind any prefix
/// of whole path components (ComfyUI's `model.diffusion_model.`, a pipeline's `transformer.`).
/// Modules are compared, not their tensors: a bias one generation lacks tells nothing.
fn names(table: &NamingTable, key: &str) -> bool {
    let Some((mut module, _tensor)) = key.rsplit_once('.') else {
        return false;
    };
    loop {
        if table.find(module).is_some() || names_diffusers(table, module) {
            return true;
        }
        match module.split_once('.') {
            Some((_, rest)) => module = rest,
            None => return false,
        }
    }
}

/// Whether `module` is one diffusers stores a parameter of `table` in.
fn names_diffusers(table: &NamingTable, module: &str) -> bool {
    let (scope, tail) = diffusers_block(table, module).unwrap_or((Scope::Top, module));
    table
        .params
        .iter()
        .any(|p| p.scope == scope && p.diffusers.modules().contains(&tail))
}

/// The kind of block and in-block path of a diffusers module path inside a block
/// (`transformer_blocks.3.attn.to_q`).
fn diffusers_block<'m>(table: &NamingTable, module: &'m str) -> Option<(Scope, &'m str)> {
    let (kind, rest) = module.split_once('.')?;
    let (index, tail) = rest.split_once('.')?;
    index.parse::<usize>().ok()?;
    let scope = [(Scope::Double, table.double), (Scope::Single, table.single)]
        .into_iter()
        .find(|(_, names)| names.diffusers == kind)?
        .0;
    Some((scope, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(keys: &[&str]) -> Result<&'static str> {
        detect(Path::new("ckpt"), keys.iter().copied()).map(|d| d.table.generation)
    }

    #[test]
    fn shared_names_tell_nothing_and_default_to_flux1() {
        let shared = [
            "img_in.weight",
            "double_blocks.0.img_attn.qkv.weight",
            "x_embedder.weight",
        ];
        assert_eq!(generation(&shared).unwrap(), "FLUX.1");
        assert_eq!(generation(&["img_in.bias"]).unwrap(), "FLUX.1");
    }

    #[test]
    fn each_generation_by_its_own_modules_behind_any_prefix() {
        for (key, want) in [
            ("vector_in.in_layer.weight", "FLUX.1"),
            (
                "model.diffusion_model.double_blocks.3.img_mod.lin.bias",
                "FLUX.1",
            ),
            ("single_transformer_blocks.0.proj_mlp.weight", "FLUX.1"),
            ("double_stream_modulation_txt.lin.weight", "FLUX.2"),
            (
                "model.diffusion_model.single_stream_modulation.lin.weight",
                "FLUX.2",
            ),
            (
                "transformer.time_guidance_embed.timestep_embedder.linear_1.weight",
                "FLUX.2",
            ),
            (
                "single_transformer_blocks.2.attn.to_qkv_mlp_proj.weight",
                "FLUX.2",
            ),
            ("transformer_blocks.0.ff.linear_in.weight", "FLUX.2"),
        ] {
            assert_eq!(generation(&["img_in.weight", key]).unwrap(), want, "{key}");
        }
    }

    #[test]
    fn both_generations_in_one_file_are_refused_naming_a_tensor_of_each() {
        let keys = [
            "vector_in.in_layer.weight",
            "double_stream_modulation_img.lin.weight",
        ];
        let err = generation(&keys).unwrap_err().to_string();
        for needle in [
            "ckpt:",
            "`vector_in.in_layer.weight` is FLUX.1's",
            "FLUX.2's",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
