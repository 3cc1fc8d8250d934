//! The checks that protect the user's files before anything is written: no output (nor the
//! `config.json` written beside it) may be one of the checkpoint's files, and the emitted checkpoint may not be the ONNX output.

use crate::checkpoint::FluxCheckpoint;
use crate::checkpoint::diffusers_config::CONFIG_FILE;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The output (or its data file, or the `config.json` beside it) must not be one of the
/// checkpoint's files.
pub(super) fn refuse_to_overwrite_inputs(ckpt: &FluxCheckpoint, output: &Path) -> Result<()> {
    let data = PathBuf::from(format!("{}.data", output.display()));
    let config = output.with_file_name(CONFIG_FILE);
    let inputs: Vec<PathBuf> = std::iter::once(ckpt.origin().to_owned())
        .chain(ckpt.checkpoint.files().iter().map(|f| f.path().to_owned()))
        .chain(input_config(ckpt))
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    for target in [output, data.as_path(), config.as_path()] {
        let Some(resolved) = resolve(target) else {
            continue;
        };
        if inputs.contains(&resolved) {
            return Err(Error::Usage(format!(
                "output {} would overwrite the input checkpoint {}; choose another output path",
                target.display(),
                resolved.display()
            )));
        }
    }
    Ok(())
}

/// The `config.json` of a diffusers folder checkpoint: in the origin (the transformer folder,
/// also when a pipeline folder was given), or beside it when the origin is the index file.
fn input_config(ckpt: &FluxCheckpoint) -> Option<PathBuf> {
    ckpt.checkpoint.config_json.as_ref()?;
    let origin = ckpt.origin();
    let folder = if origin.is_dir() {
        origin
    } else {
        origin.parent()?
    };
    Some(folder.join(CONFIG_FILE))
}

/// `--emit-safetensors` must name neither the ONNX output nor its data file.
pub(super) fn refuse_emit_onto_output(emit: &Path, output: &Path) -> Result<()> {
    refuse_onto_output("--emit-safetensors", emit, output)
}

/// The file of `flag` must name neither the ONNX output nor its data file.
pub(super) fn refuse_onto_output(flag: &str, emit: &Path, output: &Path) -> Result<()> {
    let outputs = [
        output.to_owned(),
        PathBuf::from(format!("{}.data", output.display())),
    ];
    if resolve(emit).is_some_and(|e| outputs.iter().any(|o| resolve(o).as_ref() == Some(&e))) {
        return Err(Error::Usage(format!(
            "{flag} {} is also the ONNX output; choose another path",
            emit.display()
        )));
    }
    Ok(())
}

/// The absolute path `p` names, whether or not the file exists yet.
fn resolve(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(parent.canonicalize().ok()?.join(p.file_name()?))
}
