//! Writing the model: weights streamed once, in graph order, into one external data file whose
//! large tensors start at 64 KiB boundaries (so ONNX Runtime can map them), then the small
//! `.onnx` protobuf that points into it. Both are `io::AtomicFile`s, renamed into place only
//! when both are complete: a failed export leaves nothing behind.

use super::proto::{StringStringEntryProto, TensorProto, tensor_proto::DataLocation};
use crate::error::{Error, Result};
use crate::io::AtomicFile;
use crate::ir::{TensorStore, Weight};
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// ONNX's own convention (`onnx.save_model`'s defaults): tensors of 1 MiB or more start at a
/// multiple of 64 KiB, the allocation granularity that memory-mapping needs on every platform.
const ALIGN_THRESHOLD: usize = 1 << 20;
const ALIGNMENT: u64 = 64 << 10;

/// The model and its data file, each an `AtomicFile` until both are complete.
pub struct PendingOutput {
    model: AtomicFile,
    data: AtomicFile,
}

impl PendingOutput {
    pub fn new(model: &Path) -> Result<Self> {
        let file_name = model.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            Error::Usage(format!("output path {} has no file name", model.display()))
        })?;
        let dir = match model.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let data = dir.join(format!("{file_name}.data"));
        // Checked before anything is written: a rename onto a folder fails, and when it is the
        // model's that fails, the data file has already been renamed into place.
        for target in [model, data.as_path()] {
            if target.is_dir() {
                return Err(Error::file(
                    target,
                    "is a folder; the output must be a file path (e.g. -o folder/model.onnx)",
                ));
            }
        }
        Ok(Self {
            model: AtomicFile::new(model)?,
            data: AtomicFile::new(&data)?,
        })
    }

    /// The name the model uses to refer to its data file (relative, next to it).
    pub fn data_location(&self) -> String {
        self.data
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn create_data(&self) -> Result<File> {
        self.data.create()
    }

    pub fn write_model(&self, bytes: &[u8]) -> Result<()> {
        self.model.write_all(bytes)
    }

    /// Renames both files into place, data first so the model never points at a missing file.
    pub fn commit(self) -> Result<()> {
        let data = self.data.path().to_owned();
        self.data.commit()?;
        if let Err(e) = self.model.commit() {
            // Without its model the data file just put in place is half an output.
            let _ = std::fs::remove_file(&data);
            return Err(e);
        }
        Ok(())
    }
}

/// Streams every weight into `file`, returning their initializers (external references).
pub fn write_weights(
    store: &dyn TensorStore,
    weights: &[&Weight],
    file: File,
    location: &str,
    show_progress: bool,
) -> Result<(Vec<TensorProto>, u64)> {
    let total: u64 = weights.iter().map(|w| w.byte_len() as u64).sum();
    let bar = if show_progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "writing weights {bar:30} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {msg})",
        )
        .expect("valid template"),
    );
    let data_path = PathBuf::from(location);
    let mut out = BufWriter::with_capacity(8 << 20, file);
    let mut offset = 0u64;
    let mut buffer = Vec::new();
    let mut initializers = Vec::with_capacity(weights.len());
    for (i, weight) in weights.iter().enumerate() {
        buffer.clear();
        weight.write_bytes(store, &mut buffer)?;
        if buffer.len() != weight.byte_len() {
            return Err(Error::Internal(format!(
                "weight `{}` produced {} bytes, expected {}",
                weight.name,
                buffer.len(),
                weight.byte_len()
            )));
        }
        if buffer.len() >= ALIGN_THRESHOLD && !offset.is_multiple_of(ALIGNMENT) {
            let pad = ALIGNMENT - offset % ALIGNMENT;
            out.write_all(&vec![0u8; pad as usize])
                .map_err(|e| Error::io(&data_path, e))?;
            offset += pad;
        }
        out.write_all(&buffer)
            .map_err(|e| Error::io(&data_path, e))?;
        initializers.push(external_initializer(
            weight,
            location,
            offset,
            buffer.len() as u64,
        ));
        offset += buffer.len() as u64;
        bar.inc(buffer.len() as u64);
        bar.set_message(format!("{}/{} tensors", i + 1, weights.len()));
    }
    out.flush().map_err(|e| Error::io(&data_path, e))?;
    bar.finish_and_clear();
    Ok((initializers, offset))
}

fn external_initializer(weight: &Weight, location: &str, offset: u64, length: u64) -> TensorProto {
    let entry = |key: &str, value: String| StringStringEntryProto {
        key: key.to_owned(),
        value,
    };
    TensorProto {
        name: weight.name.clone(),
        data_type: super::builder::data_type(weight.dtype) as i32,
        dims: weight.shape.iter().map(|&d| d as i64).collect(),
        data_location: DataLocation::External as i32,
        external_data: vec![
            entry("location", location.to_owned()),
            entry("offset", offset.to_string()),
            entry("length", length.to_string()),
        ],
        ..Default::default()
    }
}
