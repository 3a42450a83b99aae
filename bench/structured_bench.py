#!/usr/bin/env python3
"""Structured-output benchmark: generated tokens/s of `relayllm generate` at batch BATCH with
and without a JSON schema, and the grammar compile time of a typical tool schema (first compile
and cached), from the engine's own debug log lines.

    bench/structured_bench.py --bin build/relayllm [--batch 16] [--max-tokens 64] [--rounds 3]
        [-- extra generate flags, e.g. --device cuda]

Every mode runs --rounds times in rotated order; medians are printed (the machine may be shared
and noisy). Free-text requests ignore EOS so they generate max_tokens; the schema's strings are
unbounded, so constrained requests mostly do too (the rate is per generated token either way)."""
import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
from structured_schemas import TOOL_SCHEMA  # noqa: E402

# Long free-text fields keep constrained outputs as long as free ones.
BENCH_SCHEMA = {"type": "object", "properties": {
    "title": {"type": "string"}, "summary": {"type": "string"},
    "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["title", "summary", "tags"]}
PROMPTS = ["Describe the city of {}.", "Write a short story about {}.", "Explain {} to a child.",
           "List facts about {}."]
TOPICS = ["Paris", "the sea", "volcanoes", "bees", "trains", "chess", "rain", "the moon"]


def run_generate(binary, lines, extra, debug=False):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("".join(json.dumps(l) + "\n" for l in lines))
    cmd = [binary] + (["--log-level", "debug"] if debug else []) + \
        ["generate", "--prompts-file", f.name, *extra]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    results = [json.loads(l) for l in out.stdout.splitlines()]
    return results, wall, out.stderr


def throughput(binary, batch, max_tokens, schema, extra):
    lines = []
    for i in range(batch):
        line = {"prompt": PROMPTS[i % len(PROMPTS)].format(TOPICS[i % len(TOPICS)]),
                "max_tokens": max_tokens, "ignore_eos": schema is None}
        if schema is not None:
            line["guided_json"] = schema
        lines.append(line)
    results, wall, _ = run_generate(binary, lines, extra)
    tokens = sum(len(r["token_ids"]) for r in results)
    # Decode time: from the first request's first token to the last request's end.
    span = max(r["timings"]["e2e_s"] for r in results) - min(r["timings"]["ttft_s"] for r in results)
    return tokens, tokens / span if span > 0 else float("nan"), wall


def compile_times(binary, extra, variants=5):
    lines = []
    for v in range(variants):  # distinct texts: each one compiles
        schema = json.loads(json.dumps(TOOL_SCHEMA))
        schema["properties"]["location"]["description"] += f" (variant {v})"
        lines.append({"prompt": "Weather?", "max_tokens": 1, "guided_json": schema})
    lines.append(dict(lines[0]))  # the first again: a cache hit, no compile line
    _, _, log = run_generate(binary, lines, extra, debug=True)
    ms = [float(m) for m in re.findall(r"grammar for '[^']*' compiled in ([0-9.]+) ms", log)]
    table = re.findall(r"token table of (\d+) ids built in ([0-9.]+) ms", log)
    return ms, table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/relayllm")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    modes = {"free text": None, "json schema": BENCH_SCHEMA}
    rates = {m: [] for m in modes}
    names = list(modes)
    for r in range(a.rounds):
        for m in names[r % 2:] + names[:r % 2]:
            tokens, rate, wall = throughput(a.bin, a.batch, a.max_tokens, modes[m], a.extra)
            rates[m].append(rate)
            print(f"round {r} {m}: {tokens} tokens, {rate:.1f} tokens/s (decode span), {wall:.1f} s wall",
                  file=sys.stderr)
    base = statistics.median(rates["free text"])
    print(f"| mode | batch | median tokens/s | vs free text |\n| --- | --- | --- | --- |")
    for m in names:
        med = statistics.median(rates[m])
        print(f"| {m} | {a.batch} | {med:.1f} | {med / base:.3f} |")
    ms, table = compile_times(a.bin, a.extra)
    print(f"\ntoken table: {table}")
    print(f"tool-schema grammar compile: {len(ms)} compiles (6 requests, the last a cache hit), "
          f"median {statistics.median(ms):.2f} ms, max {max(ms):.2f} ms")


if __name__ == "__main__":
    main()
