#!/usr/bin/env python3
"""The naive anchor of the end-to-end table: HF transformers `generate` on the same workload.

Builds the model of CONFIG_DIR with random weights in bf16 on the GPU, takes the first N requests of the
ShareGPT-like workload (bench/sharegpt_like.py) under a 2048-token system prompt, and runs them as one
left-padded batch, greedy, generating the batch's longest output length for every request (HF
`generate` cannot stop rows at different lengths without an EOS). Reports requests/s and the useful
output tokens/s (each request's own output length over the same time).

Usage: hf_generate_anchor.py CONFIG_DIR RELAYLLM_BIN TOKENIZER_DIR N [PREFIX_TOKENS]
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sharegpt_like import describe, workload  # noqa: E402


def main() -> None:
    config_dir, binary, tok, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    prefix = int(sys.argv[5]) if len(sys.argv) > 5 else 2048
    with tempfile.TemporaryDirectory() as tmp:
        sys_ids = json.loads(subprocess.run(
            [sys.executable, str(Path(__file__).parent / "sys_prompt_text.py"), binary, tok, str(prefix),
             f"{tmp}/sys.txt"], capture_output=True, text=True, check=True).stdout)
    requests = workload(n, 0)
    print(describe(requests))
    config = LlamaConfig.from_pretrained(config_dir)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    prompts = [sys_ids + user for user, _ in requests]
    longest = max(len(p) for p in prompts)
    pad = config.eos_token_id
    ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts], device="cuda")
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device="cuda")
    new_tokens = max(o for _, o in requests)
    kwargs = dict(attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                  do_sample=False, pad_token_id=pad)
    with torch.inference_mode():
        model.generate(ids[:2], **{**kwargs, "attention_mask": mask[:2], "max_new_tokens": 4,
                                   "min_new_tokens": 4})  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(ids, **kwargs)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    useful = sum(o for _, o in requests)
    row = {"engine": "hf-transformers-generate", "torch": torch.__version__,
           "transformers": __import__("transformers").__version__, "requests": n, "prefix": prefix,
           "seconds": seconds, "requests_per_s": n / seconds, "output_tokens_per_s": useful / seconds,
           "generated_per_row": new_tokens}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
