"""Relay prefixes through the server: registered, listed, used by name and by the longest-prefix
rule, removed while requests that use them still run (they finish normally), and chat system
messages turned into prefixes automatically."""
import threading

import httpx
import pytest

from server_harness import run_server

# These tests compare greedy outputs of the same request computed in different row splits
# (a second request hits the prefix cache and prefills fewer rows; a relay prefix is computed
# apart). On the quantized kernels the sgemm prefill (16+ rows) and the integer kernels agree
# only to fp32 rounding, which can flip an 8-bit activation rounding and then a greedy token
# (README, The CPU backend). The plumbing under test needs bit-identical rows: the integer
# kernels for every row count (the CPU path before the sgemm switch).
BATCH_INVARIANT = {"RELAYLLM_CPU_SGEMM_MIN_ROWS": "0"}

# Ends with a newline: a prefix registered as text must tokenize to the same tokens at the
# start of the whole prompt (a trailing space would merge into the next word's token).
SYSTEM = "You are a terse assistant for a shipping company. Answer in one line.\n" * 2
MODEL = "tiny"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with run_server(tmp_path_factory.mktemp("relay"),
                    ["--served-model-name", MODEL, "--enable-relay-attention", "--block-size", "8"],
                    env=BATCH_INVARIANT) as s:
        yield s


def prefixes(server):
    r = httpx.get(server.url("/v1/relay_prefixes"))
    assert r.status_code == 200, r.text
    return {p["name"]: p for p in r.json()["data"]}


def complete(server, prompt, **extra):
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": True}
    body.update(extra)
    return httpx.post(server.url("/v1/completions"), json=body, timeout=120)


def test_register_use_and_remove_while_running(server):
    r = httpx.post(server.url("/v1/relay_prefixes"), json={"name": "ship", "text": SYSTEM})
    assert r.status_code == 200, r.text
    assert r.json()["num_tokens"] > 0
    assert "ship" in prefixes(server)
    dup = httpx.post(server.url("/v1/relay_prefixes"), json={"name": "ship", "text": "x"})
    assert dup.status_code == 409

    attached_before = server.metric("relayllm:relay_attached_requests_total")
    # Long streaming requests that use the prefix, by name and by the longest-prefix rule.
    results = {}

    def run(key, body):
        with httpx.stream("POST", server.url("/v1/completions"), json=body, timeout=120) as resp:
            results[key] = (resp.status_code, "".join(resp.iter_lines()))

    long_body = {"model": MODEL, "prompt": SYSTEM + "Where is my parcel?", "max_tokens": 200,
                 "ignore_eos": True, "stream": True, "temperature": 0}
    threads = [threading.Thread(target=run, args=("named", long_body | {"relay_prefix": "ship"})),
               threading.Thread(target=run, args=("matched", long_body))]
    for t in threads:
        t.start()
    # Remove once both are attached and running.
    for _ in range(600):
        p = prefixes(server).get("ship")
        if p and p["users"] >= 2:
            break
        threading.Event().wait(0.05)
    removed = httpx.delete(server.url("/v1/relay_prefixes/ship"))
    assert removed.status_code == 200, removed.text
    assert removed.json()["pending_users"] >= 1
    listed = prefixes(server)
    assert "ship" not in listed or listed["ship"]["removing"]
    # New requests can no longer name it.
    assert complete(server, SYSTEM + "Hi", relay_prefix="ship").status_code == 400
    for t in threads:
        t.join(timeout=120)
    for key in ("named", "matched"):
        status, text = results[key]
        assert status == 200 and text.endswith("data: [DONE]"), (key, text[-200:])
        assert '"finish_reason":"length"' in text
    assert server.metric("relayllm:relay_attached_requests_total") >= attached_before + 2
    assert "ship" not in prefixes(server)
    assert httpx.delete(server.url("/v1/relay_prefixes/ship")).status_code == 404


def test_relay_output_equals_plain_output(server):
    prompt = SYSTEM + "What does a pallet cost?"
    plain = complete(server, prompt).json()["choices"][0]["text"]
    ids = httpx.post(server.url("/tokenize"), json={"prompt": SYSTEM}).json()["tokens"]
    r = httpx.post(server.url("/v1/relay_prefixes"), json={"name": "ids", "token_ids": ids})
    assert r.status_code == 200, r.text
    attached = server.metric("relayllm:relay_attached_requests_total")
    relayed = complete(server, prompt, relay_prefix="ids").json()["choices"][0]["text"]
    assert server.metric("relayllm:relay_attached_requests_total") == attached + 1
    assert relayed == plain
    mismatch = complete(server, "Something else entirely", relay_prefix="ids")
    assert mismatch.status_code == 400 and "relay_prefix" in mismatch.json()["error"]["message"]
    assert complete(server, prompt, relay_prefix="nope").status_code == 400
    assert httpx.delete(server.url("/v1/relay_prefixes/ids")).status_code == 200


def test_bad_prefix_requests(server):
    assert httpx.post(server.url("/v1/relay_prefixes"), json={"name": "a b", "text": "x"}).status_code == 400
    assert httpx.post(server.url("/v1/relay_prefixes"), json={"name": "ok"}).status_code == 400
    assert httpx.post(server.url("/v1/relay_prefixes"),
                      json={"name": "ok", "token_ids": [1, "x"]}).status_code == 400
    assert httpx.get(server.url("/health")).status_code == 200


def test_chat_system_message_becomes_a_prefix(server):
    def chat(user):
        body = {"model": MODEL, "max_tokens": 6, "temperature": 0, "ignore_eos": True,
                "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]}
        r = httpx.post(server.url("/v1/chat/completions"), json=body, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()

    first = chat("Where is my parcel?")
    auto = [p for name, p in prefixes(server).items() if name.startswith("chat-system-")]
    assert len(auto) == 1 and auto[0]["auto"]
    attached = server.metric("relayllm:relay_attached_requests_total")
    shared = server.metric("relayllm:relay_shared_tokens_total")
    second = chat("Where is my parcel?")
    chat("And my other parcel?")
    assert server.metric("relayllm:relay_attached_requests_total") == attached + 2
    assert server.metric("relayllm:relay_shared_tokens_total") >= shared + 2 * auto[0]["num_tokens"]
    # The first request computed the whole prompt itself; attaching does not change the output.
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


def test_named_prefix_wins_over_a_longer_match(server):
    first_line = SYSTEM[:SYSTEM.index("\n") + 1]
    for name, text in (("short", first_line), ("long", SYSTEM)):
        r = httpx.post(server.url("/v1/relay_prefixes"), json={"name": name, "text": text})
        assert r.status_code == 200, r.text
    listed = prefixes(server)
    short_len, long_len = listed["short"]["num_tokens"], listed["long"]["num_tokens"]
    assert short_len < long_len
    prompt = SYSTEM + "Hi"
    try:
        for name, expected in ((None, long_len), ("short", short_len), ("long", long_len)):
            shared = server.metric("relayllm:relay_shared_tokens_total")
            r = complete(server, prompt, **({"relay_prefix": name} if name else {}))
            assert r.status_code == 200, r.text
            assert server.metric("relayllm:relay_shared_tokens_total") == shared + expected, name
        # Prompt logprobs need the whole prompt computed: naming a prefix with them is refused.
        r = complete(server, prompt, relay_prefix="short", prompt_logprobs=1)
        assert r.status_code == 400 and "prompt_logprobs" in r.json()["error"]["message"], r.text
    finally:
        for name in ("short", "long"):
            assert httpx.delete(server.url(f"/v1/relay_prefixes/{name}")).status_code == 200
    assert not {"short", "long"} & set(prefixes(server))


def usage_details(response):
    usage = response["usage"]
    return usage["prompt_tokens_details"]["cached_tokens"], usage["prompt_tokens_details"][
        "relay_prefix_tokens"], usage["prompt_tokens"]


def streamed_usage(server, path, body):
    """The usage of a streamed response's usage chunk (stream_options.include_usage)."""
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    usages = []
    with httpx.stream("POST", server.url(path), json=body, timeout=120) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                chunk = httpx.Response(200, content=line[6:]).json()
                if chunk.get("usage"):
                    usages.append(chunk)
    assert len(usages) == 1, usages
    return usages[0]


def test_usage_reports_relay_prefix_tokens(server):
    """usage.prompt_tokens_details carries relay_prefix_tokens beside cached_tokens, whole and
    streamed, on both APIs; a prompt without a prefix reports 0; n choices count a prompt once."""
    ids = httpx.post(server.url("/tokenize"), json={"prompt": SYSTEM}).json()["tokens"]
    assert httpx.post(server.url("/v1/relay_prefixes"),
                      json={"name": "usage", "token_ids": ids}).status_code == 200
    try:
        body = {"model": MODEL, "prompt": SYSTEM + "Where is my parcel?", "max_tokens": 3,
                "temperature": 0, "ignore_eos": True, "relay_prefix": "usage"}
        whole = httpx.post(server.url("/v1/completions"), json=body, timeout=120).json()
        cached, relay, prompt = usage_details(whole)
        assert relay == len(ids) and cached >= relay and prompt > relay, whole["usage"]
        # cached_tokens may grow on a repeat (the prefix cache); the relay part may not.
        s_cached, s_relay, s_prompt = usage_details(streamed_usage(server, "/v1/completions", body))
        assert (s_relay, s_prompt) == (relay, prompt) and s_cached >= s_relay
        # Two choices of one prompt: the prompt's tokens are counted once, as prompt_tokens are.
        # When both choices run in one step, the rest of their shared prompt may form an
        # automatic relay group inside the registered one, and every level counts: between the
        # prefix and the prompt, never twice the prefix.
        two = httpx.post(server.url("/v1/completions"), json=body | {"n": 2}, timeout=120).json()
        assert len(two["choices"]) == 2
        _, two_relay, two_prompt = usage_details(two)
        assert two_prompt == prompt and len(ids) <= two_relay < prompt, two["usage"]
        # Two prompts that both use the prefix: counted once each.
        both = httpx.post(server.url("/v1/completions"), timeout=120, json=body | {
            "prompt": [SYSTEM + "Where is my parcel?", SYSTEM + "What does a pallet cost?"]}).json()
        assert usage_details(both)[1] == 2 * len(ids), both["usage"]
        plain = httpx.post(server.url("/v1/completions"), timeout=120, json={
            "model": MODEL, "prompt": "No prefix here at all", "max_tokens": 2}).json()
        assert usage_details(plain)[1] == 0, plain["usage"]
    finally:
        assert httpx.delete(server.url("/v1/relay_prefixes/usage")).status_code == 200

    # Chat: the system part becomes an automatic prefix; a later request reads it through relay.
    system = "You answer questions about parcels and pallets, briefly.\n" * 2
    chat = {"model": MODEL, "max_tokens": 3, "temperature": 0, "ignore_eos": True,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": "Where is my parcel?"}]}
    first = httpx.post(server.url("/v1/chat/completions"), json=chat, timeout=120)
    assert first.status_code == 200, first.text
    auto = [p for name, p in prefixes(server).items()
            if p["auto"] and p["num_tokens"] > 0 and name.startswith("chat-system-")]
    lengths = {p["num_tokens"] for p in auto}
    whole = httpx.post(server.url("/v1/chat/completions"), json=chat, timeout=120).json()
    cached, relay, prompt = usage_details(whole)
    assert relay in lengths and cached >= relay and prompt > relay, (whole["usage"], lengths)
    s_cached, s_relay, s_prompt = usage_details(streamed_usage(server, "/v1/chat/completions", chat))
    assert (s_relay, s_prompt) == (relay, prompt) and s_cached >= s_relay
