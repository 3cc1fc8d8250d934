//! The two executors the sampler drives: a compiled FLUX `.onnx` file in one ONNX Runtime
//! session (its inputs read off the file and checked against FLUX's), and the staged original
//! (`runtime::StagedRunner` over the lifted graph, block by block, for models that do not fit).

use super::Denoiser;
use crate::checkpoint::FluxCheckpoint;
use crate::error::{Error, Result};
use crate::inputs::{InputDim, InputSet, Signature};
use crate::ir::Graph;
use crate::runtime::staged::StagedRunner;
use crate::runtime::{ExecutionProvider, LoadedModel, OrtBackend, Port};
use crate::tensor::Tensor;
use std::path::Path;

/// A compiled model file in one ONNX Runtime session.
pub struct OnnxDenoiser {
    model: LoadedModel,
    signature: Signature,
    /// Prompts per session run (memory grows with it).
    batch: usize,
}

impl OnnxDenoiser {
    /// Opens `path` and checks that its inputs and output are a FLUX transformer's.
    pub fn open(
        path: &Path,
        threads: usize,
        provider: ExecutionProvider,
        batch: usize,
    ) -> Result<Self> {
        let model = LoadedModel::from_file_on(path, threads, provider)?;
        let signature = flux_signature(path, &model.inputs(), &model.outputs())?;
        Ok(Self {
            model,
            signature,
            batch: batch.max(1),
        })
    }
}

impl Denoiser for OnnxDenoiser {
    fn signature(&self) -> Signature {
        self.signature
    }

    fn velocity(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        let dim = |name: &str, axis: usize| {
            let t = inputs.iter().find(|t| t.name == name);
            t.and_then(|t| t.shape.get(axis).copied()).unwrap_or(0)
        };
        let samples = dim("hidden_states", 0);
        // Chunks of prompts, cut by the one slicing of the inputs (ids shared, so whole).
        let set = InputSet {
            samples,
            image_tokens: dim("hidden_states", 1),
            text_tokens: dim("encoder_hidden_states", 1),
            tensors: inputs.to_vec(),
        };
        let mut out: Option<Tensor> = None;
        for start in (0..samples).step_by(self.batch) {
            let chunk = set.slice(start, (start + self.batch).min(samples));
            let outputs = self.model.run(&chunk.tensors)?;
            let latent = outputs
                .into_iter()
                .find(|t| t.name == "latent")
                .ok_or_else(|| Error::Internal("the model returned no `latent`".into()))?;
            match &mut out {
                None => out = Some(latent),
                Some(acc) => {
                    acc.shape[0] += latent.shape[0];
                    acc.data.extend_from_slice(&latent.data);
                }
            }
        }
        out.ok_or_else(|| Error::Internal("no samples to run".into()))
    }
}

/// The original model run stage by stage: one block's weights in memory at a time.
pub struct StagedDenoiser<'a> {
    runner: StagedRunner<'a>,
    signature: Signature,
}

/// Models whose f32 weights are at most this large keep every stage loaded between sampling
/// steps; larger ones are reloaded block by block each step (memory holds one block).
pub const KEEP_LOADED_BYTES: usize = 4 << 30;

impl<'a> StagedDenoiser<'a> {
    pub fn new(runner: StagedRunner<'a>, signature: Signature) -> Self {
        Self { runner, signature }
    }

    /// The original model `graph` (lifted from `ckpt`, retyped to f32) on ONNX Runtime, `batch`
    /// samples per stage run. Every step runs every stage, so the stages stay loaded (idle
    /// threads not spinning) when the f32 weights are at most [`KEEP_LOADED_BYTES`].
    pub fn original(
        graph: &'a Graph,
        ckpt: &'a FluxCheckpoint,
        threads: usize,
        provider: ExecutionProvider,
        batch: usize,
    ) -> Result<Self> {
        let backend = OrtBackend::new(threads, provider)?;
        let runner = match graph.parameters() * 4 <= KEEP_LOADED_BYTES {
            true => StagedRunner::with_backend(graph, ckpt, backend.without_spinning(), batch)
                .keep_loaded(),
            false => StagedRunner::with_backend(graph, ckpt, backend, batch),
        };
        Ok(Self::new(runner, Signature::of(&ckpt.config)))
    }
}

impl Denoiser for StagedDenoiser<'_> {
    fn signature(&self) -> Signature {
        self.signature
    }

    fn velocity(&mut self, inputs: &[Tensor]) -> Result<Tensor> {
        self.runner
            .run(inputs)?
            .remove("latent")
            .ok_or_else(|| Error::Internal("the staged model has no `latent` output".into()))
    }
}

/// The signature of the model whose session declares `inputs` and `outputs`, if they are a
/// FLUX transformer's: the contract's inputs, float32, with the widths fixed, and an output
/// `latent`. The error names the file, what a FLUX model takes and what this one takes.
pub fn flux_signature(path: &Path, inputs: &[Port], outputs: &[Port]) -> Result<Signature> {
    let show = |ports: &[Port]| {
        let ports: Vec<String> = ports
            .iter()
            .map(|p| {
                let dims: Vec<String> = p.dims.iter().map(|d| dim_text(*d)).collect();
                let element = p.element.as_deref().unwrap_or("not a tensor");
                format!("`{}` [{}] {element}", p.name, dims.join(", "))
            })
            .collect();
        ports.join(", ")
    };
    let refuse = |why: String| {
        Error::file(
            path,
            format!(
                "not a FLUX transformer: {why}. A FLUX model takes `hidden_states` [S, N, C], \
                 `encoder_hidden_states` [S, L, ctx], `pooled_projections` [S, vec], `timestep` \
                 [S], `guidance` [S] (dev models only), `img_ids` [N, axes], `txt_ids` [L, axes], \
                 all float32, and returns `latent` [S, N, C]; this model takes {} and returns {}",
                show(inputs),
                show(outputs)
            ),
        )
    };
    let port = |name: &str| inputs.iter().find(|p| p.name == name);
    let width = |name: &str, rank: usize| -> Result<usize> {
        let p = port(name).ok_or_else(|| refuse(format!("it has no input `{name}`")))?;
        match p.dims.last() {
            Some(&w) if p.dims.len() == rank && w > 0 => Ok(w as usize),
            _ => Err(refuse(format!(
                "its input `{name}` has {} dimensions [{}], expected {rank} with a fixed last one",
                p.dims.len(),
                p.dims
                    .iter()
                    .map(|d| dim_text(*d))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    };
    let signature = Signature {
        in_channels: width("hidden_states", 3)?,
        context_dim: width("encoder_hidden_states", 3)?,
        pooled_dim: width("pooled_projections", 2)?,
        axes: width("img_ids", 2)?,
        guidance: port("guidance").is_some(),
    };
    let expected = signature.inputs();
    for p in inputs {
        let Some(want) = expected.iter().find(|e| e.name == p.name) else {
            return Err(refuse(format!(
                "its input `{}` is not one of FLUX's",
                p.name
            )));
        };
        if p.element.as_deref() != Some("Float32") {
            return Err(refuse(format!("its input `{}` is not float32", p.name)));
        }
        let fits = p.dims.len() == want.dims.len()
            && p.dims.iter().zip(&want.dims).all(|(&d, w)| match w {
                InputDim::Fixed(n, _) => d == *n as i64,
                _ => true,
            });
        if !fits {
            return Err(refuse(format!(
                "its input `{}` does not have the shape {}",
                p.name,
                want.shape_text()
            )));
        }
    }
    if let Some(missing) = expected.iter().find(|e| port(e.name).is_none()) {
        return Err(refuse(format!("it has no input `{}`", missing.name)));
    }
    if !outputs.iter().any(|o| o.name == "latent") {
        return Err(refuse("it has no output `latent`".into()));
    }
    Ok(signature)
}

fn dim_text(d: i64) -> String {
    match d {
        d if d < 0 => "?".into(),
        d => d.to_string(),
    }
}
