#!/usr/bin/env bash
# End-to-end benchmark of a 3-level prefix tree, nothing registered: one system prompt
# for every request, DOCS documents each shared by PER_DOC requests, a question of its
# own per request. Runs `relayllm generate` with relay off (no sharing), prefix caching
# only, and automatic relay (prefix caching + relay groups found by the engine), and
# prints per mode: seconds, generated tokens/s, computed prompt tokens, the decode
# attention's KV rows and MB read per step (from the engine's plan: groups once per
# step, own ranges per request) and the deepest group nesting. REPEAT > 1 runs each
# mode that many times and prints the median seconds and tokens/s. MODES picks the modes and
# their order (default: relay-off prefix-caching auto-relay). VERBOSE=1 also shows the engine's log.
# Usage: [SYSTEM=1024] [DOCS=8] [PER_DOC=8] [DOC_TOKENS=2048] [QUESTION=100] [MAX_TOKENS=128] \
#        [REPEAT=1] [VOCAB=30000] [MODES=...] bench/prefix_tree.sh [relayllm binary] [generate flags...]
# On the GPU: bench/prefix_tree.sh BIN/relayllm --model bench/configs/llama2-7b \
#   --tokenizer TOKENIZER_DIR --load-format dummy --device cuda
# The issue's shape is the default; on a small CPU scale it down (the numbers in
# docs/relay_attention.md say which shape they ran).
set -euo pipefail
bin=${1:-build/relayllm}
shift || true
system=${SYSTEM:-1024} docs=${DOCS:-8} per_doc=${PER_DOC:-8} doc_tokens=${DOC_TOKENS:-2048}
question=${QUESTION:-100} max_tokens=${MAX_TOKENS:-128} repeat=${REPEAT:-1}
modes=${MODES:-relay-off prefix-caching auto-relay}
vocab=${VOCAB:-30000}  # token ids are drawn from [3, VOCAB): 256 for the tiny random model
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/prompts.jsonl" "$system" "$docs" "$per_doc" "$doc_tokens" "$question" "$vocab" <<'PY'
import json, random, sys
path, system, docs, per_doc, doc_tokens, question, vocab = sys.argv[1], *map(int, sys.argv[2:])
random.seed(0)
ids = lambda n: [random.randrange(3, vocab) for _ in range(n)]
sys_ids = ids(system)
with open(path, "w") as f:
    for d in range(docs):
        doc = ids(doc_tokens)
        for q in range(per_doc):
            f.write(json.dumps({"prompt_token_ids": sys_ids + doc + ids(question)}) + "\n")
PY
printf '%-16s %9s %12s %14s %16s %14s %16s %6s\n' mode seconds gen_tok/s prompt_tokens \
  kv_rows/step kv_MB/step paged_MB/step depth
for mode in $modes; do
  flags=(--no-enable-prefix-caching)
  [ "$mode" = prefix-caching ] && flags=(--enable-prefix-caching)
  [ "$mode" = auto-relay ] && flags=(--enable-prefix-caching --enable-relay-attention)
  for r in $(seq "$repeat"); do
    if [ "${VERBOSE:-0}" = 1 ]; then  # the engine's log as it runs, too (progress under a timeout)
      "$bin" generate --prompts-file "$work/prompts.jsonl" --max-tokens "$max_tokens" --ignore-eos \
        --temperature 0 "${flags[@]}" "$@" 2>&1 >"$work/$mode.$r.jsonl" | tee "$work/$mode.$r.log" >&2
    else
      "$bin" generate --prompts-file "$work/prompts.jsonl" --max-tokens "$max_tokens" --ignore-eos \
        --temperature 0 "${flags[@]}" "$@" >"$work/$mode.$r.jsonl" 2>"$work/$mode.$r.log"
    fi
  done
  python3 - "$work" "$mode" "$repeat" <<'PY'
import re, statistics, sys
work, mode, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
secs, gens = [], []
for r in range(1, repeat + 1):
    log = open(f"{work}/{mode}.{r}.log").read()
    n, s, prompt, gen = re.search(r"(\d+) requests in ([\d.]+) s: (\d+) prompt \+ (\d+) generated", log).groups()
    secs.append(float(s)); gens.append(int(gen) / float(s))
    rows, mb, paged, depth = re.search(
        r"([\d.]+) KV rows \(([\d.]+) MB\) read per step, paged attention would read [\d.]+ \(([\d.]+) MB\).*deepest (\d+)",
        log).groups()
print(f"{mode:<16} {statistics.median(secs):9.2f} {statistics.median(gens):12.1f} {prompt:>14} "
      f"{float(rows):16.0f} {float(mb):14.2f} {float(paged):16.2f} {depth:>6}")
PY
done
python3 - "$work" $modes <<'PY'
import json, sys
work, modes = sys.argv[1], sys.argv[2:]
runs = {m: [json.loads(l)["token_ids"] for l in open(f"{work}/{m}.1.jsonl")] for m in modes}
first = runs[modes[0]]
same = sum(all(runs[m][i] == first[i] for m in runs) for i in range(len(first)))
print(f"requests with identical tokens in all modes ({', '.join(modes)}): {same} of {len(first)}")
PY
