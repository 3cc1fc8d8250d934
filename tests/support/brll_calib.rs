//! tiny-dev's BRLL calibration as the BRLL tests use it: the options, the checkpoint, and the
//! synthetic inputs with the command-line flags that make the compiler calibrate on exactly them.

use super::paths::golden;
use fastflux::checkpoint::FluxCheckpoint;
use fastflux::fit::calibrate::{CalibrationOptions, FitKind};
use fastflux::inputs::{InputSet, SyntheticSpec};

pub fn calibration(ridge: f64) -> CalibrationOptions {
    CalibrationOptions {
        kind: FitKind::Plain,
        ridge,
        batch: 4,
        threads: 1,
        provider: fastflux::runtime::ExecutionProvider::Cpu,
        show_progress: false,
        effect_samples: 0,
    }
}

pub fn tiny() -> FluxCheckpoint {
    FluxCheckpoint::open(&golden("diffusers"), None).unwrap()
}

/// The command-line flags that make the compiler calibrate on exactly `inputs()`.
pub const CALIBRATION_FLAGS: [&str; 8] = [
    "--calib-samples",
    "6",
    "--calib-image-tokens",
    "64",
    "--calib-text-tokens",
    "16",
    "--seed",
    "3",
];

pub fn inputs(ckpt: &FluxCheckpoint) -> InputSet {
    let spec = SyntheticSpec {
        samples: 6,
        image_tokens: 64,
        text_tokens: 16,
        seed: 3,
    };
    InputSet::synthetic(&ckpt.config, &spec).unwrap()
}
