//! What a checkpoint written by `--emit-safetensors` (the top-level `emit`) says about its
//! BRLL rewrite, read back: the replaced blocks from its header metadata, the parameters it
//! holds instead of their branches, and the names of the fitted nodes, which `passes::brll`
//! gives the nodes it builds and the emitted file stores their tensors under.

use super::config::FluxConfig;
use super::source::Checkpoint;
use crate::error::{Error, Result};
use crate::ir::BlockId;
use std::collections::BTreeSet;

/// Header metadata: the replaced blocks, a JSON list of block names.
pub const BRLL_KEY: &str = "fastflux.brll";
/// Header metadata: `plain` or `conditioned` (`mixed`: a rewritten input refitted otherwise).
pub const FIT_KEY: &str = "fastflux.brll.fit";

/// The streams of a block, as the lifter records them in `BlockIo`.
pub fn streams(block: BlockId) -> &'static [&'static str] {
    match block {
        BlockId::Double(_) => &["img", "txt"],
        BlockId::Single(_) => &["x"],
    }
}

/// The fitted node's name: `double_blocks.{i}.brll.{img,txt}` or `single_blocks.{i}.brll`.
pub fn node_name(block: BlockId, stream: &str) -> String {
    match block {
        BlockId::Double(_) => format!("{block}.brll.{stream}"),
        BlockId::Single(_) => format!("{block}.brll"),
    }
}

/// The blocks the `fastflux.brll` metadata lists (none without it), checked against the
/// counted (double, single) blocks.
pub fn replaced_blocks(ckpt: &Checkpoint, counted: (usize, usize)) -> Result<BTreeSet<BlockId>> {
    let Some(text) = ckpt.metadata(BRLL_KEY) else {
        return Ok(BTreeSet::new());
    };
    let bad = |why: String| {
        Error::file(
            &ckpt.origin,
            format!("header metadata `{BRLL_KEY}` = {text:?}: {why}"),
        )
    };
    let names: Vec<String> = serde_json::from_str(text)
        .map_err(|e| bad(format!("expected a JSON list of block names ({e})")))?;
    let mut blocks = BTreeSet::new();
    for name in names {
        let block: BlockId = name.parse().map_err(bad)?;
        let (index, count) = match block {
            BlockId::Double(i) => (i, counted.0),
            BlockId::Single(i) => (i, counted.1),
        };
        if index >= count {
            return Err(bad(format!(
                "lists {block}, but the file has only {count} blocks of that kind"
            )));
        }
        blocks.insert(block);
    }
    Ok(blocks)
}

/// The canonical parameters of a checkpoint whose `replaced` blocks hold fitted nodes: those of
/// `config`, less the replaced blocks', plus each fitted node's `weight` `[h,h]` and `bias`
/// `[h]`, and its `cond_weight` `[h,h]` for a conditioned fit (`fastflux.brll.fit`, or, when that
/// does not say, wherever `present` finds one).
pub fn parameters(
    config: &FluxConfig,
    replaced: &BTreeSet<BlockId>,
    ckpt: &Checkpoint,
    present: impl Fn(&str) -> bool,
) -> Vec<(String, Vec<usize>)> {
    let fit = ckpt.metadata(FIT_KEY);
    let h = config.hidden;
    let in_replaced = |name: &str| replaced.iter().any(|b| name.starts_with(&format!("{b}.")));
    let mut params: Vec<_> = config
        .parameters()
        .into_iter()
        .filter(|(name, _)| !in_replaced(name))
        .collect();
    for &block in replaced {
        for stream in streams(block) {
            let node = node_name(block, stream);
            let cond = format!("{node}.cond_weight");
            let conditioned = match fit {
                Some("conditioned") => true,
                Some("plain") => false,
                _ => present(&cond),
            };
            params.push((format!("{node}.weight"), vec![h, h]));
            params.push((format!("{node}.bias"), vec![h]));
            if conditioned {
                params.push((cond, vec![h, h]));
            }
        }
    }
    params.sort();
    params
}
