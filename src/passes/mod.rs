//! Rewrites of the lifted graph. A rule reads the graph and returns a `Patch` (or nothing);
//! `apply` carries patches out and removes what no output needs any more. Each pass returns
//! what the end-of-run summary reports.

pub mod brll;
pub mod collapse;
pub mod f16_range;
pub mod lora;
mod patch;
pub mod retype;

pub use patch::{Patch, PatchValue, apply, insert};
