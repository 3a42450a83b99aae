#!/usr/bin/env python3
"""A synthetic chat workload shaped like ShareGPT, under one shared system prompt.

The paper's end-to-end runs (and vLLM's throughput benchmark) sample ShareGPT conversations; that data
set is not shipped here, so this generator draws the two lengths that matter for serving cost from a
fixed distribution instead, and writes them down:

- user turn: log-normal tokens, median 140, sigma 0.9 (mean about 210), clipped to [8, 1024];
- output:    log-normal tokens, median 160, sigma 0.8 (mean about 220), clipped to [8, 1024].

The means sit near those reported for vLLM's ShareGPT sampling with the Llama-2 tokenizer (about 230
prompt and 200 output tokens per request); the shape (long right tail) is the point, not a fit. Token
ids of the user turn are drawn uniformly from ordinary vocabulary ids: with dummy weights the content
does not matter, only the lengths. Every request is the system prompt's token ids (BOS first, as the
engine tokenizes a registered `--sys-prompt`) followed by its user turn, so relay attention, prefix
caching and no sharing see the same token sequences.

Usage as a module: `workload(n, seed)` -> list of (user_ids, output_len).
Usage as a script: sharegpt_like.py N SEED SYS_IDS_JSON > prompts.jsonl (one generate line per request).
"""
import json
import math
import random
import sys

USER_MEDIAN, USER_SIGMA = 140, 0.9
OUTPUT_MEDIAN, OUTPUT_SIGMA = 160, 0.8
MIN_LEN, MAX_LEN = 8, 1024
# Ids past the special and byte tokens of the Llama-2 vocabulary, below its end.
VOCAB_LO, VOCAB_HI = 1000, 31000


def _length(rng: random.Random, median: float, sigma: float) -> int:
    return max(MIN_LEN, min(MAX_LEN, int(round(rng.lognormvariate(math.log(median), sigma)))))


def workload(n: int, seed: int) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        user_len = _length(rng, USER_MEDIAN, USER_SIGMA)
        output_len = _length(rng, OUTPUT_MEDIAN, OUTPUT_SIGMA)
        out.append(([rng.randrange(VOCAB_LO, VOCAB_HI) for _ in range(user_len)], output_len))
    return out


def describe(requests: list[tuple[list[int], int]]) -> str:
    users = sorted(len(u) for u, _ in requests)
    outs = sorted(o for _, o in requests)
    med = lambda xs: xs[len(xs) // 2]
    return (f"{len(requests)} requests; user turn tokens mean {sum(users) / len(users):.0f} median "
            f"{med(users)} max {users[-1]}; output tokens mean {sum(outs) / len(outs):.0f} median "
            f"{med(outs)} max {outs[-1]}")


def main() -> None:
    n, seed, sys_ids = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    requests = workload(n, seed)
    for user_ids, output_len in requests:
        print(json.dumps({"prompt_token_ids": sys_ids + user_ids, "max_tokens": output_len,
                          "ignore_eos": True, "temperature": 0}))
    print(describe(requests), file=sys.stderr)


if __name__ == "__main__":
    main()
