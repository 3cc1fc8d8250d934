//! Writing a `.safetensors` file as a stream: the header first (every tensor's type and shape
//! is known up front), then the tensors' bytes in header order, in chunks of any size, so that
//! a file of many gigabytes needs only a chunk in memory. Written as an `AtomicFile`.

use super::atomic::AtomicFile;
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};

/// One tensor of the header, in the order its bytes follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorEntry {
    pub fn byte_len(&self) -> u64 {
        (self.shape.iter().product::<usize>() * self.dtype.size()) as u64
    }
}

/// A file whose header is written; its data is appended with `write` and sealed by `finish`.
pub struct SafetensorsWriter {
    target: AtomicFile,
    out: BufWriter<File>,
    header_bytes: u64,
    data_bytes: u64,
    written: u64,
}

impl SafetensorsWriter {
    /// Creates `target`'s temporary file and writes the header for `entries` (data in that
    /// order) and `metadata` (`__metadata__`, left out when empty).
    pub fn create(
        target: AtomicFile,
        entries: &[TensorEntry],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let header = header(entries, metadata);
        let file = target.create()?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let io = |e| Error::io(target.path(), e);
        out.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(io)?;
        out.write_all(header.as_bytes()).map_err(io)?;
        Ok(Self {
            out,
            header_bytes: 8 + header.len() as u64,
            data_bytes: entries.iter().map(TensorEntry::byte_len).sum(),
            written: 0,
            target,
        })
    }

    /// Appends tensor bytes: whole tensors or any chunks of them, in header order.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(self.target.path(), e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Checks that the data the header announces was written, syncs it to disk (a crash never
    /// leaves a truncated file under the final name) and renames the file into place. Returns
    /// the file's size.
    pub fn finish(self) -> Result<u64> {
        let path = self.target.path().to_owned();
        if self.written != self.data_bytes {
            return Err(Error::Internal(format!(
                "{}: wrote {} bytes of tensor data, the header announces {}",
                path.display(),
                self.written,
                self.data_bytes
            )));
        }
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        self.target.commit()?;
        Ok(self.header_bytes + self.data_bytes)
    }
}

/// The header JSON, entries in data order, padded with spaces to a multiple of 8 bytes so that
/// the data section starts aligned.
fn header(entries: &[TensorEntry], metadata: &BTreeMap<String, String>) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("a string");
    let mut parts = Vec::with_capacity(entries.len() + 1);
    if !metadata.is_empty() {
        let meta: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
            .collect();
        parts.push(format!("\"__metadata__\":{{{}}}", meta.join(",")));
    }
    let mut offset = 0;
    for e in entries {
        let end = offset + e.byte_len();
        parts.push(format!(
            "{}:{{\"dtype\":{},\"shape\":{:?},\"data_offsets\":[{offset},{end}]}}",
            quote(&e.name),
            quote(e.dtype.safetensors_name()),
            e.shape
        ));
        offset = end;
    }
    let mut text = format!("{{{}}}", parts.join(","));
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SafetensorsFile;

    #[test]
    fn what_is_written_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let entries = [
            TensorEntry {
                name: "b".into(),
                dtype: DType::F32,
                shape: vec![2, 1],
            },
            TensorEntry {
                name: "a".into(),
                dtype: DType::F16,
                shape: vec![3],
            },
        ];
        let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        let mut w = SafetensorsWriter::create(AtomicFile::new(&path).unwrap(), &entries, &metadata)
            .unwrap();
        w.write(&1f32.to_le_bytes()).unwrap();
        w.write(&2f32.to_le_bytes()).unwrap();
        w.write(&[0, 60, 0, 64, 0, 66]).unwrap();
        let size = w.finish().unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        let file = SafetensorsFile::open(&path).unwrap();
        assert_eq!(file.metadata()["format"], "pt");
        assert_eq!(file.read_f32("b").unwrap(), (vec![2, 1], vec![1.0, 2.0]));
        assert_eq!(file.read_f32("a").unwrap(), (vec![3], vec![1.0, 2.0, 3.0]));
    }

    #[test]
    fn short_data_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let entries = [TensorEntry {
            name: "a".into(),
            dtype: DType::F32,
            shape: vec![2],
        }];
        let mut w =
            SafetensorsWriter::create(AtomicFile::new(&path).unwrap(), &entries, &BTreeMap::new())
                .unwrap();
        w.write(&[0; 4]).unwrap();
        let err = w.finish().err().unwrap().to_string();
        assert!(err.contains("wrote 4 bytes"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
