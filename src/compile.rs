//! The compile driver: checkpoint → IR → passes → ONNX, with the checks that protect the user's
//! files, and the report printed at the end (or, with `--plan`, instead of writing anything).

use crate::checkpoint::lora::LoraSpec;
use crate::checkpoint::{FluxCheckpoint, emit};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fit::brll::{self as brll_run, BrllOptions};
use crate::ir::Graph;
use crate::lift::{self, LiftOptions};
use crate::onnx::{self, ExportOptions, Target};
use crate::passes;
use crate::report::{brll_report, human, human_bytes, parameters_by_part, ranking_table, report};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub checkpoint: PathBuf,
    pub output: Option<PathBuf>,
    pub dtype: Option<DType>,
    pub axes_dim: Option<Vec<usize>>,
    pub target: Target,
    pub show_progress: bool,
    /// `--replace` / `--prune`: BRLL and its calibration.
    pub brll: Option<BrllOptions>,
    /// `--lora FILE[:SCALE]`, folded in the order given.
    pub loras: Vec<LoraSpec>,
    /// `--lora-allow-unmatched`: skip LoRA keys that match no weight instead of failing.
    pub lora_allow_unmatched: bool,
    /// `--emit-safetensors FILE`: also write the BRLL-rewritten base model (before LoRA) as a
    /// checkpoint in the input's naming (see `checkpoint::emit`).
    pub emit_safetensors: Option<PathBuf>,
}

impl CompileOptions {
    /// Compiling `checkpoint` with every choice at its default: no output, the checkpoint's
    /// dtype, axes from the checkpoint, the CUDA target, no BRLL, no LoRA, no progress bar.
    pub fn new(checkpoint: impl Into<PathBuf>) -> Self {
        Self {
            checkpoint: checkpoint.into(),
            output: None,
            dtype: None,
            axes_dim: None,
            target: Target::Cuda,
            show_progress: false,
            brll: None,
            loras: Vec::new(),
            lora_allow_unmatched: false,
            emit_safetensors: None,
        }
    }
}

pub struct Compiled {
    pub ckpt: FluxCheckpoint,
    pub graph: Graph,
    pub dtype: DType,
    /// What the LoRA pass folded, when `--lora` was given.
    pub lora: Option<passes::lora::LoraReport>,
}

/// Opens the checkpoint, lifts it and folds the LoRA deltas: the unpruned model, unwritten.
pub fn prepare(options: &CompileOptions) -> Result<Compiled> {
    let mut compiled = lift_checkpoint(options)?;
    compiled.lora = fold_loras(&mut compiled, options)?;
    Ok(compiled)
}

/// Opens the checkpoint and lifts it: everything short of the passes and writing.
pub fn lift_checkpoint(options: &CompileOptions) -> Result<Compiled> {
    let ckpt = FluxCheckpoint::open(&options.checkpoint, options.axes_dim.clone())?;
    let dtype = options.dtype.unwrap_or_else(|| lift::default_dtype(&ckpt));
    let graph = lift::lift(&ckpt, LiftOptions { dtype })?;
    Ok(Compiled {
        ckpt,
        graph,
        dtype,
        lora: None,
    })
}

fn fold_loras(
    compiled: &mut Compiled,
    options: &CompileOptions,
) -> Result<Option<passes::lora::LoraReport>> {
    passes::lora::run(
        &mut compiled.graph,
        &compiled.ckpt.config,
        &options.loras,
        options.lora_allow_unmatched,
    )
}

/// Compiles and writes the model; returns the summary to print.
pub fn compile(options: &CompileOptions) -> Result<String> {
    let start = Instant::now();
    let output = options.output.as_deref().ok_or_else(|| {
        Error::Usage("no output path: pass -o OUT.onnx (or --plan to only inspect)".into())
    })?;
    let mut compiled = lift_checkpoint(options)?;
    refuse_to_overwrite_inputs(&compiled.ckpt, output)?;
    if let Some(emit) = &options.emit_safetensors {
        refuse_to_overwrite_inputs(&compiled.ckpt, emit)?;
        if resolve(emit).is_some_and(|e| {
            [
                output.to_owned(),
                PathBuf::from(format!("{}.data", output.display())),
            ]
            .iter()
            .any(|o| resolve(o).as_ref() == Some(&e))
        }) {
            return Err(Error::Usage(format!(
                "--emit-safetensors {} is also the ONNX output; choose another path",
                emit.display()
            )));
        }
    }
    let original = compiled.graph.clone();
    let brll = match &options.brll {
        Some(brll) => Some(brll_run::run(&compiled.ckpt, &mut compiled.graph, brll)?),
        None => None,
    };
    // The checkpoint that sandwich training loads is the rewritten base model: no LoRA in it.
    let emitted = match &options.emit_safetensors {
        Some(path) => Some((path, emit::write(path, &compiled.ckpt, &compiled.graph)?)),
        None => None,
    };
    // LoRA deltas meet the final weights: those BRLL fitted, and none of those it removed.
    compiled.lora = fold_loras(&mut compiled, options)?;
    // No source path: the same checkpoint content and flags give the same bytes, wherever
    // the checkpoint lies (a file written by --emit-safetensors compiles to what its source did).
    let mut metadata = vec![
        (
            "fastflux.config".to_owned(),
            format!("{:?}", compiled.ckpt.config),
        ),
        ("fastflux.dtype".to_owned(), compiled.dtype.to_string()),
    ];
    let loras: Vec<String> = options
        .loras
        .iter()
        .map(|l| format!("{}:{}", l.path.display(), l.scale))
        .collect();
    if !loras.is_empty() {
        metadata.push(("fastflux.lora".to_owned(), loras.join(" ")));
    }
    let export = ExportOptions {
        target: options.target,
        show_progress: options.show_progress,
        metadata,
    };
    let summary = onnx::export(&compiled.graph, &compiled.ckpt, output, &export)?;
    let mut text = report(&compiled, output, &summary, start.elapsed().as_secs_f64());
    if let Some((path, e)) = &emitted {
        let blocks: Vec<String> = e.replaced.iter().map(ToString::to_string).collect();
        let _ = write!(
            text,
            "\nwrote {} ({} tensors, {}): the BRLL-rewritten base model, blocks replaced: {}",
            path.display(),
            e.tensors,
            human_bytes(e.bytes),
            if blocks.is_empty() {
                "none".to_owned()
            } else {
                blocks.join(", ")
            }
        );
    }
    if let Some(outcome) = &brll {
        text.push('\n');
        text.push_str(&brll_report(
            &original,
            &compiled.graph,
            outcome,
            options.brll.as_ref(),
        ));
    }
    Ok(text)
}

/// `--plan`: what would be compiled, without writing anything.
pub fn plan(options: &CompileOptions) -> Result<String> {
    let c = prepare(options)?;
    let mut r = String::new();
    let _ = writeln!(r, "checkpoint   {}", c.ckpt.origin().display());
    let _ = writeln!(r, "files        {}", c.ckpt.checkpoint.files().len());
    let _ = writeln!(r, "naming       {}", c.ckpt.scheme.describe());
    let replaced = c.ckpt.replaced_blocks();
    if !replaced.is_empty() {
        let blocks: Vec<String> = replaced.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            r,
            "replaced     {} (BRLL fits stored in the checkpoint, `{}` metadata; {} fit)",
            blocks.join(", "),
            emit::BRLL_KEY,
            c.ckpt
                .checkpoint
                .metadata(emit::FIT_KEY)
                .unwrap_or("unstated")
        );
    }
    for line in c.ckpt.config.to_string().lines() {
        let _ = writeln!(r, "  {line}");
    }
    let mut stored = BTreeMap::<DType, (usize, usize)>::new();
    for source in c.ckpt.sources().values() {
        let e = stored.entry(source.dtype).or_default();
        e.0 += 1;
        e.1 += source.shape.iter().product::<usize>();
    }
    let stored: Vec<String> = stored
        .iter()
        .map(|(d, (t, p))| format!("{d} ({t} tensors, {} parameters)", human(*p as f64)))
        .collect();
    let _ = writeln!(r, "stored as    {}", stored.join(", "));
    let _ = writeln!(
        r,
        "exported as  {} (weights and compute; inputs and output f32)",
        c.dtype
    );
    let unused = c.ckpt.unused_keys();
    if !unused.is_empty() {
        let _ = writeln!(
            r,
            "ignored      {} tensors that are not part of the transformer, e.g. {}",
            unused.len(),
            unused[0]
        );
    }
    if let Some(lora) = &c.lora {
        let _ = writeln!(r, "{}", lora.to_string().trim_start());
    }
    let _ = writeln!(r, "parameters by part:");
    for (part, n) in parameters_by_part(&c.graph) {
        let _ = writeln!(r, "  {part:<22} {:>10}", human(n as f64));
    }
    if let Some(brll) = &options.brll {
        r.push_str(&ranking_table(&brll_run::rank(
            &c.ckpt,
            &lift::lift(&c.ckpt, LiftOptions { dtype: c.dtype })?,
            brll,
        )?));
    }
    Ok(r)
}

/// The output (or its data file) must not be one of the checkpoint's files.
fn refuse_to_overwrite_inputs(ckpt: &FluxCheckpoint, output: &Path) -> Result<()> {
    let data = PathBuf::from(format!("{}.data", output.display()));
    let inputs: Vec<PathBuf> = std::iter::once(ckpt.origin().to_owned())
        .chain(ckpt.checkpoint.files().iter().map(|f| f.path().to_owned()))
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    for target in [output, data.as_path()] {
        let Some(resolved) = resolve(target) else {
            continue;
        };
        if inputs.contains(&resolved) {
            return Err(Error::Usage(format!(
                "output {} would overwrite the input checkpoint {}; choose another output path",
                target.display(),
                resolved.display()
            )));
        }
    }
    Ok(())
}

/// The absolute path `p` names, whether or not the file exists yet.
fn resolve(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(parent.canonicalize().ok()?.join(p.file_name()?))
}
