"""Every documented argument and attribute of LLM, SamplingParams and RequestOutput does what
the README says, and bad arguments raise ValueError/TypeError naming the argument."""
import threading
import time

import pytest

import relayllm
from relayllm import LLM, CompletionOutput, Logprob, RequestOutput, SamplingParams

Q = "Name three colors."


def one(llm, prompt=Q, **fields):
    return llm.generate(prompt, SamplingParams(**fields), use_tqdm=False)[0]


def test_request_output_attributes(llm):
    out = one(llm, max_tokens=4, logprobs=1, prompt_logprobs=0)
    assert isinstance(out, RequestOutput) and isinstance(out.outputs[0], CompletionOutput)
    assert isinstance(out.request_id, str) and out.prompt == Q and out.finished
    assert out.prompt_token_ids and out.prompt_logprobs[0] is None
    assert len(out.prompt_logprobs) == len(out.prompt_token_ids)
    assert all(isinstance(v, Logprob) for e in out.prompt_logprobs[1:] for v in e.values())
    c = out.outputs[0]
    assert c.index == 0 and len(c.token_ids) == 4 and c.text and c.finish_reason == "length"
    assert c.stop_reason is None and c.finished() and c.cumulative_logprob < 0
    assert len(c.logprobs) == 4 and all(c.token_ids[i] in e for i, e in enumerate(c.logprobs))
    assert out.num_cached_tokens == 0 and out.relay_prefix_tokens == 0
    assert out.metrics.e2e_latency >= out.metrics.first_token_latency >= 0
    top = [lp for lp in c.logprobs[0].values() if lp.rank == 1]
    assert len(top) == 1 and isinstance(top[0].decoded_token, str)


def test_sampling_fields(llm):
    greedy = one(llm, max_tokens=8).outputs[0]
    assert one(llm, max_tokens=8, temperature=0.0).outputs[0].token_ids == greedy.token_ids
    assert one(llm, max_tokens=8, temperature=1.0, top_k=1).outputs[0].token_ids == greedy.token_ids
    # seed: the same seed gives the same sample, whatever else runs.
    a = one(llm, max_tokens=8, temperature=1.0, seed=11).outputs[0].token_ids
    b = llm.generate([Q, "Other prompt"], SamplingParams(max_tokens=8, temperature=1.0, seed=11),
                     use_tqdm=False)[0].outputs[0].token_ids
    assert a == b
    # n: n completions, seeds seed + k.
    out = one(llm, max_tokens=4, n=3, temperature=1.0, seed=5)
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert out.outputs[0].token_ids == one(llm, max_tokens=4, temperature=1.0, seed=5).outputs[0].token_ids
    # stop strings and stop token ids.
    text = greedy.text
    stop = text[3:6]
    c = one(llm, max_tokens=8, stop=[stop]).outputs[0]
    assert c.finish_reason == "stop" and c.stop_reason == stop and stop not in c.text
    c = one(llm, max_tokens=8, stop=stop, include_stop_str_in_output=True).outputs[0]
    assert c.text.endswith(stop)
    c = one(llm, max_tokens=8, stop_token_ids=[greedy.token_ids[2]]).outputs[0]
    assert c.finish_reason == "stop" and c.token_ids[-1] == greedy.token_ids[2]
    # max/min tokens and ignore_eos: a short answer that ends with EOS runs on.
    short = one(llm, "What is the capital of France?", max_tokens=32).outputs[0]
    assert short.finish_reason == "stop"
    n = len(short.token_ids)
    assert len(one(llm, "What is the capital of France?", max_tokens=n + 4,
                   ignore_eos=True).outputs[0].token_ids) == n + 4
    assert len(one(llm, "What is the capital of France?", max_tokens=n + 4,
                   min_tokens=n + 2).outputs[0].token_ids) >= n + 2
    # penalties and min_p change the distribution but run.
    for field, value in (("presence_penalty", 1.5), ("frequency_penalty", 1.5),
                         ("repetition_penalty", 1.3), ("min_p", 0.2), ("top_p", 0.5)):
        assert one(llm, max_tokens=4, temperature=0.7, seed=1, **{field: value}).outputs[0].token_ids
    # logprobs counts.
    c = one(llm, max_tokens=3, logprobs=4).outputs[0]
    assert all(4 <= len(e) <= 5 for e in c.logprobs)
    # skip_special_tokens: with EOS kept in the text when asked.
    kept = one(llm, "What is the capital of France?", max_tokens=32, skip_special_tokens=False,
               ignore_eos=True, stop_token_ids=[short.token_ids[-1]]).outputs[0]
    assert kept.token_ids[-1] == short.token_ids[-1]


def test_prompt_forms(llm):
    ids = llm.get_tokenizer().encode("Hello")
    outs = llm.generate([Q, {"prompt": Q}, {"prompt_token_ids": ids}], SamplingParams(max_tokens=3),
                        use_tqdm=False)
    assert outs[0].outputs[0].token_ids == outs[1].outputs[0].token_ids
    assert outs[2].prompt is None and outs[2].prompt_token_ids == ids
    legacy = llm.generate(prompt_token_ids=[ids], sampling_params=SamplingParams(max_tokens=3),
                          use_tqdm=False)
    assert legacy[0].outputs[0].token_ids == outs[2].outputs[0].token_ids
    # A list of SamplingParams, one per prompt; None: the model's defaults.
    outs = llm.generate([Q, Q], [SamplingParams(max_tokens=2), SamplingParams(max_tokens=3)],
                        use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in outs] == [2, 3]
    assert len(llm.generate(Q, use_tqdm=False)[0].outputs[0].token_ids) <= 16


def test_progress_bar(llm, capsys):
    calls = []

    class Bar:
        def __init__(self, total, **kwargs):
            calls.append(("total", total))

        def update(self, n):
            calls.append(("update", n))

        def close(self):
            calls.append(("close",))

    llm.generate([Q, Q, Q], SamplingParams(max_tokens=2), use_tqdm=Bar)
    assert calls[0] == ("total", 3) and calls[-1] == ("close",)
    assert sum(c[1] for c in calls if c[0] == "update") == 3
    llm.generate([Q], SamplingParams(max_tokens=2), use_tqdm=True)
    assert "Processed prompts" in capsys.readouterr().err


def test_tokenizer(llm):
    tok = llm.get_tokenizer()
    ids = tok.encode("Hello world")
    assert tok.decode(ids) == "Hello world"
    assert tok.encode("Hello world", add_special_tokens=False) == ids or ids
    assert tok.vocab_size > 1000 and isinstance(tok.eos_token_id, int)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert "hi" in text and text.endswith("assistant\n")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([10**8])
    with pytest.raises(TypeError, match="token_ids"):
        tok.decode(["a"])


def test_register_and_remove_relay_prefix(relay_llm):
    tok = relay_llm.get_tokenizer()
    doc = "A long shared document about the history of the sea and of ships. " * 8
    n = relay_llm.register_relay_prefix("doc", doc)
    assert n == len(tok.encode(doc))
    assert any(p["name"] == "doc" and p["num_tokens"] == n for p in relay_llm.relay_prefixes())
    ids = tok.encode(doc) + tok.encode(" What is it about?", add_special_tokens=False)
    out = relay_llm.generate({"prompt_token_ids": ids}, SamplingParams(max_tokens=3),
                             use_tqdm=False, relay_prefix="doc")[0]
    assert out.relay_prefix_tokens == n
    before = relay_llm.stats()["num_prefix_blocks"]
    relay_llm.remove_relay_prefix("doc")
    assert relay_llm.stats()["num_prefix_blocks"] < before
    assert not any(p["name"] == "doc" for p in relay_llm.relay_prefixes())
    with pytest.raises(KeyError, match="doc"):
        relay_llm.remove_relay_prefix("doc")


def test_fill_prefix_kv_cache_relay_equals_plain(llm, relay_llm):
    """vllm-ra's MMLU loop: fill_prefix_kv_cache(prefix), then the questions alone; relay
    on gives what relay off gives for the same call."""
    prefix = "Answer with one letter.\nQ: 2+2?\nA. 3 B. 4\nAnswer: B\n\n"
    questions = ["Q: 3+3?\nA. 6 B. 7\nAnswer: ", "Q: 1+1?\nA. 2 B. 5\nAnswer: "]
    results = []
    for engine in (llm, relay_llm):
        n = engine.fill_prefix_kv_cache(prefix)
        assert n > 0
        results.append(engine.generate(questions, SamplingParams(max_tokens=3), use_tqdm=False))
    for a, b in zip(*results):
        assert a.prompt_token_ids == b.prompt_token_ids
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        assert b.relay_prefix_tokens > 0
    # Back to the default system prompt for the other tests.
    for engine in (llm, relay_llm):
        engine.fill_prefix_kv_cache("You are a helpful assistant.")


def test_gil_released_while_generating(llm):
    ticks = 0
    done = threading.Event()

    def spin():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    start = time.perf_counter()
    llm.generate([Q] * 4, SamplingParams(max_tokens=16, ignore_eos=True), use_tqdm=False)
    elapsed = time.perf_counter() - start
    done.set()
    t.join()
    # With the GIL held the thread would not tick at all during the run.
    assert ticks > 0.2 * elapsed / 0.001 * 0.5


def test_one_bad_prompt_raises_and_nothing_leaks(llm):
    free = llm.stats()["num_free_blocks"]
    vocab = llm.get_tokenizer().vocab_size
    with pytest.raises(ValueError, match=r"prompt 1: .*vocab"):
        llm.generate([Q, {"prompt_token_ids": [1, vocab + 5]}], SamplingParams(max_tokens=2),
                     use_tqdm=False)
    with pytest.raises(ValueError, match="prompt 0"):
        llm.generate(["word " * 10000], SamplingParams(max_tokens=2), use_tqdm=False)
    assert llm.stats()["num_free_blocks"] == free
    assert llm.stats()["num_running"] == 0 and llm.stats()["num_waiting"] == 0


@pytest.mark.parametrize("kwargs, error, needle", [
    (dict(model="/nonexistent/model"), ValueError, "model="),
    (dict(model=3), TypeError, "model"),
    (dict(tokenizer="/nonexistent"), ValueError, "tokenizer="),
    (dict(dtype="int4"), ValueError, "dtype"),
    (dict(max_model_len=0), ValueError, "max_model_len"),
    (dict(max_model_len="8"), TypeError, "max_model_len"),
    (dict(enable_prefix_caching="yes"), TypeError, "enable_prefix_caching"),
    (dict(enable_relay_attention=1), TypeError, "enable_relay_attention"),
    (dict(sys_schema="no user part"), ValueError, "sys_schema"),
    (dict(sys_prompt=5), TypeError, "sys_prompt"),
    (dict(sys_prompt_file="/nonexistent/file"), ValueError, "sys-prompt-file"),
    (dict(sys_prompt="a", sys_prompt_file="/x"), ValueError, "not both"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(device="tpu"), ValueError, "device"),
    (dict(tensor_parallel_size=2), ValueError, "tensor_parallel_size"),
    (dict(enforce_eager="no"), TypeError, "enforce_eager"),
    (dict(gpu_memory_utilization=1.5), ValueError, "gpu_memory_utilization"),
    (dict(max_num_seqs=0), ValueError, "max_num_seqs"),
    (dict(block_size=0), ValueError, "block_size"),
    (dict(quantization="awq"), ValueError, "quantization"),
    (dict(no_such_option=1), TypeError, "no_such_option"),
    (dict(relay_prefixes={"a": "/x"}), ValueError, "relay_prefixes"),
])
def test_bad_llm_arguments(kwargs, error, needle):
    with pytest.raises(error, match=needle):
        LLM(**kwargs)


@pytest.mark.parametrize("kwargs, error, needle", [
    (dict(n=0), ValueError, "n must be at least 1"),
    (dict(temperature=-1), ValueError, "temperature"),
    (dict(temperature="hot"), TypeError, "temperature"),
    (dict(top_p=0), ValueError, "top_p"),
    (dict(top_k=-5), ValueError, "top_k"),
    (dict(min_p=2), ValueError, "min_p"),
    (dict(presence_penalty=3), ValueError, "presence_penalty"),
    (dict(frequency_penalty=-3), ValueError, "frequency_penalty"),
    (dict(repetition_penalty=0), ValueError, "repetition_penalty"),
    (dict(max_tokens=0), ValueError, "max_tokens"),
    (dict(max_tokens=None), ValueError, "max_tokens"),
    (dict(max_tokens=1.5), TypeError, "max_tokens"),
    (dict(min_tokens=5, max_tokens=2), ValueError, "min_tokens"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(logprobs=21), ValueError, "logprobs"),
    (dict(prompt_logprobs=-1), ValueError, "prompt_logprobs"),
    (dict(stop=[""]), ValueError, "stop"),
    (dict(stop=[1]), TypeError, "stop"),
    (dict(stop_token_ids=["x"]), TypeError, "stop_token_ids"),
    (dict(ignore_eos=1), TypeError, "ignore_eos"),
    (dict(best_of=3), ValueError, "best_of"),
    (dict(logit_bias=[1, 2]), TypeError, "logit_bias"),
    (dict(logit_bias={"1": 2.0}), TypeError, "logit_bias"),
    (dict(logit_bias={1: "x"}), TypeError, r"logit_bias\[1\]"),
    (dict(allowed_token_ids=[1, "a"]), TypeError, r"allowed_token_ids\[1\]"),
    (dict(bad_words="word"), TypeError, "bad_words"),
    (dict(guided_decoding=object()), TypeError, "guided_decoding"),
    (dict(guided_decoding={"json": {}}), TypeError, "guided_decoding"),
])
def test_bad_sampling_params(kwargs, error, needle):
    with pytest.raises(error, match=needle):
        SamplingParams(**kwargs)


def test_bad_generate_arguments(llm):
    with pytest.raises(TypeError, match="prompts"):
        llm.generate(5, use_tqdm=False)
    with pytest.raises(TypeError, match=r"prompts\[1\]"):
        llm.generate(["a", 3], use_tqdm=False)
    with pytest.raises(ValueError, match="multi_modal_data"):
        llm.generate({"prompt": "a", "multi_modal_data": {}}, use_tqdm=False)
    with pytest.raises(TypeError, match="prompt_token_ids"):
        llm.generate({"prompt_token_ids": ["a"]}, use_tqdm=False)
    with pytest.raises(ValueError, match="sampling_params"):
        llm.generate(["a", "b"], [SamplingParams()], use_tqdm=False)
    with pytest.raises(TypeError, match="sampling_params"):
        llm.generate(["a"], {"max_tokens": 3}, use_tqdm=False)
    with pytest.raises(ValueError, match="stop_token_ids"):
        llm.generate(["a"], SamplingParams(stop_token_ids=[-1]), use_tqdm=False)
    with pytest.raises(ValueError, match="not registered|relay"):
        llm.generate(["a"], use_tqdm=False, relay_prefix="nope")
    with pytest.raises(TypeError, match="messages"):
        llm.chat("hello", use_tqdm=False)
    with pytest.raises(ValueError, match="conversation 0"):
        llm.chat([{"role": "wizard", "content": "x"}], use_tqdm=False)
    with pytest.raises(ValueError, match="register_relay_prefix needs"):
        llm.register_relay_prefix("x", "some text")
    with pytest.raises(ValueError, match="not both"):
        llm.fill_prefix_kv_cache("a", [1, 2])


def test_shutdown_and_context_manager(tiny_model):
    with LLM(model=str(tiny_model), num_kv_blocks=16) as llm:
        assert llm.generate("abc", SamplingParams(max_tokens=2), use_tqdm=False)
    with pytest.raises(RuntimeError, match="shut down"):
        llm.generate("abc", use_tqdm=False)
    llm.shutdown()  # twice is fine


def test_version():
    assert relayllm.__version__ == "0.1.0"
