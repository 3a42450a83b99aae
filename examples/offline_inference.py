"""Offline batch inference: prompts in, completions out (vLLM's first example, unchanged but
for the import). Run: python examples/offline_inference.py [--model PATH] [--max-tokens N]"""
import argparse

from relayllm import LLM, SamplingParams

parser = argparse.ArgumentParser()
parser.add_argument("--model", default=None, help="model folder or GGUF file (default: SmolLM2-135M-Instruct)")
parser.add_argument("--max-tokens", type=int, default=32)
args = parser.parse_args()

prompts = [
    "Hello, my name is",
    "The president of the United States is",
    "The capital of France is",
    "The future of AI is",
]
sampling_params = SamplingParams(temperature=0.8, top_p=0.95, seed=0, max_tokens=args.max_tokens)

llm = LLM(model=args.model)
outputs = llm.generate(prompts, sampling_params)
for output in outputs:
    print(f"Prompt: {output.prompt!r}, Generated text: {output.outputs[0].text!r}")
