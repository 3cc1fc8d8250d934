//! Where a checkpoint's tensors live: one `.safetensors` file, or a diffusers transformer folder
//! (one file or shards listed by `diffusion_pytorch_model.safetensors.index.json`, with its
//! `config.json`). Pickle checkpoints are refused here, before anything reads them.

use crate::error::{Error, Result};
use crate::io::safetensors::{SafetensorsFile, TensorInfo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DIFFUSERS_INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";
const DIFFUSERS_SINGLE: &str = "diffusion_pytorch_model.safetensors";
const DIFFUSERS_PICKLE: &str = "diffusion_pytorch_model.bin";
const DIFFUSERS_PICKLE_INDEX: &str = "diffusion_pytorch_model.bin.index.json";
const PICKLE_EXTENSIONS: [&str; 6] = ["ckpt", "pt", "pth", "bin", "pkl", "pickle"];

/// A set of mapped safetensors files seen as one key space.
pub struct Checkpoint {
    /// The path the user gave.
    pub origin: PathBuf,
    files: Vec<SafetensorsFile>,
    index: BTreeMap<String, usize>,
    /// diffusers' `config.json`, when the checkpoint is a diffusers folder.
    pub config_json: Option<serde_json::Value>,
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Self> {
        refuse_pickle(path)?;
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Self::open_folder(path);
        }
        let is_index = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".index.json"));
        if is_index {
            let folder = path.parent().unwrap_or(Path::new("."));
            return Self::open_index(path, folder);
        }
        let file = open_safetensors(path)?;
        Self::from_files(path, vec![file], None)
    }

    fn open_folder(folder: &Path) -> Result<Self> {
        // A whole pipeline folder holds the transformer in `transformer/`.
        let transformer = folder.join("transformer");
        if transformer.join("config.json").is_file() {
            return Self::open_folder(&transformer);
        }
        let index = folder.join(DIFFUSERS_INDEX);
        if index.is_file() {
            return Self::open_index(&index, folder);
        }
        let single = folder.join(DIFFUSERS_SINGLE);
        if single.is_file() {
            let file = open_safetensors(&single)?;
            let config = read_config(folder)?;
            return Self::from_files(folder, vec![file], config);
        }
        // `save_pretrained(safe_serialization=False)` writes the transformer as a pickle.
        for pickle in [DIFFUSERS_PICKLE, DIFFUSERS_PICKLE_INDEX] {
            if folder.join(pickle).is_file() {
                return Err(pickle_error(&folder.join(pickle)));
            }
        }
        Err(Error::file(
            folder,
            format!(
                "is a folder but holds neither {DIFFUSERS_INDEX} nor {DIFFUSERS_SINGLE} \
                 (expected a diffusers transformer folder)"
            ),
        ))
    }

    fn open_index(index_path: &Path, folder: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(index_path, format!("is not valid JSON: {e}")))?;
        let weight_map = json["weight_map"].as_object().ok_or_else(|| {
            Error::file(
                index_path,
                "has no `weight_map` object mapping tensors to shard files",
            )
        })?;
        let mut shard_names: Vec<&str> = weight_map.values().filter_map(|v| v.as_str()).collect();
        shard_names.sort_unstable();
        shard_names.dedup();
        let mut files = Vec::with_capacity(shard_names.len());
        for name in &shard_names {
            let shard = folder.join(name);
            refuse_pickle(&shard)?;
            files.push(open_safetensors(&shard)?);
        }
        let ckpt = Self::from_files(index_path, files, read_config(folder)?)?;
        for (key, shard) in weight_map {
            if !ckpt.index.contains_key(key) {
                return Err(Error::tensor(
                    &folder.join(shard.as_str().unwrap_or("?")),
                    key,
                    format!(
                        "listed in {} but absent from that shard",
                        index_path.display()
                    ),
                ));
            }
        }
        Ok(ckpt)
    }

    fn from_files(
        origin: &Path,
        files: Vec<SafetensorsFile>,
        config_json: Option<serde_json::Value>,
    ) -> Result<Self> {
        let mut index = BTreeMap::new();
        for (i, file) in files.iter().enumerate() {
            for key in file.tensors().keys() {
                if let Some(other) = index.insert(key.clone(), i) {
                    return Err(Error::tensor(
                        file.path(),
                        key,
                        format!("also stored in {}", files[other].path().display()),
                    ));
                }
            }
        }
        Ok(Self {
            origin: origin.to_owned(),
            files,
            index,
            config_json,
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// The file holding `key` and the tensor's header entry.
    pub fn get(&self, key: &str) -> Option<(&SafetensorsFile, &TensorInfo)> {
        let file = &self.files[*self.index.get(key)?];
        Some((file, file.info(key)?))
    }

    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// Header metadata of all files, merged (the first file wins on conflicts).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.files
            .iter()
            .find_map(|f| f.metadata().get(key).map(String::as_str))
    }
}

fn read_config(folder: &Path) -> Result<Option<serde_json::Value>> {
    let path = folder.join("config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::file(&path, format!("is not valid JSON: {e}")))
}

/// Opens a safetensors file; when it is not one but looks like a pickle, says so instead.
fn open_safetensors(path: &Path) -> Result<SafetensorsFile> {
    SafetensorsFile::open(path).map_err(|err| match err {
        Error::File { .. } if starts_like_pickle(path) => pickle_error(path),
        other => other,
    })
}

/// Pickle files (`torch.save`) are refused by name, before anything reads them: unpickling runs
/// arbitrary code, and a compiler must be safe to point at a file downloaded from anywhere.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if ext
        .as_deref()
        .is_some_and(|e| PICKLE_EXTENSIONS.contains(&e))
    {
        return Err(pickle_error(path));
    }
    Ok(())
}

fn pickle_error(path: &Path) -> Error {
    Error::file(
        path,
        "is a PyTorch pickle checkpoint; fastflux does not read pickles, because unpickling \
         can run arbitrary code. Convert it to safetensors in a trusted environment, e.g. \
         `safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')`, \
         and pass the .safetensors file",
    )
}

/// A zip archive (torch.save's default since 1.6) or a raw pickle stream (protocol 2–5).
fn starts_like_pickle(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    if file.read_exact(&mut magic).is_err() {
        return false;
    }
    magic == *b"PK\x03\x04" || (magic[0] == 0x80 && (2..=5).contains(&magic[1]))
}
