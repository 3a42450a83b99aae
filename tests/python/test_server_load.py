"""Bounded load test: hundreds of concurrent streaming clients on loopback against the tiny
random model (RELAYLLM_DEFAULT_MODEL=none: this tests the server, not the model, and must stay
well under a minute on 2 cores). Every stream must complete, no KV block may leak, and the
server's resident memory must stay flat between two identical rounds."""
import asyncio
import json
import time

import httpx
import pytest

from server_harness import run_server

CLIENTS = 300
MAX_TOKENS = 32
# RSS growth allowed between the warm-up round and the measured round.
RSS_BOUND_BYTES = 32 << 20


async def one_client(client, url, i):
    body = {"model": "tiny", "prompt": f"client {i} says hello", "max_tokens": MAX_TOKENS,
            "ignore_eos": True, "stream": True, "temperature": 0.7, "seed": i}
    text, done = "", False
    async with client.stream("POST", url, json=body) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            assert "error" not in chunk, chunk
            text += chunk["choices"][0]["text"]
    assert done
    return text


async def round_of_clients(url):
    limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=CLIENTS + 10)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(*(one_client(client, url, i) for i in range(CLIENTS)))


def test_hundreds_of_concurrent_streams(tmp_path):
    with run_server(tmp_path, ["--served-model-name", "tiny", "--max-num-seqs", "128",
                               "--max-queue", "1024", "--http-threads", "2"],
                    env={"RELAYLLM_DEFAULT_MODEL": "none"}) as s:
        url = s.url("/v1/completions")
        free_start = s.metric("relayllm:num_free_kv_blocks")
        start = time.time()
        first = asyncio.run(round_of_clients(url))
        rss_warm = s.rss_bytes()
        second = asyncio.run(round_of_clients(url))
        elapsed = time.time() - start
        rss_after = s.rss_bytes()
        assert len(first) == len(second) == CLIENTS
        assert first == second, "seeded requests must give the same text under load"
        assert elapsed < 60, f"two rounds took {elapsed:.1f} s"
        assert s.metric("relayllm:num_requests_running") == 0
        assert s.metric("relayllm:num_free_kv_blocks") == free_start
        assert s.metric("relayllm:request_success_total", finished_reason="length") == 2 * CLIENTS
        assert rss_after - rss_warm < RSS_BOUND_BYTES, (rss_warm, rss_after)
        assert httpx.get(s.url("/health")).status_code == 200
