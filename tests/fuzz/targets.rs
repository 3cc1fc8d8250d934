//! What is fuzzed: every reader of a file the user hands fastflux (the checkpoint as one file or
//! as a diffusers folder with its `config.json` and sharded index, LoRA files, `--calib` and
//! `--calib-cond` files), each with the seeds it is fed and the call that reads a file.

use crate::support::{golden, shared, toy};
use fastflux::checkpoint::lora::{LoraFile, LoraSpec, ModuleNames};
use fastflux::checkpoint::{FluxCheckpoint, FluxConfig};
use fastflux::dtype::DType;
use fastflux::inputs::{Conditioning, InputSet, Signature};
use fastflux::lift::{LiftOptions, lift};
use std::path::{Path, PathBuf};

/// The models the readers resolve against.
pub struct Models {
    tiny: FluxConfig,
    toy: FluxConfig,
    names: ModuleNames,
}

impl Models {
    pub fn load() -> Self {
        let open = |path: PathBuf| FluxCheckpoint::open(&path, Some(vec![4, 6, 6])).unwrap();
        let tiny = open(golden("flux-bfl.safetensors")).config;
        let toy = open(toy("flux-bfl.safetensors")).config;
        let names = ModuleNames::new(&tiny, []);
        Self { tiny, toy, names }
    }
}

/// The tiny models' RoPE axes (head width 16).
const TINY_AXES: Option<[usize; 3]> = Some([4, 6, 6]);

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Reader {
    /// `FluxCheckpoint::open` with these RoPE axes (`None`: the default, for a head width of
    /// 128), then the lift (which checks every shape) and a touch of every tensor's bytes
    /// (which checks the data offsets).
    Checkpoint(Option<[usize; 3]>),
    /// `LoraFile::open` against tiny-dev's modules (reads every pair it resolves).
    Lora,
    /// `InputSet::load` (`--calib`, `--verify-inputs`) against tiny-dev or the toy.
    CalibTiny,
    CalibToy,
    /// `Conditioning::load` (`--calib-cond`, `fastflux-sample --cond`) against the toy.
    Cond,
}

impl Reader {
    /// The reader's name in a saved mutant's file name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Checkpoint(_) => "Checkpoint",
            Self::Lora => "Lora",
            Self::CalibTiny => "CalibTiny",
            Self::CalibToy => "CalibToy",
            Self::Cond => "Cond",
        }
    }
}

/// One seed: the file mutated, and how the reader is pointed at it.
pub struct Seed {
    pub reader: Reader,
    /// The file whose bytes are mutated.
    pub file: PathBuf,
    /// For a file inside a diffusers folder: that folder (copied whole, then the file inside it
    /// replaced by the mutant), and the reader opens the folder.
    pub folder: Option<PathBuf>,
}

pub fn seeds() -> Vec<Seed> {
    let file = |reader, file: PathBuf| Seed {
        reader,
        file,
        folder: None,
    };
    let diffusers = golden("diffusers");
    let in_folder = |name: &str| Seed {
        reader: Reader::Checkpoint(TINY_AXES),
        file: diffusers.join(name),
        folder: Some(diffusers.clone()),
    };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    vec![
        file(
            Reader::Checkpoint(TINY_AXES),
            golden("flux-bfl.safetensors"),
        ),
        file(
            Reader::Checkpoint(None),
            fixtures.join("flux-mini-dev.safetensors"),
        ),
        file(Reader::Checkpoint(TINY_AXES), toy("flux-bfl.safetensors")),
        file(
            Reader::Checkpoint(TINY_AXES),
            shared().join("golden/flux2-tiny/flux2-bfl.safetensors"),
        ),
        in_folder("config.json"),
        in_folder("diffusion_pytorch_model.safetensors.index.json"),
        in_folder("diffusion_pytorch_model-00001-of-00014.safetensors"),
        file(Reader::Lora, golden("lora-kohya.safetensors")),
        file(Reader::Lora, golden("lora-peft.safetensors")),
        file(
            Reader::Lora,
            shared().join("golden/flux2-tiny/lora-bfl.safetensors"),
        ),
        file(Reader::CalibTiny, golden("inputs.safetensors")),
        file(Reader::CalibToy, toy("calib.safetensors")),
        file(Reader::Cond, toy("prompts.safetensors")),
    ]
}

/// Reads `path` as `reader` does; an `Err` is a refusal, which is what bad input should get.
pub fn read(reader: Reader, path: &Path, models: &Models) -> Result<(), fastflux::Error> {
    match reader {
        Reader::Checkpoint(axes) => {
            let ckpt = FluxCheckpoint::open(path, axes.map(Vec::from))?;
            lift(&ckpt, LiftOptions { dtype: DType::F32 })?;
            let mut touched = 0u64;
            for key in ckpt.checkpoint.keys() {
                if let Some((file, info)) = ckpt.checkpoint.get(key) {
                    let bytes = file.bytes(info);
                    touched += bytes.first().copied().unwrap_or(0) as u64;
                    touched += bytes.last().copied().unwrap_or(0) as u64;
                }
            }
            std::hint::black_box(touched);
        }
        Reader::Lora => {
            let spec = LoraSpec {
                path: path.to_owned(),
                scale: 1.0,
            };
            LoraFile::open(&spec, &models.names)?;
        }
        Reader::CalibTiny => {
            InputSet::load(path, &models.tiny)?;
        }
        Reader::CalibToy => {
            InputSet::load(path, &models.toy)?;
        }
        Reader::Cond => {
            Conditioning::load(path, &Signature::of(&models.toy))?;
        }
    }
    Ok(())
}
