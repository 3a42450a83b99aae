"""Regenerates tokenizer_decode_cases.json with the reference `tokenizers` package.

Run with the project venv: RELAYLLM_SHARED_DIR=<shared dir> python tests/data/make_tokenizer_decode_cases.py
"""
import json
import os
from pathlib import Path
from tokenizers import Tokenizer

SHARED = Path(os.environ["RELAYLLM_SHARED_DIR"])
OUT = Path(__file__).resolve().parent / "tokenizer_decode_cases.json"
texts = ["Hello world", " Hello", "", "  two spaces", "It's 'S DON'T", "你好，世界！", "日本語 한국어 العربية",
         "Emoji 👨‍👩‍👧‍👦 👋🏽 🇯🇵", "e\u0301 é", "\n\t mixed \r\n whitespace  ", "def f(x):\n    return x ** 2\n",
         "<s> Hello </s>", "<|begin_of_text|>Hi<|eot_id|>", "<|im_start|>user\nHi<|im_end|>", "<think>ok</think>",
         "12345678", "\u180e's", "a<s>b"]
cases = {}
for name in ["llama2", "llama3", "qwen3"]:
    tk = Tokenizer.from_file(str(SHARED / "tokenizers" / name / "tokenizer.json"))
    out = []
    for t in texts:
        for add in [True, False]:
            ids = tk.encode(t, add_special_tokens=add).ids
            for skip in [True, False]:
                out.append({"ids": ids, "skip_special_tokens": skip, "text": tk.decode(ids, skip_special_tokens=skip)})
    # Hand-built id lists: broken UTF-8 made of byte tokens, special tokens in the middle.
    extra = []
    if name == "llama2":
        b = lambda x: tk.token_to_id(f"<0x{x:02X}>")
        extra = [[b(0xE4)], [b(0xE4), b(0xBD)], [b(0xE4), b(0xBD), b(0xA0)], [b(0xFF), 22557], [22557, b(0xF0), b(0x9F)],
                 [1, 28705, 22557, 2], [28705, 28705, 22557], [b(0x80), b(0x41)]]
    else:
        ids = tk.encode("😀你", add_special_tokens=False).ids
        extra = [ids[:1], ids[:2], ids, ids[1:], [tk.token_to_id("Ġ")], [tk.token_to_id("ĠĠ"), tk.token_to_id("Hello")]]
        sp = tk.token_to_id("<|im_start|>" if name == "qwen3" else "<|eot_id|>")
        extra.append([sp] + ids[:1] + [sp] + ids[1:])
    for ids in extra:
        for skip in [True, False]:
            out.append({"ids": ids, "skip_special_tokens": skip, "text": tk.decode(ids, skip_special_tokens=skip)})
    cases[name] = out
with open(OUT, "w", encoding="utf-8") as f:
    json.dump(cases, f, ensure_ascii=False, indent=0)
    f.write("\n")
