//! Tensor types of IR values: element type and a shape whose dimensions are either known or
//! named symbols (`B` batch, `N` image tokens, `L` text tokens, and sums of them).

use crate::dtype::DType;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(usize),
    /// A dimension fixed only at run time, named by a symbol or a sum of symbols (`L+N`).
    Sym(String),
}

impl Dim {
    pub fn sym(name: &str) -> Self {
        Self::Sym(name.to_owned())
    }

    pub fn known(&self) -> Option<usize> {
        match self {
            Self::Known(n) => Some(*n),
            Self::Sym(_) => None,
        }
    }

    /// The size of two extents laid end to end.
    pub fn plus(&self, other: &Dim) -> Dim {
        match (self, other) {
            (Self::Known(a), Self::Known(b)) => Self::Known(a + b),
            (a, b) => Self::Sym(format!("{a}+{b}")),
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known(n) => write!(f, "{n}"),
            Self::Sym(s) => f.write_str(s),
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Self {
        Self::Known(n)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> Self {
        Self { dtype, shape }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The last dimension, which every op here treats as the feature axis.
    pub fn last(&self) -> Option<&Dim> {
        self.shape.last()
    }

    pub fn with_last(&self, dim: impl Into<Dim>) -> Self {
        let mut shape = self.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last = dim.into();
        }
        Self::new(self.dtype, shape)
    }

    pub fn with_dtype(&self, dtype: DType) -> Self {
        Self::new(dtype, self.shape.clone())
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
