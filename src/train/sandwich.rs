//! Sandwiches: each maximal run of replaced blocks with its unreplaced neighbours, the block
//! just before the run and the block just after it, where they exist. Two runs that share a
//! neighbour form one sandwich, so every block is trained in at most one sandwich.

use crate::ir::BlockId;
use std::collections::BTreeSet;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandwich {
    /// Every block of the sandwich, in model order: neighbours and replaced blocks.
    pub blocks: Vec<BlockId>,
    /// The replaced blocks among them.
    pub replaced: Vec<BlockId>,
}

impl Sandwich {
    /// The unreplaced blocks, whose linears get LoRA adapters.
    pub fn neighbours(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.blocks
            .iter()
            .copied()
            .filter(|b| !self.replaced.contains(b))
    }
}

impl fmt::Display for Sandwich {
    /// `double_blocks.0 [double_blocks.1] single_blocks.0`: replaced blocks in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .blocks
            .iter()
            .map(|b| match self.replaced.contains(b) {
                true => format!("[{b}]"),
                false => b.to_string(),
            })
            .collect();
        f.write_str(&parts.join(" "))
    }
}

/// The sandwiches of `replaced` among `order`, every block of the model in model order.
pub fn sandwiches(order: &[BlockId], replaced: &BTreeSet<BlockId>) -> Vec<Sandwich> {
    // Each run of replaced positions widened by one on each side, as position ranges.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while at < order.len() {
        if !replaced.contains(&order[at]) {
            at += 1;
            continue;
        }
        let start = at;
        while at < order.len() && replaced.contains(&order[at]) {
            at += 1;
        }
        let span = (start.saturating_sub(1), at.min(order.len() - 1));
        match spans.last_mut() {
            // Sharing a neighbour: the previous sandwich's last block is this one's first.
            Some(last) if last.1 >= span.0 => last.1 = span.1,
            _ => spans.push(span),
        }
    }
    spans
        .into_iter()
        .map(|(first, last)| {
            let blocks = order[first..=last].to_vec();
            let replaced = blocks
                .iter()
                .copied()
                .filter(|b| replaced.contains(b))
                .collect();
            Sandwich { blocks, replaced }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use BlockId::{Double, Single};

    fn model() -> Vec<BlockId> {
        (0..3).map(Double).chain((0..4).map(Single)).collect()
    }

    fn shown(replaced: &[BlockId]) -> Vec<String> {
        let set = replaced.iter().copied().collect();
        sandwiches(&model(), &set)
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn a_run_takes_the_blocks_on_either_side() {
        assert_eq!(
            shown(&[Double(2), Single(0)]),
            ["double_blocks.1 [double_blocks.2] [single_blocks.0] single_blocks.1"]
        );
    }

    #[test]
    fn runs_that_share_a_neighbour_form_one_sandwich() {
        assert_eq!(
            shown(&[Double(0), Double(2)]),
            ["[double_blocks.0] double_blocks.1 [double_blocks.2] single_blocks.0"]
        );
        assert_eq!(
            shown(&[Double(0), Single(0)]),
            [
                "[double_blocks.0] double_blocks.1",
                "double_blocks.2 [single_blocks.0] single_blocks.1"
            ]
        );
    }

    #[test]
    fn the_model_ends_bound_a_sandwich() {
        assert_eq!(shown(&[Single(3)]), ["single_blocks.2 [single_blocks.3]"]);
        let set = [Double(0)].into_iter().collect();
        let s = &sandwiches(&model(), &set)[0];
        assert_eq!(s.neighbours().collect::<Vec<_>>(), [Double(1)]);
        assert!(sandwiches(&model(), &BTreeSet::new()).is_empty());
    }
}
