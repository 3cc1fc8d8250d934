//! Naming schemes of FLUX checkpoints and how each one stores a tensor of the canonical (BFL)
//! naming: under the same name (BFL, ComfyUI's prefixed BFL), or, in diffusers, split into
//! per-projection tensors or with the final modulation's halves swapped. Which names those are
//! is the generation's naming table (`generation::flux1::NAMES`); this file applies it to files,
//! after refusing a checkpoint of a generation fastflux does not compile yet (`require_flux1`).

use super::brll_meta::{node_name, streams};
use super::source::Checkpoint;
use crate::error::{Error, Result};
use crate::generation::detect::detect;
use crate::generation::flux1::NAMES;
use crate::generation::table::{Diffusers, Role, Scope};
use crate::ir::BlockId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Black Forest Labs' original names, every key behind `prefix` (ComfyUI: `model.diffusion_model.`).
    Bfl { prefix: String },
    /// diffusers' `FluxTransformer2DModel` names, behind `prefix` (usually empty).
    Diffusers { prefix: String },
}

/// How the tensor of one canonical name is stored in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    Direct(String),
    /// The canonical tensor is these stored tensors stacked along their first axis.
    Concat(Vec<String>),
    /// The canonical tensor is the stored one with the two halves of its first axis swapped.
    SwappedHalves(String),
}

impl Scheme {
    pub fn detect(ckpt: &Checkpoint) -> Result<Self> {
        let prefixes = |suffix: &str| -> Vec<String> {
            ckpt.keys()
                .filter_map(|k| k.strip_suffix(suffix))
                .filter(|p| p.is_empty() || p.ends_with('.'))
                .map(str::to_owned)
                .collect()
        };
        // The image embedder, which every FLUX checkpoint has, tells the naming apart.
        let bfl_key = NAMES.top_tensor(Role::ImgIn)?;
        let Layout::Direct(diffusers_key) = diffusers_layout(&bfl_key) else {
            return Err(Error::Internal(format!(
                "`{bfl_key}` is one tensor in diffusers"
            )));
        };
        let bfl = prefixes(&bfl_key);
        let diffusers = prefixes(&diffusers_key);
        match (bfl.as_slice(), diffusers.as_slice()) {
            ([prefix], []) => Ok(Self::Bfl {
                prefix: prefix.clone(),
            }),
            ([], [prefix]) => Ok(Self::Diffusers {
                prefix: prefix.clone(),
            }),
            ([], []) => {
                let seen: Vec<&str> = ckpt.keys().take(5).collect();
                Err(Error::file(
                    &ckpt.origin,
                    format!(
                        "unknown naming scheme: no `{bfl_key}` (Black Forest Labs / ComfyUI \
                         naming) and no `{diffusers_key}` (diffusers naming) among its {} \
                         tensors; the first are {seen:?}",
                        ckpt.keys().count()
                    ),
                ))
            }
            _ => Err(Error::file(
                &ckpt.origin,
                format!(
                    "holds more than one FLUX transformer (image embedders under prefixes {:?}); \
                     pass a file with one model",
                    [bfl, diffusers].concat()
                ),
            )),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Bfl { prefix } if prefix.is_empty() => "Black Forest Labs (original)".into(),
            Self::Bfl { prefix } => {
                format!("Black Forest Labs (original), keys prefixed `{prefix}`")
            }
            Self::Diffusers { prefix } if prefix.is_empty() => "diffusers".into(),
            Self::Diffusers { prefix } => format!("diffusers, keys prefixed `{prefix}`"),
        }
    }

    /// The stored key prefixes of the double and the single blocks, for counting blocks.
    pub fn block_prefixes(&self) -> (String, String) {
        match self {
            Self::Bfl { prefix } => (
                format!("{prefix}{}.", NAMES.double.bfl),
                format!("{prefix}{}.", NAMES.single.bfl),
            ),
            Self::Diffusers { prefix } => (
                format!("{prefix}{}.", NAMES.double.diffusers),
                format!("{prefix}{}.", NAMES.single.diffusers),
            ),
        }
    }

    /// Where the canonical tensor `name` (e.g. `double_blocks.3.img_attn.qkv.weight`) is stored.
    pub fn layout(&self, name: &str) -> Layout {
        match self {
            Self::Bfl { prefix } => Layout::Direct(format!("{prefix}{name}")),
            Self::Diffusers { prefix } => {
                let with_prefix = |k: String| format!("{prefix}{k}");
                match diffusers_layout(name) {
                    Layout::Direct(k) => Layout::Direct(with_prefix(k)),
                    Layout::Concat(ks) => Layout::Concat(ks.into_iter().map(with_prefix).collect()),
                    Layout::SwappedHalves(k) => Layout::SwappedHalves(with_prefix(k)),
                }
            }
        }
    }
}

/// fastflux compiles FLUX.1 only for now: a checkpoint of another generation is refused by name
/// here, before FLUX.1's resolver would report its tensors as missing.
pub fn require_flux1(ckpt: &Checkpoint) -> Result<()> {
    let detected = detect(&ckpt.origin, ckpt.keys())?;
    if detected.table.generation == NAMES.generation {
        return Ok(());
    }
    let generation = detected.table.generation;
    let found = detected.evidence.unwrap_or_default();
    Err(Error::file(
        &ckpt.origin,
        format!(
            "a {generation} transformer (found `{found}`); fastflux compiles {} only for now: \
             {generation} support is issue 19",
            NAMES.generation
        ),
    ))
}

/// Splits a parameter name into its module and parameter (`weight`, `bias`, `scale`).
fn split_param(name: &str) -> (&str, &str) {
    name.rsplit_once('.').unwrap_or((name, ""))
}

/// A module of the canonical naming as diffusers stores it: its parts, stacked along rows.
pub fn diffusers_module(module: &str) -> Option<Layout> {
    // BRLL's fitted nodes (`--emit-safetensors`) keep their names under diffusers' blocks.
    if let Some((scope, i, tail)) = NAMES.split_block(module) {
        let block = match scope {
            Scope::Double => BlockId::Double(i),
            // `split_block` finds only blocks: this is a single one.
            _ => BlockId::Single(i),
        };
        if streams(block).iter().any(|s| node_name(block, s) == module) {
            let prefix = NAMES.diffusers_prefix(scope, Some(i));
            return Some(Layout::Direct(format!("{prefix}{tail}")));
        }
    }
    let found = NAMES.find(module)?;
    let prefix = NAMES.diffusers_prefix(found.param.scope, found.block);
    Some(match found.param.diffusers {
        Diffusers::Renamed(m) => Layout::Direct(format!("{prefix}{m}")),
        Diffusers::SwappedHalves(m) => Layout::SwappedHalves(format!("{prefix}{m}")),
        Diffusers::Stacked(parts) => {
            Layout::Concat(parts.iter().map(|(m, _)| format!("{prefix}{m}")).collect())
        }
    })
}

/// A canonical parameter as diffusers stores it. Norm scales are `weight` there.
fn diffusers_layout(name: &str) -> Layout {
    let (module, param) = split_param(name);
    let param = if param == "scale" { "weight" } else { param };
    let with_param = |m: String| format!("{m}.{param}");
    match diffusers_module(module) {
        Some(Layout::Direct(m)) => Layout::Direct(with_param(m)),
        Some(Layout::Concat(ms)) => Layout::Concat(ms.into_iter().map(with_param).collect()),
        Some(Layout::SwappedHalves(m)) => Layout::SwappedHalves(with_param(m)),
        // Not a FLUX tensor diffusers renames: looked up as is, and reported missing if absent.
        None => Layout::Direct(name.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffusers_splits_fused_projections() {
        let s = Scheme::Diffusers {
            prefix: String::new(),
        };
        assert_eq!(
            s.layout("single_blocks.2.linear1.bias"),
            Layout::Concat(vec![
                "single_transformer_blocks.2.attn.to_q.bias".into(),
                "single_transformer_blocks.2.attn.to_k.bias".into(),
                "single_transformer_blocks.2.attn.to_v.bias".into(),
                "single_transformer_blocks.2.proj_mlp.bias".into(),
            ])
        );
        assert_eq!(
            s.layout("double_blocks.0.txt_attn.norm.key_norm.scale"),
            Layout::Direct("transformer_blocks.0.attn.norm_added_k.weight".into())
        );
        assert_eq!(
            s.layout("double_blocks.1.brll.txt.cond_weight"),
            Layout::Direct("transformer_blocks.1.brll.txt.cond_weight".into())
        );
        assert_eq!(
            s.layout("single_blocks.2.brll.bias"),
            Layout::Direct("single_transformer_blocks.2.brll.bias".into())
        );
        assert_eq!(
            s.layout("final_layer.adaLN_modulation.1.weight"),
            Layout::SwappedHalves("norm_out.linear.weight".into())
        );
    }

    #[test]
    fn bfl_keeps_names_behind_the_prefix() {
        let s = Scheme::Bfl {
            prefix: "model.diffusion_model.".into(),
        };
        assert_eq!(
            s.layout("img_in.weight"),
            Layout::Direct("model.diffusion_model.img_in.weight".into())
        );
    }
}
