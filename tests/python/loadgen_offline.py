"""A small load generator that treats the server as GuideLLM does, without network access
beyond the server: it reads the model id from /v1/models, loads the tokenizer of that name
with `transformers.AutoTokenizer` (offline: a local folder of that name), builds synthetic
prompts of a given token length that share a prefix, sends them at a fixed concurrency as
streamed completions with usage, and checks the server's prompt token counts against the
tokenizer's. Prints one JSON summary line.

Usage: loadgen_offline.py BASE_URL --requests N --concurrency C --prefix-tokens P --output-tokens O
"""
import argparse
import concurrent.futures
import json
import statistics
import sys
import time

import httpx
import openai
from transformers import AutoTokenizer


def synthetic_text(tokenizer, n_tokens, seed):
    words = ["sea", "stone", "river", "light", "cloud", "field", "north", "glass", "ember", "tide"]
    text, i = "", seed
    while len(tokenizer(text, add_special_tokens=False).input_ids) < n_tokens:
        text += words[i % len(words)] + " "
        i = i * 7 + 3
    ids = tokenizer(text, add_special_tokens=False).input_ids[:n_tokens]
    return tokenizer.decode(ids)


def one_request(client, model, tokenizer, prompt, output_tokens):
    start = time.perf_counter()
    first, last, itl, usage = None, None, [], None
    stream = client.completions.create(
        model=model, prompt=prompt, max_tokens=output_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    for chunk in stream:
        now = time.perf_counter()
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].text:
            if first is None:
                first = now
            elif last is not None:
                itl.append(now - last)
            last = now
    expected = len(tokenizer(prompt).input_ids)
    return {"ttft": (first or time.perf_counter()) - start, "itl": itl,
            "prompt_tokens": usage.prompt_tokens, "expected_prompt_tokens": expected,
            "output_tokens": usage.completion_tokens,
            "cached_tokens": usage.prompt_tokens_details.cached_tokens}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base_url")
    ap.add_argument("--requests", type=int, default=6)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--prefix-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=96)
    ap.add_argument("--output-tokens", type=int, default=8)
    a = ap.parse_args()
    model = httpx.get(a.base_url + "/v1/models", timeout=30).json()["data"][0]["id"]
    tokenizer = AutoTokenizer.from_pretrained(model)  # the id names a local folder, as for GuideLLM
    prefix = synthetic_text(tokenizer, a.prefix_tokens, 1)
    prompts = [prefix + synthetic_text(tokenizer, a.prompt_tokens - a.prefix_tokens, 100 + i)
               for i in range(a.requests)]
    client = openai.OpenAI(base_url=a.base_url + "/v1", api_key="none", max_retries=0, timeout=120)
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(a.concurrency) as pool:
        results = list(pool.map(lambda p: one_request(client, model, tokenizer, p, a.output_tokens),
                                prompts))
    duration = time.perf_counter() - start
    itl = [x for r in results for x in r["itl"]]
    print(json.dumps({
        "model": model, "requests": len(results), "duration_s": duration,
        "requests_per_s": len(results) / duration,
        "mean_ttft_s": statistics.mean(r["ttft"] for r in results),
        "mean_itl_s": statistics.mean(itl) if itl else None,
        "prompt_tokens": [r["prompt_tokens"] for r in results],
        "expected_prompt_tokens": [r["expected_prompt_tokens"] for r in results],
        "output_tokens": [r["output_tokens"] for r in results],
        "cached_tokens": [r["cached_tokens"] for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
