//! Calibration input sets: the shared real files load against their models, bad files get errors
//! that name the file, the tensor and the expected shape, and synthetic sets are deterministic
//! and have the documented distributions.

mod support;

use fastflux::checkpoint::FluxConfig;
use fastflux::inputs::{InputSet, SYNTHETIC_TEXT_STD, SyntheticSpec, held_out_seed};
use fastflux::tensor::Tensor;
use std::path::{Path, PathBuf};

/// The trained toy of `shared/toy/digits` (its meta.json).
fn toy() -> FluxConfig {
    FluxConfig {
        hidden: 64,
        heads: 4,
        head_dim: 16,
        mlp_hidden: 256,
        double_blocks: 2,
        single_blocks: 6,
        in_channels: 4,
        out_channels: 4,
        context_dim: 32,
        pooled_dim: 16,
        time_embed_dim: 256,
        guidance: false,
        axes_dim: vec![4, 6, 6],
        theta: 10_000,
    }
}

/// The golden tiny-dev model (`shared/golden/tiny-dev/meta.json`).
fn tiny_dev() -> FluxConfig {
    FluxConfig {
        single_blocks: 4,
        in_channels: 16,
        out_channels: 16,
        pooled_dim: 24,
        guidance: true,
        ..toy()
    }
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
    let unguided = FluxConfig {
        guidance: false,
        ..tiny_dev()
    };
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

#[test]
fn synthetic_is_deterministic_and_seeded() {
    let spec = SyntheticSpec::default();
    let a = InputSet::synthetic(&tiny_dev(), &spec).unwrap();
    assert_eq!(a, InputSet::synthetic(&tiny_dev(), &spec).unwrap());
    for seed in [1, held_out_seed(0)] {
        let b = InputSet::synthetic(&tiny_dev(), &SyntheticSpec { seed, ..spec }).unwrap();
        for name in [
            "hidden_states",
            "encoder_hidden_states",
            "pooled_projections",
            "timestep",
        ] {
            assert_ne!(a.get(name), b.get(name), "{name}, seed {seed}");
        }
        assert_eq!(a.get("img_ids"), b.get("img_ids"));
    }
    // The tensors draw from distinct streams.
    let first = |name| a.get(name).unwrap().data[..8].to_vec();
    assert_ne!(first("hidden_states"), first("pooled_projections"));
}

#[test]
fn synthetic_shapes_and_fixed_inputs() {
    let spec = SyntheticSpec::default();
    assert_eq!(
        (spec.samples, spec.image_tokens, spec.text_tokens, spec.seed),
        (16, 256, 64, 0)
    );
    let set = InputSet::synthetic(&tiny_dev(), &spec).unwrap();
    assert_eq!(
        (set.samples, set.image_tokens, set.text_tokens),
        (16, 256, 64)
    );
    assert_eq!(names(&set), ORDER_GUIDED);
    assert_eq!(shape(&set, "hidden_states"), [16, 256, 16]);
    assert_eq!(shape(&set, "encoder_hidden_states"), [16, 64, 32]);
    assert_eq!(shape(&set, "pooled_projections"), [16, 24]);
    assert_eq!(shape(&set, "timestep"), [16]);
    assert_eq!(set.get("guidance").unwrap().data, [3.5; 16]);
    assert_eq!(shape(&set, "img_ids"), [256, 3]);
    assert_eq!(shape(&set, "txt_ids"), [64, 3]);
    assert!(set.get("txt_ids").unwrap().data.iter().all(|&v| v == 0.0));
    assert_eq!(names(&InputSet::synthetic(&toy(), &spec).unwrap()), ORDER);
    // A synthetic set is a valid calibration file for its model.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synthetic.safetensors");
    write(&path, &set.tensors);
    assert_eq!(InputSet::load(&path, &tiny_dev()).unwrap(), set);
}

#[test]
fn synthetic_timesteps_one_per_stratum() {
    for samples in [1, 7, 16, 1000] {
        let spec = SyntheticSpec {
            samples,
            image_tokens: 4,
            text_tokens: 1,
            seed: 5,
        };
        let set = InputSet::synthetic(&toy(), &spec).unwrap();
        let t = &set.get("timestep").unwrap().data;
        for (k, &t) in t.iter().enumerate() {
            assert!(t > 0.0 && t < 1.0, "{t}");
            let stratum = (f64::from(t) * samples as f64).floor() as usize;
            assert_eq!(stratum, k, "timestep {t} of sample {k} of {samples}");
        }
    }
}

#[test]
fn synthetic_image_ids_form_the_grid() {
    for (tokens, w) in [(256, 16), (12, 4), (7, 7)] {
        let spec = SyntheticSpec {
            samples: 1,
            image_tokens: tokens,
            text_tokens: 2,
            seed: 0,
        };
        let set = InputSet::synthetic(&toy(), &spec).unwrap();
        let ids = &set.get("img_ids").unwrap().data;
        for (token, id) in ids.chunks(3).enumerate() {
            let want = [0.0, (token / w) as f32, (token % w) as f32];
            assert_eq!(id, want, "token {token} of {tokens}");
        }
    }
}

#[test]
fn synthetic_zero_sizes_are_refused() {
    for spec in [
        SyntheticSpec {
            samples: 0,
            ..Default::default()
        },
        SyntheticSpec {
            image_tokens: 0,
            ..Default::default()
        },
        SyntheticSpec {
            text_tokens: 0,
            ..Default::default()
        },
    ] {
        let err = InputSet::synthetic(&toy(), &spec).unwrap_err().to_string();
        assert!(err.contains("not 0"), "{err}");
    }
}

/// Mean, standard deviation, and the shares within one and two standard deviations of 0.
fn moments(data: &[f32], std: f64) -> (f64, f64, f64, f64) {
    let n = data.len() as f64;
    let mean = data.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = data
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let within = |k: f64| {
        data.iter()
            .filter(|&&v| f64::from(v).abs() < k * std)
            .count() as f64
            / n
    };
    (mean, var.sqrt(), within(1.0), within(2.0))
}

#[test]
fn synthetic_distributions() {
    // Tolerances are 5 standard errors for n values of N(0, σ²): the mean's is σ/√n, the
    // standard deviation's σ/√(2n), a share p's √(p(1−p)/n). The seed is fixed, so this does
    // not flake; a wrong distribution (say uniform with the right variance: 58 % within 1σ,
    // 100 % within 2σ) misses by many standard errors.
    let set = InputSet::synthetic(&toy(), &SyntheticSpec::default()).unwrap();
    for (name, sigma) in [
        ("hidden_states", 1.0),
        ("encoder_hidden_states", f64::from(SYNTHETIC_TEXT_STD)),
        ("pooled_projections", 1.0),
    ] {
        let data = &set.get(name).unwrap().data;
        let n = data.len() as f64;
        let (mean, std, one, two) = moments(data, sigma);
        let share = |p: f64| 5.0 * (p * (1.0 - p) / n).sqrt();
        assert!(mean.abs() < 5.0 * sigma / n.sqrt(), "{name}: mean {mean}");
        assert!(
            (std - sigma).abs() < 5.0 * sigma / (2.0 * n).sqrt(),
            "{name}: std {std}"
        );
        assert!(
            (one - 0.6827).abs() < share(0.6827),
            "{name}: {one} within 1σ"
        );
        assert!(
            (two - 0.9545).abs() < share(0.9545),
            "{name}: {two} within 2σ"
        );
    }
}

#[test]
fn slice_cuts_the_batch_and_keeps_the_ids() {
    let spec = SyntheticSpec {
        samples: 5,
        image_tokens: 6,
        text_tokens: 3,
        seed: 2,
    };
    let set = InputSet::synthetic(&tiny_dev(), &spec).unwrap();
    let part = set.slice(1, 4);
    assert_eq!(
        (part.samples, part.image_tokens, part.text_tokens),
        (3, 6, 3)
    );
    assert_eq!(names(&part), ORDER_GUIDED);
    for name in ["img_ids", "txt_ids"] {
        assert_eq!(part.get(name), set.get(name));
    }
    let h = set.get("hidden_states").unwrap();
    assert_eq!(shape(&part, "hidden_states"), [3, 6, 16]);
    assert_eq!(part.get("hidden_states").unwrap().data, h.data[96..4 * 96]);
    assert_eq!(
        part.get("timestep").unwrap().data,
        set.get("timestep").unwrap().data[1..4]
    );
    assert_eq!(shape(&part, "guidance"), [3]);
    assert_eq!(shape(&part, "encoder_hidden_states"), [3, 3, 32]);
    // Chunks put back together are the whole set.
    let chunks = [set.slice(0, 2), set.slice(2, 5)];
    for (i, t) in set.tensors.iter().enumerate() {
        let joined: Vec<f32> = if t.name.ends_with("_ids") {
            chunks[0].tensors[i].data.clone()
        } else {
            chunks
                .iter()
                .flat_map(|c| c.tensors[i].data.clone())
                .collect()
        };
        assert_eq!(joined, t.data, "{}", t.name);
    }
    assert_eq!(set.slice(5, 5).samples, 0);
}

#[test]
#[should_panic(expected = "slice 3..6 of a set of 5 samples")]
fn slice_out_of_range_panics() {
    let spec = SyntheticSpec {
        samples: 5,
        image_tokens: 1,
        text_tokens: 1,
        seed: 0,
    };
    InputSet::synthetic(&toy(), &spec).unwrap().slice(3, 6);
}
