#!/usr/bin/env bash
# End-to-end comparison: REQUESTS requests sharing a long system prompt, run with no
# sharing, with automatic prefix caching, and with relay attention, through
# `relayllm generate` (any backend: pass --device, --model, --load-format, ...).
# Prints requests/s and generated tokens/s per mode and how many requests got the
# same tokens in all three (on a GPU, 16-bit near-ties may flip a greedy token).
# Usage: [REQUESTS=64] [PREFIX_WORDS=400] [MAX_TOKENS=32] \
#        bench/shared_prefix.sh [relayllm binary] [extra generate flags...]
# Runs on the tiny random-weight model unless RELAYLLM_DEFAULT_MODEL or --model says otherwise.
# (A word of the prompt is about 1.3 Llama-2 tokens: PREFIX_WORDS=1550 is about 2048 tokens.)
set -euo pipefail
export RELAYLLM_DEFAULT_MODEL=${RELAYLLM_DEFAULT_MODEL:-none}
bin=${1:-build/relayllm}
shift || true
requests=${REQUESTS:-64} prefix_words=${PREFIX_WORDS:-400} max_tokens=${MAX_TOKENS:-32}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" "$requests" "$prefix_words" <<'PY'
import json, random, sys
work, requests, prefix_words = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(0)
words = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there one all we their").split()
open(f"{work}/sys.txt", "w").write(" ".join(random.choice(words) for _ in range(prefix_words)))
with open(f"{work}/prompts.jsonl", "w") as f:
    for i in range(requests):
        f.write(json.dumps({"prompt": f"Question {i}: what is {i} plus {2 * i}?"}) + "\n")
PY
printf '%-16s %10s %12s %14s %14s\n' mode seconds requests/s gen_tokens/s prompt_tokens
for mode in none prefix-caching relay; do
  # Prefix caching is on by default: "none" turns it off, "relay" keeps it (automatic groups).
  flags=(--no-enable-prefix-caching)
  [ "$mode" = prefix-caching ] && flags=(--enable-prefix-caching)
  [ "$mode" = relay ] && flags=(--enable-relay-attention)
  "$bin" generate --sys-prompt-file "$work/sys.txt" --prompts-file "$work/prompts.jsonl" \
    --max-tokens "$max_tokens" --ignore-eos --temperature 0 "${flags[@]}" "$@" \
    >"$work/$mode.jsonl" 2>"$work/$mode.log"
  python3 - "$work" "$mode" <<'PY'
import json, re, sys
work, mode = sys.argv[1], sys.argv[2]
line = [l for l in open(f"{work}/{mode}.log") if "requests in" in l][-1]
n, secs, prompt, gen = re.search(r"(\d+) requests in ([\d.]+) s: (\d+) prompt \+ (\d+) generated", line).groups()
print(f"{mode:<16} {float(secs):10.2f} {int(n) / float(secs):12.2f} {int(gen) / float(secs):14.1f} {prompt:>14}")
PY
done
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
runs = {m: [json.loads(l)["token_ids"] for l in open(f"{work}/{m}.jsonl")] for m in ["none", "prefix-caching", "relay"]}
same = sum(all(runs[m][i] == runs["none"][i] for m in runs) for i in range(len(runs["none"])))
print(f"requests with identical tokens in all modes: {same} of {len(runs['none'])}")
PY
