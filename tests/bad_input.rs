//! The "Bad input" contract, checked on the real binary: every defective checkpoint or
//! output path gets an `error:` that names the file and the tensor and says what was expected
//! and found, a non-zero exit, no panic, and nothing at the output path (no model, no data file,
//! no temporary file). Each defect is made from the golden tiny model in a temporary folder.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A scratch folder with an empty `out/` that the compiler is pointed at.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn out_dir(&self) -> PathBuf {
        self.path("out")
    }

    fn output(&self) -> PathBuf {
        self.out_dir().join("model.onnx")
    }

    /// Compiles `checkpoint` to `out/model.onnx`, with the tiny model's RoPE axes so that only
    /// the defect under test can stop it.
    fn compile(&self, checkpoint: &Path) -> Outcome {
        let output = self.output();
        run_compiler(&[
            checkpoint.as_os_str(),
            "-o".as_ref(),
            output.as_os_str(),
            "--axes-dim".as_ref(),
            TINY_AXES.as_ref(),
            "-q".as_ref(),
        ])
    }

    /// Neither `model.onnx`, nor `model.onnx.data`, nor any temporary file was left in `out/`.
    fn assert_nothing_written(&self) {
        let left = listing(&self.out_dir());
        assert!(left.is_empty(), "the output folder holds {left:?}");
    }

    /// Writes the golden BFL tensors, edited by `edit`, to `name`.
    fn bfl_variant(&self, name: &str, edit: impl FnOnce(&mut Vec<Tensor>)) -> PathBuf {
        let mut tensors = read_tensors(&golden("flux-bfl.safetensors"));
        edit(&mut tensors);
        let path = self.path(name);
        write_tensors(&path, &tensors);
        path
    }

    /// A copy of the golden diffusers folder, in `diffusers/`.
    fn diffusers_copy(&self) -> PathBuf {
        let folder = self.path("diffusers");
        std::fs::create_dir(&folder).unwrap();
        for entry in std::fs::read_dir(golden("diffusers")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), folder.join(entry.file_name())).unwrap();
        }
        folder
    }
}

const INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";

/// The shard of a diffusers folder that its index says holds `key`.
fn shard_of(folder: &Path, key: &str) -> PathBuf {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join(INDEX)).unwrap()).unwrap();
    let shard = index["weight_map"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} not in the index"));
    folder.join(shard)
}

/// Rewrites the shard holding `key` with `edit` applied to its tensors.
fn edit_shard(folder: &Path, key: &str, edit: impl FnOnce(&mut Vec<Tensor>)) -> PathBuf {
    let shard = shard_of(folder, key);
    let mut tensors = read_tensors(&shard);
    edit(&mut tensors);
    write_tensors(&shard, &tensors);
    shard
}

/// Replaces tensor `name` by its first `columns` columns.
fn drop_columns(tensors: &mut [Tensor], name: &str, columns: usize) {
    let t = tensors.iter_mut().find(|t| t.name == name).unwrap();
    let (rows, old) = (t.shape[0], t.shape[1]);
    let values = t.f32_values();
    let kept: Vec<f32> = (0..rows)
        .flat_map(|r| values[r * old..r * old + columns].to_vec())
        .collect();
    *t = Tensor::from_f32(name, vec![rows, columns], &kept);
}

/// The unedited golden model, written the way every variant below is, compiles and writes
/// exactly the model and its data file: so each refusal below is caused by its defect alone,
/// and `assert_nothing_written` would see the files if a refused run had written them.
#[test]
fn control_the_unedited_variant_compiles() {
    let s = Scratch::new();
    let ckpt = s.bfl_variant("flux.safetensors", |_| {});
    let out = s.compile(&ckpt);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(
        listing(&s.out_dir()),
        ["model.onnx", "model.onnx.data"].map(String::from).into()
    );
}

#[test]
fn not_safetensors() {
    let s = Scratch::new();
    // Text long enough that its first 8 bytes read as an absurd header length.
    let text = s.path("notes.safetensors");
    std::fs::write(&text, "These are my notes, not a model.\n".repeat(20)).unwrap();
    let out = s.compile(&text);
    assert_refused(
        &out,
        &[
            "notes.safetensors",
            "not a valid safetensors file",
            "header",
        ],
    );
    s.assert_nothing_written();

    // Shorter than the 8-byte length prefix itself.
    let tiny = s.path("tiny.safetensors");
    std::fs::write(&tiny, "hi\n").unwrap();
    let out = s.compile(&tiny);
    assert_refused(
        &out,
        &[
            "tiny.safetensors",
            "not a valid safetensors file",
            "3 bytes",
        ],
    );
    s.assert_nothing_written();

    // A plausible length prefix followed by something that is not JSON.
    let garbage = s.path("garbage.safetensors");
    let mut bytes = 16u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"<html>oops</html>");
    std::fs::write(&garbage, bytes).unwrap();
    let out = s.compile(&garbage);
    assert_refused(&out, &["garbage.safetensors", "not JSON"]);
    s.assert_nothing_written();
}

#[test]
fn truncated_file() {
    let s = Scratch::new();
    let whole = std::fs::read(golden("flux-bfl.safetensors")).unwrap();
    let half = s.path("half.safetensors");
    std::fs::write(&half, &whole[..whole.len() / 2]).unwrap();
    let out = s.compile(&half);
    assert_refused(&out, &["half.safetensors", "past the end", "truncated"]);
    s.assert_nothing_written();
    // The tensor it names really is one the cut removed (part of) its bytes.
    let (header, data) = split_safetensors(&whole);
    let kept = data.len() - (whole.len() - whole.len() / 2);
    let name = named_tensor(&out.stderr).expect("a tensor is named");
    let end = header[name]["data_offsets"][1].as_u64().unwrap() as usize;
    assert!(
        end > kept,
        "`{name}` ends at {end}, within the {kept} bytes kept"
    );
    assert!(
        out.stderr.contains(&format!("({kept} bytes)")),
        "{}",
        out.stderr
    );
}

#[test]
fn header_offsets_past_the_end() {
    let s = Scratch::new();
    let whole = std::fs::read(golden("flux-bfl.safetensors")).unwrap();
    let (mut header, data) = split_safetensors(&whole);
    // Moved just past the data, with the span its shape needs, so only the bound is wrong.
    let span = 64 * 16 * 4;
    let (begin, end) = (data.len(), data.len() + span);
    header["img_in.weight"]["data_offsets"] = serde_json::json!([begin, end]);
    let path = s.path("offsets.safetensors");
    std::fs::write(&path, join_safetensors(&header, &data)).unwrap();
    let out = s.compile(&path);
    assert_refused(
        &out,
        &[
            "offsets.safetensors",
            "tensor `img_in.weight`",
            &format!("[{begin}, {end}]"),
            &format!("({} bytes)", data.len()),
        ],
    );
    s.assert_nothing_written();
}

#[test]
fn unknown_dtype() {
    let s = Scratch::new();
    let whole = std::fs::read(golden("flux-bfl.safetensors")).unwrap();
    // "Q4" is no safetensors type at all; F8_E5M2 is a real one (the other fp8) that fastflux
    // does not dequantize: both must be named, not misread.
    for dtype in ["Q4", "F8_E5M2"] {
        let (mut header, data) = split_safetensors(&whole);
        header["single_blocks.1.linear1.weight"]["dtype"] = dtype.into();
        let path = s.path("dtype.safetensors");
        std::fs::write(&path, join_safetensors(&header, &data)).unwrap();
        let out = s.compile(&path);
        assert_refused(
            &out,
            &[
                "dtype.safetensors",
                "tensor `single_blocks.1.linear1.weight`",
                &format!("`{dtype}`"),
                "F32, F16, BF16, F8_E4M3",
            ],
        );
        s.assert_nothing_written();
    }
}

#[test]
fn unknown_naming_scheme() {
    let s = Scratch::new();
    // Every key flattened behind a foreign root: `img_in.weight` becomes `foo.img_in_weight`,
    // so neither the BFL nor the diffusers image embedder key ends any name.
    let ckpt = s.bfl_variant("foreign.safetensors", |tensors| {
        for t in tensors.iter_mut() {
            t.name = format!("foo.{}", t.name.replace('.', "_"));
        }
    });
    let out = s.compile(&ckpt);
    assert_refused(
        &out,
        &[
            "foreign.safetensors",
            "unknown naming scheme",
            "`img_in.weight`",
            "`x_embedder.weight`",
            "among its 100 tensors",
            "foo.double_blocks_0_img_attn_norm_key_norm_scale",
        ],
    );
    s.assert_nothing_written();
}

#[test]
fn two_models_in_one_file() {
    let s = Scratch::new();
    // The BFL model plus a ComfyUI-prefixed copy of it: which one to compile is ambiguous.
    let ckpt = s.bfl_variant("two.safetensors", |tensors| {
        let copies: Vec<Tensor> = tensors
            .iter()
            .map(|t| Tensor {
                name: format!("model.diffusion_model.{}", t.name),
                ..t.clone()
            })
            .collect();
        tensors.extend(copies);
    });
    let out = s.compile(&ckpt);
    assert_refused(
        &out,
        &[
            "two.safetensors",
            "more than one FLUX transformer",
            "model.diffusion_model.",
        ],
    );
    s.assert_nothing_written();
}

/// Block 7 of 19 absent, as the issue puts it: the tiny model's two double blocks are repeated
/// up to 19, then every tensor of block 7 is dropped. Counting blocks by the highest index
/// present, the compiler must report block 7's tensors missing rather than compile 7 blocks.
#[test]
fn missing_block_in_the_middle() {
    let s = Scratch::new();
    let nineteen = |tensors: &mut Vec<Tensor>| {
        let originals: Vec<Tensor> = tensors.clone();
        for i in 2..19 {
            for t in &originals {
                let from = format!("double_blocks.{}.", i % 2);
                if let Some(rest) = t.name.strip_prefix(&from) {
                    tensors.push(Tensor {
                        name: format!("double_blocks.{i}.{rest}"),
                        ..t.clone()
                    });
                }
            }
        }
    };
    let full = s.bfl_variant("full.safetensors", nineteen);
    let plan = compile_ok(&[
        full.as_os_str(),
        "--plan".as_ref(),
        "--axes-dim".as_ref(),
        TINY_AXES.as_ref(),
    ]);
    assert!(plan.contains("19 double, 4 single"), "{plan}");

    let gap = s.bfl_variant("gap.safetensors", |tensors| {
        nineteen(tensors);
        tensors.retain(|t| !t.name.starts_with("double_blocks.7."));
    });
    let out = s.compile(&gap);
    assert_refused(
        &out,
        &["gap.safetensors", "tensor `double_blocks.7.", "missing"],
    );
    s.assert_nothing_written();
    // The message gives the shape the model needs: that of the same tensor in block 1.
    let name = named_tensor(&out.stderr).unwrap();
    let twin = name.replace("double_blocks.7.", "double_blocks.1.");
    let golden_tensors = read_tensors(&golden("flux-bfl.safetensors"));
    let shape = &golden_tensors
        .iter()
        .find(|t| t.name == twin)
        .unwrap()
        .shape;
    assert!(
        out.stderr.contains(&format!("shape {shape:?}")),
        "{}",
        out.stderr
    );
}

/// A key with an index no model has (a corrupt or hostile header): once overflowed the block
/// count (a panic). It must read as the blocks after the last present one being absent.
#[test]
fn stray_huge_block_index() {
    let s = Scratch::new();
    let ckpt = s.bfl_variant("stray.safetensors", |tensors| {
        let mut stray = tensors[0].clone();
        stray.name = format!("double_blocks.{}.img_mod.lin.bias", usize::MAX);
        tensors.push(stray);
    });
    let out = s.compile(&ckpt);
    assert_refused(
        &out,
        &["stray.safetensors", "tensor `double_blocks.2.", "missing"],
    );
    s.assert_nothing_written();
}

/// Without double blocks the MLP width comes from single block 0's `linear1`, as its rows past
/// q, k and v: too few rows once underflowed (a panic).
#[test]
fn single_stream_linear1_shorter_than_qkv() {
    let s = Scratch::new();
    let ckpt = s.bfl_variant("short.safetensors", |tensors| {
        tensors.retain(|t| !t.name.starts_with("double_blocks."));
        let t = tensors
            .iter_mut()
            .find(|t| t.name == "single_blocks.0.linear1.weight")
            .unwrap();
        t.shape = vec![100, 64];
        t.data.truncate(100 * 64 * 4);
    });
    let out = s.compile(&ckpt);
    assert_refused(
        &out,
        &[
            "short.safetensors",
            "tensor `single_blocks.0.linear1.weight`",
            "100 rows",
            "192",
        ],
    );
    s.assert_nothing_written();
}

#[test]
fn missing_top_level_tensor() {
    let s = Scratch::new();
    let ckpt = s.bfl_variant("no-txt-in.safetensors", |tensors| {
        tensors.retain(|t| t.name != "txt_in.weight");
    });
    let out = s.compile(&ckpt);
    assert_refused(
        &out,
        &["no-txt-in.safetensors", "tensor `txt_in.weight`", "missing"],
    );
    s.assert_nothing_written();
}

#[test]
fn wrong_shape() {
    let s = Scratch::new();
    let ckpt = s.bfl_variant("narrow.safetensors", |tensors| {
        drop_columns(tensors, "single_blocks.2.linear2.weight", 319);
    });
    let out = s.compile(&ckpt);
    assert_refused(
        &out,
        &[
            "narrow.safetensors",
            "tensor `single_blocks.2.linear2.weight`",
            "expected shape [64, 320]",
            "found [64, 319]",
        ],
    );
    s.assert_nothing_written();
}

/// diffusers naming: the tensor dropped from its shard and from the index, so the folder is
/// consistent but the model lacks `single_blocks.2.linear2.weight` under its diffusers name.
#[test]
fn diffusers_missing_tensor() {
    let s = Scratch::new();
    let folder = s.diffusers_copy();
    let key = "single_transformer_blocks.2.proj_out.weight";
    edit_shard(&folder, key, |tensors| tensors.retain(|t| t.name != key));
    let index_path = folder.join(INDEX);
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["weight_map"].as_object_mut().unwrap().remove(key);
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    let out = s.compile(&folder);
    assert_refused(
        &out,
        &[
            INDEX,
            &format!("tensor `{key}`"),
            "missing",
            "single_blocks.2.linear2.weight",
            "[64, 320]",
        ],
    );
    s.assert_nothing_written();
}

/// The index promises a tensor that its shard does not hold.
#[test]
fn diffusers_index_lists_a_tensor_its_shard_lacks() {
    let s = Scratch::new();
    let folder = s.diffusers_copy();
    let key = "transformer_blocks.1.attn.to_v.weight";
    let shard = edit_shard(&folder, key, |tensors| tensors.retain(|t| t.name != key));
    let out = s.compile(&folder);
    assert_refused(
        &out,
        &[&file_name(&shard), &format!("tensor `{key}`"), INDEX],
    );
    s.assert_nothing_written();
}

#[test]
fn diffusers_wrong_shape() {
    // A tensor diffusers stores as BFL does (only renamed), and one of the three projections
    // it splits BFL's fused `qkv` into: both must be named by their diffusers key and shard.
    for (key, columns, expected, found) in [
        (
            "single_transformer_blocks.2.proj_out.weight",
            319,
            "[64, 320]",
            "[64, 319]",
        ),
        (
            "transformer_blocks.1.attn.to_k.weight",
            63,
            "[64, 64]",
            "[64, 63]",
        ),
    ] {
        let s = Scratch::new();
        let folder = s.diffusers_copy();
        let shard = edit_shard(&folder, key, |tensors| drop_columns(tensors, key, columns));
        let out = s.compile(&folder);
        assert_refused(
            &out,
            &[
                &file_name(&shard),
                &format!("tensor `{key}`"),
                &format!("expected shape {expected}"),
                &format!("found {found}"),
            ],
        );
        s.assert_nothing_written();
    }
}

#[test]
fn diffusers_shard_missing_on_disk() {
    let s = Scratch::new();
    let folder = s.diffusers_copy();
    let shard = shard_of(&folder, "single_transformer_blocks.2.proj_out.weight");
    std::fs::remove_file(&shard).unwrap();
    // Given as the folder and as the index file: the same refusal.
    for given in [folder.clone(), folder.join(INDEX)] {
        let out = s.compile(&given);
        assert_refused(&out, &[&file_name(&shard), "No such file"]);
        s.assert_nothing_written();
    }
}

const PICKLE_WHY: &str = "unpickling can run arbitrary code";
const PICKLE_WHAT: &str = "Convert it to safetensors";

#[test]
fn pickle_checkpoints_are_refused() {
    let s = Scratch::new();
    // torch.save's zip container since PyTorch 1.6, and a bare pickle stream (protocol 2) as
    // older versions wrote: refused by extension, before a byte is read.
    let zip = b"PK\x03\x04\x14\x00\x00\x00\x08\x00archive/data.pkl".as_slice();
    let raw = b"\x80\x02}q\x00(X\x06\x00\x00\x00weightq\x01.".as_slice();
    for (name, bytes) in [
        ("model.ckpt", zip),
        ("model.pt", raw),
        ("pytorch_model.bin", zip),
        ("model.pth", zip),
    ] {
        let path = s.path(name);
        std::fs::write(&path, bytes).unwrap();
        let out = s.compile(&path);
        assert_refused(&out, &[name, "pickle", PICKLE_WHY, PICKLE_WHAT]);
        s.assert_nothing_written();
    }
}

#[test]
fn pickle_content_under_a_safetensors_name_is_refused_as_pickle() {
    let s = Scratch::new();
    // Renamed pickles: a protocol-4 stream and a torch zip. The message must say "pickle", not
    // just "not a valid safetensors file", so that the user knows what they have.
    let raw4 = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.".as_slice();
    let zip = b"PK\x03\x04\x14\x00\x00\x00\x08\x00archive/data.pkl".as_slice();
    for (name, bytes) in [("renamed.safetensors", raw4), ("zipped.safetensors", zip)] {
        let path = s.path(name);
        std::fs::write(&path, bytes).unwrap();
        let out = s.compile(&path);
        assert_refused(&out, &[name, "pickle", PICKLE_WHY, PICKLE_WHAT]);
        s.assert_nothing_written();
    }
}

/// A diffusers folder saved with `safe_serialization=False` holds its transformer as a pickle.
#[test]
fn pickle_diffusers_folder_is_refused_as_pickle() {
    let s = Scratch::new();
    let folder = s.path("transformer");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(golden("diffusers/config.json"), folder.join("config.json")).unwrap();
    std::fs::write(
        folder.join("diffusion_pytorch_model.bin"),
        b"PK\x03\x04\x14\x00\x00\x00",
    )
    .unwrap();
    let out = s.compile(&folder);
    assert_refused(
        &out,
        &["diffusion_pytorch_model.bin", PICKLE_WHY, PICKLE_WHAT],
    );
    s.assert_nothing_written();
}

/// The bytes themselves: the inputs here are 2.4 MB, a hash would add nothing.
fn bytes_of(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn output_equal_to_the_input_is_refused() {
    let s = Scratch::new();
    let ckpt = s.bfl_variant("m.safetensors", |_| {});
    std::fs::create_dir(s.path("sub")).unwrap();
    let before = bytes_of(&ckpt);
    let files_before = listing(s.dir.path());
    let spellings = [
        ckpt.clone(),
        // The same file through another path.
        s.dir.path().join("sub/../m.safetensors"),
    ];
    for output in spellings {
        let out = run_compiler(&[
            ckpt.as_os_str(),
            "-o".as_ref(),
            output.as_os_str(),
            "--axes-dim".as_ref(),
            TINY_AXES.as_ref(),
            "-q".as_ref(),
        ]);
        assert_refused(&out, &["m.safetensors", "would overwrite the input"]);
        assert!(bytes_of(&ckpt) == before, "the input changed");
        assert_eq!(listing(s.dir.path()), files_before);
    }
}

/// `-o m.onnx` writes its weights to `m.onnx.data`: that must not be the input either.
#[test]
fn output_data_file_equal_to_the_input_is_refused() {
    let s = Scratch::new();
    let ckpt = s.bfl_variant("m.onnx.data", |_| {});
    let before = bytes_of(&ckpt);
    let files_before = listing(s.dir.path());
    let out = run_compiler(&[
        ckpt.as_os_str(),
        "-o".as_ref(),
        s.path("m.onnx").as_os_str(),
        "--axes-dim".as_ref(),
        TINY_AXES.as_ref(),
        "-q".as_ref(),
    ]);
    assert_refused(&out, &["m.onnx.data", "would overwrite the input"]);
    assert!(bytes_of(&ckpt) == before, "the input changed");
    assert_eq!(listing(s.dir.path()), files_before);
}

/// A diffusers checkpoint is many files: none of the shards, the index, or their data-file
/// twins may be overwritten.
#[test]
fn output_equal_to_a_diffusers_shard_is_refused() {
    let s = Scratch::new();
    let folder = s.diffusers_copy();
    let shard = shard_of(&folder, "x_embedder.weight");
    let before = bytes_of(&shard);
    let files_before = listing(&folder);
    for output in [shard.clone(), folder.join(INDEX)] {
        let out = run_compiler(&[
            folder.as_os_str(),
            "-o".as_ref(),
            output.as_os_str(),
            "-q".as_ref(),
        ]);
        assert_refused(&out, &[&file_name(&output), "would overwrite the input"]);
        assert!(bytes_of(&shard) == before, "the shard changed");
        assert_eq!(listing(&folder), files_before);
    }
}

#[test]
fn output_folder_that_does_not_exist_or_is_a_file() {
    let s = Scratch::new();
    let ckpt = s.bfl_variant("m.safetensors", |_| {});
    std::fs::write(s.path("plain-file"), "not a folder").unwrap();
    let files_before = listing(s.dir.path());
    for folder in ["no-such-folder", "plain-file"] {
        let output = s.path(folder).join("model.onnx");
        let out = run_compiler(&[
            ckpt.as_os_str(),
            "-o".as_ref(),
            output.as_os_str(),
            "--axes-dim".as_ref(),
            TINY_AXES.as_ref(),
            "-q".as_ref(),
        ]);
        assert_refused(&out, &[folder, "output folder"]);
        // Nothing created: not the folder, not a file beside the input.
        assert_eq!(listing(s.dir.path()), files_before);
    }
}

/// `-o` naming an existing folder (or a folder sitting where the data file goes): the model
/// cannot be renamed onto a folder, and the data file must not be left behind either.
#[test]
fn output_path_that_is_a_folder() {
    let s = Scratch::new();
    let ckpt = s.bfl_variant("m.safetensors", |_| {});
    std::fs::create_dir(s.out_dir().join("model.onnx")).unwrap();
    let out = run_compiler(&[
        ckpt.as_os_str(),
        "-o".as_ref(),
        s.out_dir().join("model.onnx").as_os_str(),
        "--axes-dim".as_ref(),
        TINY_AXES.as_ref(),
        "-q".as_ref(),
    ]);
    assert_refused(&out, &["model.onnx", "folder"]);
    assert_eq!(listing(&s.out_dir()), ["model.onnx".to_owned()].into());
    std::fs::remove_dir(s.out_dir().join("model.onnx")).unwrap();

    std::fs::create_dir(s.out_dir().join("model.onnx.data")).unwrap();
    let out = s.compile(&ckpt);
    assert_refused(&out, &["model.onnx.data", "folder"]);
    assert_eq!(listing(&s.out_dir()), ["model.onnx.data".to_owned()].into());
}

/// Makes a folder immutable (`chattr +i`) for as long as it lives: the one way root, which
/// ignores permission bits, can be refused a write on a local filesystem.
struct Immutable(PathBuf);

impl Immutable {
    fn new(dir: &Path) -> Option<Self> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        // Otherwise the TempDir could not be removed.
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// True if a file can be created in `dir` (and removes it again).
fn can_write_in(dir: &Path) -> bool {
    let probe = dir.join(".probe");
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

#[test]
fn output_folder_not_writable() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let ckpt = s.bfl_variant("m.safetensors", |_| {});
    let out_dir = s.out_dir();
    // Read-only permission bits stop a normal user; root ignores them, and CI runs as root,
    // so there the folder is also made immutable when chattr is available and permitted.
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let immutable = if can_write_in(&out_dir) {
        Immutable::new(&out_dir)
    } else {
        None
    };
    if can_write_in(&out_dir) {
        // Neither works (root without chattr, or a filesystem without the attribute): there
        // is no unwritable folder to test with, and asserting anything here would be vacuous.
        eprintln!("skipped: cannot make a folder unwritable here (root, and chattr +i failed)");
        std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        return;
    }
    let out = s.compile(&ckpt);
    assert_refused(&out, &["out/model.onnx.data"]);
    assert!(
        out.stderr.contains("denied") || out.stderr.contains("not permitted"),
        "the error does not give the reason:\n{}",
        out.stderr
    );
    s.assert_nothing_written();
    drop(immutable);
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn axes_dim_required_for_a_head_width_other_than_128() {
    let s = Scratch::new();
    // The BFL file has no config.json beside it to give the axes.
    let out = run_compiler(&[
        golden("flux-bfl.safetensors").as_os_str(),
        "-o".as_ref(),
        s.output().as_os_str(),
        "-q".as_ref(),
    ]);
    assert_refused(
        &out,
        &["flux-bfl.safetensors", "head width is 16", "--axes-dim"],
    );
    s.assert_nothing_written();
}

#[test]
fn axes_dim_that_does_not_fit_the_head() {
    let s = Scratch::new();
    // Sums to 14, not 16; and sums to 16 with odd widths (RoPE rotates pairs).
    for (axes, shown) in [("4,6,4", "[4, 6, 4]"), ("5,5,6", "[5, 5, 6]")] {
        let out = run_compiler(&[
            golden("flux-bfl.safetensors").as_os_str(),
            "-o".as_ref(),
            s.output().as_os_str(),
            "--axes-dim".as_ref(),
            axes.as_ref(),
            "-q".as_ref(),
        ]);
        assert_refused(&out, &[shown, "head width 16", "even"]);
        s.assert_nothing_written();
    }
}
