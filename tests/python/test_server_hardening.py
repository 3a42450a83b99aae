"""Hostile request bodies against a real `relayllm serve`: JSON nested tens of thousands of levels
deep wherever a request carries JSON, and numbers or types out of range in every typed field.
Each must get a 400 naming the field (never a 500, never a crash), and the server must keep serving."""
import httpx
import pytest

from server_harness import run_server

DEPTH_LIMIT = 128  # the default of --max-json-depth


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with run_server(tmp_path_factory.mktemp("hard"), ["--max-tokens", "2"]) as s:
        yield s


def post(server, path, body):
    data = body if isinstance(body, (bytes, str)) else None
    if data is not None:
        return httpx.post(server.url(path), content=data, timeout=60,
                          headers={"Content-Type": "application/json"})
    return httpx.post(server.url(path), json=body, timeout=60)


def nested_array(levels):
    return "[" * levels + "]" * levels


def nested_object(levels):
    return '{"a":' * levels + "1" + "}" * levels


def assert_alive(server):
    assert httpx.get(server.url("/health"), timeout=10).status_code == 200


MSG = '{"role": "user", "content": "hi"}'

# (path, body template) where {} takes a deeply nested value: every place a request carries JSON.
DEEP_PLACES = [
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": {}}]}'),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi", "extra": {}}]}'),
    ("/v1/chat/completions", '{"messages": [' + MSG + '], "chat_template_kwargs": {"x": {}}}'),
    ("/v1/chat/completions", '{"messages": [' + MSG + '], "tools": {}}'),
    ("/v1/completions", '{"prompt": "hi", "unknown_field": {}}'),
    ("/v1/completions", '{"prompt": {}}'),
    ("/tokenize", '{"messages": [{"role": "user", "content": "hi", "x": {}}]}'),
    ("/tokenize", '{"messages": [' + MSG + '], "chat_template_kwargs": {"k": {}}}'),
    ("/detokenize", '{"tokens": {}}'),
    ("/v1/relay_prefixes", '{"name": "p", "text": {}}'),
    ("/v1/completions", '{}'),  # the whole body
]


@pytest.mark.parametrize("place", range(len(DEEP_PLACES)))
@pytest.mark.parametrize("shape", ["array", "object"])
def test_deep_nesting_is_400_everywhere(server, place, shape):
    path, template = DEEP_PLACES[place]
    deep = nested_array(20000) if shape == "array" else nested_object(12000)
    body = deep if template == "{}" else template.replace("{}", deep, 1)
    r = post(server, path, body)
    assert r.status_code == 400, r.text[:500]
    assert "nested deeper than" in r.json()["error"]["message"]
    assert_alive(server)


def test_depth_limit_boundary(server):
    # The top-level object is level 1: a field may hold DEPTH_LIMIT - 1 levels more.
    ok = '{"prompt": "hi", "max_tokens": 1, "x": ' + nested_array(DEPTH_LIMIT - 1) + "}"
    r = post(server, "/v1/completions", ok)
    assert r.status_code == 200, r.text[:500]
    too_deep = '{"prompt": "hi", "max_tokens": 1, "x": ' + nested_array(DEPTH_LIMIT) + "}"
    r = post(server, "/v1/completions", too_deep)
    assert r.status_code == 400
    assert "field 'x" in r.json()["error"]["message"]


def test_deep_nesting_within_limit_reaches_the_template(server):
    # Within the limit, nested message fields go through the template conversion unharmed.
    deep = nested_object(DEPTH_LIMIT - 5)
    body = '{"max_tokens": 1, "messages": [{"role": "user", "content": "hi", "meta": ' + deep + "}]}"
    r = post(server, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text[:500]


FLOAT_FIELDS = ["temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty",
                "repetition_penalty"]
INT_FIELDS = ["max_tokens", "min_tokens", "n", "top_k", "logprobs", "seed"]
# Raw JSON text: beyond double range, beyond float range, beyond int64/uint64, wrong types.
HOSTILE_NUMBERS = ["1e400", "-1e400", "1e308", "-1e39",
                   "18446744073709551615", "99999999999999999999999", "-9223372036854775809",
                   "\"7\"", "[]", "{}", "true"]


def number_error(server, path, field, raw, extra):
    body = '{' + extra + ', "' + field + '": ' + raw + "}"
    r = post(server, path, body)
    assert r.status_code == 400, f"{field}={raw}: {r.status_code} {r.text[:300]}"
    message = r.json()["error"]["message"]
    assert field in message, f"{field}={raw}: message does not name the field: {message}"
    return message


@pytest.mark.parametrize("field", FLOAT_FIELDS + INT_FIELDS)
@pytest.mark.parametrize("raw", HOSTILE_NUMBERS)
def test_out_of_range_fields_completions(server, field, raw):
    if field == "seed" and raw == "18446744073709551615":
        pytest.skip("any 64-bit pattern is a valid seed")
    if field in ("temperature", "repetition_penalty") and raw in ("18446744073709551615",
                                                                  "99999999999999999999999"):
        pytest.skip("a large finite float is a valid (if odd) value here")
    number_error(server, "/v1/completions", field, raw, '"prompt": "hi"')


@pytest.mark.parametrize("field", FLOAT_FIELDS + INT_FIELDS + ["top_logprobs",
                                                               "max_completion_tokens"])
@pytest.mark.parametrize("raw", ["1e400", "-1e400", "18446744073709551615", "\"x\""])
def test_out_of_range_fields_chat(server, field, raw):
    if (field == "seed" or field in ("temperature", "repetition_penalty")) and \
            raw == "18446744073709551615":
        pytest.skip("a valid value for this field")
    extra = '"messages": [' + MSG + '], "logprobs": true' if field == "top_logprobs" else \
        '"messages": [' + MSG + ']'
    if field == "logprobs":
        extra = '"messages": [' + MSG + ']'
    number_error(server, "/v1/chat/completions", field, raw, extra)


@pytest.mark.parametrize("path,body,field", [
    ("/v1/completions", '{"prompt": [18446744073709551615]}', "prompt[0]"),
    ("/v1/completions", '{"prompt": [[1, 1e400]]}', "prompt[0][1]"),
    ("/v1/completions", '{"prompt": "hi", "stop_token_ids": [1e400]}', "stop_token_ids[0]"),
    ("/v1/completions", '{"prompt": "hi", "stop_token_ids": [18446744073709551615]}',
     "stop_token_ids[0]"),
    ("/v1/completions", '{"prompt": "hi", "stream_options": {"include_usage": 1e400}}',
     "stream_options.include_usage"),
    ("/detokenize", '{"tokens": [1, 18446744073709551615]}', "tokens[1]"),
    ("/detokenize", '{"tokens": [1, -1e400]}', "tokens[1]"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": [{"type": 5, "text": "x"}]}]}',
     "messages[0].content[0]"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": 1e400}]}',
     "messages[0].content"),
    ("/v1/relay_prefixes", '{"name": "p", "token_ids": [1e400]}', "token_ids[0]"),
])
def test_nested_field_errors_name_the_path(server, path, body, field):
    r = post(server, path, body)
    assert r.status_code == 400, r.text[:300]
    assert field in r.json()["error"]["message"], r.json()["error"]["message"]


@pytest.mark.parametrize("body", ['{"prompt": "hi"', '{"prompt": "hi"} x', '{"prompt": "\\ud800"}',
                                  b'{"prompt": "\xff"}', "", "[1, 2]", "nul", '{"prompt": 01}'])
def test_malformed_bodies_are_400(server, body):
    r = post(server, "/v1/completions", body)
    assert r.status_code == 400, r.text[:300]
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert_alive(server)


# Constraints whose grammar can reach a rule again before matching a character (left
# recursion, and repetitions of parts that can be empty) made the grammar matcher recurse until
# the stack ended; every way to write one is a 400 naming the field, and the server keeps serving.
LEFT_RECURSIVE = [
    ("guided_grammar", "root ::= root"),
    ("guided_grammar", 'root ::= x "a"\nx ::= "" | x'),
    ("guided_grammar", 'root ::= ("a"?)*'),
    ("guided_regex", "(a?)*"),
    ("guided_regex", "(a*)*b"),
    ("guided_regex", "(x|y?)+z"),
    ("guided_json", {"anyOf": [{"$ref": "#"}, {"type": "integer"}]}),
    ("guided_json", {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}),
    ("response_format", {"type": "json_schema", "json_schema": {
        "name": "loop", "schema": {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}}}),
]


@pytest.mark.parametrize("case", range(len(LEFT_RECURSIVE)))
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_left_recursive_constraints_are_400(server, case, path):
    field, value = LEFT_RECURSIVE[case]
    body = {"prompt": "hi"} if path == "/v1/completions" else {
        "messages": [{"role": "user", "content": "hi"}]}
    body[field] = value
    r = post(server, path, body)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["message"] and "left-recursive" in r.text
    assert_alive(server)


@pytest.mark.parametrize("field,value", [
    ("guided_regex", "\u0000abc"),
    ("guided_grammar", 'root ::= "a\u0000"'),
    ("guided_json", {"type": "string", "pattern": "\u0000a"}),
])
def test_nul_in_constraints_is_400(server, field, value):
    # xgrammar's regex parser reads C strings; a leading NUL made it read past its buffer.
    r = post(server, "/v1/completions", {"prompt": "hi", field: value})
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]["message"] and "NUL" in r.text
    assert_alive(server)
