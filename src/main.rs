//! `fastflux-compile`: the command line.

use clap::{ArgAction, Parser, ValueEnum};
use fastflux::checkpoint::lora::LoraSpec;
use fastflux::compile::{self, CompileOptions};
use fastflux::dtype::DType;
use fastflux::onnx::Target;
use std::path::PathBuf;
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  fastflux-compile flux1-dev.safetensors -o fastflux.onnx
  fastflux-compile FLUX.1-schnell/transformer -o schnell.onnx --dtype f16
  fastflux-compile flux1-dev.safetensors --plan
  fastflux-compile flux1-dev.safetensors -o st.onnx --lora st.safetensors --lora style.safetensors:0.8";

/// Compiles a FLUX.1 transformer checkpoint into an ONNX model for ONNX Runtime.
///
/// Reads one .safetensors file (Black Forest Labs or ComfyUI naming) or a diffusers transformer
/// folder, and writes OUT.onnx plus its weights in OUT.onnx.data.
#[derive(Parser, Debug)]
#[command(name = "fastflux-compile", version, after_help = EXAMPLES)]
struct Cli {
    /// The checkpoint: a .safetensors file, a diffusers folder, or its .index.json.
    checkpoint: PathBuf,
    /// Where to write the ONNX model (its weights go to OUT.onnx.data beside it).
    #[arg(short, long, value_name = "OUT.onnx", required_unless_present = "plan")]
    output: Option<PathBuf>,
    /// Type of the weights and of the computation [default: the checkpoint's; fp8 becomes bf16].
    #[arg(long, value_name = "f32|f16|bf16")]
    dtype: Option<DType>,
    /// RoPE axes widths, e.g. 16,56,56 [default: config.json, else 16,56,56 for head width 128].
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    axes_dim: Option<Vec<usize>>,
    /// The runtime the model is for.
    #[arg(long, value_enum, default_value_t = TargetArg::Cuda)]
    target: TargetArg,
    /// Inspect only: print the naming, configuration, parameters and dtypes; write nothing.
    #[arg(long)]
    plan: bool,
    /// A LoRA to fold into the weights, at SCALE (default 1); repeat for several. Reads the
    /// diffusers/peft, kohya, XLabs and original (BFL) namings.
    #[arg(long, value_name = "FILE[:SCALE]", action = ArgAction::Append)]
    lora: Vec<LoraSpec>,
    /// Skip LoRA keys that match no weight of the model (with a warning) instead of failing.
    #[arg(long)]
    lora_allow_unmatched: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum TargetArg {
    /// ONNX Runtime, CUDA execution provider (uses ONNX Runtime's contrib ops).
    Cuda,
    /// Standard ONNX operators only.
    Portable,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = CompileOptions {
        checkpoint: cli.checkpoint,
        output: cli.output,
        dtype: cli.dtype,
        axes_dim: cli.axes_dim,
        target: match cli.target {
            TargetArg::Cuda => Target::Cuda,
            TargetArg::Portable => Target::Portable,
        },
        show_progress: !cli.quiet,
        loras: cli.lora,
        lora_allow_unmatched: cli.lora_allow_unmatched,
    };
    let result = if cli.plan {
        compile::plan(&options)
    } else {
        compile::compile(&options)
    };
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
