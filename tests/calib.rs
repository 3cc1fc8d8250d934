//! Calibration input sets: the shared real files load against their models (here), bad files get
//! errors that name the file, the tensor and the expected shape (`calib/bad_files.rs`), and
//! synthetic sets are deterministic and have the documented distributions (`calib/synthetic.rs`).

mod support;

// Inside `mod calib`, `mod synthetic;` is `tests/calib/synthetic.rs`, not a file beside this
// one (where Cargo would take it for a test binary of its own).
mod calib {
    mod bad_files;
    mod synthetic;
}

use fastflux::checkpoint::{FluxCheckpoint, FluxConfig};
use fastflux::inputs::{InputSet, SyntheticSpec};
use fastflux::tensor::Tensor;
use std::path::Path;

/// The trained toy of `shared/toy/digits` (its meta.json).
fn toy() -> FluxConfig {
    FluxConfig::builder()
        .blocks(2, 6)
        .channels(4, 4)
        .pooled_dim(16)
        .guidance(false)
        .build()
}

/// The golden tiny-dev model (`shared/golden/tiny-dev/meta.json`).
fn tiny_dev() -> FluxConfig {
    FluxConfig::builder().build()
}

/// The two configurations above, and so `FluxConfig::builder()`'s defaults, are those the lifter
/// infers from the models' own checkpoints.
#[test]
fn the_configurations_are_those_of_the_checkpoints() {
    let toy_file = support::shared().join("toy/digits/flux-bfl.safetensors");
    let toy_checkpoint = FluxCheckpoint::open(&toy_file, Some(vec![4, 6, 6])).unwrap();
    assert_eq!(toy_checkpoint.config, toy());
    let tiny_dev_checkpoint = FluxCheckpoint::open(&support::golden("diffusers"), None).unwrap();
    assert_eq!(tiny_dev_checkpoint.config, tiny_dev());
}

const ORDER: [&str; 6] = [
    "hidden_states",
    "encoder_hidden_states",
    "pooled_projections",
    "timestep",
    "img_ids",
    "txt_ids",
];
const ORDER_GUIDED: [&str; 7] = [
    "hidden_states",
    "encoder_hidden_states",
    "pooled_projections",
    "timestep",
    "guidance",
    "img_ids",
    "txt_ids",
];

fn names(set: &InputSet) -> Vec<&str> {
    set.tensors.iter().map(|t| t.name.as_str()).collect()
}

fn shape<'a>(set: &'a InputSet, name: &str) -> &'a [usize] {
    &set.get(name)
        .unwrap_or_else(|| panic!("`{name}` in the set"))
        .shape
}

/// Writes f32 tensors to a safetensors file.
fn write(path: &Path, tensors: &[Tensor]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), b)
                    .unwrap();
            (t.name.as_str(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Loads, expecting an error that mentions the file and every one of `parts`.
fn load_err(path: &Path, config: &FluxConfig, parts: &[&str]) -> String {
    let err = InputSet::load(path, config)
        .expect_err("a bad calibration file must be refused")
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    for part in parts {
        assert!(err.contains(part), "`{part}` missing from: {err}");
    }
    err
}

#[test]
fn loads_the_toy_calibration_file() {
    let path = support::shared().join("toy/digits/calib.safetensors");
    let set = InputSet::load(&path, &toy()).unwrap();
    assert_eq!(
        (set.samples, set.image_tokens, set.text_tokens),
        (32, 64, 8)
    );
    assert_eq!(names(&set), ORDER);
    assert_eq!(shape(&set, "hidden_states"), [32, 64, 4]);
    assert_eq!(shape(&set, "encoder_hidden_states"), [32, 8, 32]);
    assert_eq!(shape(&set, "pooled_projections"), [32, 16]);
    assert_eq!(shape(&set, "timestep"), [32]);
    assert_eq!(shape(&set, "img_ids"), [64, 3]);
    assert_eq!(shape(&set, "txt_ids"), [8, 3]);
    let t = &set.get("timestep").unwrap().data;
    assert_eq!(t[..2], [0.015625, 0.046875]);
    // The toy's ids are (0, row, col) on its 8×8 grid: the same as the synthetic ids.
    let spec = SyntheticSpec {
        image_tokens: 64,
        text_tokens: 8,
        ..Default::default()
    };
    let synthetic = InputSet::synthetic(&toy(), &spec).unwrap();
    assert_eq!(set.get("img_ids"), synthetic.get("img_ids"));
    assert_eq!(set.get("txt_ids"), synthetic.get("txt_ids"));
}

#[test]
fn loads_the_golden_inputs_with_guidance() {
    let path = support::golden("inputs.safetensors");
    let set = InputSet::load(&path, &tiny_dev()).unwrap();
    assert_eq!(
        (set.samples, set.image_tokens, set.text_tokens),
        (2, 64, 16)
    );
    assert_eq!(names(&set), ORDER_GUIDED);
    assert_eq!(shape(&set, "hidden_states"), [2, 64, 16]);
    assert_eq!(shape(&set, "pooled_projections"), [2, 24]);
    assert_eq!(set.get("guidance").unwrap().data, [1.8801951, 2.2696404]);
    // For a model without a guidance embedding the same file's `guidance` is ignored.
    let unguided = FluxConfig::builder().guidance(false).build();
    let set = InputSet::load(&path, &unguided).unwrap();
    assert_eq!(names(&set), ORDER);
}

#[test]
fn the_toy_file_does_not_fit_another_model() {
    let path = support::shared().join("toy/digits/calib.safetensors");
    load_err(
        &path,
        &tiny_dev(),
        &["hidden_states", "[S, N, 16]", "[32, 64, 4]"],
    );
}
