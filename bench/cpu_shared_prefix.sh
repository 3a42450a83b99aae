#!/usr/bin/env bash
# End-to-end comparison on the CPU backend: N requests sharing a long system prompt,
# run with no sharing, with automatic prefix caching, and with relay attention.
# Prints requests/s and generated tokens/s per mode and checks the tokens are identical.
# Usage: bench/cpu_shared_prefix.sh [relayllm binary] [extra generate flags...]
# Runs on the tiny random-weight model unless RELAYLLM_DEFAULT_MODEL or --model says otherwise.
set -euo pipefail
export RELAYLLM_DEFAULT_MODEL=${RELAYLLM_DEFAULT_MODEL:-none}
bin=${1:-build/relayllm}
shift || true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import json, random, sys
work = sys.argv[1]
random.seed(0)
words = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there one all we their").split()
open(f"{work}/sys.txt", "w").write(" ".join(random.choice(words) for _ in range(400)))
with open(f"{work}/prompts.jsonl", "w") as f:
    for i in range(64):
        f.write(json.dumps({"prompt": f"Question {i}: what is {i} plus {2 * i}?"}) + "\n")
PY
printf '%-16s %10s %12s %14s %14s\n' mode seconds requests/s gen_tokens/s prompt_tokens
for mode in none prefix-caching relay; do
  flags=()
  [ "$mode" = prefix-caching ] && flags=(--enable-prefix-caching)
  [ "$mode" = relay ] && flags=(--enable-relay-attention)
  "$bin" generate --sys-prompt-file "$work/sys.txt" --prompts-file "$work/prompts.jsonl" \
    --max-tokens 32 --ignore-eos --temperature 0 "${flags[@]}" "$@" \
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
same = all(runs["none"] == runs[m] for m in runs)
print("identical tokens across modes:", same)
sys.exit(0 if same else 1)
PY
