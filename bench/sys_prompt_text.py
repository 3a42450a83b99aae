#!/usr/bin/env python3
"""Writes a system prompt of exactly N tokens (BOS included) for a tokenizer folder.

The text is common English words; its token ids come from `relayllm tokenize` (the engine's own
tokenizer, with special tokens, as `--sys-prompt-file` registers it), and the word count is adjusted
until the count is exact. Prints the ids as JSON on stdout; the text goes to TEXT_FILE.

Usage: sys_prompt_text.py RELAYLLM_BIN TOKENIZER_DIR N TEXT_FILE [SEED]
"""
import json
import random
import subprocess
import sys

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her she there one all we their").split()


def token_ids(binary: str, tokenizer_dir: str, text: str) -> list[int]:
    out = subprocess.run([binary, "tokenize", "--model", tokenizer_dir], input=json.dumps({"text": text}),
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["ids"]


def main() -> None:
    binary, tokenizer_dir, n, text_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    rng = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    words = [rng.choice(WORDS) for _ in range(2 * n + 16)]
    count = n - 1
    for _ in range(20):
        text = " ".join(words[:count])
        ids = token_ids(binary, tokenizer_dir, text)
        if len(ids) == n:
            open(text_file, "w").write(text)
            print(json.dumps(ids))
            return
        count += n - len(ids) if len(ids) != n else 0
        count = max(1, count)
    sys.exit(f"sys_prompt_text.py: found no word count giving exactly {n} tokens (last: {len(ids)})")


if __name__ == "__main__":
    main()
