//! Synthetic calibration sets: deterministic for a seed, shaped for the model, with the
//! documented distributions; and slicing a set into batches.

use crate::{ORDER, ORDER_GUIDED, names, shape, tiny_dev, toy, write};
use fastflux::inputs::{InputSet, SYNTHETIC_TEXT_STD, SyntheticSpec, held_out_seed};

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
