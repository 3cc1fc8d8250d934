//! Writing the model: weights streamed once, in graph order, into one external data file whose
//! large tensors start at 64 KiB boundaries (so ONNX Runtime can map them), then the small
//! `.onnx` protobuf that points into it. A weight whose stored bytes are already in the export
//! type is copied from the checkpoint file to the data file by the kernel (`copy_file_range`),
//! never mapped in; the rest goes through a buffer. Both, and the small files written beside
//! them (`config.json`), are `io::AtomicFile`s, renamed into place only when all are complete:
//! a failed export leaves nothing behind.

use super::proto::{StringStringEntryProto, TensorProto, tensor_proto::DataLocation};
use crate::error::{Error, Result};
use crate::io::AtomicFile;
use crate::ir::{TensorStore, Weight};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// ONNX's own convention (`onnx.save_model`'s defaults): tensors of 1 MiB or more start at a
/// multiple of 64 KiB, the allocation granularity that memory-mapping needs on every platform.
const ALIGN_THRESHOLD: usize = 1 << 20;
const ALIGNMENT: u64 = 64 << 10;

/// The model, its data file and the small files that go beside it (`config.json`), each an
/// `AtomicFile` until all are complete.
pub struct PendingOutput {
    model: AtomicFile,
    data: AtomicFile,
    beside: Vec<AtomicFile>,
}

impl PendingOutput {
    /// `beside` are the names of the small files written in the model's folder.
    pub fn new(model: &Path, beside: &[&str]) -> Result<Self> {
        let file_name = model.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            Error::Usage(format!("output path {} has no file name", model.display()))
        })?;
        let dir = match model.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let data = dir.join(format!("{file_name}.data"));
        let beside: Vec<PathBuf> = beside.iter().map(|name| dir.join(name)).collect();
        // Checked before anything is written: a rename onto a folder fails, and when it is the
        // model's that fails, the data file has already been renamed into place.
        for target in [model, data.as_path()]
            .into_iter()
            .chain(beside.iter().map(|p| p.as_path()))
        {
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
            beside: beside
                .iter()
                .map(|p| AtomicFile::new(p))
                .collect::<Result<_>>()?,
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

    /// Writes the `i`-th file of `beside` (to its temporary name).
    pub fn write_beside(&self, i: usize, text: &str) -> Result<()> {
        self.beside[i].write_all(text.as_bytes())
    }

    /// Renames every file into place, the model last so that it never points at a missing file
    /// or lacks what goes beside it.
    pub fn commit(self) -> Result<()> {
        let mut placed = Vec::new();
        let rest = std::iter::once(self.data).chain(self.beside);
        for file in rest.chain(std::iter::once(self.model)) {
            let path = file.path().to_owned();
            if let Err(e) = file.commit() {
                // Without its model the files just put in place are half an output.
                for done in &placed {
                    let _ = std::fs::remove_file(done);
                }
                return Err(e);
            }
            placed.push(path);
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
    let mut sources = Sources::default();
    let mut offset = 0u64;
    let mut buffer = Vec::new();
    let mut initializers = Vec::with_capacity(weights.len());
    let extents: Vec<_> = weights.iter().map(|w| w.file_extents(store)).collect();
    for (i, weight) in weights.iter().enumerate() {
        let len = weight.byte_len() as u64;
        // The kernel starts reading the next file-copied weight while this one is written.
        if let Some(Some(next)) = extents.get(i + 1) {
            for (path, range) in next {
                sources.will_need(path, range.clone())?;
            }
        }
        if len >= ALIGN_THRESHOLD as u64 && !offset.is_multiple_of(ALIGNMENT) {
            let pad = ALIGNMENT - offset % ALIGNMENT;
            out.write_all(&vec![0u8; pad as usize])
                .map_err(|e| Error::io(&data_path, e))?;
            offset += pad;
        }
        match extents[i].clone() {
            // Bytes already in the export type, in files: copied file to file by the kernel
            // (`io::copy` between `File`s is `copy_file_range` on Linux), never mapped in.
            Some(extents) => {
                let found: u64 = extents.iter().map(|(_, r)| r.end - r.start).sum();
                if found != len {
                    return Err(Error::Internal(format!(
                        "weight `{}` lies in {found} stored bytes, expected {len}",
                        weight.name
                    )));
                }
                out.flush().map_err(|e| Error::io(&data_path, e))?;
                for (path, range) in extents {
                    sources.copy(path, range, out.get_mut(), &data_path)?;
                }
            }
            None => {
                buffer.clear();
                weight.write_bytes(store, &mut buffer)?;
                if buffer.len() as u64 != len {
                    return Err(Error::Internal(format!(
                        "weight `{}` produced {} bytes, expected {len}",
                        weight.name,
                        buffer.len(),
                    )));
                }
                out.write_all(&buffer)
                    .map_err(|e| Error::io(&data_path, e))?;
            }
        }
        initializers.push(external_initializer(weight, location, offset, len));
        offset += len;
        bar.inc(len);
        bar.set_message(format!("{}/{} tensors", i + 1, weights.len()));
    }
    out.flush().map_err(|e| Error::io(&data_path, e))?;
    bar.finish_and_clear();
    Ok((initializers, offset))
}

/// The stored files weights are copied from, each opened once.
#[derive(Default)]
struct Sources {
    open: HashMap<PathBuf, File>,
}

impl Sources {
    /// The file at `path`, opened (once) for reading in order.
    fn open(&mut self, path: &Path) -> Result<&mut File> {
        match self.open.entry(path.to_owned()) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let file = File::open(path).map_err(|err| Error::io(path, err))?;
                advise(&file, 0..0, libc::POSIX_FADV_SEQUENTIAL);
                Ok(e.insert(file))
            }
        }
    }

    /// Asks the kernel to start reading `range` of `path` now (a hint: errors are ignored).
    fn will_need(&mut self, path: &Path, range: Range<u64>) -> Result<()> {
        let file = self.open(path)?;
        advise(file, range, libc::POSIX_FADV_WILLNEED);
        Ok(())
    }

    /// Appends bytes `range` of the file at `path` to `out` (the data file, `data_path`).
    fn copy(
        &mut self,
        path: &Path,
        range: Range<u64>,
        out: &mut File,
        data_path: &Path,
    ) -> Result<()> {
        let source = self.open(path)?;
        source
            .seek(SeekFrom::Start(range.start))
            .map_err(|e| Error::io(path, e))?;
        let want = range.end - range.start;
        let copied =
            std::io::copy(&mut (&*source).take(want), out).map_err(|e| Error::io(data_path, e))?;
        if copied != want {
            return Err(Error::file(
                path,
                format!(
                    "holds {copied} of the {want} bytes of a tensor at byte {}: truncated while \
                     it was being compiled",
                    range.start
                ),
            ));
        }
        Ok(())
    }
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

/// `posix_fadvise` on `range` of `file` (`0..0`: the whole file). Only a hint, so its result is
/// not checked: the copy is correct either way.
fn advise(file: &File, range: Range<u64>, advice: libc::c_int) {
    use std::os::fd::AsRawFd;
    let len = range.end.saturating_sub(range.start);
    let (Ok(offset), Ok(len)) = (
        libc::off_t::try_from(range.start),
        libc::off_t::try_from(len),
    ) else {
        return;
    };
    // SAFETY: the descriptor is open for the call's duration (borrowed from `file`), and
    // posix_fadvise only reads its arguments; it changes no memory of this process.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), offset, len, advice);
    }
}
