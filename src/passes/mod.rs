//! Rewrites of the IR. A rule reads the graph and returns a `Patch` (or nothing); `apply`
//! carries patches out and removes what no output needs any more.

pub mod brll;
mod patch;

pub use patch::{Patch, PatchValue, apply};
