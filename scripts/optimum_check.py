"""fastflux's transformer inside a real client, optimum's ORTFluxPipeline (run by optimum-check.sh).

Builds a tiny FLUX.1-dev pipeline offline around the golden transformer (shared/golden/tiny-dev:
the same weights in diffusers and BFL naming), with tiny CLIP and T5 encoders, their tokenizers
made from a small vocabulary, and a small VAE; exports it with optimum's own exporter; then, for
each of the golden diffusers folder and the golden BFL single file, replaces the exported
transformer with `fastflux-compile SRC -o DIR/transformer/model.onnx` and runs ORTFluxPipeline.
Its latents must match PyTorch's FluxPipeline on the same pipeline within 1e-4 (relative L2),
for batch 1 and 2, with IO binding on and off. optimum's own export is run the same way, as the
control. Usage: optimum_check.py COMPILER SHARED_DIR WORK_DIR
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers import FluxTransformer2DModel
from optimum.exporters.onnx import main_export
from optimum.onnxruntime import ORTFluxPipeline
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers import T5Config, T5EncoderModel, T5TokenizerFast

TOLERANCE = 1e-4
WORDS = "a red fox in the snow at golden hour an isometric city night cat on mat".split()
PROMPTS = ["a red fox in the snow", "an isometric city at night"]
HEIGHT = WIDTH = 32  # VAE scale 2, 2x2 packing: 8x8 = 64 image tokens
TEXT_TOKENS = 16


def clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """CLIP's byte-level BPE over single characters (no merges): every word spells out."""
    folder.mkdir(parents=True)
    letters = sorted(set("".join(WORDS)))
    vocab = ["<|startoftext|>", "<|endoftext|>"] + letters + [c + "</w>" for c in letters]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )


def t5_tokenizer() -> T5TokenizerFast:
    """A word-level tokenizer with T5's special tokens, `</s>` appended as T5's is."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    vocab.update({w: i + 3 for i, w in enumerate(WORDS)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tok, extra_ids=0, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def build_pipeline(golden: Path, folder: Path) -> None:
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel.from_pretrained(golden / "diffusers")
    cfg = transformer.config
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=64, hidden_size=cfg.pooled_projection_dim, intermediate_size=37,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=64, d_model=cfg.joint_attention_dim, d_kv=8, d_ff=37, num_layers=2,
            num_heads=4,
        )
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=cfg.in_channels // 4,
        block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=HEIGHT,
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=clip,
        tokenizer=clip_tokenizer(folder.parent / "clip-tokenizer"),
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer(),
        transformer=transformer,
    )
    pipe.save_pretrained(folder)


def call(pipe, prompts, latents):
    out = pipe(
        prompt=prompts,
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=2,
        guidance_scale=3.5,
        max_sequence_length=TEXT_TOKENS,
        latents=latents,
        output_type="latent",
    )
    images = out.images
    return images.numpy() if hasattr(images, "numpy") else np.asarray(images)


def relative_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    compiler, shared, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    golden = shared / "golden/tiny-dev"
    pipe_dir, exported = work / "pipeline", work / "optimum-onnx"
    build_pipeline(golden, pipe_dir)
    main_export(model_name_or_path=str(pipe_dir), output=str(exported), task="text-to-image")
    print("optimum exported:", sorted(p.name for p in (exported / "transformer").iterdir()))

    reference_pipe = FluxPipeline.from_pretrained(pipe_dir)
    channels = reference_pipe.transformer.config.in_channels
    tokens = (HEIGHT // 2 // 2) * (WIDTH // 2 // 2)
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(len(PROMPTS), tokens, channels, generator=generator)
    reference = {
        b: call(reference_pipe, PROMPTS[:b], noise[:b].clone()) for b in (1, 2)
    }

    variants = {
        "optimum's own export (control)": None,
        "fastflux, diffusers folder": [str(golden / "diffusers")],
        "fastflux, BFL single file": [str(golden / "flux-bfl.safetensors"), "--axes-dim", "4,6,6"],
    }
    worst = 0.0
    for name, source in variants.items():
        folder = work / name.split(",")[-1].strip().replace(" ", "-").replace("'", "")
        shutil.copytree(exported, folder)
        if source is not None:
            shutil.rmtree(folder / "transformer")
            (folder / "transformer").mkdir()
            out = folder / "transformer/model.onnx"
            subprocess.run([str(compiler), *source, "-o", str(out), "--dtype", "f32", "-q"], check=True)
            print(name, "wrote:", sorted(p.name for p in (folder / "transformer").iterdir()))
        for io_binding in (False, True):
            pipe = ORTFluxPipeline.from_pretrained(folder, use_io_binding=io_binding)
            for b in (1, 2):
                latents = call(pipe, PROMPTS[:b], noise[:b].clone())
                error = relative_l2(latents, reference[b])
                worst = max(worst, error)
                print(f"{name}: batch {b}, IO binding {io_binding}: relative L2 {error:.2e}")
    print(f"worst relative L2 {worst:.2e} (tolerance {TOLERANCE:.0e})")
    sys.exit(0 if worst < TOLERANCE else 1)


if __name__ == "__main__":
    main()
