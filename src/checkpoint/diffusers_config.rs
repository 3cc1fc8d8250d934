//! The diffusers `config.json` written beside every exported model: what optimum's
//! `ORTFluxPipeline` (and any diffusers-shaped loader) needs to find in `transformer/` next to
//! `model.onnx`. It holds the arguments of diffusers' `FluxTransformer2DModel.__init__` with the
//! values of the checkpoint that was compiled: the input folder's own `config.json` where there
//! is one, with its architecture keys set from the configuration read off the tensors (the graph
//! is built from them, so they win where the file disagrees); for a single-file checkpoint, that
//! configuration alone (the RoPE axes from `--axes-dim` or FLUX.1's default).
//!
//! `num_layers` and `num_single_layers` count the checkpoint's double and single blocks, the
//! ones BRLL replaced included: the exported graph keeps every block's place (a replaced block
//! is its fitted linear map), and the config describes the checkpoint, not the graph's cost.
//! The replaced blocks are listed under `_fastflux_replaced_blocks`, which diffusers ignores (a
//! key starting with `_` is private to whoever wrote it).

use super::config::FluxConfig;
use crate::error::{Error, Result};
use crate::ir::BlockId;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::path::Path;

/// The file name diffusers and optimum look for beside a model's weights.
pub const CONFIG_FILE: &str = "config.json";

/// diffusers' class for a FLUX.1 transformer.
const CLASS_NAME: &str = "FluxTransformer2DModel";

/// The config's JSON text: `source` (the `config.json` of the checkpoint at `origin`, if any)
/// with the architecture keys set from `config`, keys sorted and indented as diffusers'
/// `save_config` writes them.
pub fn render(
    config: &FluxConfig,
    source: Option<&Value>,
    origin: &Path,
    replaced: &BTreeSet<BlockId>,
) -> Result<String> {
    let mut out = match source {
        None => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(other) => {
            let what = format!("its {CONFIG_FILE} is not a JSON object but {other}");
            return Err(Error::file(origin, what));
        }
    };
    if let Some(class) = out.get("_class_name").and_then(Value::as_str)
        && class != CLASS_NAME
    {
        let what = format!(
            "its {CONFIG_FILE} names `_class_name` {class}; fastflux compiles {CLASS_NAME}"
        );
        return Err(Error::file(origin, what));
    }
    for (key, value) in architecture(config) {
        // diffusers writes `out_channels: null` for "as many as in_channels": kept as written.
        let same_as_null = key == "out_channels"
            && out.get(key).is_some_and(Value::is_null)
            && config.out_channels == config.in_channels;
        if !same_as_null {
            out.insert(key.to_owned(), value);
        }
    }
    out.remove("_fastflux_replaced_blocks");
    if !replaced.is_empty() {
        let names: Vec<String> = replaced.iter().map(BlockId::to_string).collect();
        out.insert("_fastflux_replaced_blocks".into(), json!(names));
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(out))
        .map_err(|e| Error::Internal(format!("config.json: {e}")))?;
    text.push('\n');
    Ok(text)
}

/// `FluxTransformer2DModel`'s constructor arguments (diffusers' names) for `config`. FLUX.1's
/// transformer sees latents already packed into 2×2 patches, so its own `patch_size` is 1.
fn architecture(config: &FluxConfig) -> Vec<(&'static str, Value)> {
    vec![
        ("_class_name", json!(CLASS_NAME)),
        ("patch_size", json!(1)),
        ("in_channels", json!(config.in_channels)),
        ("out_channels", json!(config.out_channels)),
        ("num_layers", json!(config.double_blocks)),
        ("num_single_layers", json!(config.single_blocks)),
        ("attention_head_dim", json!(config.head_dim)),
        ("num_attention_heads", json!(config.heads)),
        ("joint_attention_dim", json!(config.context_dim)),
        ("pooled_projection_dim", json!(config.pooled_dim)),
        ("guidance_embeds", json!(config.guidance)),
        ("axes_dims_rope", json!(config.axes_dim)),
    ]
}
