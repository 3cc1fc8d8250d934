//! Reading a conditioning file: the prompts a sampler (or trajectory calibration) conditions
//! on, one row per prompt — `encoder_hidden_states [P,L,ctx]` (the T5 features) and
//! `pooled_projections [P,vec]` (the pooled CLIP features) — validated against the model, with
//! errors that name the file, the tensor, the expected shape and what was found.

use super::contract::Signature;
use crate::error::{Error, Result};
use crate::io::safetensors::SafetensorsFile;
use crate::tensor::Tensor;
use std::path::Path;

/// The text tensor of a conditioning file.
pub const TEXT: &str = "encoder_hidden_states";
/// The pooled tensor of a conditioning file.
pub const POOLED: &str = "pooled_projections";

/// Prompts to condition on: row `p` of both tensors is prompt `p`.
#[derive(Clone, Debug, PartialEq)]
pub struct Conditioning {
    pub prompts: usize,
    pub text_tokens: usize,
    /// `encoder_hidden_states [P, L, ctx]`.
    pub text: Tensor,
    /// `pooled_projections [P, vec]`.
    pub pooled: Tensor,
}

impl Conditioning {
    /// Reads `path` and checks it against `model`: both tensors present (any float dtype), of
    /// rank 3 and 2, widths `ctx` and `vec` the model's, the same prompt count P ≥ 1 in both,
    /// L ≥ 1, every value finite. Other tensors in the file are ignored.
    pub fn load(path: &Path, model: &Signature) -> Result<Self> {
        let st = SafetensorsFile::open_with_other_dtypes(path)?;
        let read = |name: &'static str, width: usize, what: &str| -> Result<Tensor> {
            let shape_text = match name {
                TEXT => format!("[P, L, {width}]"),
                _ => format!("[P, {width}]"),
            };
            let bad = |msg: String| Error::tensor(path, name, msg);
            let Some((shape, data)) = st.read_data_f32(name)? else {
                let held: Vec<&str> = st.tensors().keys().map(String::as_str).collect();
                return Err(bad(format!(
                    "missing: a conditioning file holds `{TEXT}` [P, L, ctx] and `{POOLED}` \
                     [P, vec], one row per prompt; the model needs `{name}` {shape_text} \
                     (the file holds {})",
                    match held.is_empty() {
                        true => "no float tensors".to_string(),
                        false => format!("`{}`", held.join("`, `")),
                    }
                )));
            };
            let rank = if name == TEXT { 3 } else { 2 };
            if shape.len() != rank {
                return Err(bad(format!("expected shape {shape_text}, found {shape:?}")));
            }
            if shape[rank - 1] != width {
                return Err(bad(format!(
                    "expected shape {shape_text}, found {shape:?}: the last dimension must be \
                     {width}, the model's {what}"
                )));
            }
            if let Some((i, _)) = shape.iter().enumerate().find(|(_, d)| **d == 0) {
                return Err(bad(format!(
                    "expected shape {shape_text}, found {shape:?}: dimension {i} is 0"
                )));
            }
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("element {i} is {}", data[i])));
            }
            let name = name.to_string();
            Ok(Tensor { name, shape, data })
        };
        let text = read(TEXT, model.context_dim, "text context width")?;
        let pooled = read(POOLED, model.pooled_dim, "pooled width")?;
        let (prompts, rows) = (text.shape[0], pooled.shape[0]);
        if rows != prompts {
            return Err(Error::tensor(
                path,
                POOLED,
                format!(
                    "{rows} rows (shape {:?}), but `{TEXT}` has {prompts} (shape {:?}): both \
                     hold one row per prompt",
                    pooled.shape, text.shape
                ),
            ));
        }
        Ok(Self {
            prompts,
            text_tokens: text.shape[1],
            text,
            pooled,
        })
    }

    /// Prompt `p`'s row of `tensor` (one of `text`, `pooled`).
    pub fn row(tensor: &Tensor, p: usize) -> &[f32] {
        let per: usize = tensor.shape[1..].iter().product();
        &tensor.data[p * per..(p + 1) * per]
    }
}
