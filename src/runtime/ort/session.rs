//! ONNX Runtime sessions: building one for a model file or an in-memory model on a chosen
//! execution provider, and running it on host tensors.

use super::library::environment;
use super::provider::ExecutionProvider;
use crate::error::RuntimeError;
use crate::tensor::Tensor;
use ::ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ::ort::session::{Session, SessionInputValue};
use ::ort::value::TensorRef;
use std::fmt::Display;
use std::path::Path;

/// Runs the ONNX model at `path` with `threads` intra-op threads (0 = ONNX Runtime's default,
/// one per physical core). External data resolves relative to the model's directory. Returns
/// every graph output, in graph order.
pub fn run_model_file(
    path: &Path,
    inputs: &[Tensor],
    threads: usize,
) -> Result<Vec<Tensor>, RuntimeError> {
    let model = path.display().to_string();
    let cpu = ExecutionProvider::Cpu;
    let mut session = commit(&model, threads, cpu, true, |b| b.commit_from_file(path))?;
    run_session(&mut session, &model, inputs)
}

/// [`run_model_file`] for a serialized model in memory. All weights must be embedded: ONNX
/// Runtime resolves an in-memory model's external data against the process's working directory.
pub fn run_model_bytes(
    model: &[u8],
    inputs: &[Tensor],
    threads: usize,
) -> Result<Vec<Tensor>, RuntimeError> {
    LoadedModel::from_bytes(model, threads)?.run(inputs)
}

/// A session kept for several runs (a calibration stage runs once per chunk of samples).
pub struct LoadedModel {
    session: Session,
    name: String,
}

/// A graph input or output as the session declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    /// The element type, as ONNX Runtime names it (`Float32`, `Int64` …); `None` if not a tensor.
    pub element: Option<String>,
    /// The dimensions, -1 where dynamic; empty if not a tensor.
    pub dims: Vec<i64>,
}

impl LoadedModel {
    /// Builds a session for the model file at `path` (its external data resolves relative to the
    /// model's folder) on the given execution provider.
    pub fn from_file_on(
        path: &Path,
        threads: usize,
        provider: ExecutionProvider,
    ) -> Result<Self, RuntimeError> {
        let name = path.display().to_string();
        let session = commit(&name, threads, provider, true, |b| b.commit_from_file(path))?;
        Ok(Self { session, name })
    }

    /// The graph's inputs, in order.
    pub fn inputs(&self) -> Vec<Port> {
        self.session.inputs().iter().map(port).collect()
    }

    /// The graph's outputs, in order.
    pub fn outputs(&self) -> Vec<Port> {
        self.session.outputs().iter().map(port).collect()
    }

    /// Builds a session on the CPU from a serialized model with all weights embedded; `model`
    /// may be dropped afterwards (ONNX Runtime keeps its own copy of the weights).
    pub fn from_bytes(model: &[u8], threads: usize) -> Result<Self, RuntimeError> {
        Self::from_bytes_on(model, threads, ExecutionProvider::Cpu)
    }

    /// [`LoadedModel::from_bytes`] on the given execution provider (`Auto` is resolved here).
    pub fn from_bytes_on(
        model: &[u8],
        threads: usize,
        provider: ExecutionProvider,
    ) -> Result<Self, RuntimeError> {
        Self::from_bytes_with(model, threads, provider, true)
    }

    /// [`LoadedModel::from_bytes_on`], choosing whether idle intra-op threads spin (see `commit`).
    pub fn from_bytes_with(
        model: &[u8],
        threads: usize,
        provider: ExecutionProvider,
        spinning: bool,
    ) -> Result<Self, RuntimeError> {
        let name = format!("<in-memory model, {} bytes>", model.len());
        let load = |b: &mut SessionBuilder| b.commit_from_memory(model);
        let session = commit(&name, threads, provider, spinning, load)?;
        Ok(Self { session, name })
    }

    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        run_session(&mut self.session, &self.name, inputs)
    }
}

fn port(outlet: &::ort::value::Outlet) -> Port {
    let ty = outlet.dtype();
    Port {
        name: outlet.name().to_string(),
        element: ty.tensor_type().map(|t| format!("{t:?}")),
        dims: ty.tensor_shape().map(|s| s.to_vec()).unwrap_or_default(),
    }
}

/// `spinning`: ONNX Runtime's intra-op threads spin-wait for work after a run (its default).
/// Off where many sessions stay alive together (kept stages): their spinning threads would take
/// the cores from the one session that runs.
fn commit(
    model: &str,
    threads: usize,
    provider: ExecutionProvider,
    spinning: bool,
    load: impl FnOnce(&mut SessionBuilder) -> ::ort::Result<Session>,
) -> Result<Session, RuntimeError> {
    let env = environment()?;
    let fail = |e: &dyn Display| RuntimeError::Session(model.to_string(), e.to_string());
    // `All` is ORT_ENABLE_ALL (99). In this ort version `Level3` maps to ORT_ENABLE_LAYOUT (3), a
    // level that would leave out any optimizer ONNX Runtime places above the layout passes.
    let mut builder = Session::builder(env)
        .map_err(|e| fail(&e))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| fail(&e))?
        .with_intra_threads(threads)
        .map_err(|e| fail(&e))?
        .with_intra_op_spinning(spinning)
        .map_err(|e| fail(&e))?;
    // The CPU provider is ONNX Runtime's own fallback: registering nothing selects it, exactly
    // as sessions were built before providers were selectable.
    if provider.resolve()? == ExecutionProvider::Cuda {
        // Fail loudly: a silent fallback to the CPU would hide a broken CUDA setup.
        let cuda = ::ort::ep::CUDA::default().build().error_on_failure();
        builder = builder
            .with_execution_providers([cuda])
            .map_err(|e| fail(&e))?;
    }
    load(&mut builder).map_err(|e| fail(&e))
}

fn run_session(
    session: &mut Session,
    model: &str,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>, RuntimeError> {
    let bad_input = |msg: String| RuntimeError::Input(model.to_string(), msg);
    // Checked here because ONNX Runtime's messages for these do not say what the graph expects.
    let expected: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
    let given = |name: &str| inputs.iter().any(|t| t.name == name);
    if let Some(name) = expected.iter().find(|n| !given(n)) {
        return Err(bad_input(format!(
            "missing `{name}` (graph inputs: {expected:?})"
        )));
    }
    let mut values: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
    for t in inputs {
        if !expected.contains(&t.name.as_str()) {
            let msg = format!("unknown input `{}` (graph inputs: {expected:?})", t.name);
            return Err(bad_input(msg));
        }
        let (name, shape, len) = (&t.name, &t.shape, t.data.len());
        if shape.iter().product::<usize>() != len {
            return Err(bad_input(format!(
                "`{name}` has shape {shape:?} but {len} values"
            )));
        }
        // A borrowed view: ONNX Runtime reads the caller's buffer in place, no copy.
        let view = TensorRef::from_array_view((t.shape.as_slice(), t.data.as_slice()))
            .map_err(|e| bad_input(format!("`{}`: {e}", t.name)))?;
        values.push((t.name.as_str(), view.into()));
    }

    let run_failed = |msg: String| RuntimeError::Run(model.to_string(), msg);
    let outputs = session.run(values).map_err(|e| run_failed(e.to_string()))?;
    // SessionOutputs iterates in the session's output order.
    let mut result = Vec::with_capacity(outputs.len());
    for (name, value) in &outputs {
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| run_failed(format!("output `{name}`: {e}")))?;
        let shape = shape.iter().map(|&d| d as usize).collect();
        let (name, data) = (name.to_string(), data.to_vec());
        result.push(Tensor { name, shape, data });
    }
    Ok(result)
}
