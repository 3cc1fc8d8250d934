//! Files that are not (whole, valid) safetensors files: text, garbage after a length prefix, a
//! truncated file, header offsets past the end, a dtype no reader knows.

use super::scratch::*;
use crate::support::*;

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
