//! LoRA files: the `--lora FILE[:SCALE]` argument, and reading a file's low-rank pairs in any of
//! the namings FLUX LoRAs come in, each resolved to the canonical weight (and rows of it) that
//! it updates, with its alpha/rank factor and checked shapes. LoRA factors are small, so they
//! are read into memory here; the base model is never touched.

mod adapter;
mod keys;
mod names;
mod write;

pub use names::{Format, ModuleNames, Target};
pub use write::{Adapter, write_lora};

use crate::checkpoint::source::refuse_pickle;
use crate::dtype::decode_f32;
use crate::error::{Error, Result};
use crate::io::safetensors::SafetensorsFile;
use adapter::{AdapterConfig, METADATA_KEY};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// One `--lora FILE[:SCALE]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub scale: f32,
}

impl FromStr for LoraSpec {
    type Err = String;

    /// A path may itself contain ':', so only a last part that reads as a number is a scale.
    fn from_str(arg: &str) -> Result<Self, String> {
        let split = arg
            .rsplit_once(':')
            .and_then(|(path, scale)| Some((path, scale.trim().parse::<f32>().ok()?)));
        let (path, scale) = split.unwrap_or((arg, 1.0));
        if path.is_empty() {
            return Err(format!(
                "`{arg}` names no file: expected FILE or FILE:SCALE"
            ));
        }
        if !scale.is_finite() {
            return Err(format!("`{arg}`: the scale must be a finite number"));
        }
        Ok(Self {
            path: path.into(),
            scale,
        })
    }
}

/// One low-rank update `B·A`, resolved.
#[derive(Clone, Debug)]
pub struct LoraPair {
    /// The module as the file names it; its tensors are this plus `.lora_down.weight` etc.
    pub module: String,
    pub format: Format,
    pub target: Target,
    /// `A [rank, in]`, row-major.
    pub down: Arc<Vec<f32>>,
    /// `B [rows, rank]`, row-major, its rows in the target weight's canonical order.
    pub up: Arc<Vec<f32>>,
    pub rank: usize,
    /// The file's own scale for this module: alpha/rank (alpha/√rank for rsLoRA).
    pub factor: f64,
}

/// A LoRA file read and resolved against a model.
#[derive(Clone, Debug)]
pub struct LoraFile {
    pub path: PathBuf,
    /// The user's scale for the whole file.
    pub scale: f32,
    pub pairs: Vec<LoraPair>,
    /// Keys that belong to no module of the model (sorted).
    pub unmatched: Vec<String>,
}

impl LoraFile {
    /// Reads `spec`'s file and resolves every module with `names`.
    pub fn open(spec: &LoraSpec, names: &ModuleNames) -> Result<Self> {
        let path = spec.path.as_path();
        refuse_pickle(path)?;
        let file = SafetensorsFile::open(path)?;
        let adapter = file
            .metadata()
            .get(METADATA_KEY)
            .map(|json| AdapterConfig::parse(path, json))
            .transpose()?;
        let grouped =
            keys::group(file.tensors().keys().map(String::as_str)).map_err(|(key, other)| {
                Error::tensor(path, &key, format!("is the same matrix as `{other}`"))
            })?;
        let reader = PairReader {
            file: &file,
            adapter: adapter.as_ref(),
        };
        let mut unmatched = grouped.stray;
        let mut pairs = Vec::new();
        for (module, keys) in &grouped.modules {
            let Some((format, target)) = names.resolve(module) else {
                unmatched.extend(keys.all().cloned());
                continue;
            };
            pairs.push(reader.read(module, keys, format, target)?);
        }
        unmatched.sort();
        Ok(Self {
            path: path.to_owned(),
            scale: spec.scale,
            pairs,
            unmatched,
        })
    }

    /// The namings the file's matched modules were written in.
    pub fn formats(&self) -> BTreeSet<Format> {
        self.pairs.iter().map(|p| p.format).collect()
    }
}

struct PairReader<'a> {
    file: &'a SafetensorsFile,
    adapter: Option<&'a AdapterConfig>,
}

impl PairReader<'_> {
    fn path(&self) -> &Path {
        self.file.path()
    }

    /// Reads one module's pair and checks it against its target.
    fn read(
        &self,
        module: &str,
        keys: &keys::ModuleKeys,
        format: Format,
        target: Target,
    ) -> Result<LoraPair> {
        let (down_key, up_key) = match (&keys.down, &keys.up) {
            (Some(d), Some(u)) => (d, u),
            (Some(k), None) | (None, Some(k)) => {
                let missing = keys::other_half(k).unwrap_or_default();
                return Err(Error::tensor(
                    self.path(),
                    k,
                    format!("has no other half: `{missing}` is missing"),
                ));
            }
            (None, None) => {
                let alpha = keys.alpha.as_deref().unwrap_or(module);
                return Err(Error::tensor(
                    self.path(),
                    alpha,
                    format!(
                        "is an alpha without matrices: no `{module}.lora_down.weight` / `.lora_up.weight`"
                    ),
                ));
            }
        };
        let (down_shape, down) = self.matrix(down_key)?;
        let (up_shape, mut up) = self.matrix(up_key)?;
        let [rank, cols] = down_shape;
        let [out_rows, up_rank] = up_shape;
        let expect = |key: &str, what: String| Err(Error::tensor(self.path(), key, what));
        if rank == 0 {
            return expect(down_key, format!("has rank 0 (shape {down_shape:?})"));
        }
        if up_rank != rank {
            return expect(
                up_key,
                format!(
                    "has rank {up_rank} (shape {up_shape:?}) but `{down_key}` has rank {rank} \
                     (shape {down_shape:?}): the two halves of a pair must share their rank"
                ),
            );
        }
        if cols != target.shape[1] {
            return expect(
                down_key,
                format!(
                    "expected [{rank}, {}] (the input width of `{}`), found {down_shape:?}",
                    target.shape[1], target.weight
                ),
            );
        }
        if out_rows != target.rows.len() || (target.swap_halves && out_rows % 2 != 0) {
            return expect(
                up_key,
                format!(
                    "expected [{}, {rank}] (rows {}..{} of `{}` {:?}), found {up_shape:?}",
                    target.rows.len(),
                    target.rows.start,
                    target.rows.end,
                    target.weight,
                    target.shape
                ),
            );
        }
        if target.swap_halves {
            // diffusers stores (scale, shift); the canonical weight holds (shift, scale).
            up.rotate_left(out_rows / 2 * rank);
        }
        let factor = self.factor(module, keys, rank, down_key)?;
        Ok(LoraPair {
            module: module.to_owned(),
            format,
            target,
            down: Arc::new(down),
            up: Arc::new(up),
            rank,
            factor,
        })
    }

    /// alpha/rank: from the module's `.alpha` tensor, else the adapter configuration in the
    /// header, else alpha = rank (kohya's and diffusers' default; XLabs stores no alpha).
    fn factor(
        &self,
        module: &str,
        keys: &keys::ModuleKeys,
        rank: usize,
        down_key: &str,
    ) -> Result<f64> {
        if let Some(key) = &keys.alpha {
            let info = self.info(key)?;
            if info.numel() != 1 {
                return Err(Error::tensor(
                    self.path(),
                    key,
                    format!(
                        "expected one number (the alpha), found shape {:?}",
                        info.shape
                    ),
                ));
            }
            let alpha = self.values(key)?[0];
            if !alpha.is_finite() {
                return Err(Error::tensor(self.path(), key, format!("alpha is {alpha}")));
            }
            return Ok(f64::from(alpha) / rank as f64);
        }
        let Some(adapter) = self.adapter else {
            return Ok(1.0);
        };
        let name = module.strip_prefix("transformer.").unwrap_or(module);
        let (r, factor) = adapter.rank_and_factor(name);
        if r != rank {
            return Err(Error::tensor(
                self.path(),
                down_key,
                format!(
                    "has rank {rank}, but the header's `{METADATA_KEY}` gives rank {r} for `{name}`"
                ),
            ));
        }
        Ok(factor)
    }

    fn info(&self, key: &str) -> Result<&crate::io::safetensors::TensorInfo> {
        self.file
            .info(key)
            .ok_or_else(|| Error::Internal(format!("key `{key}` vanished from the LoRA header")))
    }

    fn values(&self, key: &str) -> Result<Vec<f32>> {
        let info = self.info(key)?;
        let mut out = vec![0f32; info.numel()];
        decode_f32(info.dtype, self.file.bytes(info), &mut out);
        Ok(out)
    }

    fn matrix(&self, key: &str) -> Result<([usize; 2], Vec<f32>)> {
        let info = self.info(key)?;
        let &[rows, cols] = info.shape.as_slice() else {
            return Err(Error::tensor(
                self.path(),
                key,
                format!(
                    "expected a 2-d matrix, found shape {:?} (convolution LoRAs do not apply to \
                     FLUX's linear layers)",
                    info.shape
                ),
            ));
        };
        Ok(([rows, cols], self.values(key)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_and_scale() {
        let spec = |s: &str| s.parse::<LoraSpec>();
        assert_eq!(spec("a.safetensors").unwrap().scale, 1.0);
        let s = spec("dir:x/a.safetensors:0.5").unwrap();
        assert_eq!(
            (s.path, s.scale),
            (PathBuf::from("dir:x/a.safetensors"), 0.5)
        );
        let s = spec("c:/loras/a.safetensors").unwrap();
        assert_eq!(
            (s.path, s.scale),
            (PathBuf::from("c:/loras/a.safetensors"), 1.0)
        );
        assert_eq!(spec("a.safetensors:-1e-1").unwrap().scale, -0.1);
        assert!(spec("a.safetensors:nan").unwrap_err().contains("finite"));
        assert!(spec(":2").is_err());
    }
}
