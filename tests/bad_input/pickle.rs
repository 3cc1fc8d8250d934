//! Pickle checkpoints (torch.save's formats), refused as such before a byte is unpickled: by
//! extension, by content under a safetensors name, and in a diffusers folder.

use super::scratch::*;
use crate::support::*;

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
