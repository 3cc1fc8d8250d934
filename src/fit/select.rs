//! Which blocks to replace: `--replace double.4,single.10-13` by name, or `--prune FRACTION`
//! by a rule (`--select`): the output effect of replacing each block alone (default), or its
//! local fit error, lowest first.

use super::calibrate::BlockReport;
use crate::checkpoint::FluxConfig;
use crate::error::{Error, Result};
use crate::ir::BlockId;
use std::collections::BTreeSet;

/// Parses a `--replace` list against the model's block counts.
pub fn parse_replace(spec: &str, config: &FluxConfig) -> Result<BTreeSet<BlockId>> {
    let bad = |item: &str, why: String| Error::Usage(format!("--replace `{item}`: {why}"));
    let mut chosen = BTreeSet::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (kind, range) = item.split_once('.').ok_or_else(|| {
            bad(
                item,
                "expected KIND.INDEX or KIND.FIRST-LAST, e.g. double.4 or single.10-13".into(),
            )
        })?;
        let (count, make): (usize, fn(usize) -> BlockId) = match kind {
            "double" => (config.double_blocks, BlockId::Double),
            "single" => (config.single_blocks, BlockId::Single),
            other => {
                return Err(bad(
                    item,
                    format!("unknown block kind `{other}`: use `double` or `single`"),
                ));
            }
        };
        let index = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| bad(item, format!("`{s}` is not a block index")))
        };
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (index(a)?, index(b)?),
            None => (index(range)?, index(range)?),
        };
        if first > last {
            return Err(bad(item, format!("the range {first}-{last} is empty")));
        }
        if last >= count {
            return Err(bad(
                item,
                format!(
                    "the model has {count} {kind} blocks (0-{})",
                    count.saturating_sub(1)
                ),
            ));
        }
        for i in first..=last {
            if !chosen.insert(make(i)) {
                return Err(bad(item, format!("{} is named twice", make(i))));
            }
        }
    }
    if chosen.is_empty() {
        return Err(Error::Usage("--replace names no block".into()));
    }
    Ok(chosen)
}

/// How many of `total` blocks `--prune FRACTION` replaces: rounded to the nearest whole block.
pub fn prune_count(fraction: f64, total: usize) -> Result<usize> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::Usage(format!(
            "--prune {fraction}: expected a fraction in [0, 1) of the blocks to replace"
        )));
    }
    Ok((fraction * total as f64).round() as usize)
}

/// How `--prune` ranks the blocks.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum SelectRule {
    /// The relative error of the model's output when the block alone is replaced by its fit
    /// (measured on the calibration inputs, `fit::effect`).
    #[default]
    Output,
    /// The block's local fit error, its worst stream's for a double block.
    Local,
}

impl SelectRule {
    /// The score a block is ranked by, lower first; `None` when it was not measured.
    pub fn score(self, report: &BlockReport) -> Option<f64> {
        match self {
            SelectRule::Output => report.output_effect,
            SelectRule::Local => Some(report.worst_stream_error()),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            SelectRule::Output => "output effect (each block replaced alone)",
            SelectRule::Local => "local fit error (worst stream)",
        }
    }
}

/// The reports in the order `rule` ranks them, best first (ties broken by model order).
pub fn ranked(reports: &[BlockReport], rule: SelectRule) -> Result<Vec<&BlockReport>> {
    let mut scored = Vec::with_capacity(reports.len());
    for r in reports {
        let score = rule.score(r).ok_or_else(|| {
            Error::Internal(format!("{}: no {} measured", r.block, rule.describe()))
        })?;
        scored.push((score, r));
    }
    scored.sort_by(|(a, ra), (b, rb)| a.total_cmp(b).then(ra.block.cmp(&rb.block)));
    Ok(scored.into_iter().map(|(_, r)| r).collect())
}

/// The `count` blocks `rule` ranks best.
pub fn choose(
    reports: &[BlockReport],
    count: usize,
    rule: SelectRule,
) -> Result<BTreeSet<BlockId>> {
    Ok(ranked(reports, rule)?
        .into_iter()
        .take(count)
        .map(|r| r.block)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FluxConfig {
        FluxConfig::builder().blocks(19, 38).build()
    }

    #[test]
    fn parses_indices_and_ranges() {
        let chosen = parse_replace("double.4, single.10-13", &config()).unwrap();
        let expected: BTreeSet<BlockId> = [
            BlockId::Double(4),
            BlockId::Single(10),
            BlockId::Single(11),
            BlockId::Single(12),
            BlockId::Single(13),
        ]
        .into();
        assert_eq!(chosen, expected);
    }

    #[test]
    fn rejects_bad_lists_with_the_reason() {
        for (spec, reason) in [
            ("double.19", "19 double blocks"),
            ("single.30-40", "38 single blocks"),
            ("triple.1", "unknown block kind `triple`"),
            ("double.1,double.0-2", "double_blocks.1 is named twice"),
            ("double", "expected KIND.INDEX"),
            ("single.x", "`x` is not a block index"),
            ("single.5-3", "is empty"),
            (",", "names no block"),
        ] {
            let err = parse_replace(spec, &config()).unwrap_err().to_string();
            assert!(err.contains(reason), "{spec}: {err}");
        }
    }

    #[test]
    fn prune_rounds_to_whole_blocks() {
        assert_eq!(prune_count(0.2, 57).unwrap(), 11);
        assert_eq!(prune_count(0.2, 6).unwrap(), 1);
        assert!(prune_count(1.5, 6).is_err());
        assert!(prune_count(-0.1, 6).is_err());
    }
}
