"""Structured outputs and logit controls through the Python API: vLLM's GuidedDecodingParams
and SamplingParams fields give outputs that satisfy their constraint (checked with jsonschema
and re, not with our own parser), equal to `relayllm generate` given the same fields."""
import json
import re

import jsonschema
import pytest

from relayllm import GuidedDecodingParams, SamplingParams
from relayllm.sampling_params import GuidedDecodingParams as FromVllmPath

from conftest import run_cli

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "color": {"enum": ["red", "green", "blue"]},
    },
    "required": ["name", "age", "color"],
    "additionalProperties": False,
}


def gen(llm, prompt, **fields):
    fields.setdefault("max_tokens", 64)
    return llm.generate(prompt, SamplingParams(**fields), use_tqdm=False)[0].outputs[0]


def test_the_vllm_import_path():
    assert FromVllmPath is GuidedDecodingParams


@pytest.mark.parametrize("as_text", [False, True])
def test_json_schema(llm, as_text):
    schema = json.dumps(SCHEMA) if as_text else SCHEMA
    out = gen(llm, "Describe a person as JSON.",
              guided_decoding=GuidedDecodingParams(json=schema))
    assert out.finish_reason == "stop", out.text
    jsonschema.validate(json.loads(out.text), SCHEMA)


def test_json_object(llm):
    out = gen(llm, "Give a JSON object with one key.", max_tokens=96,
              guided_decoding=GuidedDecodingParams(json_object=True))
    if out.finish_reason == "stop":
        assert isinstance(json.loads(out.text), dict)
    else:  # cut by max_tokens inside an unbounded string: still a JSON object's start
        assert out.text.lstrip().startswith("{")


def test_regex_choice_and_grammar(llm):
    out = gen(llm, "A phone number:", guided_decoding=GuidedDecodingParams(regex=r"\d{3}-\d{4}"))
    assert re.fullmatch(r"\d{3}-\d{4}", out.text), out.text
    choices = ["Paris", "London", "Rome"]
    out = gen(llm, "The capital of France is",
              guided_decoding=GuidedDecodingParams(choice=choices))
    assert out.text in choices
    grammar = 'root ::= "yes" | "no" | "maybe " [0-9]'
    out = gen(llm, "Answer:", guided_decoding=GuidedDecodingParams(grammar=grammar))
    assert re.fullmatch(r"yes|no|maybe [0-9]", out.text), out.text


def test_structural_tag(llm):
    tag = {"structures": [{"begin": "<f>", "schema": SCHEMA, "end": "</f>"}],
           "triggers": ["<f>"]}
    out = gen(llm, "Call f:", max_tokens=8,
              guided_decoding=GuidedDecodingParams(structural_tag=json.dumps(tag)))
    assert out.token_ids  # free text until a trigger; the run itself is what is checked


def test_logit_bias_allowed_ids_and_bad_words(llm):
    free = gen(llm, "Name three colors.", max_tokens=8)
    favourite = free.token_ids[1]
    out = gen(llm, "Name three colors.", max_tokens=6, logit_bias={favourite: 100.0})
    assert out.token_ids == [favourite] * 6
    allowed = sorted(set(free.token_ids[:3]))
    out = gen(llm, "Name three colors.", max_tokens=8, ignore_eos=True,
              allowed_token_ids=allowed)
    assert set(out.token_ids) <= set(allowed)
    word = free.text.split()[0]
    tok = llm.get_tokenizer()
    banned = {tuple(tok.encode(w, add_special_tokens=False)) for w in (word, " " + word)}
    out = gen(llm, "Name three colors.", max_tokens=8, bad_words=[word])
    ids = out.token_ids
    for b in banned:
        assert not any(tuple(ids[i:i + len(b)]) == b for i in range(len(ids) - len(b) + 1))


def test_equal_to_the_cli(llm, cli, tmp_path):
    fields = dict(max_tokens=48, guided_decoding=GuidedDecodingParams(json=SCHEMA),
                  logit_bias={11: -5.0})
    api = gen(llm, "Describe a person as JSON.", **fields)
    line = {"prompt": "Describe a person as JSON.", "max_tokens": 48, "guided_json": SCHEMA,
            "logit_bias": {"11": -5.0}}
    (cli_out,) = run_cli(cli, [], [line], tmp_path)
    assert cli_out["token_ids"] == api.token_ids


def test_errors_name_the_field(llm):
    with pytest.raises(ValueError, match="guided_regex"):
        gen(llm, "x", guided_decoding=GuidedDecodingParams(regex="(unclosed"))
    with pytest.raises(ValueError, match="logit_bias"):
        gen(llm, "x", logit_bias={10**9: 1.0})
    with pytest.raises(ValueError, match="allowed_token_ids"):
        gen(llm, "x", allowed_token_ids=[])
    with pytest.raises(ValueError, match="exactly one"):
        GuidedDecodingParams(json=SCHEMA, regex="a")
    with pytest.raises(ValueError, match="exactly one"):
        GuidedDecodingParams()
    with pytest.raises(ValueError, match="whitespace_pattern"):
        GuidedDecodingParams(json=SCHEMA, whitespace_pattern=r"\s*")
    with pytest.raises(TypeError, match=r"choice\[1\]"):
        GuidedDecodingParams(choice=["a", 1])
    with pytest.raises(ValueError, match="xgrammar"):
        gen(llm, "x", guided_decoding=GuidedDecodingParams(regex="a", backend="outlines"))
    assert GuidedDecodingParams.from_optional() is None
    assert GuidedDecodingParams.from_optional(regex="a").regex == "a"


def test_chat_with_a_schema(llm):
    messages = [{"role": "user", "content": "Describe a person as JSON."}]
    out = llm.chat(messages, SamplingParams(max_tokens=64,
                                            guided_decoding=GuidedDecodingParams(json=SCHEMA)),
                   use_tqdm=False)[0].outputs[0]
    assert out.finish_reason == "stop", out.text
    jsonschema.validate(json.loads(out.text), SCHEMA)
