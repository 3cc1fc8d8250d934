//! Files in and out: the one validated safetensors reader (memory-mapped), the one streaming
//! safetensors writer, the one output file written under a temporary name and renamed into
//! place, so that a failed write never leaves a half-written file under the name asked for, and
//! a file's content hash.

pub mod atomic;
pub mod digest;
pub mod safetensors;
pub mod safetensors_writer;

pub use atomic::AtomicFile;
pub use safetensors::{SafetensorsFile, TensorInfo};
pub use safetensors_writer::{SafetensorsWriter, TensorEntry};
