"""The Python API's overhead against the CLI on the same batch.

Runs one batch (REQUESTS prompts, MAX_TOKENS tokens each, greedy, ignore_eos) through
`relayllm generate --prompts-file` (its own log line gives generated tokens/s over the
engine loop) and through relayllm.LLM.generate (generated tokens over the wall time of the
call: Python-side preparation, the engine, and the RequestOutput objects), ROUNDS times
each in alternation, and prints the medians. Python-side work per request is the time of
generate() outside the extension's call, over the requests; a second batch of
max_tokens=1 requests shows it where the engine does least.

Usage: python bench/python_api_overhead.py [--cli PATH] [--requests 64] [--max-tokens 32]
       [--rounds 3] [--model PATH]   (with the package installed; the CLI defaults to the
       `relayllm` command beside this interpreter)
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from relayllm import LLM, SamplingParams

TOPICS = ["the sea", "a mountain", "the city at night", "a library", "winter", "a garden",
          "the desert", "a train journey"]


def prompts(n):
    return [f"Write a short paragraph about {TOPICS[i % len(TOPICS)]} (variant {i})." for i in range(n)]


def run_cli(cli, model, texts, max_tokens):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for t in texts:
            f.write(json.dumps({"prompt": t, "max_tokens": max_tokens, "ignore_eos": True}) + "\n")
    cmd = [cli, "generate", "--prompts-file", f.name]
    if model:
        cmd += ["--model", model]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    m = re.search(r"\+ (\d+) generated tokens \(([\d.]+) tok/s\)", proc.stderr)
    return float(m.group(2))


class TimedEngine:
    """Wraps the extension object to time the calls into it."""

    def __init__(self, engine):
        self.engine = engine
        self.seconds = 0.0

    def generate(self, *args):
        start = time.perf_counter()
        try:
            return self.engine.generate(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def __getattr__(self, name):
        return getattr(self.engine, name)


def run_api(llm, texts, max_tokens):
    timed = TimedEngine(llm._engine)
    llm._engine = timed
    try:
        sp = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
        start = time.perf_counter()
        outputs = llm.generate(texts, sp, use_tqdm=False)
        wall = time.perf_counter() - start
    finally:
        llm._engine = timed.engine
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return tokens / wall, (wall - timed.seconds) / len(texts) * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cli", default=str(Path(sys.prefix) / "bin" / "relayllm"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    texts = prompts(args.requests)
    llm = LLM(model=args.model)
    run_api(llm, texts[:4], 2)  # warm-up
    cli_tps, api_tps, api_us = [], [], []
    for _ in range(args.rounds):
        cli_tps.append(run_cli(args.cli, args.model, texts, args.max_tokens))
        tps, us = run_api(llm, texts, args.max_tokens)
        api_tps.append(tps)
        api_us.append(us)
    short_us = [run_api(llm, prompts(256), 1)[1] for _ in range(args.rounds)]
    cli_m, api_m = statistics.median(cli_tps), statistics.median(api_tps)
    print(f"batch: {args.requests} requests x {args.max_tokens} tokens, {args.rounds} rounds (medians)")
    print(f"CLI  relayllm generate: {cli_m:8.1f} generated tok/s   runs {[round(x, 1) for x in cli_tps]}")
    print(f"API  LLM.generate:      {api_m:8.1f} generated tok/s   runs {[round(x, 1) for x in api_tps]}")
    print(f"API / CLI: {api_m / cli_m:.3f}")
    print(f"Python-side work per request: {statistics.median(api_us):.1f} us "
          f"(batch above); {statistics.median(short_us):.1f} us (256 requests x 1 token)")


if __name__ == "__main__":
    main()
