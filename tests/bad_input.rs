//! The "Bad input" contract, checked on the real binary: every defective checkpoint or
//! output path gets an `error:` that names the file and the tensor and says what was expected
//! and found, a non-zero exit, no panic, and nothing at the output path (no model, no data file,
//! no temporary file). Each defect is made from the golden tiny model in a temporary folder
//! (`bad_input/scratch.rs`, with the control that the unedited variant compiles); the cases are
//! grouped by kind of input in `tests/bad_input/`.

mod support;

// Inside `mod bad_input`, `mod tensors;` is `tests/bad_input/tensors.rs`, not a file beside
// this one (where Cargo would take it for a test binary of its own).
mod bad_input {
    mod diffusers;
    mod file_format;
    mod flags;
    mod generation;
    mod outputs;
    mod pickle;
    mod scratch;
    mod tensors;
}
