#!/usr/bin/env python3
"""PyTorch peers of bench/attention_bench on the same decode configurations, and
the combined results table.

Peers (bf16, head_dim 128, one decode query per request):
  sdpa   -- torch SDPA restricted to the flash backend over each request's full
            KV (prefix + own, contiguous [B, Hkv, L, D]); GQA through enable_gqa.
  relay  -- relay written with PyTorch ops: the group's queries against the
            prefix in one flash call (queries of a KV head packed as the length
            dimension), each request's own KV in a second call, then the lse merge.
            torch.ops.aten._scaled_dot_product_flash_attention returns the lse.
  fi decode / fi cascade -- FlashInfer's paged batch decode and 2-level cascade
            attention (bench/flashinfer_peers.py), when `flashinfer` imports and its
            JIT compile works on this machine; otherwise their columns read n/a and
            the header says why.
Times are per call, as our kernels are timed: the calls of `layers` layers (the
number attention_bench chose for the configuration), each over its own copy of
the KV, captured in one CUDA graph; median replay time (CUDA events, after
warm-up) over the layers. A peer that cannot be captured is timed with its calls
launched back to back instead, and the note says so. Bytes are the same floors
the C++ bench uses; the copy bandwidth is measured here too.

Usage: attention_peers.py --ours ours.jsonl --out results.md [--quick] [--no-flashinfer]
"""
import argparse
import datetime
import json
import math
import statistics
import subprocess

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from flashinfer_peers import FlashInferPeers

D = 128


def timed(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def timed_layers(fns, reps):
    """Per-call time of fns (one call per layer) captured in one CUDA graph and
    replayed, as a decode step's graph runs every layer's attention; when capture
    fails, of the calls launched back to back. Returns (ms, how)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture stream, as torch asks
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for f in fns:
                f()
        graph.replay()
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 -- not capturable: fall back, say so
        torch.cuda.synchronize()
        first = str(e).strip().splitlines()[0][:80] if str(e).strip() else ""
        how = f"launched back to back, graph capture failed ({type(e).__name__}: {first})"
        return timed(lambda: [f() for f in fns], reps) / len(fns), how
    ms = timed(graph.replay, reps) / len(fns)
    del graph
    return ms, "graph"


def copy_bandwidth():
    n = 2 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda").fill_(7)
    b = torch.empty_like(a)
    ms = timed(lambda: b.copy_(a), 20)
    del a, b
    return 2 * n / (ms * 1e-3)


def flash(q, k, v):
    out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=1 / math.sqrt(D))
    return out[0], out[1]  # (o [B,H,L,D], lse [B,H,L] fp32)


def run_config(hq, hk, batch, prefix, own, reps, fi, layers):
    g = hq // hk
    gen = torch.Generator(device="cuda").manual_seed(batch * 7 + prefix + own)

    def rnd(*shape):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=gen)

    q = rnd(batch, hq, 1, D)
    # Per layer: the prefix [1,hk,P,D] and own tokens [B,hk,O,D] of K and V.
    kv = [(rnd(1, hk, prefix, D), rnd(1, hk, prefix, D), rnd(batch, hk, own, D), rnd(batch, hk, own, D))
          for _ in range(layers)]
    # Each request's full KV, contiguous: the prefix copied per request.
    full = [(torch.cat([kp.expand(batch, -1, -1, -1), ko], dim=2).contiguous(),
             torch.cat([vp.expand(batch, -1, -1, -1), vo], dim=2).contiguous()) for kp, vp, ko, vo in kv]

    note = ""
    gqa = g > 1

    def sdpa_on(kf, vf):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, kf, vf, enable_gqa=gqa)

    try:
        sdpa_on(*full[0])
    except RuntimeError:
        # This torch's flash path takes no GQA: give it the KV heads expanded.
        full = [(kf.repeat_interleave(g, dim=1), vf.repeat_interleave(g, dim=1)) for kf, vf in full]
        gqa = False
        note = "kv heads expanded for flash"

    # Queries of KV head h: [B, g] rows -> the length dimension of one call.
    q_prefix = q.view(batch, hk, g, D).permute(1, 0, 2, 3).reshape(1, hk, batch * g, D)
    q_own = q.view(batch, hk, g, D)

    def relay_on(kp, vp, ko, vo):
        o1, l1 = flash(q_prefix, kp, vp)          # [1,hk,B*g,D], [1,hk,B*g]
        o2, l2 = flash(q_own, ko, vo)             # [B,hk,g,D], [B,hk,g]
        o1 = o1.view(hk, batch, g, D).permute(1, 0, 2, 3)
        l1 = l1.view(hk, batch, g).permute(1, 0, 2)
        m = torch.maximum(l1, l2)
        w1, w2 = torch.exp(l1 - m), torch.exp(l2 - m)
        o = (o1.float() * w1[..., None] + o2.float() * w2[..., None]) / (w1 + w2)[..., None]
        return o.to(torch.bfloat16).reshape(batch, hq, 1, D)

    ref = sdpa_on(*full[0])
    err = ((relay_on(*kv[0]).float() - ref.float()).norm() / ref.float().norm()).item()
    t_sdpa, how_sdpa = timed_layers([lambda f=f: sdpa_on(*f) for f in full], reps)
    t_relay, how_relay = timed_layers([lambda x=x: relay_on(*x) for x in kv], reps)
    notes = [note] + [f"{name} {how}" for name, how in (("sdpa", how_sdpa), ("torch relay", how_relay))
                      if how != "graph"]
    del full  # FlashInfer's paged copy of the same KV comes next
    fi_res, fi_note = fi.run(q, kv, ref, timed_layers, reps)
    note = "; ".join(n for n in notes + [fi_note] if n)
    return t_sdpa, t_relay, err, note, fi_res


def frac(nbytes, bw, ms):
    return None if ms is None else nbytes / bw / (ms * 1e-3)


def fmt(x, spec):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def pct(x):
    return "n/a" if x is None else f"{100 * x:.0f}%"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--command", default="bench/attention_bench.sh")
    ap.add_argument("--no-flashinfer", action="store_true", help="leave the FlashInfer peers out (n/a)")
    args = ap.parse_args()

    ours = [json.loads(line) for line in open(args.ours) if line.strip().startswith("{")]
    copy = next(r for r in ours if r["kind"] == "copy")
    rows = [r for r in ours if r["kind"] == "ours"]
    bw = copy_bandwidth()
    print(f"torch copy bandwidth {bw / 1e9:.0f} GB/s; ours measured {copy['copy_bw_gbs']:.0f} GB/s", flush=True)
    bw_ours = copy["copy_bw_gbs"] * 1e9
    fi = FlashInferPeers(enabled=not args.no_flashinfer)
    heads = {"llama2-7b": (32, 32), "llama3-8b": (32, 8)}
    out_rows = []
    for r in rows:
        hq, hk = heads[r["shape"]]
        reps = 20 if r["batch"] * (r["prefix"] + r["own"]) > 200000 else 50
        try:
            t_sdpa, t_relay, err, note, fi_res = run_config(hq, hk, r["batch"], r["prefix"], r["own"], reps, fi,
                                                            r.get("layers", 1))
        except Exception as e:  # noqa: BLE001 -- a peer that cannot run is reported, not fatal
            print(f"peer failed on {r}: {e}", flush=True)
            t_sdpa = t_relay = err = float("nan")
            note = f"failed: {type(e).__name__}"
            fi_res = {"fi_decode_ms": None, "fi_decode_err": None, "fi_cascade_ms": None, "fi_cascade_err": None}
        r["sdpa_note"] = note
        torch.cuda.empty_cache()
        r.update(sdpa_ms=t_sdpa, torch_relay_ms=t_relay, torch_relay_err=err)
        r["sdpa_frac"] = r["paged_bytes"] / bw_ours / (t_sdpa * 1e-3)
        r["torch_relay_frac"] = r["relay_bytes"] / bw_ours / (t_relay * 1e-3)
        r.update(fi_res)
        r["fi_decode_frac"] = frac(r["paged_bytes"], bw_ours, r["fi_decode_ms"])
        r["fi_cascade_frac"] = frac(r["relay_bytes"], bw_ours, r["fi_cascade_ms"])
        out_rows.append(r)
        print(json.dumps(r), flush=True)

    gpu = torch.cuda.get_device_name()
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        smi = gpu
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Decode attention: relay vs paged vs PyTorch peers",
        "",
        f"- command: `{args.command}`",
        f"- device: {smi}; torch {torch.__version__}",
        f"- date: {date}",
        f"- copy bandwidth (device-to-device copy, read + write bytes): {copy['copy_bw_gbs']:.0f} GB/s "
        f"(cudaMemcpy in the C++ bench), {bw / 1e9:.0f} GB/s (torch copy_)",
        "- bf16, head_dim 128, block size 16, one decode query per request. Times are per layer: every method's "
        "calls for `layers` layers (column L; each layer over its own copy of the KV, so that its bytes come "
        "from device memory, not L2) captured in one CUDA graph, as a decode step's graph holds every layer's "
        "attention; median over 20-50 replays (CUDA events, after warm-up) divided by L.",
        "- bytes: the floor each method must move (KV read once: relay reads the prefix once plus each "
        "request's own tokens; paged and SDPA read prefix + own per request; plus q and out). "
        "`%bw` = (bytes / copy bandwidth) / time.",
        "- ours (relay, paged): in parentheses one call replayed alone as a graph (the graph launch's latency, "
        "paid once per decode step by the engine, included) / the call launched op by op (the host's launch "
        "latency of each kernel included).",
        "- relay = our kernel over one work list in one launch: the prefix group's items (wide units, all rows "
        "of the group against each KV tile) and each request's own tokens (narrow items, four to a unit); "
        "outputs with several partials are merged at the end of the launch by the CTAs out of units "
        "(at B=1 the prefix is joined to the request's own tokens: one range over both block tables); "
        "paged = the same kernel with the prefix copied into each request's blocks; "
        "sdpa = torch SDPA (flash backend) over each request's contiguous full KV; "
        "torch relay = two `_scaled_dot_product_flash_attention` calls + merge in torch ops.",
        fi.header_line(),
        "- fi decode is held to the paged bytes, fi cascade to the relay bytes.",
        "- err = relative L2 difference relay vs paged (ours), torch relay vs sdpa, and fi decode / fi cascade "
        "vs sdpa (err fi); a FlashInfer error above 2e-2 is named in the note.",
        "",
        "| shape | B | prefix | own | L | relay ms (single / eager) | relay %bw | paged ms (single / eager) | paged %bw | relay/paged | "
        "sdpa ms | sdpa %bw | torch relay ms | torch relay %bw | fi decode ms | fi decode %bw | "
        "fi cascade ms | fi cascade %bw | err ours | err torch | err fi | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out_rows:
        lines.append(
            f"| {r['shape']} | {r['batch']} | {r['prefix']} | {r['own']} | {r.get('layers', 1)} | "
            f"{r['relay_ms']:.4f} ({r.get('relay_single_ms', float('nan')):.4f} / "
            f"{r.get('relay_eager_ms', float('nan')):.4f}) | {100 * r['relay_frac']:.0f}% | "
            f"{r['paged_ms']:.4f} ({r.get('paged_single_ms', float('nan')):.4f} / "
            f"{r.get('paged_eager_ms', float('nan')):.4f}) | "
            f"{100 * r['paged_frac']:.0f}% | "
            f"{r['relay_ms'] / r['paged_ms']:.2f} | {r['sdpa_ms']:.4f} | {100 * r['sdpa_frac']:.0f}% | "
            f"{r['torch_relay_ms']:.4f} | {100 * r['torch_relay_frac']:.0f}% | "
            f"{fmt(r['fi_decode_ms'], '.4f')} | {pct(r['fi_decode_frac'])} | "
            f"{fmt(r['fi_cascade_ms'], '.4f')} | {pct(r['fi_cascade_frac'])} | "
            f"{r['relay_vs_paged_err']:.1e} | {r['torch_relay_err']:.1e} | "
            f"{fmt(r['fi_decode_err'], '.1e')} / {fmt(r['fi_cascade_err'], '.1e')} | {r['sdpa_note']} |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
