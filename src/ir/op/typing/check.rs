//! The checks the typing rules share: two types that must be equal, a feature axis whose width
//! must be known, and a misfit described in full.

use crate::error::TypeError;
use crate::ir::op::OpKind;
use crate::ir::types::{Dim, TensorType};

/// `found` must equal `expected`; `what` names the inputs compared.
pub(super) fn same(
    op: OpKind,
    found: &TensorType,
    expected: &TensorType,
    what: &'static str,
) -> Result<(), TypeError> {
    if found == expected {
        Ok(())
    } else {
        Err(TypeError::Mismatch {
            op: op.name(),
            what,
            found: found.to_string(),
            expected: expected.to_string(),
        })
    }
}

/// The known width of `ty`'s last (feature) axis.
pub(super) fn width(op: OpKind, ty: &TensorType) -> Result<usize, TypeError> {
    ty.last()
        .and_then(Dim::known)
        .ok_or_else(|| TypeError::UnknownWidth {
            op: op.name(),
            ty: ty.to_string(),
        })
}

pub(super) fn misfit(op: OpKind, what: String) -> TypeError {
    TypeError::Misfit {
        op: op.name(),
        what,
    }
}
