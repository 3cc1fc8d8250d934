//! One memory-mapped `.safetensors` file: a validated header and borrowed tensor bytes.
//!
//! The header is parsed here rather than by the `safetensors` crate so that every defect can be
//! reported against the tensor that has it (an unknown dtype, offsets past the end of a
//! truncated file). Tensor bytes are read straight from the map; `release` hands a tensor's
//! pages back to the kernel once it has been written, so that streaming a 24 GB checkpoint
//! never keeps more than a tensor or two resident. Small f32 files (calibration inputs,
//! reference outputs) are read whole with `read_f32`.

use crate::dtype::{DType, decode_f32};
use crate::error::{Error, Result};
use memmap2::{Advice, Mmap, UncheckedAdvice};
use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Largest header we accept; the format's own reader uses the same bound.
const MAX_HEADER_BYTES: u64 = 100_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte range within the whole file (not the data section).
    pub bytes: Range<usize>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

pub struct SafetensorsFile {
    path: PathBuf,
    map: Mmap,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
    /// Tensors of types fastflux does not compute in, by name: their type as the header says.
    other_dtypes: BTreeMap<String, String>,
}

impl SafetensorsFile {
    /// Opens a file whose every tensor must be of a type fastflux reads (a checkpoint).
    pub fn open(path: &Path) -> Result<Self> {
        Self::map(path, false)
    }

    /// Opens a file that may also hold tensors of other types (integer labels beside float
    /// inputs, say): they are listed by `other_dtypes`, and `read_f32` refuses them by name.
    pub fn open_with_other_dtypes(path: &Path) -> Result<Self> {
        Self::map(path, true)
    }

    fn map(path: &Path, allow_other_dtypes: bool) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only. A file truncated underneath us by another process would
        // fault, as it would for any mmap-based reader; checkpoints are not edited while compiled.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = parse_header(path, &map, allow_other_dtypes)?;
        Ok(Self {
            path: path.to_owned(),
            map,
            tensors: header.tensors,
            metadata: header.metadata,
            other_dtypes: header.other_dtypes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// With `open_with_other_dtypes`: the tensors of types fastflux does not read, and the type.
    pub fn other_dtypes(&self) -> &BTreeMap<String, String> {
        &self.other_dtypes
    }

    /// Reads tensor `name` whole, converted to f32 (from F32, F64, F16, BF16 or F8_E4M3), with
    /// its shape. Errors name the file and the tensor.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let Some(info) = self.info(name) else {
            let why = match self.other_dtypes.get(name) {
                Some(dtype) => format!("dtype {dtype} (expected F32, F64, F16 or BF16)"),
                None => "missing".to_owned(),
            };
            return Err(Error::tensor(&self.path, name, why));
        };
        let mut values = vec![0f32; info.numel()];
        decode_f32(info.dtype, &self.map[info.bytes.clone()], &mut values);
        Ok((info.shape.clone(), values))
    }

    /// Reads a data tensor (model inputs, references: F32, F64, F16 or BF16; fp8 is a weight
    /// format, never data) whole, converted to f32, with its shape. `None` when the file lacks
    /// it, so the caller can say what it needed; a tensor of another type is an error naming it.
    pub fn read_data_f32(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let dtype = match (self.info(name), self.other_dtypes.get(name)) {
            (None, None) => return Ok(None),
            (None, Some(other)) => other.clone(),
            (Some(info), _) if info.dtype == DType::F8E4M3 => info.dtype.safetensors_name().into(),
            (Some(_), _) => return self.read_f32(name).map(Some),
        };
        Err(Error::tensor(
            &self.path,
            name,
            format!("dtype {dtype} (expected F32, F64, F16 or BF16)"),
        ))
    }

    /// The raw little-endian bytes of a tensor, borrowed from the map.
    pub fn bytes(&self, info: &TensorInfo) -> &[u8] {
        let _ = self
            .map
            .advise_range(Advice::Sequential, info.bytes.start, info.bytes.len());
        &self.map[info.bytes.clone()]
    }

    /// Drops the tensor's pages from this process's resident set. The map stays valid: a later
    /// read faults the pages back in from the file (or the page cache).
    pub fn release(&self, info: &TensorInfo) {
        let page = page_size();
        let start = info.bytes.start / page * page;
        let end = info.bytes.end;
        // SAFETY: DontNeed on a read-only file mapping only discards clean pages; their contents
        // are re-read from the file on the next access, so no borrowed slice observes a change.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start)
        };
    }
}

fn page_size() -> usize {
    4096
}

struct Header {
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
    other_dtypes: BTreeMap<String, String>,
}

fn parse_header(path: &Path, map: &[u8], allow_other_dtypes: bool) -> Result<Header> {
    let not_safetensors =
        |why: String| Error::file(path, format!("not a valid safetensors file: {why}"));
    if map.len() < 8 {
        return Err(not_safetensors(format!(
            "it is {} bytes long, shorter than the 8-byte header length",
            map.len()
        )));
    }
    let header_len = u64::from_le_bytes(map[..8].try_into().expect("8 bytes"));
    if header_len > MAX_HEADER_BYTES || 8 + header_len > map.len() as u64 {
        return Err(not_safetensors(format!(
            "the first 8 bytes announce a {header_len}-byte header, but the file has {} bytes \
             (a truncated download, or not safetensors at all)",
            map.len()
        )));
    }
    let data_start = 8 + header_len as usize;
    let json: serde_json::Value = serde_json::from_slice(&map[8..data_start])
        .map_err(|e| not_safetensors(format!("the header is not JSON ({e})")))?;
    let serde_json::Value::Object(entries) = json else {
        return Err(not_safetensors("the header is not a JSON object".into()));
    };
    let data_len = map.len() - data_start;
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    let mut other_dtypes = BTreeMap::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            if let serde_json::Value::Object(m) = entry {
                for (k, v) in m {
                    let v = v
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string());
                    metadata.insert(k, v);
                }
            }
            continue;
        }
        let dtype = entry["dtype"].as_str();
        if allow_other_dtypes && dtype.is_some_and(|d| DType::from_safetensors(d).is_none()) {
            other_dtypes.insert(name, dtype.unwrap_or_default().to_owned());
            continue;
        }
        let info = parse_entry(path, &name, &entry, data_start, data_len)?;
        tensors.insert(name, info);
    }
    Ok(Header {
        tensors,
        metadata,
        other_dtypes,
    })
}

fn parse_entry(
    path: &Path,
    name: &str,
    entry: &serde_json::Value,
    data_start: usize,
    data_len: usize,
) -> Result<TensorInfo> {
    let bad = |msg: String| Error::tensor(path, name, msg);
    let dtype_name = entry["dtype"]
        .as_str()
        .ok_or_else(|| bad("header entry has no `dtype` string".into()))?;
    let dtype = DType::from_safetensors(dtype_name).ok_or_else(|| {
        bad(format!(
            "unsupported dtype `{dtype_name}`: weights must be F32, F16, BF16, F8_E4M3 or F64"
        ))
    })?;
    let shape = entry["shape"]
        .as_array()
        .and_then(|dims| {
            dims.iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| bad("header entry has no `shape` list of non-negative integers".into()))?;
    let offsets = entry["data_offsets"]
        .as_array()
        .filter(|o| o.len() == 2)
        .and_then(|o| Some((o[0].as_u64()? as usize, o[1].as_u64()? as usize)))
        .ok_or_else(|| bad("header entry has no `data_offsets` pair".into()))?;
    let (begin, end) = offsets;
    if begin > end || end > data_len {
        return Err(bad(format!(
            "data offsets [{begin}, {end}] run past the end of the data section ({data_len} bytes): \
             the file is truncated or corrupt"
        )));
    }
    let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let expected = numel.and_then(|n| n.checked_mul(dtype.size()));
    if expected != Some(end - begin) {
        return Err(bad(format!(
            "shape {shape:?} of {dtype_name} needs {} bytes but its data offsets span {}",
            expected.map_or("too many".into(), |n| n.to_string()),
            end - begin
        )));
    }
    Ok(TensorInfo {
        dtype,
        shape,
        bytes: data_start + begin..data_start + end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_header(header: &str, data: &[u8]) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        f.write_all(data).unwrap();
        f
    }

    #[test]
    fn reads_a_well_formed_file() {
        let f = file_with_header(
            r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0, 0, 128, 63, 0, 0, 0, 64],
        );
        let st = SafetensorsFile::open(f.path()).unwrap();
        let info = st.info("a").unwrap().clone();
        assert_eq!(info.shape, vec![2]);
        assert_eq!(st.bytes(&info), &[0, 0, 128, 63, 0, 0, 0, 64]);
        assert_eq!(st.metadata()["format"], "pt");
    }

    #[test]
    fn names_the_tensor_whose_offsets_pass_the_end() {
        let f = file_with_header(
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            &[0; 8],
        );
        let err = SafetensorsFile::open(f.path()).err().unwrap().to_string();
        assert!(err.contains("`a`") && err.contains("past the end"), "{err}");
    }

    #[test]
    fn names_the_tensor_with_an_unknown_dtype() {
        let f = file_with_header(
            r#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}}"#,
            &[0],
        );
        let err = SafetensorsFile::open(f.path()).err().unwrap().to_string();
        assert!(err.contains("`a`") && err.contains("`Q4`"), "{err}");
    }

    #[test]
    fn reads_f32_beside_other_dtypes_and_names_what_it_cannot() {
        let f = file_with_header(
            r#"{"x":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"labels":{"dtype":"I64","shape":[1],"data_offsets":[4,12]}}"#,
            &[128, 63, 0, 64, 7, 0, 0, 0, 0, 0, 0, 0],
        );
        assert!(SafetensorsFile::open(f.path()).is_err());
        let st = SafetensorsFile::open_with_other_dtypes(f.path()).unwrap();
        assert_eq!(st.read_f32("x").unwrap(), (vec![2], vec![1.0, 2.0]));
        let err = st.read_f32("labels").err().unwrap().to_string();
        assert!(
            err.contains("`labels`") && err.contains("dtype I64"),
            "{err}"
        );
        let err = st.read_f32("y").err().unwrap().to_string();
        assert!(err.contains("`y`: missing"), "{err}");
    }
}
