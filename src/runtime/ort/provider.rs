//! Which ONNX Runtime execution provider a session runs on.

use super::library::environment;
use crate::error::RuntimeError;
use ::ort::ep::ExecutionProvider as _;
use std::fmt;

/// The execution provider of an ONNX Runtime session.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum ExecutionProvider {
    /// ONNX Runtime's CPU kernels (the default: what every build has).
    #[default]
    Cpu,
    /// The CUDA execution provider; building a session fails if it cannot be registered.
    Cuda,
    /// CUDA when the loaded ONNX Runtime reports its CUDA provider available, else the CPU.
    Auto,
}

impl ExecutionProvider {
    /// `Cpu` or `Cuda`: `Auto` asks the loaded library (loading it first if need be).
    pub fn resolve(self) -> Result<Self, RuntimeError> {
        match self {
            Self::Auto => Ok(if cuda_available()? {
                Self::Cuda
            } else {
                Self::Cpu
            }),
            chosen => Ok(chosen),
        }
    }
}

/// Whether the loaded ONNX Runtime was built with the CUDA provider. That it is built in does
/// not prove a GPU is usable; registering it on a session finds that out.
pub fn cuda_available() -> Result<bool, RuntimeError> {
    // ort's API functions exist only once the library is loaded.
    environment()?;
    ::ort::ep::CUDA::is_available().map_err(|e| {
        RuntimeError::Session(
            "<execution provider query>".into(),
            format!("cannot list ONNX Runtime's execution providers: {e}"),
        )
    })
}

impl std::str::FromStr for ExecutionProvider {
    type Err = String;

    /// `cpu`, `cuda` or `auto` (for a command-line flag).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown execution provider `{other}`: use `cpu`, `cuda` or `auto`"
            )),
        }
    }
}

impl fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "CPU",
            Self::Cuda => "CUDA",
            Self::Auto => "auto (CUDA if available, else CPU)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag_values() {
        assert_eq!("cpu".parse(), Ok(ExecutionProvider::Cpu));
        assert_eq!("cuda".parse(), Ok(ExecutionProvider::Cuda));
        assert_eq!("auto".parse(), Ok(ExecutionProvider::Auto));
        let err = "gpu".parse::<ExecutionProvider>().unwrap_err();
        assert!(err.contains("`gpu`") && err.contains("`auto`"), "{err}");
    }
}
