//! The memory plan of a calibration walk: what `--memory-budget` makes of one sample's bytes —
//! the samples per stage run and the output effect's groups — and the line the summary prints.

use super::effect::EffectPlan;
use crate::inputs::InputSet;
use crate::ir::Graph;
use crate::metrics::{count, human_bytes};
use crate::runtime::MemoryBudget;
use crate::runtime::staged::{self, plan_stages};

/// How a calibration walk holds its activations under the memory budget.
#[derive(Copy, Clone, Debug)]
pub struct MemoryPlan {
    pub budget: MemoryBudget,
    /// One sample's activations held between stages at the widest point, and its working set
    /// while the largest stage runs (inputs, intermediates, attention scores), in f32 bytes.
    pub held_bytes: u64,
    pub working_bytes: u64,
    /// Samples per stage run: `--calib-batch`, fewer where that many samples' working sets
    /// would exceed the budget.
    pub batch: usize,
    /// The output effect's samples and groups, when it is measured over `variants` blocks.
    pub effect: Option<EffectPlan>,
}

impl MemoryPlan {
    /// The plan for walking `graph` over `inputs`; `variants`: the number of blocks whose
    /// output effect is measured, if it is.
    pub fn new(graph: &Graph, inputs: &InputSet, options: Limits, variants: Option<usize>) -> Self {
        let (stages, tokens) = (plan_stages(graph), inputs.tokens());
        let (held_bytes, working_bytes) = (
            staged::held_bytes(graph, &stages, tokens),
            staged::working_bytes(graph, &stages, tokens),
        );
        let budget = options.budget;
        let effect = variants.map(|k| {
            let samples = match options.effect_samples {
                0 => inputs.samples,
                m => m.min(inputs.samples),
            };
            // The group's activations with a copy per variant: its scratch files.
            let per_sample = held_bytes * (k as u64 + 1);
            EffectPlan {
                samples,
                group: budget.samples(per_sample, samples.max(1)),
            }
        });
        Self {
            budget,
            held_bytes,
            working_bytes,
            batch: budget.samples(working_bytes, options.batch.max(1)),
            effect,
        }
    }

    /// Whether a single sample's working set is larger than the budget (the walk then runs one
    /// sample at a time and holds more than the budget).
    pub fn over_budget(&self) -> bool {
        self.budget.exceeded_by(self.working_bytes)
    }
}

/// What of the calibration options the plan reads (`CalibrationOptions::limits`).
#[derive(Copy, Clone, Debug)]
pub struct Limits {
    pub budget: MemoryBudget,
    /// `--calib-batch`: samples per stage run at most.
    pub batch: usize,
    /// `--effect-samples` (0 = all).
    pub effect_samples: usize,
}

impl MemoryPlan {
    /// The summary's line: the budget, the samples per stage run and what one sample takes.
    pub fn describe(&self) -> String {
        let over = match self.over_budget() {
            true => " — one sample's working set alone exceeds the budget",
            false => "",
        };
        format!(
            "budget {}: {} per stage run (working set {} a sample{over}); activations between \
stages spilled to TMPDIR ({} a sample)",
            self.budget,
            count(self.batch, "sample"),
            human_bytes(self.working_bytes),
            human_bytes(self.held_bytes)
        )
    }
}
