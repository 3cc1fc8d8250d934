//! The peft adapter configuration that diffusers' `save_lora_weights` writes into the
//! safetensors header (`lora_adapter_metadata`): the rank and alpha of every module, with the
//! per-module `rank_pattern` / `alpha_pattern` overrides resolved as peft resolves them.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// The header metadata entry diffusers stores the adapter configuration under.
pub const METADATA_KEY: &str = "lora_adapter_metadata";

#[derive(Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    pub r: usize,
    pub alpha: f64,
    /// (pattern, rank) in the file's order: diffusers writes the JSON with sorted keys, and peft
    /// takes the first pattern that matches, so the order read here is the order peft sees.
    pub rank_pattern: Vec<(String, usize)>,
    pub alpha_pattern: Vec<(String, f64)>,
    /// rank-stabilised LoRA: the delta is scaled by alpha/√r instead of alpha/r.
    pub rslora: bool,
}

impl AdapterConfig {
    /// Reads the transformer's adapter configuration from the metadata JSON. diffusers prefixes
    /// each field with the component (`transformer.r`); unprefixed fields are read as well.
    pub fn parse(path: &Path, json: &str) -> Result<Self> {
        let bad = |msg: String| Error::file(path, format!("header `{METADATA_KEY}`: {msg}"));
        let value: Value =
            serde_json::from_str(json).map_err(|e| bad(format!("is not JSON ({e})")))?;
        let Value::Object(all) = value else {
            return Err(bad("is not a JSON object".into()));
        };
        let prefixed: Map<String, Value> = all
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("transformer.")?.to_owned(), v.clone())))
            .collect();
        let fields = if prefixed.is_empty() { all } else { prefixed };
        if fields.get("use_dora").and_then(Value::as_bool) == Some(true) {
            return Err(bad(
                "the adapter is DoRA (`use_dora`), whose weight-norm rescaling is not a plain \
                 low-rank delta; fastflux folds only LoRA"
                    .into(),
            ));
        }
        let r = fields
            .get("r")
            .and_then(Value::as_u64)
            .filter(|&r| r > 0)
            .ok_or_else(|| {
                bad(format!(
                    "no positive integer rank `r` (found {:?})",
                    fields.get("r")
                ))
            })? as usize;
        let alpha = match fields.get("lora_alpha") {
            None | Some(Value::Null) => r as f64,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(format!("`lora_alpha` is not a number: {v}")))?,
        };
        let pattern = |name: &str| -> Result<Vec<(String, f64)>> {
            match fields.get(name) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| {
                        let n = v.as_f64().ok_or_else(|| {
                            bad(format!("`{name}` entry `{k}` is not a number: {v}"))
                        })?;
                        Ok((k.clone(), n))
                    })
                    .collect(),
                Some(v) => Err(bad(format!("`{name}` is not an object: {v}"))),
            }
        };
        let rank_pattern = pattern("rank_pattern")?
            .into_iter()
            .map(|(k, v)| {
                if v >= 1.0 && v.fract() == 0.0 {
                    Ok((k, v as usize))
                } else {
                    Err(bad(format!(
                        "`rank_pattern` entry `{k}` is not a positive integer: {v}"
                    )))
                }
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            r,
            alpha,
            rank_pattern,
            alpha_pattern: pattern("alpha_pattern")?,
            rslora: fields.get("use_rslora").and_then(Value::as_bool) == Some(true),
        })
    }

    /// The rank and the scale `alpha/r` (or `alpha/√r`) peft gives `module`.
    pub fn rank_and_factor(&self, module: &str) -> (usize, f64) {
        let r = first_match(&self.rank_pattern, module).unwrap_or(self.r);
        let alpha = first_match(&self.alpha_pattern, module).unwrap_or(self.alpha);
        let divisor = if self.rslora {
            (r as f64).sqrt()
        } else {
            r as f64
        };
        (r, alpha / divisor)
    }
}

/// peft matches a pattern against the module's full name or any tail of it that starts after a
/// '.'. Patterns are taken literally: FLUX module names hold no regex metacharacters but '.',
/// and a literal '.' only matches itself.
fn first_match<T: Copy>(patterns: &[(String, T)], module: &str) -> Option<T> {
    patterns
        .iter()
        .find(|(p, _)| module == p || module.ends_with(&format!(".{p}")))
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_override_by_module_suffix() {
        let json = r#"{"transformer.r": 8, "transformer.lora_alpha": 4,
            "transformer.rank_pattern": {"single_transformer_blocks.1.proj_mlp": 2},
            "transformer.alpha_pattern": {"to_k": 16}, "transformer.use_rslora": false}"#;
        let c = AdapterConfig::parse(Path::new("x"), json).unwrap();
        assert_eq!(
            c.rank_and_factor("transformer_blocks.0.attn.to_q"),
            (8, 0.5)
        );
        assert_eq!(
            c.rank_and_factor("transformer_blocks.0.attn.to_k"),
            (8, 2.0)
        );
        assert_eq!(
            c.rank_and_factor("single_transformer_blocks.1.proj_mlp"),
            (2, 2.0)
        );
        // `to_k` must match a whole name segment, not the end of `add_to_k`.
        assert_eq!(
            c.rank_and_factor("transformer_blocks.0.attn.add_to_k"),
            (8, 0.5)
        );
    }

    #[test]
    fn rslora_divides_by_the_root_of_the_rank() {
        let json = r#"{"r": 16, "lora_alpha": 8, "use_rslora": true}"#;
        let c = AdapterConfig::parse(Path::new("x"), json).unwrap();
        assert_eq!(c.rank_and_factor("proj_out"), (16, 2.0));
    }

    #[test]
    fn refuses_dora_and_a_missing_rank() {
        let dora = AdapterConfig::parse(Path::new("x"), r#"{"r": 4, "use_dora": true}"#);
        assert!(dora.unwrap_err().to_string().contains("DoRA"));
        let none = AdapterConfig::parse(Path::new("x"), r#"{"lora_alpha": 4}"#);
        assert!(none.unwrap_err().to_string().contains("`r`"));
    }
}
