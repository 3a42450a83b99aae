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
Times are medians of CUDA-event-timed calls after warm-up; bytes are the same
floors the C++ bench uses; the copy bandwidth is measured here too.

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


def run_config(hq, hk, batch, prefix, own, reps, fi):
    g = hq // hk
    gen = torch.Generator(device="cuda").manual_seed(batch * 7 + prefix + own)
    q = torch.randn(batch, hq, 1, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    kp = torch.randn(1, hk, prefix, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    vp = torch.randn(1, hk, prefix, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    ko = torch.randn(batch, hk, own, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    vo = torch.randn(batch, hk, own, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    # Each request's full KV, contiguous: the prefix copied per request.
    kf = torch.cat([kp.expand(batch, -1, -1, -1), ko], dim=2).contiguous()
    vf = torch.cat([vp.expand(batch, -1, -1, -1), vo], dim=2).contiguous()

    def sdpa():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, kf, vf, enable_gqa=g > 1)

    note = ""
    try:
        sdpa()
    except RuntimeError:
        # This torch's flash path takes no GQA: give it the KV heads expanded.
        kf, vf = kf.repeat_interleave(g, dim=1), vf.repeat_interleave(g, dim=1)
        note = "kv heads expanded for flash"

        def sdpa():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, kf, vf)

    # Queries of KV head h: [B, g] rows -> the length dimension of one call.
    q_prefix = q.view(batch, hk, g, D).permute(1, 0, 2, 3).reshape(1, hk, batch * g, D)
    q_own = q.view(batch, hk, g, D)

    def relay():
        o1, l1 = flash(q_prefix, kp, vp)          # [1,hk,B*g,D], [1,hk,B*g]
        o2, l2 = flash(q_own, ko, vo)             # [B,hk,g,D], [B,hk,g]
        o1 = o1.view(hk, batch, g, D).permute(1, 0, 2, 3)
        l1 = l1.view(hk, batch, g).permute(1, 0, 2)
        m = torch.maximum(l1, l2)
        w1, w2 = torch.exp(l1 - m), torch.exp(l2 - m)
        o = (o1.float() * w1[..., None] + o2.float() * w2[..., None]) / (w1 + w2)[..., None]
        return o.to(torch.bfloat16).reshape(batch, hq, 1, D)

    ref = sdpa()
    err = ((relay().float() - ref.float()).norm() / ref.float().norm()).item()
    t_sdpa = timed(sdpa, reps)
    t_relay = timed(relay, reps)
    del kf, vf  # FlashInfer's paged copy of the same KV comes next
    fi_res, fi_note = fi.run(q, kp, vp, ko, vo, ref, timed, reps)
    note = "; ".join(n for n in (note, fi_note) if n)
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
            t_sdpa, t_relay, err, note, fi_res = run_config(hq, hk, r["batch"], r["prefix"], r["own"], reps, fi)
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
        "- bf16, head_dim 128, block size 16, one decode query per request, one layer's attention call; "
        "times are medians over 20-50 calls timed with CUDA events after warm-up.",
        "- bytes: the floor each method must move (KV read once: relay reads the prefix once plus each "
        "request's own tokens; paged and SDPA read prefix + own per request; plus q and out). "
        "`%bw` = (bytes / copy bandwidth) / time.",
        "- ours (relay, paged) are timed as CUDA graph replays of one attention call, as the engine's decode "
        "steps run it; in parentheses the same call launched op by op (host launch latency included).",
        "- relay = our kernels over one work list: the prefix group's items (wide kernel), then each request's own tokens (narrow kernel), which start from the prefix partials and write the output (a merge kernel only for outputs whose own tokens were split); "
        "paged = the same kernels with the prefix copied into each request's blocks; "
        "sdpa = torch SDPA (flash backend) over each request's contiguous full KV; "
        "torch relay = two `_scaled_dot_product_flash_attention` calls + merge in torch ops.",
        fi.header_line(),
        "- fi decode is held to the paged bytes, fi cascade to the relay bytes.",
        "- err = relative L2 difference relay vs paged (ours), torch relay vs sdpa, and fi decode / fi cascade "
        "vs sdpa (err fi); a FlashInfer error above 2e-2 is named in the note.",
        "",
        "| shape | B | prefix | own | relay ms (eager) | relay %bw | paged ms (eager) | paged %bw | relay/paged | "
        "sdpa ms | sdpa %bw | torch relay ms | torch relay %bw | fi decode ms | fi decode %bw | "
        "fi cascade ms | fi cascade %bw | err ours | err torch | err fi | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out_rows:
        lines.append(
            f"| {r['shape']} | {r['batch']} | {r['prefix']} | {r['own']} | "
            f"{r['relay_ms']:.4f} ({r.get('relay_eager_ms', float('nan')):.4f}) | "
            f"{100 * r['relay_frac']:.0f}% | {r['paged_ms']:.4f} ({r.get('paged_eager_ms', float('nan')):.4f}) | "
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
