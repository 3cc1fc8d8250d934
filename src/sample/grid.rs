//! The grid of image tokens a sample lives on (`--size HxW`: rows × columns of the packed
//! latent grid, 64×64 for a 1024×1024 FLUX.1 image) and its image ids.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::fmt;

/// Rows × columns of image tokens.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Grid {
    pub rows: usize,
    pub cols: usize,
}

impl Grid {
    pub fn tokens(self) -> usize {
        self.rows * self.cols
    }

    /// Parses `HxW` (also `H×W`), both at least 1; `flag` names the option in the error.
    pub fn parse(text: &str, flag: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "{flag} {text:?}: {why}; expected HxW, the rows and columns of image tokens \
                 (the packed latent grid: 64x64 for a 1024×1024 FLUX.1 image, 8x8 for the toy)"
            ))
        };
        let (h, w) = text
            .split_once(['x', 'X', '×'])
            .ok_or_else(|| bad("no `x` between the two sizes"))?;
        let size = |s: &str| s.trim().parse::<usize>().ok().filter(|&n| n > 0);
        match (size(h), size(w)) {
            (Some(rows), Some(cols)) => Ok(Self { rows, cols }),
            _ => Err(bad("both sizes must be whole numbers of at least 1")),
        }
    }

    /// `img_ids [N, axes]`: token `r·W + c` is `(0, …, r, c)` (the leading axes zero), as FLUX
    /// pipelines make them.
    pub fn image_ids(self, axes: usize) -> Tensor {
        let mut data = vec![0f32; self.tokens() * axes];
        for (token, ids) in data.chunks_exact_mut(axes).enumerate() {
            if axes >= 2 {
                ids[axes - 2] = (token / self.cols) as f32;
            }
            ids[axes - 1] = (token % self.cols) as f32;
        }
        Tensor {
            name: "img_ids".into(),
            shape: vec![self.tokens(), axes],
            data,
        }
    }
}

impl fmt::Display for Grid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.rows, self.cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(
            Grid::parse("8x8", "--size").unwrap(),
            Grid { rows: 8, cols: 8 }
        );
        assert_eq!(Grid::parse("64X32", "--size").unwrap().tokens(), 2048);
        for bad in ["64", "8x", "x8", "0x8", "8x-1", "axb", "8*8"] {
            let err = Grid::parse(bad, "--size").unwrap_err().to_string();
            assert!(
                err.contains("--size") && err.contains("HxW"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn ids_are_row_and_column() {
        let ids = Grid { rows: 2, cols: 3 }.image_ids(3);
        assert_eq!(ids.shape, [6, 3]);
        assert_eq!(&ids.data[3 * 4..3 * 5], &[0.0, 1.0, 1.0]);
        assert_eq!(&ids.data[3 * 5..], &[0.0, 1.0, 2.0]);
    }
}
