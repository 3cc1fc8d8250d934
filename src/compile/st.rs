//! The sandwich-training step of the compile driver: trains every sandwich of the pruned model
//! (`train`), puts the trained fitted weights into the graph, and writes the neighbours'
//! adapters as a LoRA file (`--st-save`, else one in a temporary folder) that the LoRA
//! pass then folds like any `--lora` file, so that compiling the emitted checkpoint with
//! `--lora` that file gives the same model.

use super::Compiled;
use crate::checkpoint::lora::{LoraSpec, write_lora};
use crate::error::{Error, Result};
use crate::fit::brll::{self as brll_run, BrllOptions, Verification, calibration_graph};
use crate::ir::Graph;
use crate::passes;
use crate::train::{self, StOptions, StOutcome};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What sandwich training did, and where its adapters went.
pub struct StSummary {
    pub outcome: StOutcome,
    /// The LoRA file holding the adapters, folded at scale 1.
    pub lora: PathBuf,
    /// Whether that file is the user's `--st-save`.
    pub saved: bool,
    /// The temporary folder holding the file when it is not `--st-save`: removed on `release`
    /// or when the summary is dropped, so an error between writing and folding leaves nothing.
    scratch: Option<tempfile::TempDir>,
    /// `--verify` after training: the output against the original's on held-out inputs.
    pub verification: Option<Verification>,
}

impl StSummary {
    pub fn lora_spec(&self) -> LoraSpec {
        LoraSpec {
            path: self.lora.clone(),
            scale: 1.0,
        }
    }

    /// Removes the temporary adapter file (after folding).
    pub fn release(&mut self) {
        self.scratch.take();
    }
}

/// Trains the sandwiches of `compiled.graph`, which BRLL rewrote from `original`, on the
/// calibration inputs `brll` names; `save` is `--st-save`.
pub fn train_sandwiches(
    compiled: &mut Compiled,
    original: &Graph,
    brll: &BrllOptions,
    st: &StOptions,
    save: Option<&Path>,
) -> Result<StSummary> {
    let inputs = brll_run::calibration_inputs(&compiled.ckpt, brll)?;
    let original32 = calibration_graph(original)?;
    let pruned32 = calibration_graph(&compiled.graph)?;
    let outcome = train::run(
        &compiled.ckpt,
        &original32,
        &pruned32,
        &inputs,
        &brll.calibration,
        st,
    )?;
    train::apply_fitted(&mut compiled.graph, &outcome.fitted)?;
    let (lora, scratch) = match save {
        Some(path) => (path.to_owned(), None),
        None => {
            let scratch = tempfile::Builder::new()
                .prefix("fastflux-st-")
                .tempdir()
                .map_err(|e| Error::io(&std::env::temp_dir(), e))?;
            (scratch.path().join("adapters.safetensors"), Some(scratch))
        }
    };
    let metadata = BTreeMap::from([(
        "fastflux.st".to_owned(),
        format!(
            "sandwich training: rank {}, {} steps, lr {}, batch {}, seed {}",
            st.rank, st.steps, st.lr, st.batch, st.seed
        ),
    )]);
    let config = &compiled.ckpt.config;
    write_lora(
        &lora,
        &compiled.ckpt.scheme,
        config,
        &outcome.adapters,
        &metadata,
    )?;
    let mut summary = StSummary {
        outcome,
        lora,
        saved: scratch.is_none(),
        scratch,
        verification: None,
    };
    if brll.verify {
        let mut trained = compiled.graph.clone();
        passes::lora::run(&mut trained, config, &[summary.lora_spec()], false)?;
        let trained = calibration_graph(&trained)?;
        summary.verification = Some(brll_run::verify(
            &compiled.ckpt,
            &original32,
            &trained,
            brll,
        )?);
    }
    Ok(summary)
}
