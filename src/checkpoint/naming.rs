//! Naming schemes of FLUX checkpoints and how each one stores a tensor of the canonical (BFL)
//! naming: under the same name (BFL, ComfyUI's prefixed BFL), or, in diffusers, split into
//! per-projection tensors or with the final modulation's halves swapped.

use super::source::Checkpoint;
use crate::error::{Error, Result};

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
        let bfl = prefixes("img_in.weight");
        let diffusers = prefixes("x_embedder.weight");
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
                        "unknown naming scheme: no `img_in.weight` (Black Forest Labs / ComfyUI \
                         naming) and no `x_embedder.weight` (diffusers naming) among its {} \
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
                format!("{prefix}double_blocks."),
                format!("{prefix}single_blocks."),
            ),
            Self::Diffusers { prefix } => (
                format!("{prefix}transformer_blocks."),
                format!("{prefix}single_transformer_blocks."),
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

/// Splits `double_blocks.3.img_attn.qkv.weight` into (`double_blocks`, 3, `img_attn.qkv.weight`).
fn split_block(name: &str) -> Option<(&str, usize, &str)> {
    let (kind, rest) = name.split_once('.')?;
    let (index, tail) = rest.split_once('.')?;
    Some((kind, index.parse().ok()?, tail))
}

/// Splits a parameter name into its module and parameter (`weight`, `bias`, `scale`).
fn split_param(name: &str) -> (&str, &str) {
    name.rsplit_once('.').unwrap_or((name, ""))
}

/// A module of the canonical naming as diffusers stores it: its parts, stacked along rows.
pub fn diffusers_module(module: &str) -> Option<Layout> {
    let direct = |s: &str| Some(Layout::Direct(s.to_owned()));
    let top = match module {
        "img_in" => direct("x_embedder"),
        "txt_in" => direct("context_embedder"),
        "time_in.in_layer" => direct("time_text_embed.timestep_embedder.linear_1"),
        "time_in.out_layer" => direct("time_text_embed.timestep_embedder.linear_2"),
        "guidance_in.in_layer" => direct("time_text_embed.guidance_embedder.linear_1"),
        "guidance_in.out_layer" => direct("time_text_embed.guidance_embedder.linear_2"),
        "vector_in.in_layer" => direct("time_text_embed.text_embedder.linear_1"),
        "vector_in.out_layer" => direct("time_text_embed.text_embedder.linear_2"),
        "final_layer.adaLN_modulation.1" => Some(Layout::SwappedHalves("norm_out.linear".into())),
        "final_layer.linear" => direct("proj_out"),
        _ => None,
    };
    if top.is_some() {
        return top;
    }
    let (kind, i, tail) = split_block(module)?;
    let (db, sb) = (
        |k: &str| format!("transformer_blocks.{i}.{k}"),
        |k: &str| format!("single_transformer_blocks.{i}.{k}"),
    );
    let parts = |f: &dyn Fn(&str) -> String, ks: &[&str]| {
        Some(Layout::Concat(ks.iter().map(|k| f(k)).collect()))
    };
    match (kind, tail) {
        ("double_blocks", "img_mod.lin") => Some(Layout::Direct(db("norm1.linear"))),
        ("double_blocks", "txt_mod.lin") => Some(Layout::Direct(db("norm1_context.linear"))),
        ("double_blocks", "img_attn.qkv") => parts(&db, &["attn.to_q", "attn.to_k", "attn.to_v"]),
        ("double_blocks", "txt_attn.qkv") => parts(
            &db,
            &["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
        ),
        ("double_blocks", "img_attn.norm.query_norm") => Some(Layout::Direct(db("attn.norm_q"))),
        ("double_blocks", "img_attn.norm.key_norm") => Some(Layout::Direct(db("attn.norm_k"))),
        ("double_blocks", "txt_attn.norm.query_norm") => {
            Some(Layout::Direct(db("attn.norm_added_q")))
        }
        ("double_blocks", "txt_attn.norm.key_norm") => {
            Some(Layout::Direct(db("attn.norm_added_k")))
        }
        ("double_blocks", "img_attn.proj") => Some(Layout::Direct(db("attn.to_out.0"))),
        ("double_blocks", "txt_attn.proj") => Some(Layout::Direct(db("attn.to_add_out"))),
        ("double_blocks", "img_mlp.0") => Some(Layout::Direct(db("ff.net.0.proj"))),
        ("double_blocks", "img_mlp.2") => Some(Layout::Direct(db("ff.net.2"))),
        ("double_blocks", "txt_mlp.0") => Some(Layout::Direct(db("ff_context.net.0.proj"))),
        ("double_blocks", "txt_mlp.2") => Some(Layout::Direct(db("ff_context.net.2"))),
        ("single_blocks", "modulation.lin") => Some(Layout::Direct(sb("norm.linear"))),
        ("single_blocks", "linear1") => {
            parts(&sb, &["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"])
        }
        ("single_blocks", "linear2") => Some(Layout::Direct(sb("proj_out"))),
        ("single_blocks", "norm.query_norm") => Some(Layout::Direct(sb("attn.norm_q"))),
        ("single_blocks", "norm.key_norm") => Some(Layout::Direct(sb("attn.norm_k"))),
        // BRLL's fitted nodes (`--emit-safetensors`) keep their names under diffusers' blocks.
        ("double_blocks", "brll.img" | "brll.txt") => Some(Layout::Direct(db(tail))),
        ("single_blocks", "brll") => Some(Layout::Direct(sb(tail))),
        _ => None,
    }
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
