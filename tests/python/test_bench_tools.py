"""The end-to-end benchmark tools (bench/paper_e2e.sh, bench/serve_bench.py and their workload) run on
the CPU against a small random-weight model with the Llama-2 tokenizer: they must measure what they say
(exact system prompt length, the workload's output lengths, every request answered, relay and no
sharing giving the same tokens). Their numbers on a GPU are in bench/results."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sharegpt_like import MAX_LEN, MIN_LEN, VOCAB_HI, VOCAB_LO, workload  # noqa: E402
from server_harness import free_port  # noqa: E402

BIN = os.environ.get("RELAYLLM_BIN", "")
SHARED = Path(os.environ.get("RELAYLLM_SHARED_DIR", ROOT.parent / "shared"))
LLAMA2_TOKENIZER = SHARED / "tokenizers" / "llama2"


@pytest.fixture(scope="module")
def binary():
    if not BIN or not os.access(BIN, os.X_OK):
        pytest.fail("RELAYLLM_BIN must point at the built relayllm binary")
    return BIN


@pytest.fixture(scope="module")
def tiny_llama2(tmp_path_factory):
    """A two-layer Llama with the Llama-2 vocabulary (random weights via --load-format dummy)."""
    folder = tmp_path_factory.mktemp("tiny-llama2")
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 16, "hidden_act": "silu",
              "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "tie_word_embeddings": False, "vocab_size": 32000, "bos_token_id": 1, "eos_token_id": 2}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_workload_is_seeded_bounded_and_shaped_as_documented():
    requests = workload(2000, 7)
    assert requests == workload(2000, 7)
    assert requests != workload(2000, 8)
    users = [len(u) for u, _ in requests]
    outs = [o for _, o in requests]
    assert all(MIN_LEN <= n <= MAX_LEN for n in users + outs)
    assert all(VOCAB_LO <= t < VOCAB_HI for u, _ in requests for t in u)
    # Log-normal, medians 140 / 160, sigma 0.9 / 0.8: means near 210 / 220 (the docstring's numbers).
    assert 180 < sum(users) / len(users) < 240
    assert 190 < sum(outs) / len(outs) < 250
    assert 120 < sorted(users)[1000] < 160 and 140 < sorted(outs)[1000] < 180


@pytest.mark.parametrize("tokens", [17, 64, 300])
def test_sys_prompt_text_has_exactly_the_asked_token_count(binary, tmp_path, tokens):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "sys_prompt_text.py"), binary,
                          str(LLAMA2_TOKENIZER), str(tokens), str(tmp_path / "sys.txt")],
                         capture_output=True, text=True, check=True).stdout
    ids = json.loads(out)
    assert len(ids) == tokens and ids[0] == 1  # BOS first, as --sys-prompt-file registers it
    # The engine's tokenization of the written text gives the same ids (what relay will register).
    again = subprocess.run([binary, "tokenize", "--model", str(LLAMA2_TOKENIZER)],
                           input=json.dumps({"text": (tmp_path / "sys.txt").read_text()}),
                           capture_output=True, text=True, check=True).stdout
    assert json.loads(again)["ids"] == ids


def test_offline_script_runs_every_mode_with_equal_tokens(binary, tiny_llama2, tmp_path):
    env = {**os.environ, "REQUESTS": "6", "PREFIXES": "40", "RELAYLLM_DEFAULT_MODEL": "none"}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "paper_e2e.sh"), binary, str(LLAMA2_TOKENIZER),
                           str(tmp_path), "--model", str(tiny_llama2), "--load-format", "dummy",
                           "--device", "cpu"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "offline.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["none", "prefix-caching", "relay"]
    expected_out = sum(o for _, o in workload(6, 0))
    for row in rows:
        assert row["requests"] == 6 and row["prefix"] == 40
        assert row["generated_tokens"] == expected_out  # ignore_eos: the workload's lengths exactly
        assert row["same_tokens"] == 6, row  # fp32 CPU: relay and prefix caching change no token
    relay_log = (tmp_path / "offline_40_relay.log").read_text()
    assert "6 relay-attached requests" in relay_log


def test_serve_bench_measures_every_request_against_a_real_server(binary, tiny_llama2, tmp_path):
    port = free_port()
    sys_ids = subprocess.run([sys.executable, str(ROOT / "bench" / "sys_prompt_text.py"), binary,
                              str(LLAMA2_TOKENIZER), "32", str(tmp_path / "sys.txt")],
                             capture_output=True, text=True, check=True).stdout
    (tmp_path / "sys.json").write_text(sys_ids)
    server = subprocess.Popen(
        [binary, "serve", "--model", str(tiny_llama2), "--tokenizer", str(LLAMA2_TOKENIZER),
         "--load-format", "dummy", "--device", "cpu", "--port", str(port), "--enable-relay-attention",
         "--sys-prompt-file", str(tmp_path / "sys.txt")],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "w"))
    try:
        import httpx
        import time
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        result = tmp_path / "online.jsonl"
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / "serve_bench.py"), "--base-url",
                               f"http://127.0.0.1:{port}", "--sys-ids-file", str(tmp_path / "sys.json"),
                               "--request-rates", "20,inf", "--num-prompts", "5", "--label", "relay",
                               "--result-json", str(result)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(line) for line in result.read_text().splitlines()]
        assert [r["request_rate"] for r in rows] == [20.0, "inf"]
        for row in rows:
            assert row["completed"] == 5 and row["errors"] == [] and row["prefix_tokens"] == 32
            assert row["output_tokens_per_s"] * row["duration_s"] == pytest.approx(
                sum(o for _, o in workload(5, 0)), rel=1e-6)
            assert 0 < row["ttft_p50_ms"] <= row["ttft_p99_ms"] <= row["e2e_p99_ms"]
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert "relayllm:" in metrics
    finally:
        server.terminate()
        server.wait(timeout=60)
