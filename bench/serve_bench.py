#!/usr/bin/env python3
"""Online serving benchmark: Poisson arrivals against a running `relayllm serve` (or any server with
OpenAI-style streaming completions), like `vllm bench serve`.

For each request rate, NUM_PROMPTS requests of the ShareGPT-like workload (bench/sharegpt_like.py)
arrive with exponential gaps (a Poisson process, seeded) and stream their tokens back; each request is
the system prompt's token ids followed by its user turn, with `ignore_eos` so the output length is the
workload's. Measured per request: TTFT (send to first token), TPOT ((e2e - TTFT) / (output tokens - 1)),
ITL (gaps between streamed chunks) and e2e latency; per rate: achieved requests/s and output tokens/s
(over the span from the first send to the last answer), and p50/p90/p99 of each latency.

Usage:
  serve_bench.py --base-url http://127.0.0.1:8000 --sys-ids-file SYS.json --request-rates 1,2,4,inf \
      --num-prompts 100 [--label relay] [--result-json out.json] [--seed 0] [--max-concurrency N]
`inf` sends every request at once. Prints one table row per rate; --result-json appends one JSON
object per rate (the plot script, bench/plot_serve.py, reads these).
"""
import argparse
import asyncio
import json
import math
import random
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sharegpt_like import describe, workload  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: list[int],
                      max_tokens: int) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    chunk_times: list[float] = []
    tokens = 0
    error = None
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
            else:
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if event.get("usage"):
                        tokens = event["usage"]["completion_tokens"]
                    # A chunk with choices carries a token's text (possibly empty while a
                    # multi-byte character is incomplete); the usage chunk has none.
                    if event.get("choices"):
                        chunk_times.append(time.perf_counter())
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        error = f"{type(e).__name__}: {e}"
    end = time.perf_counter()
    if error is None and not chunk_times:
        error = "no token arrived"
    ttft = chunk_times[0] - start if chunk_times else float("nan")
    e2e = end - start
    return {"error": error, "ttft": ttft, "e2e": e2e, "output_tokens": tokens,
            "tpot": (e2e - ttft) / (tokens - 1) if tokens > 1 else float("nan"),
            "itl": [b - a for a, b in zip(chunk_times, chunk_times[1:])], "start": start, "end": end}


async def run_rate(args, rate: float, model: str, sys_ids: list[int]) -> dict:
    requests = workload(args.num_prompts, args.seed)
    rng = random.Random(args.seed + 1)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    gate = asyncio.Semaphore(args.max_concurrency) if args.max_concurrency else None
    url = args.base_url.rstrip("/") + "/v1/completions"
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(None)) as client:
        async def launch(user_ids, output_len):
            if gate:
                async with gate:
                    return await one_request(client, url, model, sys_ids + user_ids, output_len)
            return await one_request(client, url, model, sys_ids + user_ids, output_len)

        tasks = []
        for user_ids, output_len in requests:
            tasks.append(asyncio.create_task(launch(user_ids, output_len)))
            if math.isfinite(rate):
                await asyncio.sleep(rng.expovariate(rate))
        results = await asyncio.gather(*tasks)
    ok = [r for r in results if r["error"] is None]
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    row = {"label": args.label, "request_rate": rate if math.isfinite(rate) else "inf",
           "num_prompts": len(results), "completed": len(ok),
           "errors": sorted({r["error"] for r in results if r["error"]})[:5],
           "duration_s": span, "requests_per_s": len(ok) / span,
           "output_tokens_per_s": sum(r["output_tokens"] for r in ok) / span,
           "prefix_tokens": len(sys_ids), "workload": describe(requests)}
    for key in ("ttft", "tpot", "e2e"):
        values = [r[key] for r in ok if math.isfinite(r[key])]
        for q in (50, 90, 99):
            row[f"{key}_p{q}_ms"] = 1000 * percentile(values, q)
        row[f"{key}_mean_ms"] = 1000 * sum(values) / len(values) if values else float("nan")
    itl = [x for r in ok for x in r["itl"]]
    for q in (50, 99):
        row[f"itl_p{q}_ms"] = 1000 * percentile(itl, q)
    return row


async def served_model(base_url: str) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.get(base_url.rstrip("/") + "/v1/models")
        r.raise_for_status()
        return r.json()["data"][0]["id"]


def parse_rates(text: str) -> list[float]:
    rates = []
    for part in text.split(","):
        rate = float(part)
        if not rate > 0:
            raise argparse.ArgumentTypeError(f"--request-rates: '{part}' is not a positive rate")
        rates.append(rate)
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--model", help="model name to send (default: the server's first)")
    p.add_argument("--sys-ids-file", help="JSON list of the system prompt's token ids (default: none)")
    p.add_argument("--request-rates", type=parse_rates, default=[float("inf")],
                   help="comma-separated requests/s; inf sends all at once")
    p.add_argument("--num-prompts", type=int, default=100)
    p.add_argument("--max-concurrency", type=int, default=0, help="cap on requests in flight (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default="")
    p.add_argument("--result-json", help="append one JSON line per rate here")
    args = p.parse_args()
    if args.num_prompts < 1:
        p.error("--num-prompts must be >= 1")
    sys_ids = json.loads(Path(args.sys_ids_file).read_text()) if args.sys_ids_file else []
    model = args.model or asyncio.run(served_model(args.base_url))
    print("| label | rate | done | req/s | out tok/s | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | e2e p50 "
          "| e2e p99 | errors |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for rate in args.request_rates:
        row = asyncio.run(run_rate(args, rate, model, sys_ids))
        print(f"| {row['label']} | {row['request_rate']} | {row['completed']}/{row['num_prompts']} "
              f"| {row['requests_per_s']:.2f} | {row['output_tokens_per_s']:.0f} "
              f"| {row['ttft_p50_ms']:.0f} | {row['ttft_p99_ms']:.0f} | {row['tpot_p50_ms']:.1f} "
              f"| {row['tpot_p99_ms']:.1f} | {row['e2e_p50_ms']:.0f} | {row['e2e_p99_ms']:.0f} "
              f"| {len(row['errors'])} |", flush=True)
        if args.result_json:
            with open(args.result_json, "a") as f:
                f.write(json.dumps(row) + "\n")
        if row["completed"] < row["num_prompts"]:
            print(f"serve_bench.py: {row['num_prompts'] - row['completed']} requests failed: {row['errors']}",
                  file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
