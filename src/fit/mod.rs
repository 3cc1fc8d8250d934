//! Calibration and fitting for BRLL: block-by-block capture through the staged runner,
//! streaming least squares, block selection, and the end-to-end driver. The calibration inputs
//! themselves live in `crate::inputs`.

pub mod brll;
pub mod calibrate;
pub mod effect;
pub mod lstsq;
pub mod memory;
pub mod select;
