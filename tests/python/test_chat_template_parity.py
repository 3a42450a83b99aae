"""Chat templates rendered by `relayllm render-chat` against transformers' apply_chat_template
(jinja2 underneath), on the real templates in RELAYLLM_SHARED_DIR/tokenizers, the Llama 2 and
Mistral templates in tests/data/chat_templates, and small templates for single language features."""
import json
import os
import subprocess
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "tests" / "data" / "chat_templates"
SHARED = Path(os.environ.get("RELAYLLM_SHARED_DIR", ROOT.parent / "shared"))
BIN = os.environ.get("RELAYLLM_BIN", "")

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. Zürich"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "now", "description": "Current time", "parameters": {"type": "object", "properties": {}}},
    },
]
TOOL_CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
TOOL_CALL_STRING_ARGS = {"type": "function", "function": {"name": "now", "arguments": "{}"}}

# (name, messages, extra template variables). Valid for every template unless the name says otherwise.
CONVERSATIONS = [
    ("single_user", [{"role": "user", "content": "Hello!"}], {}),
    ("system_user", [SYSTEM, {"role": "user", "content": "What is 2+2?"}], {}),
    ("two_turns", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"},
                   {"role": "user", "content": "Tell me a joke."}], {}),
    ("system_three_turns", [SYSTEM, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"},
                            {"role": "user", "content": "e"}], {}),
    ("assistant_last", [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}], {}),
    ("system_assistant_last", [SYSTEM, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], {}),
    ("unicode", [{"role": "user", "content": "Grüße aus Zürich! 你好，世界 🌍 — «ça va?» \u00a0"}], {}),
    ("unicode_system", [{"role": "system", "content": "Réponds en français. 日本語もOK"},
                        {"role": "user", "content": "Пример текста"}], {}),
    ("empty_user", [{"role": "user", "content": ""}], {}),
    ("empty_assistant", [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""},
                         {"role": "user", "content": "y"}], {}),
    ("empty_system", [{"role": "system", "content": ""}, {"role": "user", "content": "x"}], {}),
    ("whitespace_content", [{"role": "user", "content": "  padded with spaces\n\n"},
                            {"role": "assistant", "content": "\n answer \t"}, {"role": "user", "content": "\tnext "}], {}),
    ("newlines", [{"role": "user", "content": "line 1\nline 2\n\nline 4"}], {}),
    ("quotes_and_braces", [{"role": "user", "content": "He said \"{{ not a tag }}\" and {% this %} isn't {# either #}"}], {}),
    ("special_looking", [{"role": "user", "content": "<|im_start|> [INST] <<SYS>> </s> <|eot_id|>"}], {}),
    ("long_content", [{"role": "user", "content": "word " * 400}], {}),
    ("think_in_history", [{"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
                          {"role": "user", "content": "3+3?"}], {}),
    ("think_last_assistant", [{"role": "user", "content": "2+2?"},
                              {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"}], {}),
    # Only templates that accept these render them; the others must fail like transformers does.
    ("consecutive_users", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], {}),
    ("assistant_first", [{"role": "assistant", "content": "I start"}, {"role": "user", "content": "ok"}], {}),
    ("qwen_thinking_off", [{"role": "user", "content": "Quick answer please"}], {"enable_thinking": False}),
    ("qwen_thinking_on", [SYSTEM, {"role": "user", "content": "Think first"}], {"enable_thinking": True}),
    ("qwen_reasoning_content", [{"role": "user", "content": "2+2?"},
                                {"role": "assistant", "content": "4", "reasoning_content": "Two plus two is four."}], {}),
    ("qwen_reasoning_history", [{"role": "user", "content": "2+2?"},
                                {"role": "assistant", "content": "4", "reasoning_content": "Two plus two."},
                                {"role": "user", "content": "and 3+3?"}], {"enable_thinking": False}),
    ("qwen_tools", [SYSTEM, {"role": "user", "content": "Weather in Paris?"}], {"tools": TOOLS}),
    ("qwen_tools_no_system", [{"role": "user", "content": "Weather in Paris?"}], {"tools": TOOLS}),
    ("qwen_tool_round_trip", [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
        {"role": "tool", "content": "{\"temp\": 21}"},
        {"role": "assistant", "content": "It is 21°C in Paris."},
        {"role": "user", "content": "Thanks"}], {"tools": TOOLS}),
    ("qwen_parallel_tool_calls", [
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [TOOL_CALL, TOOL_CALL_STRING_ARGS]},
        {"role": "tool", "content": "{\"temp\": 21}"},
        {"role": "tool", "content": "12:00"}], {"tools": TOOLS}),
    ("qwen_tool_call_no_function_wrapper", [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": None, "tool_calls": [{"name": "now", "arguments": {}}]},
        {"role": "tool", "content": "<tool_response>12:00</tool_response>"}], {}),
    ("qwen_multi_step_tool", [
        {"role": "user", "content": "<tool_response>x</tool_response>"},
        {"role": "user", "content": "real question"},
        {"role": "assistant", "content": "<think>hmm</think>answer"}], {}),
    ("system_only", [SYSTEM], {}),
]

NAMED_TEMPLATES = ["llama3", "qwen3", "llama2", "mistral"]


def tokenizer_for(name):
    folder = "llama2" if name in ("llama2", "mistral") else name
    source = SHARED / "tokenizers" / folder
    if not (source / "tokenizer_config.json").exists():
        pytest.skip(f"no tokenizer files at {source}")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    if name in ("llama2", "mistral"):
        tokenizer.chat_template = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    return tokenizer, source


@pytest.fixture(scope="module")
def binary():
    if not BIN or not os.access(BIN, os.X_OK):
        pytest.skip("RELAYLLM_BIN is not an executable relayllm binary")
    probe = subprocess.run([BIN, "render-chat", "--help"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("this relayllm binary has no render-chat command")
    return BIN


def reference(tokenizer, messages, add_generation_prompt, extra, chat_template=None):
    try:
        return {"text": tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt, **extra)}
    except Exception as e:  # the template's own raise_exception, or a jinja2 error
        return {"error": str(e), "raised": type(e).__name__ == "TemplateError"}


def ours(binary, model_dir, requests, template_file=None):
    cmd = [binary, "render-chat", "--model", str(model_dir)]
    if template_file is not None:
        cmd += ["--chat-template", str(template_file)]
    stdin = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests)
    proc = subprocess.run(cmd, input=stdin.encode("utf-8"), capture_output=True, timeout=120)
    lines = proc.stdout.decode("utf-8").splitlines()
    assert len(lines) == len(requests), proc.stderr.decode("utf-8", "replace")
    return [json.loads(line) for line in lines]


def test_conversation_set_is_varied():
    assert len(CONVERSATIONS) >= 25


@pytest.mark.parametrize("name", NAMED_TEMPLATES)
def test_templates_match_transformers(binary, name):
    tokenizer, model_dir = tokenizer_for(name)
    cases, requests, expected = [], [], []
    for conv_name, messages, extra in CONVERSATIONS:
        for add_generation_prompt in (False, True):
            cases.append((conv_name, add_generation_prompt))
            requests.append({"messages": messages, "add_generation_prompt": add_generation_prompt, "extra": extra})
            expected.append(reference(tokenizer, messages, add_generation_prompt, extra))
    template_file = TEMPLATES / f"{name}.jinja" if name in ("llama2", "mistral") else None
    got = ours(binary, model_dir, requests, template_file)
    rendered = 0
    for case, exp, res in zip(cases, expected, got):
        if "error" in exp:
            assert "error" in res, f"{name} {case}: transformers failed with {exp['error']!r}, we rendered {res!r}"
            if exp["raised"]:
                assert exp["error"] in res["error"], f"{name} {case}: {exp['error']!r} vs {res['error']!r}"
        else:
            assert res == exp, f"{name} {case}"
            rendered += 1
    assert rendered >= 30, f"{name}: only {rendered} cases rendered without error"


def test_llama2_and_mistral_formats_are_the_published_ones(binary):
    """The transcribed templates give the documented prompt formats, not just agreement."""
    tokenizer, model_dir = tokenizer_for("llama2")
    messages = [SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Bye"}]
    [llama2] = ours(binary, model_dir, [{"messages": messages}], TEMPLATES / "llama2.jinja")
    assert llama2["text"] == ("<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHi [/INST] Hello </s>"
                              "<s>[INST] Bye [/INST]")
    [mistral] = ours(binary, model_dir, [{"messages": messages}], TEMPLATES / "mistral.jinja")
    assert mistral["text"] == "<s> [INST] You are a helpful assistant.\n\nHi [/INST] Hello</s> [INST] Bye [/INST]"


# Small templates for one feature each, rendered on one conversation.
SNIPPETS = [
    "{% for m in messages %}{{ loop.index }}/{{ loop.length }} {{ loop.index0 }} {{ loop.revindex }} {{ loop.revindex0 }} {{ loop.first }} {{ loop.last }}|{% endfor %}",
    "{% for m in messages if m.role != 'system' %}{{ m.role }}{% if not loop.last %},{% endif %}{% else %}none{% endfor %}",
    "{% for m in [] %}x{% else %}empty{% endfor %}",
    "{% for k, v in {'a': 1, 'b': [1, 2]}.items() %}{{ k }}={{ v }};{% endfor %}",
    "{% for k in {'z': 1, 'a': 2} %}{{ k }}{% endfor %}{% for c in 'héllo' %}[{{ c }}]{% endfor %}",
    "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %} {{ range(3) | list }} {{ range(1, 10, 3) | list }} {{ range(5, 0, -2) | join(',') }}",
    "{% if messages | length > 3 %}many{% elif messages | length > 1 %}some{% else %}one{% endif %}",
    "{% set x = 1 %}{% for i in range(3) %}{{ x }}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}",
    "{% set ns = namespace(count=0, names=[]) %}{% for m in messages %}{% set ns.count = ns.count + 1 %}{% endfor %}{{ ns.count }}",
    "{% set a, b = 'x', 'y' %}{{ a }}{{ b }}{% set block %}inner {{ a }}{% endset %}[{{ block }}]",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(name='C', punct='.') }}",
    "  {%- if true %}  a  {% endif -%}  \n  b\n{{- '  c  ' -}}\n  d {#- comment -#}  e",
    "line1\n    {% if true %}\n    indented\n    {% endif %}\nline2\n{# comment #}\nline3\n",
    "{%+ if true %}keep{% endif %}\n  {%+ if true %}x{% endif +%}\nafter",
    "{{ 'a' ~ 1 ~ none ~ true }} {{ 1 + 2 * 3 - 4 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1.5 + 1 }} {{ 0.1 + 0.2 }}",
    "{{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 1 < 2 <= 2 }} {{ 'abc' < 'abd' }} {{ 3 > 2 >= 2 }} {{ not true or false and true }}",
    "{{ 'ell' in 'hello' }} {{ 2 in [1, 2] }} {{ 'a' in {'a': 1} }} {{ 3 not in [1, 2] }} {{ 'x' is not in 'abc' if false else 'ok' }}",
    "{{ x is defined }} {{ x is undefined }} {{ none is none }} {{ 'a' is string }} {{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ {} is mapping }} {{ [] is iterable }} {{ 'x' is sequence }} {{ true is boolean }} {{ true is true }} {{ false is false }} {{ 0 is false }}",
    "{{ 2 is eq 2 }} {{ 2 is equalto 3 }} {{ 2 is ne 3 }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'abc' is lower }} {{ 1 is sameas 1 }} {{ range is callable }}",
    "{{ '  hi  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ 'Hello' | upper }}{{ 'Hello' | lower }}|{{ 'hello world-foo' | title }}|{{ 'hELLO' | capitalize }}|{{ 'aaa' | replace('a', 'b', 2) }}",
    "{{ [3, 1, 2] | length }} {{ 'héllo' | length }} {{ {'a': 1} | count }} {{ [1, 2] | first }} {{ [1, 2] | last }} {{ 'abc' | list }} {{ 'abc' | reverse }} {{ [1, 2, 3] | reverse | list }}",
    "{{ x | default('d') }} {{ '' | default('e', true) }} {{ none | d('n') }} {{ 0 | default(5) }}",
    "{{ ['a', 'b'] | join(', ') }} {{ [1, 2] | join }} {{ messages | map(attribute='role') | join('+') }} {{ ['1', '2'] | map('int') | sum }}",
    "{{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '2.5' | float }} {{ -3 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 7 | string ~ '!' }}",
    "{{ {'b': 1, 'a': [1, 2.5, none, true, 'é\"\\n']} | tojson }} {{ {'k': {'n': []}} | tojson(indent=2) }} {{ 'é' | tojson }} {{ [] | tojson }}",
    "{{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ messages | rejectattr('role', 'eq', 'user') | map(attribute='role') | list }} {{ [1, 0, 2] | select | list }} {{ [1, 2, 3, 4] | reject('odd') | list }}",
    "{{ ['b', 'a', 'B'] | unique | list }} {{ [3, 1, 2] | sort }} {{ ['b', 'A', 'c'] | sort(reverse=true) }} {{ [{'n': 2}, {'n': 1}] | sort(attribute='n') | map(attribute='n') | list }} {{ [3, 1] | min }} {{ [3, 1] | max }}",
    "{{ {'b': 1, 'a': 2} | items | list }} {{ {'b': 1, 'a': 2} | dictsort }} {{ 'one two  three' | wordcount }} {{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}",
    "{{ 'hello'.startswith('he') }} {{ 'hello'.endswith(('x', 'lo')) }} {{ ' a b  c '.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ 'a,b,c'.rsplit(',', 1) }}",
    "[{{ '  x  '.strip() }}][{{ '\\n\\nx\\n'.lstrip('\\n') }}][{{ 'xyy'.rstrip('y') }}] {{ 'Hi'.upper() }}{{ 'Hi'.lower() }} {{ 'a b'.title() }} {{ 'abc'.replace('b', 'B') }} {{ 'hello'.find('l') }} {{ 'hello'.count('l') }} {{ '-'.join(['a', 'b']) }}",
    "{{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ 'héllo'[-3:] }} {{ [1, 2, 3, 4][1:] }} {{ [1, 2, 3, 4][:-1] }} {{ [1, 2, 3, 4][::2] }} {{ messages[-1].role }} {{ 'abc'[0] }} {{ [1, 2][5] is defined }}",
    "{% set d = {'a': 1} %}{{ d.get('a') }} {{ d.get('b') }} {{ d.get('b', 2) }} {{ d.keys() | list }} {{ d.values() | list }} {{ d['a'] }} {{ d.a }} {{ d.missing is defined }}",
    "{{ \"double \\\"quoted\\\" \\t tab\" }} {{ 'single \\'q\\'' }} {{ '\\u00e9\\x41' }} {{ 'adjacent' 'strings' }} {{ 1_000 }} {{ 1e3 }} {{ 2.50 }} {{ True }} {{ None }}",
    "{{ [1, 'a', none, true, 1.5] }} {{ {'a': 'b'} }} {{ none }} {{ 'it\\'s' ~ [\"it's\"] }}",
    "{{ 'yes' if messages else 'no' }} {{ 'a' if false }}|{{ (1 + 2) * 3 }} {{ -2 ** 2 }} {{ -2 | abs }} {{ messages | length - 1 }}",
    "{% raw %}{{ not rendered }}{% endraw %} {{ messages[0]['content'] | trim | length > 0 }}",
    "{% filter upper %}shout {{ 'this' }}{% endfilter %}",
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{{- '<u>' + message['content'] | trim + '</u>' }}{%- endif %}{%- endfor %}{{- eos_token if add_generation_prompt else bos_token }}",
    "{{ strftime_now('%Y') | length }} {{ foo | tojson if foo is defined else 'no foo' }}",
]
# Snippets that must fail in both engines.
FAILING_SNIPPETS = [
    "{{ raise_exception('custom failure: ' ~ messages | length) }}",
    "{{ messages.nope.deeper }}",
    "{{ 1 + 'a' }}",
    "{{ -[1, 2] | length }}",
]


def test_language_features_match_jinja2(binary, tmp_path):
    tokenizer, model_dir = tokenizer_for("llama3")
    messages = [{"role": "system", "content": "  Be brief.  "}, {"role": "user", "content": "Héllo"},
                {"role": "assistant", "content": "Hi!"}, {"role": "user", "content": "Bye"}]
    failures = []
    for index, snippet in enumerate(SNIPPETS + FAILING_SNIPPETS):
        template_file = tmp_path / f"snippet_{index}.jinja"
        template_file.write_text(snippet, encoding="utf-8")
        requests = [{"messages": messages, "add_generation_prompt": flag} for flag in (False, True)]
        got = ours(binary, model_dir, requests, template_file)
        for request, res in zip(requests, got):
            exp = reference(tokenizer, messages, request["add_generation_prompt"], {}, chat_template=snippet)
            if "error" in exp:
                if "error" not in res or snippet not in FAILING_SNIPPETS:
                    failures.append((snippet, exp, res))
            elif res != exp:
                failures.append((snippet, exp, res))
    assert not failures, "\n".join(f"{s!r}\n  expected {e!r}\n  got      {g!r}" for s, e, g in failures)


def test_syntax_error_names_line_and_column(binary, tmp_path):
    _, model_dir = tokenizer_for("llama3")
    template_file = tmp_path / "bad.jinja"
    template_file.write_text("ok\n{% if messages %}\n  {{ messages[0] + }}\n{% endif %}", encoding="utf-8")
    proc = subprocess.run([binary, "render-chat", "--model", str(model_dir), "--chat-template", str(template_file)],
                          input=b"", capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert "line 3, column 20" in proc.stderr.decode("utf-8"), proc.stderr
