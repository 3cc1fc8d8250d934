//! Calibration files that do not fit their model, each refused with an error that names the
//! file, the tensor and the expected shape; and what a valid file may hold besides its inputs.

use crate::{load_err, tiny_dev, toy, write};
use fastflux::checkpoint::FluxConfig;
use fastflux::inputs::{InputSet, SyntheticSpec};
use fastflux::tensor::Tensor;
use std::path::PathBuf;

/// A small valid set for `config` (2 samples, 6 image and 3 text tokens), edited by `edit`,
/// written to a fresh file; returns the file (and the dir keeping it alive).
fn bad_file(
    config: &FluxConfig,
    edit: impl FnOnce(&mut Vec<Tensor>),
) -> (tempfile::TempDir, PathBuf) {
    let spec = SyntheticSpec {
        samples: 2,
        image_tokens: 6,
        text_tokens: 3,
        seed: 1,
    };
    let mut tensors = InputSet::synthetic(config, &spec).unwrap().tensors;
    edit(&mut tensors);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calib.safetensors");
    write(&path, &tensors);
    (dir, path)
}

fn tensor<'a>(tensors: &'a mut [Tensor], name: &str) -> &'a mut Tensor {
    tensors.iter_mut().find(|t| t.name == name).unwrap()
}

#[test]
fn round_trip_and_extra_tensors_ignored() {
    let mut extra = None;
    let (_dir, path) = bad_file(&tiny_dev(), |tensors| {
        extra = Some(InputSet {
            samples: 2,
            image_tokens: 6,
            text_tokens: 3,
            tensors: tensors.clone(),
        });
        tensors.push(Tensor {
            name: "labels".into(),
            shape: vec![5],
            data: vec![1.0; 5],
        });
    });
    assert_eq!(InputSet::load(&path, &tiny_dev()).unwrap(), extra.unwrap());
}

#[test]
fn missing_tensor() {
    let (_dir, path) = bad_file(&toy(), |t| t.retain(|t| t.name != "pooled_projections"));
    load_err(
        &path,
        &toy(),
        &[
            "`pooled_projections`",
            "missing",
            "[S, 16]",
            "`hidden_states`",
        ],
    );
}

#[test]
fn wrong_channel_count() {
    let (_dir, path) = bad_file(&toy(), |t| {
        let h = tensor(t, "hidden_states");
        h.shape = vec![2, 6, 2];
        h.data.truncate(24);
    });
    load_err(
        &path,
        &toy(),
        &["`hidden_states`", "[S, N, 4]", "[2, 6, 2]", "in_channels"],
    );
}

#[test]
fn wrong_rank() {
    let (_dir, path) = bad_file(&toy(), |t| tensor(t, "timestep").shape = vec![2, 1]);
    load_err(&path, &toy(), &["`timestep`", "[S]", "[2, 1]"]);
}

#[test]
fn inconsistent_sample_counts() {
    let (_dir, path) = bad_file(&toy(), |t| {
        let p = tensor(t, "pooled_projections");
        p.shape = vec![3, 16];
        p.data.extend([0.0; 16]);
    });
    load_err(
        &path,
        &toy(),
        &[
            "`pooled_projections`",
            "[S, 16]",
            "[3, 16]",
            "2 in `hidden_states`",
            "3 here",
        ],
    );
}

#[test]
fn inconsistent_token_counts() {
    let (_dir, path) = bad_file(&toy(), |t| {
        let ids = tensor(t, "txt_ids");
        ids.shape = vec![4, 3];
        ids.data.extend([0.0; 3]);
    });
    load_err(
        &path,
        &toy(),
        &[
            "`txt_ids`",
            "[L, 3]",
            "3 in `encoder_hidden_states`",
            "4 here",
        ],
    );
}

#[test]
fn missing_guidance_for_a_guidance_model() {
    let (_dir, path) = bad_file(&tiny_dev(), |t| t.retain(|t| t.name != "guidance"));
    load_err(
        &path,
        &tiny_dev(),
        &["`guidance`", "missing", "guidance embedding", "[S]"],
    );
}

#[test]
fn batched_ids_are_accepted_when_shared() {
    for batch in [1, 2] {
        let mut plain = None;
        let (_dir, path) = bad_file(&toy(), |t| {
            plain = Some(t.clone());
            let ids = tensor(t, "img_ids");
            ids.shape.insert(0, batch);
            ids.data = ids.data.repeat(batch);
        });
        let set = InputSet::load(&path, &toy()).unwrap();
        assert_eq!(set.tensors, plain.unwrap(), "batch {batch}");
    }
}

#[test]
fn per_sample_ids_that_differ_are_refused() {
    let (_dir, path) = bad_file(&toy(), |t| {
        let ids = tensor(t, "img_ids");
        ids.shape.insert(0, 2);
        let mut second = ids.data.clone();
        second[4] += 1.0;
        ids.data.extend(second);
    });
    load_err(
        &path,
        &toy(),
        &[
            "`img_ids`",
            "[2, 6, 3]",
            "sample 1 differs",
            "token 1, axis 1",
        ],
    );
    // A batch axis that is neither 1 nor S.
    let (_dir, path) = bad_file(&toy(), |t| {
        let ids = tensor(t, "txt_ids");
        ids.shape.insert(0, 3);
        ids.data = ids.data.repeat(3);
    });
    load_err(&path, &toy(), &["`txt_ids`", "[L, 3]", "[3, 3, 3]"]);
}

#[test]
fn bad_values() {
    let (_dir, path) = bad_file(&toy(), |t| tensor(t, "timestep").data[1] = 500.0);
    load_err(&path, &toy(), &["`timestep`", "500", "[0, 1]"]);
    let (_dir, path) = bad_file(&toy(), |t| {
        tensor(t, "encoder_hidden_states").data[7] = f32::NAN
    });
    load_err(
        &path,
        &toy(),
        &["`encoder_hidden_states`", "element 7", "NaN"],
    );
}

#[test]
fn not_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calib.safetensors");
    std::fs::write(&path, b"not a safetensors file").unwrap();
    load_err(&path, &toy(), &["safetensors"]);
}
