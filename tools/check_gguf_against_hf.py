#!/usr/bin/env python3
"""Check relayllm's GGUF loading against HF transformers reading the same .gguf file.

Two oracles, both on CPU in float32:
  * tokenizer: `relayllm tokenize --model FILE.gguf` against transformers' tokenizer built from
    the same GGUF metadata (AutoTokenizer.from_pretrained(dir, gguf_file=...)), on the corpus
    tests/data/tokenizer_corpus.jsonl, with and without special tokens;
  * model: for each prompt (the same token ids on both sides) the greedy continuation
    (EOS ignored) and the log-probability of every prompt token given the ones before it,
    relayllm (`generate --prompt-logprobs 0 --temperature 0`) against
    AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., torch_dtype=float32).

Prints a Markdown summary (and writes it to --out). Needs torch, transformers and the `gguf`
package (transformers dequantizes GGUF tensors with it).

    python3 tools/check_gguf_against_hf.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf \
        --bin build/relayllm --out docs/gguf_oracle.md
"""

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "The capital of France is",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "What is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village by the sea, there lived",
    "Translate to French: I would like a cup of coffee, please.",
    "1, 2, 3, 5, 8, 13, 21,",
]
NEW_TOKENS = 32
LOGPROB_BOUND = 2e-3  # float32 on both sides; differences come from summation order only


def run(cmd, stdin=None):
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=1800)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr.decode('utf-8', 'replace')}")
    return proc.stdout.decode("utf-8")


def check_tokenizer(args, hf_tok):
    texts = [json.loads(l)["text"] for l in open(args.corpus, encoding="utf-8") if l.strip()]
    stdin = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts).encode()
    rows = []
    for special in (False, True):
        cmd = [args.bin, "tokenize", "--model", args.gguf] + ([] if special else ["--no-special"])
        ours = [json.loads(l)["ids"] for l in run(cmd, stdin).splitlines()]
        theirs = [hf_tok.encode(t, add_special_tokens=special) for t in texts]
        bad = [(t, e, g) for t, e, g in zip(texts, theirs, ours) if e != g]
        decode_bad = sum(hf_tok.decode(ids) != hf_tok.decode(o) for ids, o in zip(theirs, ours))
        rows.append((special, len(texts), len(texts) - len(bad), bad[:3], decode_bad))
    return rows


def hf_greedy_and_logprobs(model, torch, ids):
    with torch.no_grad():
        x = torch.tensor([ids])
        logits = model(x).logits[0].double()
        lp = torch.log_softmax(logits, -1)
        prompt_lp = [lp[i - 1, ids[i]].item() for i in range(1, len(ids))]
        # Plain argmax steps: generate()'s min_new_tokens would mask EOS, which relayllm's
        # --ignore-eos does not.
        seq = list(ids)
        greedy = []
        for _ in range(NEW_TOKENS):
            nxt = int(model(torch.tensor([seq + greedy])).logits[0, -1].argmax())
            greedy.append(nxt)
        # Teacher-forced logprobs of both continuations, to size divergences.
        full = torch.tensor([seq + greedy])  # noqa: the last token needs no logits
        lp_full = torch.log_softmax(model(full).logits[0].double(), -1)
    return prompt_lp, greedy, lp_full


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gguf", required=True)
    p.add_argument("--bin", required=True)
    p.add_argument("--corpus", default=str(ROOT / "tests" / "data" / "tokenizer_corpus.jsonl"))
    p.add_argument("--out")
    p.add_argument("--device-name", default=platform.node())
    args = p.parse_args()

    import torch
    import transformers
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    gguf_path = Path(args.gguf).resolve()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, torch_dtype=torch.float32)
    model.eval()

    lines = []
    say = lines.append
    say("# GGUF oracle: relayllm vs HF transformers on the same file\n")
    say(f"- file: `{gguf_path.name}` ({gguf_path.stat().st_size} bytes)")
    say(f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    say(f"- device: {args.device_name}; both sides on CPU in float32")
    say(f"- torch {torch.__version__}, transformers {transformers.__version__}")
    say(f"- command: `python3 tools/check_gguf_against_hf.py --gguf {gguf_path.name} --bin relayllm`\n")

    say("## Tokenizer (corpus tests/data/tokenizer_corpus.jsonl)\n")
    say("| add special tokens | texts | identical ids | texts whose decoded text differs |")
    say("| --- | --- | --- | --- |")
    tok_rows = check_tokenizer(args, hf_tok)
    for special, n, same, bad, decode_bad in tok_rows:
        say(f"| {special} | {n} | {same} | {decode_bad} |")
    for special, n, same, bad, _ in tok_rows:
        for t, e, g in bad:
            say(f"\n- mismatch (special={special}): {json.dumps(t[:80])}: HF {e[:24]} vs relayllm {g[:24]}")

    say(f"\n## Model: greedy {NEW_TOKENS} tokens (EOS ignored) and prompt logprobs\n")
    ids_list = [hf_tok.encode(t, add_special_tokens=False) for t in PROMPTS]
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for ids in ids_list:
            f.write(json.dumps({"prompt_token_ids": ids}) + "\n")
        prompts_file = f.name
    out = run([args.bin, "generate", "--model", args.gguf, "--prompts-file", prompts_file,
               "--temperature", "0", "--max-tokens", str(NEW_TOKENS), "--ignore-eos",
               "--prompt-logprobs", "0"])
    ours = sorted((json.loads(l) for l in out.splitlines() if l.strip()), key=lambda r: r["index"])

    say("| prompt | tokens | greedy tokens equal | first divergence | max abs diff prompt logprob | "
        "relayllm text |")
    say("| --- | --- | --- | --- | --- | --- |")
    worst = 0.0
    all_equal = True
    for text, ids, r in zip(PROMPTS, ids_list, ours):
        prompt_lp, greedy, lp_full = hf_greedy_and_logprobs(model, torch, ids)
        ours_lp = []
        for i, entry in enumerate(r["prompt_logprobs"][1:], start=1):
            ours_lp.append(entry[str(ids[i])])
        diff = max(abs(a - b) for a, b in zip(prompt_lp, ours_lp))
        worst = max(worst, diff)
        got = r["token_ids"]
        equal = got == greedy
        all_equal &= equal
        first = next((i for i, (a, b) in enumerate(zip(got, greedy)) if a != b), None)
        note = "-" if first is None else (
            f"at {first}: HF margin {lp_full[len(ids) + first - 1].topk(2).values.diff().abs().item():.2e}")
        say(f"| {json.dumps(text[:40])} | {len(ids)} | {equal} | {note} | {diff:.2e} | "
            f"{json.dumps(r['text'][:60])} |")
    say(f"\nBound: max |Δ prompt logprob| <= {LOGPROB_BOUND:g}. Result: worst {worst:.2e} -> "
        f"{'PASS' if worst <= LOGPROB_BOUND else 'FAIL'}; greedy tokens "
        f"{'all equal' if all_equal else 'NOT all equal'}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    tokens_ok = all(same == n for _, n, same, _, _ in tok_rows)
    return 0 if worst <= LOGPROB_BOUND and all_equal and tokens_ok else 1


if __name__ == "__main__":
    sys.exit(main())
