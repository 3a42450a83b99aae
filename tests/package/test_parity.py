"""The package runs the same engine as `relayllm generate`: on the same inputs it gives the
same tokens, text and logprobs; relay on equals relay off through the API; chat equals the
CLI's chat-formatted prompt."""
import math

import pytest

from conftest import run_cli
from relayllm import LLM, SamplingParams

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "1, 2, 3,"]
LOGPROB_FIELDS = {"max_tokens": 6, "logprobs": 2, "prompt_logprobs": 1}


def assert_logprobs_equal(api, cli):
    assert len(api) == len(cli)
    for api_entry, cli_entry in zip(api, cli):
        if cli_entry is None:
            assert api_entry is None
            continue
        assert {str(k) for k in api_entry} == set(cli_entry)
        for token, lp in api_entry.items():
            assert math.isclose(lp.logprob, cli_entry[str(token)], rel_tol=1e-6, abs_tol=1e-6)


def test_generate_equals_cli(llm, cli, tmp_path):
    ids_prompt = llm.get_tokenizer().encode("The sea is")
    lines = [dict(prompt=p, **LOGPROB_FIELDS) for p in PROMPTS]
    lines.append(dict(prompt_token_ids=ids_prompt, **LOGPROB_FIELDS))
    lines.append({"prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0.9, "top_p": 0.9,
                  "seed": 7, "stop": ["\n"]})
    expected = run_cli(cli, ["--num-kv-blocks", "512"], lines, tmp_path)

    sp = SamplingParams(**LOGPROB_FIELDS)
    sampled = SamplingParams(max_tokens=8, temperature=0.9, top_p=0.9, seed=7, stop=["\n"])
    outputs = llm.generate(PROMPTS + [{"prompt_token_ids": ids_prompt}, PROMPTS[0]],
                           [sp, sp, sp, sp, sampled], use_tqdm=False)
    assert len(outputs) == len(expected)
    for out, exp in zip(outputs, expected):
        c = out.outputs[0]
        assert out.prompt_token_ids == exp["prompt_token_ids"]
        assert c.token_ids == exp["token_ids"]
        assert c.text == exp["text"]
        assert c.finish_reason == exp["finish_reason"]
        assert c.stop_reason == exp["stop_reason"]
        assert out.num_cached_tokens == exp["num_cached_tokens"]
        assert out.relay_prefix_tokens == exp["relay_prefix_tokens"]
        if "logprobs" in exp:
            assert_logprobs_equal(c.logprobs, exp["logprobs"])
            assert_logprobs_equal(out.prompt_logprobs, exp["prompt_logprobs"])
            assert math.isclose(c.cumulative_logprob,
                                sum(c.logprobs[i][t].logprob for i, t in enumerate(c.token_ids)),
                                rel_tol=1e-9)


def test_relay_on_equals_off():
    # On the fp32 reference path relay on equals relay off to fp32 rounding. The default
    # (quantized) kernels round activations to 8 bits, where the last-bit differences of
    # relay's summation order can flip a rounding step, so they are not compared to 1e-3.
    sp = SamplingParams(max_tokens=8, logprobs=3)
    off = LLM(dtype="float32", num_kv_blocks=512).generate(PROMPTS, sp, use_tqdm=False)
    on = LLM(dtype="float32", enable_relay_attention=True,
             num_kv_blocks=512).generate(PROMPTS, sp, use_tqdm=False)
    for a, b in zip(off, on):
        assert b.relay_prefix_tokens > 0 and a.relay_prefix_tokens == 0
        assert a.prompt_token_ids == b.prompt_token_ids
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        for pa, pb in zip(a.outputs[0].logprobs, b.outputs[0].logprobs):
            assert pa.keys() == pb.keys()
            for t in pa:
                assert abs(pa[t].logprob - pb[t].logprob) < 1e-3


def test_relay_on_equals_cli_relay(relay_llm, cli, tmp_path):
    expected = run_cli(cli, ["--enable-relay-attention", "--num-kv-blocks", "512", "--max-tokens", "8",
                             *sum((["--prompt", p] for p in PROMPTS), [])])
    outputs = relay_llm.generate(PROMPTS, SamplingParams(max_tokens=8), use_tqdm=False)
    for out, exp in zip(outputs, expected):
        assert out.outputs[0].token_ids == exp["token_ids"]
        assert out.relay_prefix_tokens == exp["relay_prefix_tokens"] > 0


def test_chat_equals_generate_with_default_system_prompt(llm):
    """The default model formats text prompts as a chat turn under "You are a helpful
    assistant."; chat() with that conversation runs the same tokens."""
    sp = SamplingParams(max_tokens=6)
    by_prompt = llm.generate(PROMPTS[:2], sp, use_tqdm=False)
    conversations = [[{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": p}] for p in PROMPTS[:2]]
    by_chat = llm.chat(conversations, sp, use_tqdm=False)
    for a, b in zip(by_prompt, by_chat):
        assert a.prompt_token_ids == b.prompt_token_ids
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        assert b.prompt.endswith("<|im_start|>assistant\n")
    ids = llm.get_tokenizer().apply_chat_template(conversations[0], add_generation_prompt=True)
    assert ids == by_chat[0].prompt_token_ids


def test_chat_relay_shares_the_system_message(relay_llm):
    sp = SamplingParams(max_tokens=4)
    # Long enough to be worth a relay prefix (at least two KV blocks once rendered).
    system = {"role": "system", "content": "You are a pirate. You answer every question in "
                                           "pirate speak, briefly, and you never break character. "
                                           "You sail the seven seas with a parrot and a crew of "
                                           "forty, and you mention the parrot whenever you can."}
    out = relay_llm.chat([[system, {"role": "user", "content": p}] for p in PROMPTS], sp,
                         use_tqdm=False)
    assert all(o.relay_prefix_tokens > 0 for o in out)
    assert any(p["automatic"] for p in relay_llm.relay_prefixes())


def test_tiny_model_folder_equals_cli(tiny_model, cli, tmp_path):
    llm = LLM(model=str(tiny_model), num_kv_blocks=64)
    sp = SamplingParams(max_tokens=5, logprobs=1, ignore_eos=True)
    out = llm.generate(["Hello there", "abc"], sp, use_tqdm=False)
    exp = run_cli(cli, ["--model", str(tiny_model), "--num-kv-blocks", "64"],
                  [{"prompt": "Hello there", "max_tokens": 5, "logprobs": 1, "ignore_eos": True},
                   {"prompt": "abc", "max_tokens": 5, "logprobs": 1, "ignore_eos": True}], tmp_path)
    for o, e in zip(out, exp):
        assert o.outputs[0].token_ids == e["token_ids"]
        assert_logprobs_equal(o.outputs[0].logprobs, e["logprobs"])
