//! The type of a generation's naming table: every parameter of the model once, with its original
//! (BFL) module path, the modules diffusers stores it in, its shape in terms of the
//! configuration's widths, and what LoRA trainers and sandwich training make of it. A table is
//! data; the lookups here are the same for every generation, so the checkpoint resolver, the
//! lifter, the LoRA tables and sandwich training all read one source per generation.

use crate::error::{Error, Result};
use std::ops::Range;

/// What a parameter does in the architecture. The roles are the vocabulary the generations
/// share: the lifter asks a table for a role and gets that generation's module path.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The input projection of the image latents.
    ImgIn,
    /// The input projection of the text context.
    TxtIn,
    /// The MLP embedders (Linear, silu, Linear) of the timestep, the guidance and the pooled
    /// vector.
    TimeIn(Layer),
    GuidanceIn(Layer),
    VectorIn(Layer),
    /// A stream's adaptive-norm modulation: per block in FLUX.1, shared at the top in FLUX.2.
    Modulation(Stream),
    /// A stream's fused q, k, v projection, and the RMSNorm scales of q and k.
    Qkv(Stream),
    QueryNorm(Stream),
    KeyNorm(Stream),
    /// A stream's attention output projection.
    Proj(Stream),
    /// A double block stream's MLP: input and output projection.
    MlpIn(Stream),
    MlpOut(Stream),
    /// A single block's fused input projection (q, k, v and the MLP input) and its output
    /// projection (of the attention and the MLP activation, concatenated).
    FusedIn,
    FusedOut,
    /// The final layer's modulation (shift, then scale) and output projection.
    FinalModulation,
    FinalLinear,
}

/// The streams a block's parameters belong to: a double block's image and text streams, and
/// the joint sequence of a single block.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stream {
    Img,
    Txt,
    Joint,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Layer {
    In,
    Out,
}

/// Where a parameter lives: once at the top level, or once in every block of a kind.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Top,
    Double,
    Single,
}

/// A part of the model that some checkpoints have and others do not.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Feature {
    /// The guidance embedder of guidance-distilled models (FLUX.1 [dev], not [schnell]).
    Guidance,
}

/// A width of the model, as the configuration knows it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Width {
    Hidden,
    Mlp,
    HeadDim,
    InChannels,
    OutChannels,
    Context,
    Pooled,
    TimeEmbed,
}

/// A size of a parameter's axis: `hidden`·hidden + `mlp`·MLP width + `width`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Dim {
    pub hidden: usize,
    pub mlp: usize,
    pub width: Option<Width>,
}

/// `n`·hidden.
pub const fn h(n: usize) -> Dim {
    hm(n, 0)
}

/// `a`·hidden + `b`·MLP width.
pub const fn hm(a: usize, b: usize) -> Dim {
    Dim {
        hidden: a,
        mlp: b,
        width: None,
    }
}

/// One width of the configuration.
pub const fn w(width: Width) -> Dim {
    Dim {
        hidden: 0,
        mlp: 0,
        width: Some(width),
    }
}

/// What a generation's configuration answers for its table.
pub trait Sizes {
    fn width(&self, width: Width) -> usize;
    /// Blocks of a block scope (1 for `Scope::Top`).
    fn blocks(&self, scope: Scope) -> usize;
    fn has(&self, feature: Feature) -> bool;
}

impl Dim {
    pub fn of(self, sizes: &dyn Sizes) -> usize {
        self.hidden * sizes.width(Width::Hidden)
            + self.mlp * sizes.width(Width::Mlp)
            + self.width.map_or(0, |w| sizes.width(w))
    }
}

/// The tensors of a module.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `.weight` `[out, in]`, and `.bias` `[out]` where the generation has biases.
    Linear { out: Dim, inp: Dim, bias: bool },
    /// An RMSNorm's `.scale`.
    Scale(Dim),
}

/// How diffusers stores a module, relative to the block (or the top level) it lies in.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Diffusers {
    /// One module under another name.
    Renamed(&'static str),
    /// Several modules whose weights, stacked along their rows in this order, are the original
    /// one; each with its row count.
    Stacked(&'static [(&'static str, Dim)]),
    /// One module whose rows hold the original's two halves swapped.
    SwappedHalves(&'static str),
}

impl Diffusers {
    /// The diffusers modules (relative to the block) that store the original one.
    pub fn modules(self) -> Vec<&'static str> {
        match self {
            Self::Renamed(m) | Self::SwappedHalves(m) => vec![m],
            Self::Stacked(parts) => parts.iter().map(|(m, _)| *m).collect(),
        }
    }
}

/// XLabs' attention-processor LoRAs: the processor's name inside the block, and the rows of the
/// module it adds to (`None`: all of them).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct XLabs {
    pub processor: &'static str,
    pub rows: Option<Dim>,
}

/// One module of the model.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub role: Role,
    pub scope: Scope,
    /// The original (BFL) module path inside its scope, e.g. `img_attn.qkv`.
    pub bfl: &'static str,
    pub kind: Kind,
    pub diffusers: Diffusers,
    /// Present only in checkpoints with this feature.
    pub requires: Option<Feature>,
    /// Sandwich training gives it a LoRA adapter when its block neighbours a replaced one.
    pub adapted: bool,
    pub xlabs: Option<XLabs>,
}

/// The module path prefix of a kind of block, per naming: `double_blocks` and so on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BlockNames {
    pub bfl: &'static str,
    pub diffusers: &'static str,
}

/// A generation's naming table.
#[derive(Debug)]
pub struct NamingTable {
    pub generation: &'static str,
    pub double: BlockNames,
    pub single: BlockNames,
    pub params: &'static [Param],
}

/// A module a name lookup found: the table's entry and, inside a block, the block's index.
#[derive(Copy, Clone, Debug)]
pub struct Found {
    pub param: &'static Param,
    pub block: Option<usize>,
}

impl NamingTable {
    /// The entry of `role`; an internal error if the generation has none.
    pub fn param(&self, role: Role) -> Result<&'static Param> {
        let params: &'static [Param] = self.params;
        params.iter().find(|p| p.role == role).ok_or_else(|| {
            Error::Internal(format!("{} has no module for {role:?}", self.generation))
        })
    }

    /// The original (BFL) module path of `role`, in block `block` when it lives in blocks:
    /// `double_blocks.3.img_attn.qkv`.
    pub fn module(&self, role: Role, block: usize) -> Result<String> {
        let param = self.param(role)?;
        Ok(self.module_at(param, Some(block)))
    }

    /// The original module path of a top-level `role`: `img_in`.
    pub fn top(&self, role: Role) -> Result<String> {
        let param = self.param(role)?;
        Ok(self.module_at(param, None))
    }

    /// The tensor a module's shape is read from: its `.weight`, or a norm's `.scale`.
    pub fn tensor(&self, role: Role, block: usize) -> Result<String> {
        let param = self.param(role)?;
        Ok(main_tensor(param, &self.module_at(param, Some(block))))
    }

    /// The top-level tensor a module's shape is read from.
    pub fn top_tensor(&self, role: Role) -> Result<String> {
        let param = self.param(role)?;
        Ok(main_tensor(param, &self.module_at(param, None)))
    }

    fn module_at(&self, param: &Param, block: Option<usize>) -> String {
        match (self.block_names(param.scope), block) {
            (Some(names), Some(i)) => format!("{}.{i}.{}", names.bfl, param.bfl),
            _ => param.bfl.to_owned(),
        }
    }

    /// The original module path prefix of a kind of block: `double_blocks`.
    pub fn block_kind(&self, scope: Scope) -> Option<&'static str> {
        self.block_names(scope).map(|n| n.bfl)
    }

    fn block_names(&self, scope: Scope) -> Option<BlockNames> {
        match scope {
            Scope::Top => None,
            Scope::Double => Some(self.double),
            Scope::Single => Some(self.single),
        }
    }

    /// Every module of a model of `sizes`: each entry once per block of its scope, in table
    /// order.
    fn instances(&self, sizes: &dyn Sizes) -> Vec<Found> {
        let params: &'static [Param] = self.params;
        let mut out = Vec::new();
        for param in params {
            if param.requires.is_some_and(|f| !sizes.has(f)) {
                continue;
            }
            match param.scope {
                Scope::Top => out.push(Found { param, block: None }),
                scope => out.extend((0..sizes.blocks(scope)).map(|i| Found {
                    param,
                    block: Some(i),
                })),
            }
        }
        out
    }

    /// Every parameter of a model of `sizes`, name and shape, sorted by name.
    pub fn parameters(&self, sizes: &dyn Sizes) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for found in self.instances(sizes) {
            let module = self.module_at(found.param, found.block);
            push_tensors(&mut out, found.param.kind, &module, "scale", None, sizes);
        }
        out.sort();
        out
    }

    /// Every parameter of a model of `sizes` as diffusers stores it (fused weights split, norm
    /// scales named `weight`), name and shape, sorted by name.
    pub fn diffusers_parameters(&self, sizes: &dyn Sizes) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for found in self.instances(sizes) {
            for (module, rows) in self.diffusers_rows(found, sizes).0 {
                let (kind, rows) = (found.param.kind, Some(rows.len()));
                push_tensors(&mut out, kind, &module, "weight", rows, sizes);
            }
        }
        out.sort();
        out
    }

    /// The block prefix, index and in-block path of `module` (`double_blocks.3.img_attn.qkv`),
    /// if it lies in a block.
    pub fn split_block<'m>(&self, module: &'m str) -> Option<(Scope, usize, &'m str)> {
        let (kind, rest) = module.split_once('.')?;
        let (index, tail) = rest.split_once('.')?;
        let scope = [Scope::Double, Scope::Single]
            .into_iter()
            .find(|&s| self.block_names(s).is_some_and(|n| n.bfl == kind))?;
        Some((scope, index.parse().ok()?, tail))
    }

    /// The entry of the original module path `module`, if it is one of the model's.
    pub fn find(&self, module: &str) -> Option<Found> {
        let params: &'static [Param] = self.params;
        if let Some(param) = params
            .iter()
            .find(|p| p.scope == Scope::Top && p.bfl == module)
        {
            return Some(Found { param, block: None });
        }
        let (scope, i, tail) = self.split_block(module)?;
        let param = params.iter().find(|p| p.scope == scope && p.bfl == tail)?;
        Some(Found {
            param,
            block: Some(i),
        })
    }

    /// The diffusers path of the block (or top level) `found` lies in, with a trailing `.`
    /// where not empty: `transformer_blocks.3.`.
    pub fn diffusers_prefix(&self, scope: Scope, block: Option<usize>) -> String {
        match (self.block_names(scope), block) {
            (Some(names), Some(i)) => format!("{}.{i}.", names.diffusers),
            _ => String::new(),
        }
    }

    /// The diffusers modules that store `found`, each with the rows of the original weight it
    /// holds, and whether their rows' halves are swapped.
    pub fn diffusers_rows(
        &self,
        found: Found,
        sizes: &dyn Sizes,
    ) -> (Vec<(String, Range<usize>)>, bool) {
        let prefix = self.diffusers_prefix(found.param.scope, found.block);
        let rows = match found.param.kind {
            Kind::Linear { out, .. } | Kind::Scale(out) => out.of(sizes),
        };
        match found.param.diffusers {
            Diffusers::Renamed(m) => (vec![(format!("{prefix}{m}"), 0..rows)], false),
            Diffusers::SwappedHalves(m) => (vec![(format!("{prefix}{m}"), 0..rows)], true),
            Diffusers::Stacked(parts) => {
                let mut start = 0;
                let mut out = Vec::with_capacity(parts.len());
                for (m, d) in parts {
                    let end = start + d.of(sizes);
                    out.push((format!("{prefix}{m}"), start..end));
                    start = end;
                }
                (out, false)
            }
        }
    }

    /// Whether sandwich training adapts `module` (a path inside a block of `scope`).
    pub fn adapted(&self, scope: Scope, module: &str) -> bool {
        self.params
            .iter()
            .any(|p| p.adapted && p.scope == scope && p.bfl == module)
    }

    /// The module of a block of `scope` that XLabs' `processor` adds to.
    pub fn xlabs(&self, scope: Scope, processor: &str) -> Option<(&'static Param, XLabs)> {
        let params: &'static [Param] = self.params;
        params.iter().find_map(|p| {
            let x = p.xlabs.filter(|x| x.processor == processor)?;
            (p.scope == scope).then_some((p, x))
        })
    }
}

/// The tensors of one module of `kind`: a norm's scale is called `scale`; `rows` overrides the
/// rows of the module's main tensor (a diffusers part of a fused weight holds some of them).
fn push_tensors(
    out: &mut Vec<(String, Vec<usize>)>,
    kind: Kind,
    module: &str,
    scale: &str,
    rows: Option<usize>,
    sizes: &dyn Sizes,
) {
    match kind {
        Kind::Linear { out: o, inp, bias } => {
            let rows = rows.unwrap_or_else(|| o.of(sizes));
            out.push((format!("{module}.weight"), vec![rows, inp.of(sizes)]));
            if bias {
                out.push((format!("{module}.bias"), vec![rows]));
            }
        }
        Kind::Scale(d) => {
            let rows = rows.unwrap_or_else(|| d.of(sizes));
            out.push((format!("{module}.{scale}"), vec![rows]));
        }
    }
}

fn main_tensor(param: &Param, module: &str) -> String {
    match param.kind {
        Kind::Linear { .. } => format!("{module}.weight"),
        Kind::Scale(_) => format!("{module}.scale"),
    }
}
