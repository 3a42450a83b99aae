#!/usr/bin/env python3
"""Where a serving process spends CPU while the engine steps: per-thread CPU time of
`relayllm serve` over streamed completions, from /proc/PID/task/*/stat.

    python3 bench/server_thread_cpu.py [--binary build/relayllm] [--requests 4] [--tokens 128]

Starts the server on a free loopback port (default model), sends --requests streamed
completions at once, and prints each thread's user+system CPU seconds during them, largest
first, with the wall time. The compute threads (the engine thread and the CPU backend's
pool) should hold nearly all of it; the HTTP and API threads only parse, tokenize and write
stream chunks.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def thread_cpu(pid):
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
        except FileNotFoundError:
            pass
    return out


def stream(port, tokens, i):
    body = json.dumps({"prompt": f"Tell me a long story number {i}.", "max_tokens": tokens,
                       "ignore_eos": True, "temperature": 0, "stream": True}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        for _ in r:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/relayllm"))
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    port = free_port()
    proc = subprocess.Popen([args.binary, "serve", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        before = thread_cpu(proc.pid)
        start = time.perf_counter()
        workers = [threading.Thread(target=stream, args=(port, args.tokens, i))
                   for i in range(args.requests)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - start
        after = thread_cpu(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rows = sorted(((after[t] - before.get(t, 0.0), t) for t in after), reverse=True)
    total = sum(d for d, _ in rows)
    print(f"{args.requests} streamed requests x {args.tokens} tokens: {wall:.1f} s wall, "
          f"{total:.2f} s CPU in {len(rows)} threads")
    print("| thread | CPU s | share |\n|---|---:|---:|")
    for d, t in rows:
        name = "main" if t == proc.pid else str(t)
        print(f"| {name} | {d:.2f} | {100 * d / max(total, 1e-9):.1f}% |")


if __name__ == "__main__":
    sys.exit(main())
