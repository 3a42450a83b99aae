"""FlashInfer's multi-level cascade on the 3-level tree of bench/tree_attention_bench.cc.

One decode step's attention at the Llama-2-7B shape (32/32 heads, head_dim 128) or
Llama-3-8B (32/8): a system prompt under every row, DOCS documents each under PER_DOC
rows, each row's own tokens, in pages of 16 (NHD). MultiLevelCascadeAttentionWrapper
with 3 levels (level 0: the system pages with all rows, level 1: each document's pages
with its rows, level 2: each row's own pages), planned once, run() timed per layer
over L layers of their own KV (so the bytes come from device memory, not L2): the
median of the L calls' total over L, with CUDA events, like the other peers. The
output of row 0..3 is checked against fp32 softmax attention over the row's tokens.

Prints one JSON line per configuration (kind "fi_tree"); any failure (no flashinfer,
a failed JIT compile) prints a line with the reason instead and exits 0, so that a
benchmark session goes on.

Usage: python3 bench/flashinfer_tree.py [--shapes llama2-7b,llama3-8b] [--owns 101,164,228]
         [--system 1024] [--docs 8] [--per-doc 8] [--doc 2048] [--layers 8]
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flashinfer_peers import PAGE, WORKSPACE_BYTES, prepare_env, reason  # noqa: E402

D = 128
SHAPES = {"llama2-7b": (32, 32), "llama3-8b": (32, 8)}


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def run_config(fi, shape, hq, hk, a, own, layers):
    dev = "cuda"
    rows = a.docs * a.per_doc
    sp, dp, op = a.system // PAGE, a.doc // PAGE, -(-own // PAGE)
    pages = sp + a.docs * dp + rows * op
    gen = torch.Generator(device=dev).manual_seed(own)
    pools = []
    for _ in range(layers):
        k = torch.randn(pages, PAGE, hk, D, device=dev, dtype=torch.bfloat16, generator=gen)
        v = torch.randn(pages, PAGE, hk, D, device=dev, dtype=torch.bfloat16, generator=gen)
        pools.append((k, v))
    q = torch.randn(rows, hq, D, device=dev, dtype=torch.bfloat16, generator=gen)

    def i32(values):
        return torch.tensor(values, dtype=torch.int32, device=dev)

    def ar(n, start=0):
        return torch.arange(start, start + n, dtype=torch.int32, device=dev)

    own_last = own - (op - 1) * PAGE
    qo_indptr = [i32([0, rows]), ar(a.docs + 1) * a.per_doc, ar(rows + 1)]
    kv_indptr = [i32([0, sp]), ar(a.docs + 1) * dp, ar(rows + 1) * op]
    kv_indices = [ar(sp), ar(a.docs * dp, sp), ar(rows * op, sp + a.docs * dp)]
    last = [i32([PAGE]), torch.full((a.docs,), PAGE, dtype=torch.int32, device=dev),
            torch.full((rows,), own_last, dtype=torch.int32, device=dev)]
    w = fi.MultiLevelCascadeAttentionWrapper(3, torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=dev), "NHD")
    t0 = time.time()
    w.plan(qo_indptr, kv_indptr, kv_indices, last, hq, hk, D, PAGE, causal=False,
           pos_encoding_mode="NONE", sm_scale=1 / math.sqrt(D),
           q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
    out = w.run(q, pools[0])
    torch.cuda.synchronize()
    ready_s = time.time() - t0

    # Reference for the first rows: the row's system, document and own tokens.
    err_num = err_den = 0.0
    k0, v0 = pools[0]
    for r in range(4):
        d = r // a.per_doc
        idx = list(range(sp)) + list(range(sp + d * dp, sp + (d + 1) * dp)) + \
            list(range(sp + a.docs * dp + r * op, sp + a.docs * dp + (r + 1) * op))
        kk = k0[idx].reshape(-1, hk, D)[: a.system + a.doc + own].float()
        vv = v0[idx].reshape(-1, hk, D)[: a.system + a.doc + own].float()
        kk = kk.repeat_interleave(hq // hk, dim=1)
        vv = vv.repeat_interleave(hq // hk, dim=1)
        s = torch.einsum("hd,thd->ht", q[r].float(), kk) / math.sqrt(D)
        ref = torch.einsum("ht,thd->hd", torch.softmax(s, dim=-1), vv)
        err_num += (out[r].float() - ref).norm().item() ** 2
        err_den += ref.norm().item() ** 2
    err = math.sqrt(err_num / err_den)

    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for kv in pools:
        w.run(q, kv)
    times = []
    for _ in range(20):
        e0.record()
        for kv in pools:
            w.run(q, kv)
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) / layers)
    kv_token = 2.0 * hk * D * 2
    tokens = a.system + a.docs * a.doc + rows * own
    return {"kind": "fi_tree", "device": torch.cuda.get_device_name(), "shape": shape,
            "system": a.system, "docs": a.docs, "per_doc": a.per_doc, "doc": a.doc, "own": own,
            "rows": rows, "layers": layers, "fi_cascade_ms": round(median(times), 5),
            "mb": round((kv_token * tokens + 4.0 * rows * hq * D) / 1e6, 2), "err": float(f"{err:.2e}"),
            "plan_and_first_run_s": round(ready_s, 1), "flashinfer": getattr(fi, "__version__", "?")}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="llama2-7b,llama3-8b")
    p.add_argument("--owns", default="101,164,228")
    p.add_argument("--system", type=int, default=1024)
    p.add_argument("--docs", type=int, default=8)
    p.add_argument("--per-doc", type=int, default=8)
    p.add_argument("--doc", type=int, default=2048)
    p.add_argument("--layers", type=int, default=8)
    a = p.parse_args()
    prepare_env()
    try:
        import flashinfer as fi
    except Exception as e:  # noqa: BLE001 -- the peer is optional
        print(json.dumps({"kind": "fi_tree", "skipped": f"import flashinfer failed: {reason(e)}"}))
        return 0
    for shape in a.shapes.split(","):
        hq, hk = SHAPES[shape]
        for own in map(int, a.owns.split(",")):
            try:
                print(json.dumps(run_config(fi, shape, hq, hk, a, own, a.layers)), flush=True)
            except Exception as e:  # noqa: BLE001 -- reported, the session goes on
                print(json.dumps({"kind": "fi_tree", "shape": shape, "own": own, "failed": reason(e)}),
                      flush=True)
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
