//! `--plan`: what would be compiled, without writing anything: the checkpoint as resolved, the
//! types, what LoRA folding would do, the parameters per part and, with BRLL flags, every
//! block's fit.

use super::calib_cond::{self, CalibrationRecord};
use super::{CompileOptions, fold_loras, lift_checkpoint};
use crate::checkpoint::FluxConfig;
use crate::checkpoint::brll_meta::FIT_KEY;
use crate::dtype::DType;
use crate::error::Result;
use crate::fit::brll as brll_run;
use crate::ir::{BlockId, Graph, Op};
use crate::passes::lora::LoraReport;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// What `plan` found.
pub struct PlanOutcome {
    pub checkpoint: PathBuf,
    pub files: usize,
    /// The naming scheme, described.
    pub naming: String,
    /// Blocks a BRLL rewrite already replaced in the checkpoint, and the kind of fit its
    /// metadata states.
    pub replaced: BTreeSet<BlockId>,
    pub fit: Option<String>,
    pub config: FluxConfig,
    /// Per stored type: tensors and parameters.
    pub stored: BTreeMap<DType, (usize, usize)>,
    /// The type the model would be exported in.
    pub dtype: DType,
    /// Stored tensors that are not part of the transformer.
    pub unused: Vec<String>,
    pub lora: Option<LoraReport>,
    pub parameters_by_part: Vec<(String, usize)>,
    /// With BRLL flags: every block fitted on the original model's activations.
    pub ranking: Option<brll_run::Ranking>,
    /// With BRLL flags: what the ranking was calibrated on.
    pub calibration: Option<CalibrationRecord>,
}

/// Opens, lifts and folds as `compile` would, and reports instead of writing.
pub fn plan(options: &CompileOptions) -> Result<PlanOutcome> {
    let mut c = lift_checkpoint(options)?;
    // BRLL ranks blocks of the base model, as `compile` fits them before LoRA is folded; the
    // clone is cheap (weights are lazy) and lets bad LoRA files fail before the slow ranking.
    let base = c.graph.clone();
    fold_loras(&mut c, options)?;
    let mut stored = BTreeMap::<DType, (usize, usize)>::new();
    for source in c.ckpt.sources().values() {
        let e = stored.entry(source.dtype).or_default();
        e.0 += 1;
        e.1 += source.numel();
    }
    let (ranking, calibration) = match &options.brll {
        Some(brll) => {
            // `--plan` verifies nothing: no held-out set to make.
            let brll = brll_run::BrllOptions {
                verify: false,
                ..brll.clone()
            };
            let (brll, record) = calib_cond::prepare(
                &c.ckpt,
                &base,
                &brll,
                options.calib_cond.as_ref(),
                options.calib_save.as_ref(),
            )?;
            (Some(brll_run::rank(&c.ckpt, &base, &brll)?), Some(record))
        }
        None => (None, None),
    };
    Ok(PlanOutcome {
        checkpoint: c.ckpt.origin().to_owned(),
        files: c.ckpt.checkpoint.files().len(),
        naming: c.ckpt.scheme.describe(),
        replaced: c.ckpt.replaced_blocks().clone(),
        fit: c.ckpt.checkpoint.metadata(FIT_KEY).map(str::to_owned),
        config: c.ckpt.config.clone(),
        stored,
        dtype: c.dtype,
        unused: c
            .ckpt
            .unused_keys()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        parameters_by_part: parameters_by_part(&c.graph),
        lora: c.lora,
        ranking,
        calibration,
    })
}

/// Parameters of the lifted graph per part: embedders, each block kind, final layer.
pub fn parameters_by_part(graph: &Graph) -> Vec<(String, usize)> {
    let mut parts = BTreeMap::<(u8, String), usize>::new();
    let (mut doubles, mut singles) = (0, 0);
    for node in graph.graph.node_weights() {
        let Op::Weight(w) = &node.op else { continue };
        let key = match node.block {
            Some(BlockId::Double(_)) => {
                doubles += w.numel();
                continue;
            }
            Some(BlockId::Single(_)) => {
                singles += w.numel();
                continue;
            }
            None if w.name.starts_with("final_layer") => (3, "final layer".to_owned()),
            None => (0, "embedders".to_owned()),
        };
        *parts.entry(key).or_default() += w.numel();
    }
    let blocks = graph.blocks();
    let count = |f: fn(&BlockId) -> bool| blocks.iter().filter(|b| f(b)).count();
    parts.insert(
        (
            1,
            format!(
                "double blocks (x{})",
                count(|b| matches!(b, BlockId::Double(_)))
            ),
        ),
        doubles,
    );
    parts.insert(
        (
            2,
            format!(
                "single blocks (x{})",
                count(|b| matches!(b, BlockId::Single(_)))
            ),
        ),
        singles,
    );
    let total: usize = parts.values().sum();
    let mut out: Vec<(String, usize)> = parts.into_iter().map(|((_, k), v)| (k, v)).collect();
    out.push(("total".into(), total));
    out
}
