#!/usr/bin/env python3
"""Structured-output benchmark: generated tokens/s of `relayllm generate` at batch BATCH with
and without a JSON schema and with a tool's argument schema, and the grammar compile time of a typical tool schema (first compile
and cached), from the engine's own debug log lines.

    bench/structured_bench.py --bin build/relayllm [--batch 16] [--max-tokens 64] [--rounds 3]
        [-- extra generate flags, e.g. --device cuda]

Every mode runs --rounds times in rotated order; medians are printed (the machine may be shared
and noisy). Free-text requests ignore EOS so they generate max_tokens; constrained outputs end
on their own, so their batch thins out sooner: each constrained run is compared with free text of
the same per-request lengths, run right after it. The engine's step-time split (planning, forward
pass, sampling, committing) is printed per run."""
import argparse
import json
import re
import resource
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
    cpu_start = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    cpu_end = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - start
    # CPU seconds of the run (all its threads): on a shared machine they say what the work
    # costs, where the wall-clock rate also says how busy the neighbours were.
    cpu = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)
    # One JSON line per request: split on "\n" only (generated text may hold other line breaks).
    results = [json.loads(l) for l in out.stdout.split("\n") if l.strip()]
    return results, (wall, cpu), out.stderr


def throughput(binary, batch, max_tokens, schema, extra):
    """max_tokens: one number, or one per request (free text as long as another mode's outputs)."""
    lines = []
    for i in range(batch):
        limit = max_tokens[i] if isinstance(max_tokens, list) else max_tokens
        line = {"prompt": PROMPTS[i % len(PROMPTS)].format(TOPICS[i % len(TOPICS)]),
                "max_tokens": limit, "ignore_eos": schema is None}
        if schema is not None:
            line["guided_json"] = schema
        lines.append(line)
    results, (wall, cpu), log = run_generate(binary, lines, extra)
    tokens = sum(len(r["token_ids"]) for r in results)
    # Decode time: from the first request's first token to the last request's end.
    span = max(r["timings"]["e2e_s"] for r in results) - min(r["timings"]["ttft_s"] for r in results)
    masks = re.findall(r"grammar masks: .*|step time: .*", log)
    return tokens, tokens / span if span > 0 else float("nan"), wall, cpu, \
        [len(r["token_ids"]) for r in results], masks


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
    # Each constrained mode is followed by free text of the same per-request lengths (ignore_eos,
    # each request as long as its constrained output of that round): constrained outputs end on
    # their own, so their batch thins out, and that baseline thins out the same way. It is the
    # fair comparison; "free text" (every request max_tokens long) is printed for reference.
    schemas = {"free text": None, "json schema": BENCH_SCHEMA, "tool schema": TOOL_SCHEMA}
    paired = {"json schema": "free text, json lengths", "tool schema": "free text, tool lengths"}
    names = ["free text", "json schema", paired["json schema"], "tool schema", paired["tool schema"]]
    rates = {m: [] for m in names}
    cpu_rates = {m: [] for m in names}
    counts = {m: [] for m in names}
    first = list(schemas)
    for r in range(a.rounds):
        order = first[r % 3:] + first[:r % 3]
        for m in order:
            runs = [(m, schemas[m], a.max_tokens)]
            for name, schema, limit in runs:
                tokens, rate, wall, cpu, lengths, masks = throughput(a.bin, a.batch, limit, schema,
                                                                     a.extra)
                if name in paired:
                    runs.append((paired[name], None, [max(n, 1) for n in lengths]))
                rates[name].append(rate)
                cpu_rates[name].append(tokens / cpu)
                counts[name].append(tokens)
                print(f"round {r} {name}: {tokens} tokens, {rate:.1f} tokens/s (decode span), "
                      f"{wall:.1f} s wall, {cpu:.1f} s CPU {' '.join(masks)}", file=sys.stderr)
    base = {m: statistics.median(rates["free text"]) for m in names}
    cpu_base = {m: statistics.median(cpu_rates["free text"]) for m in names}
    for m, baseline in paired.items():
        base[m] = statistics.median(rates[baseline])
        cpu_base[m] = statistics.median(cpu_rates[baseline])
    print("| mode | batch | tokens generated | median tokens/s (decode span) | vs free text "
          "| tokens per CPU second (whole run) | vs free text |\n| --- | --- | --- | --- | --- | --- | --- |")
    for m in names:
        med, cmed = statistics.median(rates[m]), statistics.median(cpu_rates[m])
        print(f"| {m} | {a.batch} | {statistics.median(counts[m]):.0f} | {med:.1f} | {med / base[m]:.3f} "
              f"| {cmed:.1f} | {cmed / cpu_base[m]:.3f} |")
    print("(json and tool schema are compared with free text of the same lengths, the other modes "
          "with free text)")
    # Each constrained run and its baseline ran back to back, so their ratio within a round is
    # the least disturbed by a neighbour's load; the median of those ratios over the rounds.
    for m, baseline in paired.items():
        ratios = sorted(c / b for c, b in zip(rates[m], rates[baseline]))
        print(f"{m} / {baseline}, paired per round: median {statistics.median(ratios):.3f} "
              f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)})")
    ms, table = compile_times(a.bin, a.extra)
    print(f"\ntoken table: {table}")
    print(f"tool-schema grammar compile: {len(ms)} compiles (6 requests, the last a cache hit), "
          f"median {statistics.median(ms):.2f} ms, max {max(ms):.2f} ms")


if __name__ == "__main__":
    main()
