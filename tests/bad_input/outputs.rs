//! Bad output paths: an output (or its data file, or the `config.json` beside it) that is an
//! input file, an output folder that does not exist, is a file or is not writable, an output
//! path (or the config's) that is a folder; and a stdout whose reader has gone.

use super::scratch::*;
use crate::support::*;
use std::path::{Path, PathBuf};

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
        let out = s.compile_to(&ckpt, &output);
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
    let out = s.compile_to(&ckpt, &s.path("m.onnx"));
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
        let out = compile(&[
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
        let out = s.compile_to(&ckpt, &output);
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
    let out = s.compile_to(&ckpt, &s.out_dir().join("model.onnx"));
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
    // Neither works (root without chattr, or a filesystem without the attribute): sysfs, which
    // refuses new files to root too, stands in for the output folder.
    let folder = match can_write_in(&out_dir) {
        false => out_dir.clone(),
        true => {
            let link = s.path("sysfs");
            std::os::unix::fs::symlink("/sys", &link).unwrap();
            assert!(
                !can_write_in(&link),
                "no unwritable folder to test with: permission bits, chattr +i and /sys all \
                 let this user create files"
            );
            link
        }
    };
    let before = listing(&folder);
    let out = s.compile_to(&ckpt, &folder.join("model.onnx"));
    // The first file written names the folder: `config.json`, before the weights are streamed.
    assert_refused(&out, &[&format!("{}/config.json", file_name(&folder))]);
    // EACCES, EPERM, or EROFS where a container mounts /sys read-only.
    let reasons = ["denied", "not permitted", "Read-only file system"];
    assert!(
        reasons.iter().any(|r| out.stderr.contains(r)),
        "the error does not give the reason:\n{}",
        out.stderr
    );
    assert_eq!(listing(&folder), before, "something was written");
    drop(immutable);
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// An export writes `config.json` beside the model: into a diffusers folder that is the input,
/// it would replace the folder's own.
#[test]
fn output_beside_the_input_config_is_refused() {
    let s = Scratch::new();
    let folder = s.diffusers_copy();
    let config = folder.join("config.json");
    let before = bytes_of(&config);
    let files_before = listing(&folder);
    let out = s.compile_to(&folder, &folder.join("fast.onnx"));
    assert_refused(&out, &["config.json", "would overwrite the input"]);
    assert!(
        bytes_of(&config) == before,
        "the input's config.json changed"
    );
    assert_eq!(listing(&folder), files_before);
}

/// A folder where `config.json` goes stops the export before anything is written.
#[test]
fn config_path_that_is_a_folder() {
    let s = Scratch::new();
    let ckpt = s.bfl_variant("m.safetensors", |_| {});
    std::fs::create_dir(s.out_dir().join("config.json")).unwrap();
    let out = s.compile(&ckpt);
    assert_refused(&out, &["config.json", "folder"]);
    assert_eq!(listing(&s.out_dir()), ["config.json".to_owned()].into());
}

/// Runs `binary` with its stdout a pipe whose reader has already gone, as `… | head -1` leaves
/// it once head has its line.
fn run_with_closed_stdout<S: AsRef<std::ffi::OsStr>>(binary: &str, args: &[S]) -> Outcome {
    use std::process::{Command, Stdio};
    let mut child = Command::new(binary)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    Outcome {
        success: out.status.success(),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A reader that stops early is no error: both binaries finish their work (the model and the
/// latents are written) and exit 0, without a panic over the broken pipe.
#[test]
fn a_closed_stdout_is_no_panic() {
    let s = Scratch::new();
    let (ckpt, model) = (s.bfl_variant("m.safetensors", |_| {}), s.output());
    let compile_args = [
        ckpt.as_os_str(),
        "-o".as_ref(),
        model.as_os_str(),
        "--axes-dim".as_ref(),
        TINY_AXES.as_ref(),
        "-q".as_ref(),
    ];
    let out = run_with_closed_stdout(env!("CARGO_BIN_EXE_fastflux-compile"), &compile_args);
    assert!(
        out.success && !out.stderr.contains("panicked"),
        "{}",
        out.stderr
    );
    assert!(model.is_file(), "no model written");

    let (latents, cond) = (s.path("x.safetensors"), toy("prompts.safetensors"));
    let checkpoint = toy("flux-bfl.safetensors");
    let sample_args = [
        checkpoint.as_os_str(),
        "--cond".as_ref(),
        cond.as_os_str(),
        "--steps".as_ref(),
        "1".as_ref(),
        "--size".as_ref(),
        "8x8".as_ref(),
        "-o".as_ref(),
        latents.as_os_str(),
        "--axes-dim".as_ref(),
        "4,6,6".as_ref(),
        "-q".as_ref(),
        "--threads".as_ref(),
        "1".as_ref(),
    ];
    let out = run_with_closed_stdout(env!("CARGO_BIN_EXE_fastflux-sample"), &sample_args);
    assert!(
        out.success && !out.stderr.contains("panicked"),
        "{}",
        out.stderr
    );
    assert!(latents.is_file(), "no latents written");
}
