//! Keeping an f16 model finite where FLUX.1's released weights overflow f16: the output of
//! every single block (after `x + gate·proj_out(…)`) and the text stream of every double block
//! (after its feed-forward residual). diffusers' `transformer_flux.py` clamps to ±65504 at
//! exactly these two places when it runs in float16; the export does the same. Only f16 is
//! touched: f32 and bf16 have the range, and ONNX Runtime's CUDA EP has no bf16 Clip kernel.
//!
//! Export-time: calibration runs in f32, where the clamp is the identity.

use super::patch::{Patch, PatchValue, apply};
use crate::dtype::DType;
use crate::error::Result;
use crate::ir::{BlockId, Graph, Op, Value};

/// f16's largest finite value.
pub const F16_MAX: f32 = 65504.0;

/// Inserts the clamps; returns how many.
pub fn run(graph: &mut Graph) -> Result<usize> {
    let (patch, clamps) = clamp_overflowing_streams(graph);
    apply(graph, patch)?;
    Ok(clamps)
}

// Matched, per block record, when the value is f16:
//
//     y = <stream `x` leaving a single block>   or   y = <stream `txt` leaving a double block>
//
// Rewritten (y keeps only this use; everything that read y reads y′):
//
//     y′ = Clip{limit: 65504}(y)
//
// The block records then name y′ as the stream's output. A replaced (BRLL) or collapsed block
// is clamped the same way: its fitted node reproduces the activations that overflow.
/// The patch, and how many clamps it adds.
fn clamp_overflowing_streams(graph: &Graph) -> (Patch, usize) {
    let mut patch = Patch::default();
    let mut count = 0;
    for (block, io) in &graph.block_io {
        let stream = match block {
            BlockId::Single(_) => "x",
            BlockId::Double(_) => "txt",
        };
        for s in io.streams.iter().filter(|s| s.name == stream) {
            if graph.ty(s.output).dtype != DType::F16 || is_clamped(graph, s.output) {
                continue;
            }
            let name = format!("{block}.{stream}.f16_clip");
            let clip = patch.add(
                Op::Clip { limit: F16_MAX },
                name,
                Some(*block),
                &[PatchValue::Old(s.output)],
            );
            patch.wrap(s.output, clip);
            count += 1;
        }
    }
    (patch, count)
}

fn is_clamped(graph: &Graph, v: Value) -> bool {
    matches!(graph.node(v.node).op, Op::Clip { .. })
}
