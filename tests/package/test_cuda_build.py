"""The package carries the CUDA backend exactly when its build found nvcc (pip install . on a
machine with the CUDA toolkit): LLM(device="cuda") then reaches the CUDA backend (which, on a
machine without a GPU, says that no device is visible) instead of refusing the device."""
import os
import re
from pathlib import Path

import pytest

from relayllm import LLM


def cmake_cache() -> dict:
    env = os.environ.get("RELAYLLM_PYTHON_ENV")
    if not env:
        pytest.skip("RELAYLLM_PYTHON_ENV (the build's python-env) is not set")
    cache = Path(env).parent / "CMakeCache.txt"
    entries = {}
    for line in cache.read_text().splitlines():
        m = re.match(r"^([A-Za-z_0-9]+):[A-Z]+=(.*)$", line)
        if m:
            entries[m.group(1)] = m.group(2)
    return entries


def test_cuda_backend_present_exactly_when_nvcc_was_found():
    cache = cmake_cache()
    compiler = cache.get("CMAKE_CUDA_COMPILER", "")
    with_cuda = cache.get("RELAYLLM_ENABLE_CUDA") == "ON" and compiler and "NOTFOUND" not in compiler
    try:
        llm = LLM(device="cuda", num_kv_blocks=64)
    except ValueError as e:
        message = str(e)
        if with_cuda:
            assert "no CUDA backend" not in message, message
            assert "cuda" in message.lower(), message  # the backend's own reason (no device)
        else:
            assert "no CUDA backend" in message, message
        return
    assert with_cuda, "device='cuda' ran in a build without the CUDA backend"
    llm.shutdown()
