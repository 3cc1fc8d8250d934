//! The model-input contract: the ONNX inputs every exported model takes, in order, and the shape
//! each must have for a given `FluxConfig`. The lifter, calibration, the examples and any
//! sampler read names and shapes from here instead of spelling them out.

use crate::checkpoint::FluxConfig;
use crate::ir;
use std::fmt;

/// The inputs that share one id grid across the batch rather than having a batch axis.
pub const ID_INPUTS: [&str; 2] = ["img_ids", "txt_ids"];

/// One dimension of an input's shape: a size shared between inputs, or one the model fixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputDim {
    /// S, the samples (the batch axis).
    Samples,
    /// N, the image tokens.
    ImageTokens,
    /// L, the text tokens.
    TextTokens,
    /// A size the model fixes, and what in the model fixes it ("in_channels").
    Fixed(usize, &'static str),
}

impl InputDim {
    /// The symbol of the exported graph's dimension (`B`, `N`, `L`) or its fixed size.
    pub fn to_ir(self) -> ir::Dim {
        match self {
            InputDim::Samples => ir::Dim::sym("B"),
            InputDim::ImageTokens => ir::Dim::sym("N"),
            InputDim::TextTokens => ir::Dim::sym("L"),
            InputDim::Fixed(n, _) => ir::Dim::Known(n),
        }
    }
}

impl fmt::Display for InputDim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputDim::Samples => f.write_str("S"),
            InputDim::ImageTokens => f.write_str("N"),
            InputDim::TextTokens => f.write_str("L"),
            InputDim::Fixed(n, _) => write!(f, "{n}"),
        }
    }
}

/// One ONNX input of the model: its name and expected shape. Every input is float32.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInput {
    pub name: &'static str,
    pub dims: Vec<InputDim>,
}

impl ModelInput {
    /// The shape as error messages spell it: `[S, N, 64]`.
    pub fn shape_text(&self) -> String {
        show(&self.dims)
    }

    /// The shape in the IR's dimensions (symbolic `B`, `N`, `L`).
    pub fn ir_shape(&self) -> Vec<ir::Dim> {
        self.dims.iter().map(|d| d.to_ir()).collect()
    }
}

pub(crate) fn show(dims: &[InputDim]) -> String {
    let dims: Vec<String> = dims.iter().map(InputDim::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// What a model's inputs depend on: the widths its ONNX inputs fix and whether it takes
/// `guidance`. A `FluxConfig` gives it (`Signature::of`), and so does an exported model's list of
/// inputs (the sampler reads it off the ONNX file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    pub in_channels: usize,
    pub context_dim: usize,
    pub pooled_dim: usize,
    /// The number of RoPE axes: the last dimension of the ids.
    pub axes: usize,
    /// Whether the model has a guidance embedding (FLUX.1-dev style) and takes `guidance`.
    pub guidance: bool,
}

impl Signature {
    pub fn of(config: &FluxConfig) -> Self {
        Self {
            in_channels: config.in_channels,
            context_dim: config.context_dim,
            pooled_dim: config.pooled_dim,
            axes: config.axes_dim.len(),
            guidance: config.guidance,
        }
    }

    /// The inputs, in order: `hidden_states [S,N,C]`, `encoder_hidden_states [S,L,ctx]`,
    /// `pooled_projections [S,pooled]`, `timestep [S]`, `guidance [S]` (only for models with a
    /// guidance embedding), `img_ids [N,axes]`, `txt_ids [L,axes]`.
    pub fn inputs(&self) -> Vec<ModelInput> {
        use InputDim::{Fixed, ImageTokens as N, Samples as S, TextTokens as L};
        let axes = Fixed(self.axes, "number of RoPE axes");
        let input = |name, dims| ModelInput { name, dims };
        let mut inputs = vec![
            input(
                "hidden_states",
                vec![S, N, Fixed(self.in_channels, "in_channels")],
            ),
            input(
                "encoder_hidden_states",
                vec![S, L, Fixed(self.context_dim, "context width")],
            ),
            input(
                "pooled_projections",
                vec![S, Fixed(self.pooled_dim, "pooled width")],
            ),
            input("timestep", vec![S]),
        ];
        if self.guidance {
            inputs.push(input("guidance", vec![S]));
        }
        inputs.extend([
            input("img_ids", vec![N, axes]),
            input("txt_ids", vec![L, axes]),
        ]);
        inputs
    }
}

/// The inputs the model takes, in order: `hidden_states [S,N,C]`, `encoder_hidden_states
/// [S,L,ctx]`, `pooled_projections [S,pooled]`, `timestep [S]`, `guidance [S]` (only for models
/// with a guidance embedding), `img_ids [N,axes]`, `txt_ids [L,axes]`.
pub fn model_inputs(config: &FluxConfig) -> Vec<ModelInput> {
    Signature::of(config).inputs()
}
