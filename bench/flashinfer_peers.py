"""FlashInfer peers for bench/attention_peers.py, on the same decode configurations.

Run alone (`python3 bench/flashinfer_peers.py`) it only compiles the kernels into the
JIT cache and checks them on a tiny case, so that the benchmark itself starts warm.

  fi decode  -- BatchDecodeWithPagedKVCacheWrapper over each request's full KV
                (prefix + own) in a paged cache (page size 16, NHD), the prefix
                copied into every request's pages like our paged baseline.
  fi cascade -- MultiLevelCascadeAttentionWrapper with 2 levels: level 0 the shared
                prefix pages with all B queries attached, level 1 each request's own
                pages; FlashInfer merges the two states.

FlashInfer compiles its kernels on first use with the machine's nvcc. Nothing here
may stop the benchmark: an import failure, a failed compile or a call that raises
turns the affected columns into "n/a" and the reason goes into the results header.
The environment is set before the import because FlashInfer reads its cache
location when the module loads.
"""
import math
import os
import re
import subprocess
import tempfile
import time

import torch

PAGE = 16
D = 128
WORKSPACE_BYTES = 128 << 20
ERR_NOTE = 2e-2


def reason(e):
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def prepare_env():
    """JIT cache in the temp folder, compile jobs = CPUs, never fetch from the network
    (the GPU host is offline: a missing artifact must fail at once, not retry)."""
    base = os.path.join(tempfile.gettempdir(), "relayllm-flashinfer")
    os.environ.setdefault("FLASHINFER_WORKSPACE_BASE", base)
    os.environ.setdefault("TVM_FFI_CACHE_DIR", os.path.join(base, "tvm-ffi"))
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    os.environ.setdefault("FLASHINFER_NO_DOWNLOAD", "1")
    return base


def nvcc_version():
    """The nvcc FlashInfer compiles with (its own lookup: CUDA_HOME, PATH, /usr/local/cuda)."""
    try:
        from flashinfer.jit.cpp_ext import get_cuda_path
        home = get_cuda_path()
    except Exception:  # noqa: BLE001 -- internal helper; fall back to its documented order
        home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    nvcc = os.path.join(home, "bin", "nvcc")
    try:
        txt = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({reason(e)})", nvcc
    m = re.search(r"release ([0-9.]+), V([0-9.]+)", txt)
    return (m.group(2) if m else "unknown"), nvcc


def to_pages(n, *parts):
    """Token runs [1 or n, hk, L_i, D], laid end to end per sequence, as
    [n * ceil(sum L_i / PAGE), PAGE, hk, D] pages (NHD); the last page zero-padded."""
    hk, d = parts[0].shape[1], parts[0].shape[3]
    length = sum(p.shape[2] for p in parts)
    pages = -(-length // PAGE)
    out = torch.zeros(n, pages * PAGE, hk, d, dtype=parts[0].dtype, device=parts[0].device)
    at = 0
    for p in parts:
        out[:, at:at + p.shape[2]] = p.transpose(1, 2)  # a [1, ...] run is broadcast to every sequence
        at += p.shape[2]
    return out.view(n * pages, PAGE, hk, d)


def last_page_len(length):
    return length - (-(-length // PAGE) - 1) * PAGE


def rel_err(out, ref):
    out = out.float().reshape(ref.shape)
    ref = ref.float()
    return ((out - ref).norm() / ref.norm()).item()


class FlashInferPeers:
    KINDS = ("decode", "cascade")

    def __init__(self, enabled=True):
        self.fi = None
        self.version = None
        self.skip_reason = None  # the whole peer: not asked for, or import failed
        self.kind_failure = {k: None for k in self.KINDS}  # failed before ever running
        self.kind_ok = {k: False for k in self.KINDS}
        self.compile_s = {}
        self.backend = {}
        self.nvcc = None
        if not enabled:
            self.skip_reason = "not run (--no-flashinfer)"
            return
        self.cache = prepare_env()
        try:
            import flashinfer
        except Exception as e:  # noqa: BLE001 -- a peer that cannot load is reported, not fatal
            self.skip_reason = f"not run: `import flashinfer` failed: {reason(e)}"
            print(f"FlashInfer: {self.skip_reason}", flush=True)
            return
        self.fi = flashinfer
        self.version = getattr(flashinfer, "__version__", "unknown")
        self.nvcc, nvcc_path = nvcc_version()
        print(f"FlashInfer {self.version}; JIT with {nvcc_path} ({self.nvcc}), MAX_JOBS={os.environ['MAX_JOBS']}, "
              f"cache under {os.environ['FLASHINFER_WORKSPACE_BASE']}", flush=True)

    # -- per configuration -------------------------------------------------------

    def run(self, q, kv, ref, timed_layers, reps):
        """Times both peers on one configuration. q [B,hq,1,D]; kv: per layer
        (kp, vp [1,hk,P,D], ko, vo [B,hk,O,D]); ref [B,hq,1,D] (layer 0);
        timed_layers(fns, reps) -> (ms per call, how). Never raises; returns
        ms/err per kind (None = n/a) and a note."""
        res = {"fi_decode_ms": None, "fi_decode_err": None, "fi_cascade_ms": None, "fi_cascade_err": None}
        notes = []
        if self.fi is None:
            return res, ""
        for kind, build in (("decode", self._decode), ("cascade", self._cascade)):
            if self.kind_failure[kind] is not None:
                continue
            first = not self.kind_ok[kind]
            try:
                if first:
                    print(f"compiling FlashInfer kernels ({kind}; first use, may take minutes)...", flush=True)
                t0 = time.time()
                fns = build(q, kv)  # plan outside the timing; one call per layer
                out = fns[0]()  # warm-up: the first run compiles what plan did not (the merge)
                torch.cuda.synchronize()
                if first:
                    self.compile_s[kind] = time.time() - t0
                    print(f"FlashInfer {kind} ready in {self.compile_s[kind]:.0f} s", flush=True)
                    self.kind_ok[kind] = True
                err = rel_err(out, ref)
                del out
                ms, how = timed_layers(fns, reps)
                res[f"fi_{kind}_ms"], res[f"fi_{kind}_err"] = ms, err
                if how != "graph":
                    notes.append(f"fi {kind} {how}")
                if err > ERR_NOTE:
                    notes.append(f"fi {kind} err {err:.1e}")
            except Exception as e:  # noqa: BLE001 -- reported in the table, the run goes on
                why = reason(e)
                print(f"FlashInfer {kind} failed: {why}", flush=True)
                if not self.kind_ok[kind]:
                    self.kind_failure[kind] = why  # a compile/plan failure would repeat: stop trying
                else:
                    notes.append(f"fi {kind}: {why}")
            finally:
                fns = out = None  # drops the wrapper and its page pools before the next one
                torch.cuda.empty_cache()
        return res, "; ".join(notes)

    def _workspace(self, device):
        return torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=device)

    def _decode(self, q, kv):
        batch, hq = q.shape[0], q.shape[1]
        kp, _, ko, _ = kv[0]
        hk, prefix, own = kp.shape[1], kp.shape[2], ko.shape[2]
        length = prefix + own
        dev = q.device
        # Each request's pages hold its own copy of the prefix, then its own tokens.
        pools = [(to_pages(batch, kp, ko), to_pages(batch, vp, vo)) for kp, vp, ko, vo in kv]
        pages = -(-length // PAGE)
        indptr = torch.arange(batch + 1, dtype=torch.int32, device=dev) * pages
        indices = torch.arange(batch * pages, dtype=torch.int32, device=dev)
        last = torch.full((batch,), last_page_len(length), dtype=torch.int32, device=dev)
        w = self.fi.BatchDecodeWithPagedKVCacheWrapper(self._workspace(dev), "NHD")
        w.plan(indptr, indices, last, hq, hk, D, PAGE, pos_encoding_mode="NONE",
               q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16, sm_scale=1 / math.sqrt(D))
        self.backend["decode"] = "CUDA-core decode kernel" if not w.use_tensor_cores else "tensor-core decode"
        q3 = q.reshape(batch, hq, D)
        return [lambda pool=pool: w.run(q3, pool) for pool in pools]

    def _cascade(self, q, kv):
        batch, hq = q.shape[0], q.shape[1]
        kp, _, ko, _ = kv[0]
        hk, prefix, own = kp.shape[1], kp.shape[2], ko.shape[2]
        if prefix == 0 or own == 0:
            raise ValueError(f"cascade needs a prefix and own tokens (prefix {prefix}, own {own})")
        dev = q.device
        # One page pool per layer: the prefix pages once, then every request's own pages.
        pools = [(torch.cat([to_pages(1, kp), to_pages(batch, ko)]), torch.cat([to_pages(1, vp), to_pages(batch, vo)]))
                 for kp, vp, ko, vo in kv]
        pp, po = -(-prefix // PAGE), -(-own // PAGE)

        def i32(values):
            return torch.tensor(values, dtype=torch.int32, device=dev)

        qo_indptr = [i32([0, batch]), torch.arange(batch + 1, dtype=torch.int32, device=dev)]
        kv_indptr = [i32([0, pp]), torch.arange(batch + 1, dtype=torch.int32, device=dev) * po]
        kv_indices = [torch.arange(pp, dtype=torch.int32, device=dev),
                      pp + torch.arange(batch * po, dtype=torch.int32, device=dev)]
        last = [i32([last_page_len(prefix)]),
                torch.full((batch,), last_page_len(own), dtype=torch.int32, device=dev)]
        w = self.fi.MultiLevelCascadeAttentionWrapper(2, self._workspace(dev), "NHD")
        w.plan(qo_indptr, kv_indptr, kv_indices, last, hq, hk, D, PAGE, causal=False,
               pos_encoding_mode="NONE", sm_scale=1 / math.sqrt(D),
               q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
        levels = getattr(w, "_batch_prefill_wrappers", [])
        if levels:
            self.backend["cascade"] = f"prefill kernels, backend {getattr(levels[0], '_backend', '?')}"
        q3 = q.reshape(batch, hq, D)
        return [lambda pool=pool: w.run(q3, pool) for pool in pools]

    # -- results header ------------------------------------------------------------

    def header_line(self):
        if self.fi is None:
            return f"- FlashInfer: {self.skip_reason}; fi columns are n/a."
        parts = []
        for kind, api in (("decode", "BatchDecodeWithPagedKVCacheWrapper over each request's prefix copy + own "
                                     "tokens in pages of 16 (NHD)"),
                          ("cascade", "MultiLevelCascadeAttentionWrapper, 2 levels: the shared prefix pages with "
                                      "all B queries, then each request's own pages, states merged")):
            if self.kind_failure[kind] is not None:
                parts.append(f"fi {kind} failed, n/a: {self.kind_failure[kind]}")
            elif self.kind_ok[kind]:
                extra = f"; {self.backend[kind]}" if kind in self.backend else ""
                parts.append(f"fi {kind} = {api}{extra}; first plan + run (JIT compile or cache load) {self.compile_s[kind]:.0f} s")
            else:
                parts.append(f"fi {kind}: not run on any configuration")
        return (f"- FlashInfer {self.version} (`flashinfer-python`), kernels JIT-compiled on the host with "
                f"nvcc {self.nvcc}; plan outside the timing (one plan for all layers), run() timed like the other peers. "
                + "; ".join(parts) + ".")


def warm_up():
    """Compiles (or loads from the cache) every kernel the peers use, on a tiny
    configuration, so a later benchmark run on the same machine starts warm."""
    import torch.nn.functional as F
    fi = FlashInferPeers()
    if fi.fi is None:
        print(fi.header_line())
        return 1
    gen = torch.Generator(device="cuda").manual_seed(0)
    batch, hq, hk, prefix, own = 2, 32, 8, 40, 24  # partial last pages on purpose

    def rnd(*shape):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=gen)

    q, kp, vp, ko, vo = rnd(batch, hq, 1, D), rnd(1, hk, prefix, D), rnd(1, hk, prefix, D), \
        rnd(batch, hk, own, D), rnd(batch, hk, own, D)
    kf = torch.cat([kp.expand(batch, -1, -1, -1), ko], dim=2).repeat_interleave(hq // hk, dim=1)
    vf = torch.cat([vp.expand(batch, -1, -1, -1), vo], dim=2).repeat_interleave(hq // hk, dim=1)
    ref = F.scaled_dot_product_attention(q.float(), kf.float(), vf.float()).to(torch.bfloat16)

    def once(fns, reps):
        for f in fns:
            f()
        return float("nan"), "graph"

    res, note = fi.run(q, [(kp, vp, ko, vo)], ref, once, 1)
    print(fi.header_line())
    print(f"err fi decode {res['fi_decode_err']}, fi cascade {res['fi_cascade_err']} {note}".rstrip())
    ok = all(res[f"fi_{k}_err"] is not None and res[f"fi_{k}_err"] <= ERR_NOTE for k in FlashInferPeers.KINDS)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(warm_up())
