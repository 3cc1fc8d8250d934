//! The constructors every generation's naming table is written with: one entry per parameter,
//! plain or with what LoRA conventions and sandwich training make of it. Shared so that the
//! tables differ only in their data.

use crate::generation::table::{Diffusers, Feature, Kind, Param, Role, Scope, Width, XLabs, w};

/// A q/k RMSNorm scale, one per head width.
pub const SCALE: Kind = Kind::Scale(w(Width::HeadDim));

/// An entry no LoRA convention or sandwich training treats specially.
pub const fn param(
    role: Role,
    scope: Scope,
    bfl: &'static str,
    kind: Kind,
    diffusers: Diffusers,
) -> Param {
    Param {
        role,
        scope,
        bfl,
        kind,
        diffusers,
        requires: None,
        adapted: false,
        xlabs: None,
    }
}

/// A linear of a block that sandwich training adapts, with its XLabs processor if it has one.
pub const fn adapted(
    role: Role,
    scope: Scope,
    bfl: &'static str,
    kind: Kind,
    diffusers: Diffusers,
    xlabs: Option<XLabs>,
) -> Param {
    Param {
        adapted: true,
        xlabs,
        ..param(role, scope, bfl, kind, diffusers)
    }
}

/// A top-level entry of guidance-distilled models only.
pub const fn guidance(role: Role, bfl: &'static str, kind: Kind, diffusers: Diffusers) -> Param {
    Param {
        requires: Some(Feature::Guidance),
        ..param(role, Scope::Top, bfl, kind, diffusers)
    }
}

/// An XLabs processor covering the whole module.
pub const fn xlabs(processor: &'static str) -> Option<XLabs> {
    Some(XLabs {
        processor,
        rows: None,
    })
}
