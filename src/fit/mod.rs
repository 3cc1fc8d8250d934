//! Calibration and fitting for BRLL: calibration inputs, block-by-block capture through ONNX
//! Runtime, streaming least squares, block selection, and the end-to-end driver.

pub mod brll;
pub mod calib;
pub mod calibrate;
pub mod lstsq;
pub mod select;
