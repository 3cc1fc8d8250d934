//! Reading a calibration file: every input of the contract, validated against the model, with
//! errors that name the file, the tensor, the expected shape and what was found.

use super::InputSet;
use super::contract::{ID_INPUTS, InputDim, ModelInput, model_inputs, show};
use crate::checkpoint::FluxConfig;
use crate::error::{Error, Result};
use crate::io::safetensors::SafetensorsFile;
use crate::tensor::Tensor;
use std::path::Path;

impl InputSet {
    /// Reads a calibration file and validates it against the model: every input the model
    /// takes must be present (any float dtype) with the right shape and the same sample count
    /// S, image tokens N and text tokens L throughout, all values finite, and `timestep` the
    /// sigma in [0, 1]. Errors name the file, the tensor, the expected shape (`[S, N, 64]`) and
    /// what was found. Other tensors are ignored, so is `guidance` for a model without a
    /// guidance embedding. The ids may also carry a leading batch axis (`[S,N,3]` or `[1,N,3]`,
    /// diffusers' old format) if every sample has the same ids.
    pub fn load(path: &Path, config: &FluxConfig) -> Result<Self> {
        // Labels or other integer tensors may sit beside the inputs: they are ignored.
        let st = SafetensorsFile::open_with_other_dtypes(path)?;
        let mut bound: [Option<(usize, &'static str)>; 3] = [None; 3];
        let mut tensors = Vec::new();
        for ModelInput { name, dims } in model_inputs(config) {
            let bad = |msg: String| Error::tensor(path, name, msg);
            let Some((mut shape, mut data)) = st.read_data_f32(name)? else {
                // The file's tensors are a BTreeMap: already sorted.
                let held: Vec<&str> = st.tensors().keys().map(String::as_str).collect();
                let held = match held.is_empty() {
                    true => "no tensors".to_string(),
                    false => format!("`{}`", held.join("`, `")),
                };
                let why = match name {
                    "guidance" => ": the model has a guidance embedding (FLUX-dev style)",
                    _ => "",
                };
                return Err(bad(format!(
                    "missing{why}: the model needs it with shape {} (the file holds {held})",
                    show(&dims)
                )));
            };
            if ID_INPUTS.contains(&name) && shape.len() == dims.len() + 1 {
                (shape, data) = unbatch_ids(&shape, data, &bound, &dims).map_err(bad)?;
            }
            bind(&dims, &shape, &mut bound, name).map_err(bad)?;
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("element {i} is {}", data[i])));
            }
            if name == "timestep"
                && let Some(t) = data.iter().find(|t| !(0.0..=1.0).contains(*t))
            {
                return Err(bad(format!(
                    "holds {t}: the timestep is the sigma in [0, 1] (the model multiplies by \
                     1000 inside), not the scheduler's 0–1000 timestep"
                )));
            }
            let name = name.to_string();
            tensors.push(Tensor { name, shape, data });
        }
        let size = |i: usize| bound[i].map_or(0, |(n, _)| n);
        Ok(Self {
            samples: size(0),
            image_tokens: size(1),
            text_tokens: size(2),
            tensors,
        })
    }
}

/// Checks `shape` against `dims`, binding S, N and L on first sight (`bound[i]` holds the size
/// and the tensor that set it) and requiring every later tensor to agree.
fn bind(
    dims: &[InputDim],
    shape: &[usize],
    bound: &mut [Option<(usize, &'static str)>; 3],
    name: &'static str,
) -> Result<(), String> {
    let mismatch = || format!("expected shape {}, found {shape:?}", show(dims));
    if shape.len() != dims.len() {
        let alt = if ID_INPUTS.contains(&name) {
            " (or the same with a leading batch axis of 1 or S, the ids shared by every sample)"
        } else {
            ""
        };
        return Err(format!("{}{alt}", mismatch()));
    }
    for (i, (&dim, &found)) in dims.iter().zip(shape).enumerate() {
        let (slot, what) = match dim {
            InputDim::Fixed(want, _) if want == found => continue,
            InputDim::Fixed(want, what) => {
                return Err(format!(
                    "{}: dimension {i} must be {want}, the model's {what}",
                    mismatch()
                ));
            }
            InputDim::Samples => (0, "samples"),
            InputDim::ImageTokens => (1, "image tokens"),
            InputDim::TextTokens => (2, "text tokens"),
        };
        match bound[slot] {
            Some((size, _)) if size == found => {}
            Some((size, from)) => {
                return Err(format!(
                    "{}: {dim} ({what}) is {size} in `{from}` but {found} here; every input \
                     must describe the same {what}",
                    mismatch()
                ));
            }
            None if found == 0 => {
                return Err(format!(
                    "{}: {dim} is 0, so there are no {what}",
                    mismatch()
                ));
            }
            None => bound[slot] = Some((found, name)),
        }
    }
    Ok(())
}

/// Drops the leading batch axis of ids given per sample, if it is 1 or S and all samples agree.
fn unbatch_ids(
    shape: &[usize],
    data: Vec<f32>,
    bound: &[Option<(usize, &'static str)>; 3],
    dims: &[InputDim],
) -> Result<(Vec<usize>, Vec<f32>), String> {
    let (batch, one) = (shape[0], shape[1..].iter().product::<usize>());
    let samples = bound[0].map_or(0, |(s, _)| s);
    if batch != 1 && batch != samples {
        return Err(format!(
            "expected shape {} or with a leading batch axis of 1 or S = {samples}, found {shape:?}",
            show(dims)
        ));
    }
    for k in 1..batch {
        let sample = &data[k * one..(k + 1) * one];
        if let Some(i) = (0..one).find(|&i| sample[i] != data[i]) {
            let (token, axis) = (i / shape[2].max(1), i % shape[2].max(1));
            return Err(format!(
                "given per sample ({shape:?}), but sample {k} differs from sample 0 (token \
                 {token}, axis {axis}: {} vs {}); the model takes one id grid shared by the whole \
                 batch, so put samples with different ids in different calibration files",
                sample[i], data[i]
            ));
        }
    }
    let mut data = data;
    data.truncate(one);
    Ok((shape[1..].to_vec(), data))
}
