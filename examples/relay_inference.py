"""Relay attention with a system prompt (vllm-ra's example): the system part of every prompt
is computed once, kept once in the KV cache and read once per step for the whole batch.
The output equals the same run without relay attention.
Run: python examples/relay_inference.py [--model PATH] [--max-tokens N] [--no-relay]"""
import argparse
import time

from relayllm import LLM, SamplingParams

parser = argparse.ArgumentParser()
parser.add_argument("--model", default=None)
parser.add_argument("--max-tokens", type=int, default=32)
parser.add_argument("--no-relay", action="store_true")
args = parser.parse_args()

sys_prompt = ("You are a helpful, respectful and honest assistant. Always answer as helpfully "
              "as possible, while being safe. If a question does not make any sense, explain "
              "why instead of answering something not correct.")
# The default model's chat format; {__USR_PROMPT} marks where each prompt goes, and
# everything before it is the shared prefix.
sys_schema = ("<|im_start|>system\n{__SYS_PROMPT}<|im_end|>\n<|im_start|>user\n"
              "{__USR_PROMPT}<|im_end|>\n<|im_start|>assistant\n")
prompts = ["What is relay attention?", "Name a famous painting.", "Why is the sky blue?"]

llm = LLM(model=args.model, enable_relay_attention=not args.no_relay,
          sys_prompt=sys_prompt, sys_schema=sys_schema)
llm.fill_prefix_kv_cache()  # vllm-ra's call; the prefix was computed when the LLM was built
start = time.perf_counter()
outputs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=args.max_tokens))
elapsed = time.perf_counter() - start
for output in outputs:
    print(f"[{output.relay_prefix_tokens} prefix tokens shared] {output.prompt!r} -> "
          f"{output.outputs[0].text!r}")
print(f"{len(prompts)} requests in {elapsed:.2f} s")
