#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into tests/fuzz/corpus/<target>/: small valid
inputs (and a few near-misses) from which libFuzzer mutates. Rerun after changing a format;
the files are committed so CI needs no Python step."""
import json
import struct
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def byte_chars():
    """GPT-2's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer_json():
    chars = byte_chars()
    vocab = {chars[b]: b for b in range(256)}
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), (chars[32], "w")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    return {
        "version": "1.0",
        "added_tokens": [
            {"id": len(vocab), "content": "<|im_start|>", "special": True, "normalized": False,
             "lstrip": False, "rstrip": False, "single_word": False},
            {"id": len(vocab) + 1, "content": "<|im_end|>", "special": True, "normalized": False,
             "lstrip": False, "rstrip": False, "single_word": False},
        ],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\s+|\\w+|[^\\s\\w]+"}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                           "special_tokens": {"<|im_start|>": {"id": "<|im_start|>",
                                                               "ids": [len(vocab)],
                                                               "tokens": ["<|im_start|>"]}}},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": [f"{l} {r}" for l, r in merges]},
    }


def model_json_seeds():
    for fixture in sorted((ROOT / "tests/data/hf_fixtures").iterdir()):
        put("model_json", f"config_{fixture.name}", b"\x00" + (fixture / "config.json").read_bytes())
        gen = fixture / "generation_config.json"
        if gen.exists():
            put("model_json", f"generation_{fixture.name}", b"\x01" + gen.read_bytes())
    put("model_json", "tokenizer", b"\x02" + json.dumps(tokenizer_json()).encode())
    for template in sorted((ROOT / "tests/data/chat_templates").glob("*.jinja")):
        config = {"bos_token": "<s>", "eos_token": {"content": "</s>"},
                  "chat_template": template.read_text()}
        put("model_json", f"tokenizer_config_{template.stem}", b"\x03" + json.dumps(config).encode())


def chat_template_seeds():
    for template in sorted((ROOT / "tests/data/chat_templates").glob("*.jinja")):
        put("chat_template", f"source_{template.stem}", b"\x00" + template.read_bytes())
    put("chat_template", "source_loops",
        b"\x00{% for m in messages %}{{ m.role | upper }}{% if loop.last %}!{% endif %}"
        b"{{ m['content'] | tojson }}{% endfor %}{% set x = [1, 2] + [3] %}{{ x | length }}"
        b"{% macro f(a, b=2) %}{{ a ~ b }}{% endmacro %}{{ f(1) }}{{ 'ab' * 3 }}{{ range(3) | list }}")
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}]
    put("chat_template", "values_messages", b"\x01" + json.dumps(messages).encode())
    put("chat_template", "values_extra", b"\x01" + json.dumps(
        {"messages": messages[1:2], "extra": {"tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object"}}}], "enable_thinking": False}}).encode())


def http_seeds():
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 4, "temperature": 0.5, "stream": True,
                       "chat_template_kwargs": {"enable_thinking": False}})
    put("http_request", "chat",
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer k\r\nContent-Length: {len(body)}\r\n\r\n{body}")
    body = json.dumps({"prompt": [1, 2, 3], "max_tokens": 2, "n": 2, "logprobs": 1, "echo": True})
    put("http_request", "completion_chunked",
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Expect: 100-continue\r\n\r\n"
        f"{len(body):x}\r\n{body}\r\n0\r\n\r\n")
    put("http_request", "health", "GET /health?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    body = json.dumps({"prompt": "a b", "add_special_tokens": True})
    put("http_request", "tokenize", f"POST /tokenize HTTP/1.0\r\nContent-Length: {len(body)}\r\n\r\n{body}")


def gguf_value(kind, value):
    if kind == "u32":
        return struct.pack("<II", 4, value)
    if kind == "f32":
        return struct.pack("<If", 6, value)
    if kind == "bool":
        return struct.pack("<IB", 7, value)
    if kind == "str":
        b = value.encode()
        return struct.pack("<IQ", 8, len(b)) + b
    if kind == "strs":
        out = struct.pack("<IIQ", 9, 8, len(value))
        for s in value:
            b = s.encode()
            out += struct.pack("<Q", len(b)) + b
        return out
    if kind == "i32s":
        return struct.pack("<IIQ", 9, 5, len(value)) + b"".join(struct.pack("<i", v) for v in value)
    raise ValueError(kind)


def gguf_file(kv, tensors):
    out = struct.pack("<IIQQ", 0x46554747, 3, len(tensors), len(kv))
    for key, (kind, value) in kv.items():
        k = key.encode()
        out += struct.pack("<Q", len(k)) + k + gguf_value(kind, value)
    offset, offsets = 0, []
    for name, dims, ggml_type, data in tensors:
        n = name.encode()
        out += struct.pack("<Q", len(n)) + n + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ggml_type, offset)
        offsets.append(offset)
        offset = (offset + len(data) + 31) // 32 * 32
    out += b"\0" * (-len(out) % 32)
    start = len(out)
    for (name, dims, ggml_type, data), off in zip(tensors, offsets):
        out += b"\0" * (start + off - len(out)) + data
    return out


def q8_0(values):
    out = b""
    for block in values.reshape(-1, 32):
        scale = float(np.abs(block).max()) / 127 or 1.0
        out += np.float16(scale).tobytes() + np.round(block / scale).astype(np.int8).tobytes()
    return out


def gguf_seeds():
    rng = np.random.default_rng(0)
    hidden, inter, heads, kv_heads, layers = 32, 64, 4, 2, 1
    head_dim = hidden // heads
    tokens = [byte_chars()[b] for b in range(256)] + ["he", "ll", "<|im_start|>", "<|im_end|>"]
    kv = {
        "general.architecture": ("str", "llama"),
        "llama.block_count": ("u32", layers),
        "llama.context_length": ("u32", 64),
        "llama.embedding_length": ("u32", hidden),
        "llama.feed_forward_length": ("u32", inter),
        "llama.attention.head_count": ("u32", heads),
        "llama.attention.head_count_kv": ("u32", kv_heads),
        "llama.rope.dimension_count": ("u32", head_dim),
        "llama.rope.freq_base": ("f32", 10000.0),
        "llama.attention.layer_norm_rms_epsilon": ("f32", 1e-5),
        "tokenizer.ggml.model": ("str", "gpt2"),
        "tokenizer.ggml.pre": ("str", "smollm"),
        "tokenizer.ggml.tokens": ("strs", tokens),
        "tokenizer.ggml.token_type": ("i32s", [1] * 258 + [3, 3]),
        "tokenizer.ggml.merges": ("strs", ["h e", "l l"]),
        "tokenizer.ggml.bos_token_id": ("u32", 258),
        "tokenizer.ggml.eos_token_id": ("u32", 259),
        "tokenizer.chat_template": ("str", "{% for m in messages %}{{ m.content }}{% endfor %}"),
    }
    f32 = lambda *shape: rng.uniform(-1, 1, size=shape).astype(np.float32)
    tensors = [("token_embd.weight", [hidden, len(tokens)], 1, f32(len(tokens), hidden).astype(np.float16).tobytes()),
               ("output_norm.weight", [hidden], 0, f32(hidden).tobytes())]
    for l in range(layers):
        p = f"blk.{l}."
        tensors += [(p + "attn_norm.weight", [hidden], 0, f32(hidden).tobytes()),
                    (p + "ffn_norm.weight", [hidden], 0, f32(hidden).tobytes()),
                    (p + "attn_q.weight", [hidden, hidden], 8, q8_0(f32(hidden, hidden))),
                    (p + "attn_k.weight", [hidden, kv_heads * head_dim], 0, f32(kv_heads * head_dim, hidden).tobytes()),
                    (p + "attn_v.weight", [hidden, kv_heads * head_dim], 1, f32(kv_heads * head_dim, hidden).astype(np.float16).tobytes()),
                    (p + "attn_output.weight", [hidden, hidden], 8, q8_0(f32(hidden, hidden))),
                    (p + "ffn_gate.weight", [hidden, inter], 8, q8_0(f32(inter, hidden))),
                    (p + "ffn_up.weight", [hidden, inter], 8, q8_0(f32(inter, hidden))),
                    (p + "ffn_down.weight", [inter, hidden], 0, f32(hidden, inter).tobytes())]
    put("gguf", "tiny_llama", gguf_file(kv, tensors))
    put("gguf", "metadata_only", gguf_file({k: kv[k] for k in list(kv)[:10]}, []))


def safetensors_file(tensors):
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    rng = np.random.default_rng(1)
    v = rng.uniform(-1, 1, size=12).astype(np.float32)
    bf16 = (v.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    put("safetensors", "mixed", safetensors_file([
        ("a.weight", "F32", [3, 4], v.tobytes()),
        ("b.weight", "F16", [12], v.astype(np.float16).tobytes()),
        ("c.weight", "BF16", [2, 6], bf16),
        ("ids", "I64", [2], np.arange(2, dtype=np.int64).tobytes()),
        ("empty", "F32", [0], b""),
    ]))
    put("safetensors", "one", safetensors_file([("w", "F32", [2], np.ones(2, np.float32).tobytes())]))


def constraint_seeds():
    """The first byte picks the kind (constraint_fuzz.cc): 0 JSON schema, 1 regex, 2 EBNF,
    3 choices (one per line), 4 a structural tag (tag name, newline, schema); +0x80 allows
    any whitespace."""
    schema = {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 8}, "n": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
        "x": {"anyOf": [{"type": "number"}, {"type": "null"}]}}, "required": ["name"]}
    put("constraint", "schema_object", bytes([0]) + json.dumps(schema).encode())
    put("constraint", "schema_any_ws", bytes([0x80]) + json.dumps(schema).encode())
    put("constraint", "schema_recursive", bytes([0]) + json.dumps(
        {"type": "array", "items": {"$ref": "#"}}).encode())
    put("constraint", "schema_pattern", bytes([0]) + json.dumps(
        {"type": "string", "pattern": "[a-z]{2,4}-[0-9]+"}).encode())
    put("constraint", "regex", bytes([1]) + b"(ab|c)*d?[0-9]{1,3}\.x+")
    put("constraint", "ebnf", bytes([2]) + b'root ::= item ("," item)*\nitem ::= [a-z]+ | "(" root ")"')
    put("constraint", "choices", bytes([3]) + b"yes\nno\nmaybe so")
    put("constraint", "structural_tag", bytes([4]) + b"f\n" + json.dumps(schema).encode())


if __name__ == "__main__":
    model_json_seeds()
    chat_template_seeds()
    http_seeds()
    gguf_seeds()
    safetensors_seeds()
    constraint_seeds()
