"""Shared fixtures of the package tests: the installed package (build/python-env, made by
scripts/install_package.sh), the CLI it is compared with, and LLMs on the default model."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# These tests compare outputs across batch shapes (the same seed in different batches, relay on
# and off, the API against the CLI): that needs bit-identical rows whatever the step's row
# count, so every row stays on the integer kernels (the default model's prefill otherwise
# switches to OpenBLAS sgemm from 16 rows, which agrees to fp32 rounding only and can flip a
# near-tied greedy token; README, The CPU backend). Set before any engine starts; the CLI
# subprocesses inherit it.
os.environ.setdefault("RELAYLLM_CPU_SGEMM_MIN_ROWS", "0")

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "data" / "hf_fixtures"
sys.path.insert(0, str(ROOT / "tests" / "python"))  # the tests' shared helpers

from byte_tokenizer import make_tokenizer  # noqa: E402

try:
    import relayllm  # noqa: F401
except ImportError as e:  # pragma: no cover - a setup problem, said plainly
    raise SystemExit(f"the relayllm package is not installed here ({e}); run scripts/install_package.sh")


@pytest.fixture(scope="session")
def cli():
    """The `relayllm` command the package installed (the CLI binary itself)."""
    command = Path(sys.prefix) / "bin" / "relayllm"
    assert command.exists(), f"{command}: the package did not install the relayllm command"
    return str(command)


def run_cli(cli, args, lines=None, tmp_path=None, check=True):
    cmd = [cli, "--log-level", "warn", "generate", *args]
    if lines is not None:
        path = tmp_path / "prompts.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        cmd += ["--prompts-file", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def llm():
    from relayllm import LLM

    return LLM(num_kv_blocks=512)


@pytest.fixture(scope="session")
def relay_llm():
    from relayllm import LLM

    return LLM(enable_relay_attention=True, num_kv_blocks=512)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """The llama3 fixture (random weights, a few layers) with a byte-level tokenizer."""
    folder = tmp_path_factory.mktemp("llama3_tiny")
    for f in (FIXTURES / "llama3").iterdir():
        shutil.copy(f, folder / f.name)
    config = json.loads((folder / "config.json").read_text())
    eos = config["eos_token_id"]
    make_tokenizer(folder, config["vocab_size"], config["bos_token_id"],
                   eos[0] if isinstance(eos, list) else eos)
    return folder


def child_env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env
