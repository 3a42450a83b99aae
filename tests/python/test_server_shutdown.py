"""Graceful shutdown of a real `relayllm serve`: on SIGTERM/SIGINT the server stops accepting,
/health answers 503, requests in flight finish within --shutdown-timeout, the rest end with
finish_reason "abort" and a proper end (streams: a final chunk and [DONE]; whole responses: 200),
and the process exits 0. SIGHUP and SIGUSR1 are logged and ignored."""
import json
import signal
import threading
import time

import httpx
import pytest

from server_harness import run_server


def stream_events(server, body, out, ready):
    """Collects a completion stream's events; `ready` is set at the first event."""
    result = {"events": [], "error": None, "status": None}
    try:
        with httpx.stream("POST", server.url("/v1/completions"), json={**body, "stream": True},
                          timeout=120) as r:
            result["status"] = r.status_code
            for line in r.iter_lines():
                if line.startswith("data: "):
                    data = line[len("data: "):]
                    result["events"].append(data if data == "[DONE]" else json.loads(data))
                    ready.set()
    except httpx.HTTPError as e:
        result["error"] = repr(e)
    ready.set()
    out.append(result)


def whole(server, body, out):
    try:
        r = httpx.post(server.url("/v1/completions"), json=body, timeout=120)
        out.append({"status": r.status_code, "json": r.json()})
    except httpx.HTTPError as e:
        out.append({"error": repr(e)})


def finish_reasons(events):
    return [c["finish_reason"] for e in events if e != "[DONE]" for c in e["choices"]
            if c.get("finish_reason")]


def start_load(server, num_streams, num_whole, max_tokens):
    body = {"prompt": "Once upon a time", "max_tokens": max_tokens, "ignore_eos": True,
            "temperature": 0}
    streams, wholes, threads = [], [], []
    firsts = []
    for _ in range(num_streams):
        ready = threading.Event()
        firsts.append(ready)
        threads.append(threading.Thread(target=stream_events, args=(server, body, streams, ready)))
    for _ in range(num_whole):
        threads.append(threading.Thread(target=whole, args=(server, body, wholes)))
    for t in threads:
        t.start()
    for ready in firsts:
        assert ready.wait(60)
    time.sleep(0.3)  # the whole requests are in the engine too
    return streams, wholes, threads


def assert_ended_properly(streams, wholes, reason):
    for s in streams:
        assert s["error"] is None and s["status"] == 200, s
        assert s["events"][-1] == "[DONE]", s["events"][-3:]
        assert finish_reasons(s["events"]) == [reason], s["events"][-3:]
    for w in wholes:
        assert w.get("status") == 200, w
        assert w["json"]["choices"][0]["finish_reason"] == reason, w


def test_sigterm_lets_requests_in_flight_finish(tmp_path):
    with run_server(tmp_path, ["--shutdown-timeout", "60"]) as server:
        keep_alive = httpx.Client(timeout=10)
        assert keep_alive.get(server.url("/health")).status_code == 200
        # 400 tokens: the requests must still run when the signal comes (start_load returns
        # 0.3 s after their first tokens; 24 tokens of the tiny model could all be done by then,
        # and a server with nothing in flight rightly ends at once).
        streams, wholes, threads = start_load(server, 4, 2, 400)
        server.proc.send_signal(signal.SIGTERM)
        # An open connection sees 503 (and is closed after); new connections are refused.
        deadline = time.time() + 10
        r = keep_alive.get(server.url("/health"))
        while r.status_code == 200 and time.time() < deadline:
            time.sleep(0.05)
            r = keep_alive.get(server.url("/health"))
        assert r.status_code == 503 and "shutting down" in r.text
        assert r.headers.get("connection") == "close"
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url("/health"), timeout=5)
        for t in threads:
            t.join(120)
        assert_ended_properly(streams, wholes, "length")
        for s in streams:
            assert sum(len(c.get("text", "")) > 0 for e in s["events"] if e != "[DONE]"
                       for c in e["choices"]) > 0
        assert server.proc.wait(60) == 0, server.log()
        assert "shutdown complete" in server.log()


@pytest.mark.parametrize("how", ["timeout", "second_signal"])
def test_requests_past_the_timeout_end_with_abort(tmp_path, how):
    timeout = "0.5" if how == "timeout" else "600"
    with run_server(tmp_path, ["--shutdown-timeout", timeout, "--max-model-len", "4096",
                               "--num-kv-blocks", "2048"]) as server:
        streams, wholes, threads = start_load(server, 3, 2, 3000)
        started = time.time()
        server.proc.send_signal(signal.SIGINT if how == "timeout" else signal.SIGTERM)
        if how == "second_signal":
            time.sleep(0.5)
            server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert server.proc.wait(30) == 0, server.log()
        assert time.time() - started < 20
        assert_ended_properly(streams, wholes, "abort")


def test_sighup_and_sigusr1_do_not_stop_the_server(tmp_path):
    with run_server(tmp_path) as server:
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGHUP):
            server.proc.send_signal(sig)
            time.sleep(0.2)
            assert server.proc.poll() is None, server.log()
            r = httpx.post(server.url("/v1/completions"), json={"prompt": "hi", "max_tokens": 2},
                           timeout=60)
            assert r.status_code == 200
        log = server.log()
        assert "SIGHUP ignored" in log and "SIGUSR1 ignored" in log
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
