//! What a compile prints: the end-of-run summary (`CompileOutcome`), the BRLL section of it,
//! the `--plan` report (`PlanOutcome`) with its ranking table, and the human-readable numbers
//! they use, with where each stage ran and what `--verify` judged on. Rendering only: the driver
//! (`compile`) computes everything shown here.

use crate::checkpoint::brll_meta::BRLL_KEY;
use crate::compile::calib_cond::describe;
use crate::compile::{
    BrllSummary, CalibrationRecord, CalibrationSource, CompileOutcome, PlanOutcome, StSummary,
};
use crate::fit::brll::{HeldOutSource, Ranking, Verification};
use crate::fit::select::{SelectRule, ranked};
use crate::runtime::ExecutionProvider;
use crate::runtime::candle::CandleDevice;
use crate::train::Entry;
use std::fmt::{self, Display, Formatter, Write as _};

impl Display for CompileOutcome {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let (output, s) = (self.output.display(), &self.export);
        let config = self
            .output
            .with_file_name(crate::checkpoint::diffusers_config::CONFIG_FILE);
        writeln!(f, "wrote {output}, {output}.data and {}", config.display())?;
        writeln!(
            f,
            "  parameters   {} before, {} after",
            human(self.parameters_before as f64),
            human(s.parameters as f64)
        )?;
        writeln!(
            f,
            "  bytes        {} of weights ({}), {} of graph ({} ONNX nodes)",
            human_bytes(s.weight_bytes),
            self.dtype,
            human_bytes(s.model_bytes),
            s.onnx_nodes
        )?;
        if let Some(lora) = &self.lora {
            writeln!(f, "{lora}")?;
        }
        let (collapse, clamps) = (&self.rewrites.collapse, self.rewrites.f16_clamps);
        if collapse.composed > 0 || collapse.folded > 0 {
            writeln!(
                f,
                "  BRLL nodes   {} fitted nodes composed into runs, {} exported as one product \
                 with the shortcut folded",
                collapse.composed, collapse.folded
            )?;
        }
        if clamps > 0 {
            writeln!(
                f,
                "  f16 range    {clamps} Clip nodes at ±65504 (single-block outputs, \
                 double-block text streams)"
            )?;
        }
        write!(
            f,
            "  time         {:.1} s ({}/s)",
            self.seconds,
            human_bytes((s.weight_bytes as f64 / self.seconds.max(1e-9)) as u64)
        )?;
        if let Some(e) = &self.emitted {
            let blocks: Vec<String> = e.replaced.iter().map(ToString::to_string).collect();
            write!(
                f,
                "\nwrote {} ({} tensors, {}): the BRLL-rewritten base model, blocks replaced: {}",
                e.path.display(),
                e.tensors,
                human_bytes(e.bytes),
                if blocks.is_empty() {
                    "none".to_owned()
                } else {
                    blocks.join(", ")
                }
            )?;
        }
        if let Some(brll) = &self.brll {
            write!(f, "\n{brll}")?;
        }
        if let Some(st) = &self.st {
            write!(f, "\n{st}")?;
        }
        Ok(())
    }
}

/// What BRLL replaced, what it saves, and how close the pruned model stays.
impl Display for BrllSummary {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let (outcome, tokens) = (&self.outcome, self.tokens);
        let provider = self.calibration.provider;
        write!(
            f,
            "BRLL: {} blocks replaced ({} calibration samples)",
            outcome.replaced.len(),
            outcome.calibration_samples
        )?;
        match outcome.replaced.is_empty() {
            true => writeln!(f)?,
            false => writeln!(f, ", fitted on {}", onnx_runtime(provider))?,
        }
        writeln!(f, "{}", self.calibration)?;
        writeln!(f, "  memory             {}", outcome.memory.describe())?;
        if let Some(ranking) = &outcome.ranking {
            writeln!(f, "  chosen by          {}", ranking.rule.describe())?;
            writeln!(
                f,
                "  ranking cost       {}",
                ranking_cost(ranking, provider)
            )?;
        }
        for b in &outcome.replaced {
            let streams: Vec<String> = b
                .fit
                .streams
                .iter()
                .map(|s| format!("{} {:.4}", s.stream, s.relative_error))
                .collect();
            writeln!(
                f,
                "  {:<18} fit error {:.4} ({})",
                b.block.to_string(),
                b.fit_error,
                streams.join(", ")
            )?;
        }
        let (before, after) = self.parameters;
        writeln!(
            f,
            "  parameters         {} -> {} ({:.1}% fewer)",
            human(before as f64),
            human(after as f64),
            100.0 * (1.0 - after as f64 / before as f64)
        )?;
        let (f0, f1) = self.flops_per_image_token;
        writeln!(
            f,
            "  FLOPs/image token  {} -> {} ({:.1}% fewer; at the calibration set's {} image, {} \
             text tokens)",
            human(f0),
            human(f1),
            100.0 * (1.0 - f1 / f0),
            tokens.image,
            tokens.text
        )?;
        match &outcome.verification {
            Some(v) => f.write_str(&verification(v, "")),
            None => write!(f, "  verification       not run (pass --verify)"),
        }
    }
}

/// The `--verify` lines: the errors, where they ran, and the held-out set they were measured on.
fn verification(v: &Verification, when: &str) -> String {
    let set = match &v.held_out {
        HeldOutSource::File(path) => format!("the --verify-inputs file {}", path.display()),
        HeldOutSource::Synthetic {
            seed,
            calibration_seed,
        } => format!(
            "synthetic random inputs of the calibration set's sizes, seed {seed} (the \
             calibration set's: {calibration_seed})"
        ),
        HeldOutSource::Trajectories {
            prompts,
            per_prompt,
            recorded,
            steps,
        } => format!(
            "the calibration trajectories' inputs at steps not recorded for calibration, \
             {per_prompt} per prompt ({prompts} prompts; each recorded {recorded} of its {steps} \
             steps); held out in step, not in prompt or starting noise"
        ),
    };
    let errors = format!(
        "relative L2 error {:.4}, cosine similarity {:.5} ({when}f32, on {})",
        v.relative_l2,
        v.cosine,
        onnx_runtime(v.provider)
    );
    format!(
        "  verification       {errors}\n  held-out set       {} samples: {set}",
        v.samples
    )
}

/// Where ONNX Runtime ran a stage.
fn onnx_runtime(provider: ExecutionProvider) -> String {
    format!("ONNX Runtime's {provider} execution provider")
}

/// Where candle ran a stage.
fn candle_on(device: CandleDevice) -> String {
    match device {
        CandleDevice::Cpu => "candle on the CPU".to_owned(),
        CandleDevice::Cuda(gpu) => format!("candle on CUDA GPU {gpu}"),
        CandleDevice::Metal(gpu) => format!("candle on Metal GPU {gpu}"),
    }
}

/// What sandwich training trained, how far each loss fell, and where the adapters went.
impl Display for StSummary {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let (outcome, o) = (&self.outcome, &self.outcome.options);
        writeln!(
            f,
            "ST: {} sandwiches trained on {}, {} steps each (rank {}, lr {}, batch {}, {} \
             calibration samples, entry: {})",
            outcome.sandwiches.len(),
            candle_on(outcome.device),
            o.steps,
            o.rank,
            o.lr,
            o.batch,
            outcome.samples,
            match o.entry {
                Entry::Pruned => "the pruned model, earlier sandwiches trained",
                Entry::Original => "the original model",
            }
        )?;
        for s in &outcome.sandwiches {
            writeln!(
                f,
                "  {}\n      exit loss {:.4e} -> {:.4e} ({:.2}x), {} trainable, {:.1} s ({:.2} steps/s)",
                s.sandwich,
                s.loss_before,
                s.loss_after,
                s.loss_after / s.loss_before.max(f64::MIN_POSITIVE),
                human(s.trainable_parameters as f64),
                s.seconds,
                s.steps as f64 / s.step_seconds.max(1e-9)
            )?;
            if let Some(curve) = s.curve_by_fifths() {
                writeln!(f, "      mini-batch loss by fifth of the steps {curve}")?;
            }
            if let Some(raised) = s.reverted_from {
                writeln!(
                    f,
                    "      training raised the loss to {raised:.4e}: the sandwich keeps its BRLL fit \
                     (lower --st-lr, or calibrate on more samples)"
                )?;
            }
        }
        let linears = outcome.adapters.len();
        match self.saved {
            true => writeln!(
                f,
                "  adapters           {linears} linears, written to {} and folded into the weights",
                self.lora.display()
            )?,
            false => writeln!(
                f,
                "  adapters           {linears} linears, folded into the weights (--st-save FILE keeps them)"
            )?,
        }
        match &self.verification {
            Some(v) => f.write_str(&verification(v, "after ST, ")),
            None => write!(f, "  verification       not run (pass --verify)"),
        }
    }
}

impl Display for PlanOutcome {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "checkpoint   {}", self.checkpoint.display())?;
        writeln!(f, "files        {}", self.files)?;
        writeln!(f, "naming       {}", self.naming)?;
        if !self.replaced.is_empty() {
            let blocks: Vec<String> = self.replaced.iter().map(ToString::to_string).collect();
            writeln!(
                f,
                "replaced     {} (BRLL fits stored in the checkpoint, `{}` metadata; {} fit)",
                blocks.join(", "),
                BRLL_KEY,
                self.fit.as_deref().unwrap_or("unstated")
            )?;
        }
        for line in self.config.to_string().lines() {
            writeln!(f, "  {line}")?;
        }
        let stored: Vec<String> = self
            .stored
            .iter()
            .map(|(d, (t, p))| format!("{d} ({t} tensors, {} parameters)", human(*p as f64)))
            .collect();
        writeln!(f, "stored as    {}", stored.join(", "))?;
        writeln!(
            f,
            "exported as  {} (weights and compute; inputs and output f32)",
            self.dtype
        )?;
        if let Some(first) = self.unused.first() {
            writeln!(
                f,
                "ignored      {} tensors that are not part of the transformer, e.g. {}",
                self.unused.len(),
                first
            )?;
        }
        if let Some(lora) = &self.lora {
            writeln!(f, "{}", lora.to_string().trim_start())?;
        }
        writeln!(f, "parameters by part:")?;
        for (part, n) in &self.parameters_by_part {
            writeln!(f, "  {part:<22} {:>10}", human(*n as f64))?;
        }
        if let Some(calibration) = &self.calibration {
            writeln!(f, "{calibration}")?;
        }
        if let (Some(ranking), Some(calibration)) = (&self.ranking, &self.calibration) {
            f.write_str(&ranking_table(ranking, calibration.provider))?;
        }
        Ok(())
    }
}

/// What the fits were calibrated on; plainly, when that was random.
impl Display for CalibrationRecord {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let line = match &self.source {
            CalibrationSource::Synthetic => "synthetic random inputs: the fits were judged on \
                random latents and text embeddings, not on what the model sees in use; pass \
                --calib-cond PROMPTS.safetensors to calibrate on the model's own sampling \
                trajectories from your prompts (or --calib FILE)"
                .to_string(),
            CalibrationSource::Trajectories { seconds, .. } => format!(
                "{} (sampled in {seconds:.1} s on {})",
                describe(&self.source),
                onnx_runtime(self.provider)
            ),
            source => describe(source),
        };
        write!(f, "  calibration        {line}")?;
        if let Some((path, samples)) = &self.saved {
            write!(
                f,
                "\n  calibration saved  {} ({samples} samples; reload it with --calib)",
                path.display()
            )?;
        }
        Ok(())
    }
}

/// The ranking table of `--plan` with BRLL flags: every block's fit on the original
/// activations, per stream, and its output effect, in the order `ranking.rule` ranks them.
fn ranking_table(ranking: &Ranking, provider: ExecutionProvider) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "BRLL ranking (every block fitted on the original model's activations), by {}:",
        ranking.rule.describe()
    );
    let _ = writeln!(
        r,
        "  {:<18} {:>10} {:>9} {:>9} {:>13} {:>12} {:>14}",
        "block", "fit error", "img", "txt", "output effect", "cos(in,out)", "params saved"
    );
    // Without the output effect (`--select local`) the rule is always computable.
    let sorted = ranked(&ranking.reports, ranking.rule).unwrap_or_default();
    for b in sorted {
        let stream = |name: &str| {
            b.fit
                .streams
                .iter()
                .find(|s| s.stream == name)
                .map_or("-".to_owned(), |s| format!("{:.4}", s.relative_error))
        };
        let effect = b
            .output_effect
            .map_or("-".to_owned(), |e| format!("{e:.4}"));
        let _ = writeln!(
            r,
            "  {:<18} {:>10.4} {:>9} {:>9} {:>13} {:>12.4} {:>14}",
            b.block.to_string(),
            b.fit_error,
            stream("img"),
            stream("txt"),
            effect,
            b.cosine,
            human(b.params_saved as f64)
        );
    }
    let _ = writeln!(
        r,
        "  fit error: pooled over a double block's streams (img, txt: each stream's own); output \
effect: relative L2 error of the model's output when the block alone is replaced"
    );
    let _ = writeln!(r, "  ranking cost: {}", ranking_cost(ranking, provider));
    let _ = writeln!(r, "  memory: {}", ranking.memory.describe());
    r
}

/// What ranking cost, in block runs over the calibration set and seconds, and where it ran.
fn ranking_cost(ranking: &Ranking, provider: ExecutionProvider) -> String {
    let base = format!(
        "{:.1} s on {}; {} block runs of {} samples",
        ranking.seconds,
        onnx_runtime(provider),
        ranking.block_runs,
        ranking.samples
    );
    match ranking.rule {
        SelectRule::Output => {
            let (groups, group) = ranking
                .memory
                .effect
                .map_or((0, 0), |e| (e.groups(), e.group));
            format!(
                "{base} + {} of {} samples for the output effect (each block's variant runs the \
blocks after it), in {} of {} (memory budget {}), and {} extra runs of the stages around the \
blocks",
                ranking.extra_block_runs,
                ranking.effect_samples,
                count(groups, "walk"),
                count(group, "sample"),
                ranking.memory.budget,
                ranking.extra_other_runs
            )
        }
        SelectRule::Local => format!("{base} (output effect not measured: --select local)"),
    }
}

pub use crate::metrics::{count, human_bytes};

pub fn human(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2} B", n / 1e9),
        n if n >= 1e6 => format!("{:.2} M", n / 1e6),
        n if n >= 1e3 => format!("{:.1} k", n / 1e3),
        n => format!("{n:.0}"),
    }
}
