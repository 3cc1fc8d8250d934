//! Running the model stage by stage (as calibration does) computes what the whole model does.

mod support;

use fastflux::compile::{CompileOptions, Compiled, prepare};
use fastflux::metrics::relative_l2;
use fastflux::runtime::staged::StagedRunner;
use fastflux::tensor::read_f32_tensors;
use support::*;

/// The tiny-dev model, lifted in f32.
fn tiny_dev_f32() -> Compiled {
    let options = CompileOptions {
        dtype: Some(fastflux::dtype::DType::F32),
        ..CompileOptions::new(golden("diffusers"))
    };
    prepare(&options).unwrap()
}

#[test]
fn staged_run_matches_diffusers() {
    let compiled = tiny_dev_f32();
    // Batch 1: two ONNX Runtime calls per stage, so the chunking is exercised too.
    let runner = StagedRunner::new(&compiled.graph, &compiled.ckpt, 1, 1);
    let blocks = runner.stages().iter().filter(|s| s.block.is_some()).count();
    assert_eq!(blocks, 6, "one stage per block");
    let inputs = read_f32_tensors(&golden("inputs.safetensors")).unwrap();
    let outputs = runner.run(&inputs).unwrap();
    let (_, reference) = golden_io("expected.safetensors");
    let error = relative_l2(&outputs["latent"].data, &reference);
    assert!(error < 1e-5, "staged run: relative L2 error {error:.3e}");
}

/// The spilled store (`runtime::spill`), which `StagedRunner::run` and every calibration walk
/// keep their activations in, gives the in-memory run's output to the bit, chunk by chunk.
#[test]
fn a_run_with_spilled_activations_matches_the_in_memory_run() {
    use fastflux::runtime::staged::Activations;
    let compiled = tiny_dev_f32();
    let runner = StagedRunner::new(&compiled.graph, &compiled.ckpt, 1, 1);
    let inputs = read_f32_tensors(&golden("inputs.safetensors")).unwrap();
    let spilled = runner.run(&inputs).unwrap().remove("latent").unwrap();
    let mut env = runner.load_inputs(&inputs).unwrap();
    for k in 0..runner.stages().len() {
        runner.run_stage(k, &mut env).unwrap();
        runner.release(k, &mut env);
    }
    let (_, latent) = &compiled.graph.outputs[0];
    assert_eq!(env.samples(*latent), Some(2));
    let in_memory = env.read(*latent, None).unwrap();
    assert_eq!(spilled.shape, in_memory.shape);
    assert!(
        spilled.data == in_memory.data,
        "the spilled run's output differs"
    );
    let (_, reference) = golden_io("expected.safetensors");
    assert!(relative_l2(&spilled.data, &reference) < 1e-5);
}

/// `Auto` resolves to CUDA exactly when the loaded ONNX Runtime ships the CUDA provider (told
/// by its files, not by asking it); `Cpu` and `Cuda` resolve to themselves.
#[test]
fn auto_is_cuda_exactly_when_onnx_runtime_ships_it() {
    use fastflux::runtime::{ExecutionProvider, ort::cuda_available};
    let expected = match ships_cuda_provider() {
        true => ExecutionProvider::Cuda,
        false => ExecutionProvider::Cpu,
    };
    assert_eq!(cuda_available().unwrap(), ships_cuda_provider());
    assert_eq!(ExecutionProvider::Auto.resolve().unwrap(), expected);
    for chosen in [ExecutionProvider::Cpu, ExecutionProvider::Cuda] {
        assert_eq!(chosen.resolve().unwrap(), chosen);
    }
}

/// Every provider computes diffusers' output, and one that cannot run says so: without the
/// CUDA provider `Auto` is the CPU to the bit and an explicit `Cuda` is an error naming CUDA,
/// not a silent CPU run; with it, `Auto` and `Cuda` both run on CUDA (or both fail naming it,
/// where no GPU is usable).
#[test]
fn the_ort_backend_on_auto_runs_what_the_cpu_runs() {
    use fastflux::runtime::{ExecutionProvider, OrtBackend};
    let compiled = tiny_dev_f32();
    let inputs = read_f32_tensors(&golden("inputs.safetensors")).unwrap();
    let (_, reference) = golden_io("expected.safetensors");
    let run = |provider: ExecutionProvider| {
        let backend = OrtBackend::new(1, provider).unwrap();
        let runner = StagedRunner::with_backend(&compiled.graph, &compiled.ckpt, backend, 2);
        runner
            .run(&inputs)
            .map(|mut out| out.remove("latent").unwrap())
    };
    let cpu = run(ExecutionProvider::Cpu).unwrap();
    let error = relative_l2(&cpu.data, &reference);
    assert!(error < 1e-5, "CPU: relative L2 {error:.2e} from diffusers");
    let (auto, cuda) = (run(ExecutionProvider::Auto), run(ExecutionProvider::Cuda));
    let refused_for_cuda = |run: &Result<fastflux::tensor::Tensor, fastflux::Error>, what: &str| {
        let err = run.as_ref().expect_err(what).to_string();
        assert!(
            err.starts_with("ONNX Runtime: ") && err.contains("CUDA"),
            "{what}: {err}"
        );
    };
    if !ships_cuda_provider() {
        assert_eq!(auto.unwrap(), cpu, "Auto without CUDA is the CPU");
        refused_for_cuda(
            &cuda,
            "Cuda asked for where ONNX Runtime has no CUDA provider",
        );
        return;
    }
    match (&auto, &cuda) {
        (Ok(auto), Ok(cuda)) => {
            // CUDA's reductions need not repeat to the bit: both runs agree with diffusers.
            for (what, run) in [("Auto", auto), ("Cuda", cuda)] {
                let error = relative_l2(&run.data, &reference);
                assert!(
                    error < 1e-4,
                    "{what}: relative L2 {error:.2e} from diffusers"
                );
            }
        }
        _ => {
            refused_for_cuda(&auto, "Auto where CUDA is built in but cannot run");
            refused_for_cuda(&cuda, "Cuda where it is built in but cannot run");
        }
    }
}

#[test]
fn errors_at_the_seam_stay_typed() {
    use fastflux::Error;
    use fastflux::error::FitError;
    use fastflux::fit::brll::BrllOptions;
    use fastflux::fit::calibrate::{CalibrationOptions, fit_sequentially};
    use fastflux::inputs::{InputSet, SyntheticSpec};
    use fastflux::ir::BlockId;
    let compiled = tiny_dev_f32();

    // A tensor whose shape does not describe its data: refused before anything runs.
    let golden_inputs = read_f32_tensors(&golden("inputs.safetensors")).unwrap();
    let runner = StagedRunner::new(&compiled.graph, &compiled.ckpt, 1, 1);
    let mut inputs = golden_inputs.clone();
    let hidden = inputs
        .iter_mut()
        .find(|t| t.name == "hidden_states")
        .unwrap();
    hidden.data.pop();
    let err = runner.run(&inputs).unwrap_err();
    assert!(matches!(&err, Error::Usage(_)), "{err:?}");
    assert!(
        err.to_string().contains("`hidden_states` has shape"),
        "{err}"
    );

    // A shape the model cannot take (15 channels, not 16): ONNX Runtime refuses it, typed.
    let mut inputs = golden_inputs;
    let hidden = inputs
        .iter_mut()
        .find(|t| t.name == "hidden_states")
        .unwrap();
    let tokens = hidden.shape[0] * hidden.shape[1];
    hidden.shape[2] = 15;
    hidden.data.truncate(tokens * 15);
    let err = runner.run(&inputs).unwrap_err();
    assert!(matches!(&err, Error::Runtime(_)), "{err:?}");
    assert!(err.to_string().starts_with("ONNX Runtime: "), "{err}");

    // A ridge the solver refuses: a fit error, no longer a usage error.
    let spec = SyntheticSpec {
        samples: 1,
        image_tokens: 4,
        text_tokens: 2,
        seed: 0,
    };
    let set = InputSet::synthetic(&compiled.ckpt.config, &spec).unwrap();
    let calibration = CalibrationOptions {
        ridge: -1.0,
        threads: 1,
        ..BrllOptions::default().calibration
    };
    let chosen = [BlockId::Double(0)].into();
    let err =
        fit_sequentially(&compiled.graph, &compiled.ckpt, &set, &chosen, &calibration).unwrap_err();
    assert!(
        matches!(&err, Error::Fit(FitError::InvalidRidge(_))),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "fitting a linear replacement failed: ridge must be finite and ≥ 0, got -1"
    );
}

/// The memory plan's estimate of one sample's activations held between stages is what a walk
/// really holds at its widest point, counted off the in-memory store after every stage.
#[test]
fn held_bytes_is_what_a_walk_holds_at_its_widest() {
    use fastflux::ir::cost::Tokens;
    use fastflux::runtime::staged::held_bytes;
    let compiled = tiny_dev_f32();
    let runner = StagedRunner::new(&compiled.graph, &compiled.ckpt, 1, 1);
    let inputs = read_f32_tensors(&golden("inputs.safetensors")).unwrap();
    let axis = |name: &str, i: usize| inputs.iter().find(|t| t.name == name).unwrap().shape[i];
    let (samples, tokens) = (
        axis("hidden_states", 0),
        Tokens {
            image: axis("hidden_states", 1),
            text: axis("encoder_hidden_states", 1),
        },
    );
    let mut env = runner.load_inputs(&inputs).unwrap();
    let mut widest = 0;
    for k in 0..runner.stages().len() {
        runner.run_stage(k, &mut env).unwrap();
        let held: usize = env
            .iter()
            .filter(|(v, _)| runner.batched(**v))
            .map(|(_, t)| t.data.len() * 4 / samples)
            .sum();
        widest = widest.max(held);
        runner.release(k, &mut env);
    }
    let estimate = held_bytes(&compiled.graph, runner.stages(), tokens);
    assert_eq!(estimate, widest as u64);
}

/// A stage run before the stages that compute its inputs names the value it lacks (as exported
/// models name it), not the node index it has in the graph.
#[test]
fn a_stage_run_out_of_order_names_the_value_it_lacks() {
    let compiled = tiny_dev_f32();
    let runner = StagedRunner::new(&compiled.graph, &compiled.ckpt, 1, 1);
    let inputs = read_f32_tensors(&golden("inputs.safetensors")).unwrap();
    let mut env = runner.load_inputs(&inputs).unwrap();
    let err = runner.run_stage(1, &mut env).unwrap_err().to_string();
    let names: Vec<String> = runner.stages()[1]
        .inputs
        .iter()
        .map(|&v| compiled.graph.value_name(v))
        .collect();
    assert!(
        names.iter().any(|n| err.contains(&format!("`{n}`"))) && !err.contains("NodeIndex"),
        "{err}"
    );
    assert!(err.contains("stage 1 (double_blocks.0)"), "{err}");
}
