#!/usr/bin/env python3
"""Build tiny random-weight Hugging Face models and their logits: the oracle the
C++ forward pass is compared against.

For every architecture relayllm supports this writes <out>/<name>/ with
config.json, generation_config.json, model.safetensors (float32) and
expected.json = {"sequences": [{"input_ids": [...], "logits": [[vocab floats] per position]}]}.
Logits come from transformers' own forward on CPU in float32 and are rounded to
7 significant digits. Needs torch, transformers and safetensors.

    python3 tools/make_hf_fixtures.py --out tests/data/hf_fixtures
"""

import argparse
import json
import os
import sys

import torch
import transformers

SEED = 20241124
VOCAB = 320
SEQUENCE_LENGTHS = (13, 29)
# Large enough that logits are O(1) and differences between implementations show.
WEIGHT_STD = 0.1
NORM_NOISE = 0.1
BIAS_STD = 0.05

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    initializer_range=WEIGHT_STD,
    hidden_act="silu",
    bos_token_id=1,
    eos_token_id=2,
)

# name -> (model class name, extra config kwargs)
FIXTURES = {
    "llama2": (
        "LlamaForCausalLM",
        dict(tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    ),
    "llama3": (
        "LlamaForCausalLM",
        dict(
            tie_word_embeddings=True,
            eos_token_id=[318, 319],
            bos_token_id=317,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                # Small on purpose, so that the low/medium/high frequency bands all occur
                # for head_dim 16 and the llama3 scaling is really exercised.
                "original_max_position_embeddings": 64,
            },
        ),
    ),
    "mistral": (
        "MistralForCausalLM",
        dict(tie_word_embeddings=False, sliding_window=None,
             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
    ),
    "qwen2": (
        "Qwen2ForCausalLM",
        dict(tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
    ),
    "qwen3": (
        "Qwen3ForCausalLM",
        # head_dim 32 != hidden/heads = 16: q_proj is [128, 64], o_proj [64, 128].
        dict(tie_word_embeddings=True, head_dim=32,
             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
    ),
}


def round_sig(value: float) -> float:
    return float(f"{value:.7g}")


def randomize_parameters(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Draw every parameter ourselves so norms and biases are not the trivial 1 / 0 of HF's init."""
    with torch.no_grad():
        for name, param in model.named_parameters():  # tied weights appear once
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * BIAS_STD)
            elif param.dim() == 1:  # RMSNorm weights (input, post-attention, final, q/k norm)
                param.copy_(1.0 + torch.randn(param.shape, generator=generator) * NORM_NOISE)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * WEIGHT_STD)


def build(name: str, out_dir: str, seed: int) -> dict:
    class_name, extra = FIXTURES[name]
    model_class = getattr(transformers, class_name)
    config_class = model_class.config_class
    kwargs = dict(COMMON)
    kwargs.update(extra)
    config = config_class(**kwargs)
    config.architectures = [class_name]
    try:
        config._attn_implementation = "eager"
    except Exception as error:  # the plain path is preferred, sdpa on CPU fp32 is fine too
        print(f"{name}: could not select eager attention ({error})", file=sys.stderr)

    torch.manual_seed(seed)
    model = model_class(config).to(torch.float32).eval()
    generator = torch.Generator().manual_seed(seed)
    randomize_parameters(model, generator)
    if config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), name

    path = os.path.join(out_dir, name)
    os.makedirs(path, exist_ok=True)
    try:
        model.config.dtype = torch.float32
    except Exception:
        model.config.torch_dtype = torch.float32
    model.save_pretrained(path, safe_serialization=True)

    sequences = []
    for length in SEQUENCE_LENGTHS:
        ids = torch.randint(0, VOCAB, (1, length), generator=generator)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].to(torch.float32)
        sequences.append({
            "input_ids": ids[0].tolist(),
            "logits": [[round_sig(v) for v in row] for row in logits.tolist()],
        })
        print(f"{name}: length {length}, logits std {logits.std().item():.3f}, "
              f"max |logit| {logits.abs().max().item():.3f}", file=sys.stderr)
    expected = {
        "architecture": class_name,
        "seed": seed,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "sequences": sequences,
    }
    with open(os.path.join(path, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")
    with open(os.path.join(path, "config.json")) as f:
        print(f"{name}: config.json = {f.read()}", file=sys.stderr)
    return expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder, one subfolder per fixture")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--only", nargs="*", choices=sorted(FIXTURES), help="build only these")
    args = parser.parse_args()

    # Reference numbers: plain fp32 everywhere, single thread for reproducible reductions.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}", file=sys.stderr)

    failures = []
    for index, name in enumerate(args.only or FIXTURES):
        try:
            build(name, args.out, args.seed + index)
        except Exception as error:  # keep going so one bad config does not cost the others
            import traceback
            traceback.print_exc()
            failures.append(f"{name}: {error}")

    total = 0
    for root, _, files in os.walk(args.out):
        for file in files:
            size = os.path.getsize(os.path.join(root, file))
            total += size
            print(f"{os.path.relpath(os.path.join(root, file), args.out)}: {size} bytes", file=sys.stderr)
    print(f"total {total} bytes", file=sys.stderr)
    if failures:
        sys.exit("failed: " + "; ".join(failures))


if __name__ == "__main__":
    main()
