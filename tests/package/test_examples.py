"""The examples/ scripts run (short outputs) and print what they promise."""
import subprocess
import sys

import pytest

from conftest import ROOT, child_env


@pytest.mark.parametrize("script, args, expect", [
    ("offline_inference.py", ["--max-tokens", "4"], "Generated text:"),
    ("relay_inference.py", ["--max-tokens", "4"], "prefix tokens shared"),
    ("chat.py", ["--max-tokens", "4"], "relay prefix tokens:"),
    ("batch_eval.py", [], "accuracy"),
])
def test_example_runs(script, args, expect):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args],
                          capture_output=True, text=True, timeout=600, env=child_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expect in proc.stdout
