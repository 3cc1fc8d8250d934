//! Running `fastflux-compile`: the command line the golden checkpoints need, and the checks every
//! refused input must pass (an `error:` line naming what is wrong, no panic, nothing left at the
//! output).

use super::paths::golden;
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt::Debug;
use std::path::Path;
use std::process::Command;

/// The golden model needs `--axes-dim`: its head width is 16, not FLUX.1's 128.
pub const TINY_AXES: &str = "4,6,6";

/// The two forms of the tiny-dev checkpoint, with the flags each needs: the BFL file carries
/// no config.json, and tiny-dev's heads are 16 wide, not FLUX's 128.
pub const CHECKPOINTS: [(&str, &[&str]); 2] = [
    ("flux-bfl.safetensors", &["--axes-dim", TINY_AXES]),
    ("diffusers", &[]),
];

/// The command line that compiles the golden `checkpoint` (one of [`CHECKPOINTS`]) to `out` in
/// f32, quietly, with the flags it needs and then `extra`.
pub fn golden_f32_args(checkpoint: &str, out: &Path, extra: &[&str]) -> Vec<OsString> {
    let needed = CHECKPOINTS
        .iter()
        .find(|(c, _)| *c == checkpoint)
        .map_or(&[][..], |(_, f)| f);
    let mut args: Vec<OsString> = vec![golden(checkpoint).into(), "-o".into(), out.into()];
    let flags = ["--dtype", "f32", "-q"].iter().chain(needed).chain(extra);
    args.extend(flags.map(OsString::from));
    args
}

/// What one run of `fastflux-compile` did.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `fastflux-compile` with `args`.
pub fn compile<S: AsRef<OsStr>>(args: &[S]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_fastflux-compile"))
        .args(args)
        .output()
        .expect("fastflux-compile starts");
    Outcome {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `fastflux-compile` and asserts it succeeded; returns its stdout.
pub fn compile_ok<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    let out = compile(args);
    assert!(
        out.success,
        "fastflux-compile {args:?} failed:\n{}",
        out.stderr
    );
    out.stdout
}

/// Runs `fastflux-compile`, asserting that it refused ([`assert_refused`]) and left nothing
/// named after `output` (the model, its data file, their temporary names), nor the
/// `config.json` written beside it, in `output`'s folder; returns stderr.
pub fn compile_err<S: AsRef<OsStr> + Debug>(args: &[S], output: &Path) -> String {
    let out = compile(args);
    assert_refused(&out, &[]);
    let name = file_name(output);
    let left: Vec<String> = listing(output.parent().unwrap())
        .into_iter()
        .filter(|n| n.contains(&name) || n.contains("config.json"))
        .collect();
    assert!(left.is_empty(), "{args:?} left behind: {left:?}");
    out.stderr
}

/// The refusal contract of the "Bad input": a non-zero exit, an `error:` line that says
/// each of `needles` (the file, the tensor, what was expected and found), and no panic.
pub fn assert_refused(out: &Outcome, needles: &[&str]) {
    assert!(
        !out.success,
        "expected a refusal, but it succeeded:\n{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains("panicked"),
        "it panicked:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("error:"),
        "no `error:` line:\n{}",
        out.stderr
    );
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "the error does not say `{needle}`:\n{}",
            out.stderr
        );
    }
}

/// The names in a folder (hidden ones included: that is where temporary files would hide).
pub fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The text between the first "tensor `" and the next backtick of an error message.
pub fn named_tensor(stderr: &str) -> Option<&str> {
    let rest = &stderr[stderr.find("tensor `")? + "tensor `".len()..];
    Some(&rest[..rest.find('`')?])
}

/// The last path component as text, for asserting that a message names a file.
pub fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}
