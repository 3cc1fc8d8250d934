//! What a compile prints: the end-of-run summary, the BRLL section of it, the `--plan` ranking
//! table and parameter counts, and the human-readable numbers they use.

use crate::compile::Compiled;
use crate::fit::brll::{BrllOptions, BrllOutcome};
use crate::ir::cost::Tokens;
use crate::ir::{BlockId, Graph, Op};
use crate::onnx::ExportSummary;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub(crate) fn report(c: &Compiled, output: &Path, s: &ExportSummary, seconds: f64) -> String {
    let mut r = String::new();
    let before: usize = c
        .ckpt
        .sources()
        .values()
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    let _ = writeln!(
        r,
        "wrote {} and {}.data",
        output.display(),
        output.display()
    );
    let _ = writeln!(
        r,
        "  parameters   {} before, {} after",
        human(before as f64),
        human(s.parameters as f64)
    );
    let _ = writeln!(
        r,
        "  bytes        {} of weights ({}), {} of graph ({} ONNX nodes)",
        human_bytes(s.weight_bytes),
        c.dtype,
        human_bytes(s.model_bytes),
        s.onnx_nodes
    );
    if let Some(lora) = &c.lora {
        let _ = writeln!(r, "{lora}");
    }
    let _ = write!(
        r,
        "  time         {seconds:.1} s ({}/s)",
        human_bytes((s.weight_bytes as f64 / seconds.max(1e-9)) as u64)
    );
    r
}

/// What BRLL replaced, what it saves, and how close the pruned model stays.
pub(crate) fn brll_report(
    original: &Graph,
    pruned: &Graph,
    outcome: &BrllOutcome,
    options: Option<&BrllOptions>,
) -> String {
    let mut r = String::new();
    let tokens = options.map_or(
        Tokens {
            image: 4096,
            text: 512,
        },
        |o| Tokens {
            image: o.synthetic.image_tokens,
            text: o.synthetic.text_tokens,
        },
    );
    let _ = writeln!(
        r,
        "BRLL: {} blocks replaced ({} calibration samples)",
        outcome.replaced.len(),
        outcome.calibration_samples
    );
    for b in &outcome.replaced {
        let streams: Vec<String> = b
            .fit
            .streams
            .iter()
            .map(|s| format!("{} {:.4}", s.stream, s.relative_error))
            .collect();
        let _ = writeln!(
            r,
            "  {:<18} fit error {:.4} ({})",
            b.block.to_string(),
            b.fit_error,
            streams.join(", ")
        );
    }
    let (before, after) = (original.parameters(), pruned.parameters());
    let _ = writeln!(
        r,
        "  parameters         {} -> {} ({:.1}% fewer)",
        human(before as f64),
        human(after as f64),
        100.0 * (1.0 - after as f64 / before as f64)
    );
    let (f0, f1) = (
        original.flops_per_image_token(tokens),
        pruned.flops_per_image_token(tokens),
    );
    let _ = writeln!(
        r,
        "  FLOPs/image token  {} -> {} ({:.1}% fewer; at {} image, {} text tokens)",
        human(f0),
        human(f1),
        100.0 * (1.0 - f1 / f0),
        tokens.image,
        tokens.text
    );
    match outcome.verification {
        Some((error, cosine)) => {
            let _ = write!(
                r,
                "  verification       relative L2 error {error:.4}, cosine similarity {cosine:.5} (held-out inputs, f32)"
            );
        }
        None => {
            let _ = write!(r, "  verification       not run (pass --verify)");
        }
    }
    r
}

/// The ranking table of `--plan` with BRLL flags: every block's fit on the original activations.
pub(crate) fn ranking_table(reports: &[crate::fit::calibrate::BlockReport]) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "BRLL ranking (every block fitted on the original model's activations):"
    );
    let _ = writeln!(
        r,
        "  {:<18} {:>10} {:>12} {:>16}",
        "block", "fit error", "cos(in,out)", "params saved"
    );
    let mut sorted: Vec<_> = reports.iter().collect();
    sorted.sort_by(|a, b| {
        a.fit_error
            .total_cmp(&b.fit_error)
            .then(a.block.cmp(&b.block))
    });
    for b in sorted {
        let _ = writeln!(
            r,
            "  {:<18} {:>10.4} {:>12.4} {:>16}",
            b.block.to_string(),
            b.fit_error,
            b.cosine,
            human(b.params_saved as f64)
        );
    }
    r
}

/// Parameters of the lifted graph per part: embedders, each block kind, final layer.
pub fn parameters_by_part(graph: &Graph) -> Vec<(String, usize)> {
    let mut parts = BTreeMap::<(u8, String), usize>::new();
    let (mut doubles, mut singles) = (0, 0);
    for node in graph.graph.node_weights() {
        let Op::Weight(w) = &node.op else { continue };
        let key = match node.block {
            Some(BlockId::Double(_)) => {
                doubles += w.numel();
                continue;
            }
            Some(BlockId::Single(_)) => {
                singles += w.numel();
                continue;
            }
            None if w.name.starts_with("final_layer") => (3, "final layer".to_owned()),
            None => (0, "embedders".to_owned()),
        };
        *parts.entry(key).or_default() += w.numel();
    }
    let blocks = graph.blocks();
    let count = |f: fn(&BlockId) -> bool| blocks.iter().filter(|b| f(b)).count();
    parts.insert(
        (
            1,
            format!(
                "double blocks (x{})",
                count(|b| matches!(b, BlockId::Double(_)))
            ),
        ),
        doubles,
    );
    parts.insert(
        (
            2,
            format!(
                "single blocks (x{})",
                count(|b| matches!(b, BlockId::Single(_)))
            ),
        ),
        singles,
    );
    let total: usize = parts.values().sum();
    let mut out: Vec<(String, usize)> = parts.into_iter().map(|((_, k), v)| (k, v)).collect();
    out.push(("total".into(), total));
    out
}

pub fn human(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2} B", n / 1e9),
        n if n >= 1e6 => format!("{:.2} M", n / 1e6),
        n if n >= 1e3 => format!("{:.1} k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= (1u64 << 30) as f64 => format!("{:.2} GiB", n / (1u64 << 30) as f64),
        n if n >= (1u64 << 20) as f64 => format!("{:.1} MiB", n / (1u64 << 20) as f64),
        n if n >= 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n => format!("{n} B"),
    }
}
