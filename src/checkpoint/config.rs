//! The FLUX configuration, read off the tensors themselves, and the list of every parameter
//! (name and shape) that configuration implies.

use crate::error::{Error, Result};
use crate::generation::flux1::NAMES;
use crate::generation::table::{Feature, Layer, Role, Scope, Sizes, Stream, Width};
use crate::ir::BlockId;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

/// RoPE axes of FLUX.1 (head width 128): time/index, height, width.
const FLUX_AXES: [usize; 3] = [16, 56, 56];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FluxConfig {
    pub hidden: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub mlp_hidden: usize,
    pub double_blocks: usize,
    pub single_blocks: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub context_dim: usize,
    pub pooled_dim: usize,
    /// Width of the sinusoidal timestep (and guidance) embedding: 256 in FLUX.1.
    pub time_embed_dim: usize,
    pub guidance: bool,
    pub axes_dim: Vec<usize>,
    pub theta: u32,
}

/// The shapes the inference reads, looked up by canonical name (`None`: tensor absent).
pub trait ShapeLookup {
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
}

impl FluxConfig {
    /// Infers the configuration. `blocks` are the counted (double, single) blocks; `replaced`
    /// those a BRLL rewrite left without their branch tensors (the widths are read off a block
    /// that kept its branch); `axes` the RoPE axes from `config.json` or the command line, if
    /// either gave them.
    pub fn infer(
        origin: &Path,
        shapes: &dyn ShapeLookup,
        blocks: (usize, usize),
        replaced: &BTreeSet<BlockId>,
        axes: Option<Vec<usize>>,
    ) -> Result<Self> {
        let need = |name: &str, rank: usize| -> Result<Vec<usize>> {
            let shape = shapes.shape(name).ok_or_else(|| {
                Error::tensor(
                    origin,
                    name,
                    "missing: it is needed to infer the model's configuration",
                )
            })?;
            if shape.len() != rank {
                return Err(Error::tensor(
                    origin,
                    name,
                    format!("expected a {rank}-d tensor, found shape {shape:?}"),
                ));
            }
            Ok(shape)
        };
        let img_in = need(&NAMES.top_tensor(Role::ImgIn)?, 2)?;
        let (hidden, in_channels) = (img_in[0], img_in[1]);
        let (double_blocks, single_blocks) = blocks;
        let kept =
            |n: usize, block: fn(usize) -> BlockId| (0..n).find(|&i| !replaced.contains(&block(i)));
        // The widths come from the first block that kept its branch: a double one if any.
        let width_block = match (
            kept(double_blocks, BlockId::Double),
            kept(single_blocks, BlockId::Single),
        ) {
            (Some(i), _) => BlockId::Double(i),
            (None, Some(i)) => BlockId::Single(i),
            (None, None) if !replaced.is_empty() => {
                return Err(Error::file(
                    origin,
                    "every block's branch is replaced by BRLL (the `fastflux.brll` header \
                     metadata lists them all), so no tensor gives the head width and MLP width",
                ));
            }
            // No blocks at all: reported as block 0's missing tensors.
            (None, None) => BlockId::Single(0),
        };
        let norm = &match width_block {
            BlockId::Double(i) => NAMES.tensor(Role::QueryNorm(Stream::Img), i)?,
            BlockId::Single(i) => NAMES.tensor(Role::QueryNorm(Stream::Joint), i)?,
        };
        let head_dim = need(norm, 1)?[0];
        if head_dim == 0 || hidden % head_dim != 0 || head_dim % 2 != 0 {
            return Err(Error::tensor(
                origin,
                norm,
                format!("head width {head_dim} must be even and divide the hidden size {hidden}"),
            ));
        }
        let mlp_hidden = match width_block {
            BlockId::Double(i) => need(&NAMES.tensor(Role::MlpIn(Stream::Img), i)?, 2)?[0],
            BlockId::Single(i) => {
                let linear1 = &NAMES.tensor(Role::FusedIn, i)?;
                let rows = need(linear1, 2)?[0];
                rows.checked_sub(3 * hidden).ok_or_else(|| {
                Error::tensor(
                    origin,
                    linear1,
                    format!(
                        "has {rows} rows, fewer than the {} of q, k and v (3 × hidden size {hidden})",
                        3 * hidden
                    ),
                )
            })?
            }
        };
        let axes_dim = match axes {
            Some(axes) => axes,
            None if head_dim == 128 => FLUX_AXES.to_vec(),
            None => {
                return Err(Error::Usage(format!(
                    "{}: head width is {head_dim}, not FLUX.1's 128, and no config.json gives the \
                     RoPE axes: pass them with --axes-dim (three even widths that add up to \
                     {head_dim}, e.g. --axes-dim {})",
                    origin.display(),
                    suggest_axes(head_dim)
                )));
            }
        };
        if axes_dim.iter().sum::<usize>() != head_dim || axes_dim.iter().any(|d| d % 2 != 0) {
            return Err(Error::Usage(format!(
                "RoPE axes {axes_dim:?} must be even widths adding up to the head width {head_dim}"
            )));
        }
        Ok(Self {
            hidden,
            heads: hidden / head_dim,
            head_dim,
            mlp_hidden,
            double_blocks,
            single_blocks,
            in_channels,
            out_channels: need(&NAMES.top_tensor(Role::FinalLinear)?, 2)?[0],
            context_dim: need(&NAMES.top_tensor(Role::TxtIn)?, 2)?[1],
            pooled_dim: need(&NAMES.top_tensor(Role::VectorIn(Layer::In))?, 2)?[1],
            time_embed_dim: need(&NAMES.top_tensor(Role::TimeIn(Layer::In))?, 2)?[1],
            guidance: shapes
                .shape(&NAMES.top_tensor(Role::GuidanceIn(Layer::In))?)
                .is_some(),
            axes_dim,
            theta: 10_000,
        })
    }

    /// Every parameter of the model, canonical name and shape, sorted by name: FLUX.1's naming
    /// table at this configuration's sizes.
    pub fn parameters(&self) -> Vec<(String, Vec<usize>)> {
        NAMES.parameters(self)
    }
}

/// The widths FLUX.1's naming table writes its shapes in.
impl Sizes for FluxConfig {
    fn width(&self, width: Width) -> usize {
        match width {
            Width::Hidden => self.hidden,
            Width::Mlp => self.mlp_hidden,
            Width::HeadDim => self.head_dim,
            Width::InChannels => self.in_channels,
            Width::OutChannels => self.out_channels,
            Width::Context => self.context_dim,
            Width::Pooled => self.pooled_dim,
            Width::TimeEmbed => self.time_embed_dim,
        }
    }

    fn blocks(&self, scope: Scope) -> usize {
        match scope {
            Scope::Top => 1,
            Scope::Double => self.double_blocks,
            Scope::Single => self.single_blocks,
        }
    }

    fn has(&self, feature: Feature) -> bool {
        match feature {
            Feature::Guidance => self.guidance,
        }
    }
}

/// A plausible RoPE split for the error message: FLUX's 1:7:7 proportions, rounded to even.
fn suggest_axes(head_dim: usize) -> String {
    let side = (head_dim * 7 / 15) / 2 * 2;
    let first = head_dim - 2 * side;
    format!("{first},{side},{side}")
}

impl fmt::Display for FluxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "hidden size        {} ({} heads of {})",
            self.hidden, self.heads, self.head_dim
        )?;
        writeln!(f, "MLP width          {}", self.mlp_hidden)?;
        writeln!(
            f,
            "blocks             {} double, {} single",
            self.double_blocks, self.single_blocks
        )?;
        writeln!(
            f,
            "channels           {} in, {} out",
            self.in_channels, self.out_channels
        )?;
        writeln!(f, "text context       {}", self.context_dim)?;
        writeln!(f, "pooled vector      {}", self.pooled_dim)?;
        writeln!(f, "timestep embedding {}", self.time_embed_dim)?;
        writeln!(
            f,
            "guidance embedding {}",
            if self.guidance {
                "yes (dev)"
            } else {
                "no (schnell)"
            }
        )?;
        write!(
            f,
            "RoPE axes          {:?}, theta {}",
            self.axes_dim, self.theta
        )
    }
}
