"""`relayllm serve` end to end with the official `openai` SDK, httpx and curl: completions and
chat (streamed == whole), usage, stop strings, n > 1, logprobs, tokenize, bad input with its
status and message, auth, overload, and a client that disconnects mid-stream."""
import json
import shutil
import subprocess
import threading
import time

import httpx
import pytest

openai = pytest.importorskip("openai")

from server_harness import run_server  # noqa: E402

# These tests compare greedy outputs of the same request computed in different row splits
# (a second request hits the prefix cache and prefills fewer rows; a relay prefix is computed
# apart). On the quantized kernels the sgemm prefill (16+ rows) and the integer kernels agree
# only to fp32 rounding, which can flip an 8-bit activation rounding and then a greedy token
# (README, The CPU backend). The plumbing under test needs bit-identical rows: the integer
# kernels for every row count (the CPU path before the sgemm switch).
BATCH_INVARIANT = {"RELAYLLM_CPU_SGEMM_MIN_ROWS": "0"}

PROMPT = "The quick brown fox"
MODEL = "tiny"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with run_server(tmp_path_factory.mktemp("srv"),
                    ["--served-model-name", MODEL, "--max-body-bytes", "65536"],
                    env=BATCH_INVARIANT) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url("/v1"), api_key="unused", max_retries=0, timeout=60)


def tokenize(server, text, add_special=True):
    r = httpx.post(server.url("/tokenize"), json={"prompt": text, "add_special_tokens": add_special})
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def detokenize(server, ids):
    r = httpx.post(server.url("/detokenize"), json={"tokens": ids})
    assert r.status_code == 200, r.text
    return r.json()["prompt"]


# Surely longer than --max-model-len 512 in tokens whatever the tokenizer merges: 700 distinct
# numbers, each at least one token.
LONG_PROMPT = " ".join(str(i) for i in range(700))


def stream_text(stream):
    text, finish, usage, chunks = "", None, None, []
    for chunk in stream:
        chunks.append(chunk)
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.text or ""
            finish = choice.finish_reason or finish
    return text, finish, usage, chunks


def test_health_and_models(server):
    assert httpx.get(server.url("/health")).status_code == 200
    models = httpx.get(server.url("/v1/models")).json()
    assert models["object"] == "list" and models["data"][0]["id"] == MODEL
    assert models["data"][0]["max_model_len"] == 512


def test_completion_streamed_equals_whole_and_usage(server, client):
    args = dict(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0,
                extra_body={"ignore_eos": True})
    whole = client.completions.create(**args)
    assert whole.object == "text_completion" and len(whole.choices) == 1
    n_prompt = len(tokenize(server, PROMPT))
    assert whole.usage.prompt_tokens == n_prompt
    assert whole.usage.completion_tokens == 24
    assert whole.usage.total_tokens == n_prompt + 24
    assert whole.choices[0].finish_reason == "length"
    text, finish, usage, chunks = stream_text(client.completions.create(
        stream=True, stream_options={"include_usage": True}, **args))
    assert text == whole.choices[0].text
    assert finish == "length"
    assert usage.prompt_tokens == n_prompt and usage.completion_tokens == 24
    assert len(chunks) > 2


def test_chat_streamed_equals_whole(server, client):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}]
    args = dict(model=MODEL, messages=messages, max_tokens=20, temperature=0,
                extra_body={"ignore_eos": True})
    whole = client.chat.completions.create(**args)
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.role == "assistant"
    rendered = "<|system|>\nBe brief.<|end|>\n<|user|>\nHi\nthere<|end|>\n<|assistant|>\n"
    # The template starts with {{ bos_token }}; like transformers' apply_chat_template, the
    # server tokenizes the rendered text without adding special tokens again, so the prompt is
    # bos (when the model has one) followed by the rest.
    served = httpx.post(server.url("/tokenize"), json={"messages": messages}).json()["tokens"]
    expected = tokenize(server, rendered, add_special=False)
    if served != expected:
        bos = detokenize(server, served[:1])
        assert tokenize(server, bos, add_special=False) == served[:1], bos
        expected = tokenize(server, bos + rendered, add_special=False)
    assert served == expected
    assert whole.usage.prompt_tokens == len(expected)
    assert whole.usage.completion_tokens == 20
    stream = client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **args)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 20


def test_stop_string(client):
    base = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=30, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    # Pick a stop string from the middle of the greedy output; the result must end right before it.
    candidates = [base[i:i + 2] for i in range(3, len(base) - 2)
                  if "\ufffd" not in base[i:i + 2] and base[i:i + 2].strip()]
    assert candidates, f"no usable stop string in {base!r}"
    stop = candidates[0]
    out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=30, temperature=0,
                                    stop=[stop], extra_body={"ignore_eos": True})
    assert out.choices[0].text == base[:base.index(stop)]
    assert out.choices[0].finish_reason == "stop"
    streamed, finish, _, _ = stream_text(client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=30, temperature=0, stop=[stop], stream=True,
        extra_body={"ignore_eos": True}))
    assert streamed == out.choices[0].text and finish == "stop"


def test_n_choices_seeded(client):
    args = dict(model=MODEL, prompt=[PROMPT, "Hello"], max_tokens=8, temperature=1.0, n=3, seed=7,
                extra_body={"ignore_eos": True})
    a = client.completions.create(**args)
    b = client.completions.create(**args)
    assert [c.index for c in a.choices] == list(range(6))
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len({c.text for c in a.choices[:3]}) > 1, "choices of one prompt should differ"
    assert a.usage.completion_tokens == 6 * 8
    chat = args | {"messages": [{"role": "user", "content": "hey"}]}
    chat.pop("prompt")
    c = httpx.post(str(client.base_url).rstrip("/") + "/chat/completions", json=chat, timeout=60).json()
    assert [ch["index"] for ch in c["choices"]] == [0, 1, 2]


def test_completion_logprobs_and_echo(server, client):
    out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0,
                                    logprobs=3, extra_body={"ignore_eos": True})
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert all(x <= 0 for x in lp.token_logprobs)
    assert all(1 <= len(t) <= 4 for t in lp.top_logprobs)
    assert "".join(lp.tokens) == out.choices[0].text
    assert lp.text_offset == sorted(lp.text_offset)
    # Greedy: the chosen token is the most likely one.
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen >= max(top.values()) - 1e-4
    echo = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0,
                                     logprobs=2, echo=True, extra_body={"ignore_eos": True})
    n_prompt = len(tokenize(server, PROMPT))
    elp = echo.choices[0].logprobs
    assert echo.choices[0].text == PROMPT + out.choices[0].text
    assert len(elp.tokens) == n_prompt + 6
    assert elp.token_logprobs[0] is None and all(x is not None for x in elp.token_logprobs[1:])
    assert elp.token_logprobs[n_prompt:] == pytest.approx(lp.token_logprobs, abs=1e-4)


def test_chat_logprobs(client):
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                         max_tokens=5, temperature=0, logprobs=True, top_logprobs=2,
                                         extra_body={"ignore_eos": True})
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens == 5
    assert all(len(e.top_logprobs) == 2 for e in content)
    assert "".join(e.token for e in content) == out.choices[0].message.content
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=5, temperature=0, logprobs=True, top_logprobs=2,
                                            stream=True, extra_body={"ignore_eos": True})
    streamed = [e for c in stream if c.choices and c.choices[0].logprobs
                for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]


def test_token_id_prompts_and_detokenize(server, client):
    ids = tokenize(server, PROMPT)
    a = client.completions.create(model=MODEL, prompt=ids, max_tokens=5, temperature=0,
                                  extra_body={"ignore_eos": True})
    b = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert a.choices[0].text == b.choices[0].text
    r = httpx.post(server.url("/detokenize"), json={"tokens": ids}).json()
    assert r["prompt"].endswith(PROMPT)


BAD_REQUESTS = [
    ("/v1/completions", b"{not json", 400, "malformed JSON"),
    ("/v1/completions", b"[1, 2]", 400, "JSON object"),
    ("/v1/completions", {"model": MODEL, "prompt": PROMPT, "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {"model": MODEL, "prompt": 5}, 400, "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": PROMPT, "n": "two"}, 400, "'n'"),
    ("/v1/completions", {"model": "nope", "prompt": PROMPT}, 404, "nope"),
    ("/v1/completions", {"model": MODEL, "prompt": PROMPT, "temperature": -0.5}, 400, "temperature"),
    ("/v1/completions", {"model": MODEL, "prompt": PROMPT, "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"model": MODEL, "prompt": PROMPT, "top_p": 1.5}, 400, "top_p"),
    ("/v1/completions", {"model": MODEL, "prompt": PROMPT, "n": 0}, 400, "'n'"),
    ("/v1/completions", {"model": MODEL, "prompt": PROMPT, "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"model": MODEL, "prompt": LONG_PROMPT}, 400, "512"),
    ("/v1/completions", {"model": MODEL, "prompt": [99999]}, 400, "vocabulary"),
    ("/v1/completions", {"model": MODEL, "prompt": PROMPT, "max_tokens": 600}, 400, "512"),
    ("/v1/chat/completions", {"model": MODEL, "messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                              "max_completion_tokens": 0}, 400, "max_tokens"),
    ("/v1/chat/completions", {"model": "other", "messages": [{"role": "user", "content": "x"}]}, 404, "other"),
    ("/v1/nothing", {}, 404, "no route"),
]


@pytest.mark.parametrize("path,body,status,needle", BAD_REQUESTS)
def test_bad_input(server, path, body, status, needle):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url(path), content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"], err
    assert err["type"] and err["code"] == status
    assert httpx.get(server.url("/health")).status_code == 200


def test_too_long_prompt_names_both_lengths(server):
    n = len(tokenize(server, LONG_PROMPT))
    assert n > 512
    r = httpx.post(server.url("/v1/completions"), json={"model": MODEL, "prompt": LONG_PROMPT})
    assert r.status_code == 400, r.text
    msg = r.json()["error"]["message"]
    assert f"{n} tokens" in msg and "512" in msg, msg
    ids = tokenize(server, PROMPT) * 200
    assert len(ids) > 512
    r = httpx.post(server.url("/v1/completions"), json={"model": MODEL, "prompt": ids})
    assert r.status_code == 400, r.text
    msg = r.json()["error"]["message"]
    assert f"{len(ids)} tokens" in msg and "512" in msg, msg
    chat = [{"role": "user", "content": LONG_PROMPT}]
    n = len(httpx.post(server.url("/tokenize"), json={"messages": chat}).json()["tokens"])
    r = httpx.post(server.url("/v1/chat/completions"), json={"model": MODEL, "messages": chat})
    assert r.status_code == 400, r.text
    msg = r.json()["error"]["message"]
    assert f"{n} tokens" in msg and "512" in msg, msg


def test_body_over_limit_with_curl(server, tmp_path):
    curl = shutil.which("curl")
    if not curl:
        pytest.fail("curl is needed (scripts/install_deps.sh installs it)")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"model": MODEL, "prompt": "z" * 100000}))
    out = subprocess.run([curl, "-s", "-w", "\n%{http_code}", "-H", "content-type: application/json",
                          "--data-binary", f"@{big}", server.url("/v1/completions")],
                         capture_output=True, text=True, timeout=60)
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "413", out.stdout
    assert "limit" in json.loads(body)["error"]["message"]
    ok = subprocess.run([curl, "-s", "-H", "content-type: application/json", "-d",
                         json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": 3}),
                         server.url("/v1/completions")], capture_output=True, text=True, timeout=60)
    assert json.loads(ok.stdout)["usage"]["completion_tokens"] >= 1


def test_curl_streaming(server):
    curl = shutil.which("curl")
    out = subprocess.run([curl, "-sN", "-H", "content-type: application/json", "-d",
                          json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "stream": True,
                                      "ignore_eos": True}),
                          server.url("/v1/completions")], capture_output=True, text=True, timeout=60)
    events = [line[6:] for line in out.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"


def test_disconnect_returns_every_block(server):
    name = "relayllm:num_free_kv_blocks"
    start_free = server.metric(name)
    aborted_before = server.metric("relayllm:request_success_total", finished_reason="abort")
    for body_path in ("/v1/completions", "/v1/chat/completions"):
        body = {"model": MODEL, "max_tokens": 300, "ignore_eos": True, "stream": True}
        if body_path == "/v1/completions":
            body["prompt"] = PROMPT * 8
        else:
            body["messages"] = [{"role": "user", "content": PROMPT * 8}]
        with httpx.stream("POST", server.url(body_path), json=body, timeout=60) as r:
            assert r.status_code == 200
            got = 0
            for line in r.iter_lines():
                if line.startswith("data: "):
                    got += 1
                if got >= 3:
                    break
        # Leaving the block closes the connection mid-stream.
    # A whole (non-streamed) request whose client gives up is aborted too.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url("/v1/completions"), timeout=1.0,
                   json={"model": MODEL, "prompt": PROMPT, "max_tokens": 450, "ignore_eos": True})
    deadline = time.time() + 30
    while time.time() < deadline:
        if (server.metric("relayllm:num_requests_running") == 0 and
                server.metric(name) == start_free):
            break
        time.sleep(0.2)
    assert server.metric(name) == start_free
    assert server.metric("relayllm:request_success_total", finished_reason="abort") >= aborted_before + 3
    assert httpx.get(server.url("/health")).status_code == 200


def test_metrics_shape(server):
    m = server.metrics()
    names = {k.split("{")[0] for k in m}
    for required in ["relayllm:num_requests_running", "relayllm:num_requests_waiting",
                     "relayllm:kv_cache_usage_perc", "relayllm:num_free_kv_blocks",
                     "relayllm:prefix_cache_queries_total", "relayllm:prefix_cache_hits_total",
                     "relayllm:relay_attached_requests_total", "relayllm:prompt_tokens_total",
                     "relayllm:generation_tokens_total", "relayllm:request_success_total",
                     "relayllm:time_to_first_token_seconds_bucket",
                     "relayllm:time_per_output_token_seconds_count",
                     "relayllm:e2e_request_latency_seconds_sum"]:
        assert required in names, required
    assert server.metric("relayllm:generation_tokens_total") > 0
    assert server.metric("relayllm:e2e_request_latency_seconds_count") > 0


def test_api_key(tmp_path):
    with run_server(tmp_path, env={"RELAYLLM_API_KEY": "sekret"}) as s:
        body = {"prompt": PROMPT, "max_tokens": 2}
        r = httpx.post(s.url("/v1/completions"), json=body)
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
        r = httpx.post(s.url("/v1/completions"), json=body, headers={"authorization": "Bearer sekreT"})
        assert r.status_code == 401
        assert httpx.get(s.url("/health")).status_code == 200
        c = openai.OpenAI(base_url=s.url("/v1"), api_key="sekret", max_retries=0)
        model = c.models.list().data[0].id
        assert c.completions.create(model=model, prompt=PROMPT, max_tokens=2).usage.completion_tokens >= 1
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url("/v1"), api_key="wrong", max_retries=0).models.list()


def test_overload_answers_429(tmp_path):
    with run_server(tmp_path, ["--max-num-seqs", "1", "--max-queue", "1"]) as s:
        body = {"prompt": PROMPT, "max_tokens": 300, "ignore_eos": True, "stream": True}
        # One stream runs, one waits in the queue; both get their headers at once (a client
        # blocks on them), so a short timeout keeps the test bounded if they do not.
        streams = [httpx.stream("POST", s.url("/v1/completions"), json=body, timeout=10) for _ in range(2)]
        responses = []
        try:
            for cm in streams:
                responses.append(cm.__enter__())
            assert [r.status_code for r in responses] == [200, 200]
            r = httpx.post(s.url("/v1/completions"), json={"prompt": PROMPT, "max_tokens": 2})
            assert r.status_code == 429, r.text
            assert "capacity" in r.json()["error"]["message"]
        finally:
            for cm in streams[:len(responses)]:
                cm.__exit__(None, None, None)
        deadline = time.time() + 30
        while s.metric("relayllm:num_requests_running") + s.metric("relayllm:num_requests_waiting") > 0:
            assert time.time() < deadline
            time.sleep(0.1)
        r = httpx.post(s.url("/v1/completions"), json={"prompt": PROMPT, "max_tokens": 2})
        assert r.status_code == 200, r.text


def test_health_503_while_loading(tmp_path):
    # A model folder that fails to load keeps /health at 503 until the process exits.
    bad = tmp_path / "bad_model"
    bad.mkdir()
    with run_server(tmp_path, ["--model", str(bad)], wait_ready=False) as s:
        codes = set()
        deadline = time.time() + 30
        while s.proc.poll() is None and time.time() < deadline:
            try:
                codes.add(httpx.get(s.url("/health"), timeout=1).status_code)
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        assert s.proc.wait(timeout=30) != 0
        assert 200 not in codes
        assert "cannot load the model" in s.log()
