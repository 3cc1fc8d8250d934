//! Writing LoRA files: trained low-rank adapters (sandwich training's) as a safetensors LoRA
//! file in the checkpoint's own naming, with an alpha per module, that `LoraFile::open` reads
//! back onto the same canonical weights and rows. In diffusers naming a fused canonical weight
//! (`qkv`, a single block's `linear1`) is stored as per-projection modules: each gets the rows of
//! the up matrix it covers and the whole down matrix, which is the same update exactly.

use super::names::diffusers_targets;
use crate::checkpoint::FluxConfig;
use crate::checkpoint::naming::Scheme;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, write_f32_tensors};
use std::collections::BTreeMap;
use std::path::Path;

/// One trained adapter of a canonical weight: `W += alpha/rank · B·A`.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// The canonical weight, e.g. `double_blocks.0.img_attn.qkv.weight`.
    pub weight: String,
    /// The weight's shape `[out, in]`.
    pub shape: [usize; 2],
    pub rank: usize,
    pub alpha: f32,
    /// `A [rank, in]`, row-major.
    pub down: Vec<f32>,
    /// `B [out, rank]`, row-major, rows in the canonical weight's order.
    pub up: Vec<f32>,
}

/// Writes `adapters` to `path` (atomically) in the naming of `scheme`: the original names
/// behind the checkpoint's prefix (`double_blocks.0.img_attn.qkv.lora_A.weight`, `.lora_B.weight`,
/// `.alpha`), or diffusers/peft names (`transformer.transformer_blocks.0.attn.to_q.lora_A.weight`)
/// for a diffusers checkpoint, split as the naming table splits the model's `config`.
/// Returns the file's size.
pub fn write_lora(
    path: &Path,
    scheme: &Scheme,
    config: &FluxConfig,
    adapters: &[Adapter],
    metadata: &BTreeMap<String, String>,
) -> Result<u64> {
    let mut tensors = Vec::new();
    for a in adapters {
        let [out, cols] = a.shape;
        if a.down.len() != a.rank * cols || a.up.len() != out * a.rank {
            return Err(Error::Internal(format!(
                "adapter of `{}` {:?}: rank {} with {} down and {} up values",
                a.weight,
                a.shape,
                a.rank,
                a.down.len(),
                a.up.len()
            )));
        }
        let module = a.weight.strip_suffix(".weight").ok_or_else(|| {
            Error::Internal(format!("adapter target `{}` is not a weight", a.weight))
        })?;
        for (name, rows, swap_halves) in stored_modules(scheme, module, a.shape, config)? {
            let mut up = a.up[rows.start * a.rank..rows.end * a.rank].to_vec();
            if swap_halves {
                // diffusers stores (scale, shift); the canonical weight holds (shift, scale).
                up.rotate_left(rows.len() / 2 * a.rank);
            }
            let tensor = |suffix: &str, shape: Vec<usize>, data: Vec<f32>| Tensor {
                name: format!("{name}.{suffix}"),
                shape,
                data,
            };
            tensors.push(tensor("lora_A.weight", vec![a.rank, cols], a.down.clone()));
            tensors.push(tensor("lora_B.weight", vec![rows.len(), a.rank], up));
            tensors.push(tensor("alpha", vec![], vec![a.alpha]));
        }
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    write_f32_tensors(path, &tensors, metadata)
}

/// The modules of the LoRA file that store canonical `module`'s adapter, with the rows of the
/// canonical weight each covers and whether its rows' halves are stored swapped.
fn stored_modules(
    scheme: &Scheme,
    module: &str,
    shape: [usize; 2],
    config: &FluxConfig,
) -> Result<Vec<(String, std::ops::Range<usize>, bool)>> {
    match scheme {
        Scheme::Bfl { prefix } => Ok(vec![(format!("{prefix}{module}"), 0..shape[0], false)]),
        Scheme::Diffusers { .. } => {
            let parts = diffusers_targets(module, shape, config);
            if parts.is_empty() {
                return Err(Error::Internal(format!(
                    "`{module}` has no diffusers name to write its adapter under"
                )));
            }
            Ok(parts
                .into_iter()
                .map(|(name, t)| (format!("transformer.{name}"), t.rows, t.swap_halves))
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LoraFile, LoraSpec, ModuleNames};
    use super::*;
    use crate::rng::Rng;

    fn adapter(config: &FluxConfig, weight: &str, rank: usize, seed: u64) -> Adapter {
        let shape = config
            .parameters()
            .into_iter()
            .find(|(n, _)| n == weight)
            .map(|(_, s)| [s[0], s[1]])
            .expect("a parameter of the configuration");
        let mut rng = Rng::new(seed, 0);
        Adapter {
            weight: weight.into(),
            shape,
            rank,
            alpha: 3.0,
            down: (0..rank * shape[1]).map(|_| rng.normal() as f32).collect(),
            up: (0..shape[0] * rank).map(|_| rng.normal() as f32).collect(),
        }
    }

    /// Every naming reads back the same update: written, then read by `LoraFile::open` (which
    /// resolves names independently of the writer), the per-module pairs cover the weight's
    /// rows with the adapter's own matrices and alpha/rank.
    #[test]
    fn reads_back_onto_the_same_rows_in_every_naming() {
        let config = FluxConfig::builder().build();
        let names = ModuleNames::new(&config, []);
        let weights = [
            "double_blocks.0.img_attn.qkv.weight",
            "double_blocks.1.txt_mlp.2.weight",
            "single_blocks.0.linear1.weight",
            "single_blocks.1.linear2.weight",
        ];
        let adapters: Vec<Adapter> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| adapter(&config, w, 2, i as u64))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let schemes = [
            Scheme::Bfl {
                prefix: String::new(),
            },
            Scheme::Bfl {
                prefix: "model.diffusion_model.".into(),
            },
            Scheme::Diffusers {
                prefix: String::new(),
            },
        ];
        for (k, scheme) in schemes.iter().enumerate() {
            let path = dir.path().join(format!("st-{k}.safetensors"));
            write_lora(&path, scheme, &config, &adapters, &BTreeMap::new()).unwrap();
            let spec = LoraSpec {
                path: path.clone(),
                scale: 1.0,
            };
            let file = LoraFile::open(&spec, &names).unwrap();
            assert!(
                file.unmatched.is_empty(),
                "{scheme:?}: {:?}",
                file.unmatched
            );
            for a in &adapters {
                let mut pairs: Vec<_> = file
                    .pairs
                    .iter()
                    .filter(|p| p.target.weight == a.weight)
                    .collect();
                pairs.sort_by_key(|p| p.target.rows.start);
                let mut next_row = 0;
                for p in &pairs {
                    assert_eq!(p.target.rows.start, next_row, "{scheme:?} {}", p.module);
                    assert_eq!((p.rank, p.factor), (2, 1.5));
                    assert_eq!(p.down.as_slice(), a.down.as_slice());
                    let rows = p.target.rows.clone();
                    assert_eq!(p.up.as_slice(), &a.up[rows.start * 2..rows.end * 2]);
                    next_row = rows.end;
                }
                assert_eq!(
                    next_row, a.shape[0],
                    "{scheme:?}: {} rows covered",
                    a.weight
                );
            }
        }
    }
}
