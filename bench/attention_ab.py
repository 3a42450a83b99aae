"""The table of bench/attention_ab.sh: per configuration, the first variant's best
relay and paged times (microseconds) and every other variant's best time relative
to it, then the geometric means of those ratios.
Usage: attention_ab.py OUT_DIR NAME... (reads OUT_DIR/NAME_*.jsonl)"""
import glob
import json
import math
import os
import sys


def best_times(out_dir, name):
    best = {}
    for path in sorted(glob.glob(os.path.join(out_dir, f"{name}_*.jsonl"))):
        for line in open(path):
            row = json.loads(line)
            if row.get("kind") != "ours":
                continue
            key = (row["shape"], row["batch"], row["prefix"], row["own"])
            b = best.setdefault(key, {"relay_ms": math.inf, "paged_ms": math.inf})
            for m in b:
                b[m] = min(b[m], row[m])
    return best


def main():
    out_dir, names = sys.argv[1], sys.argv[2:]
    runs = {n: best_times(out_dir, n) for n in names}
    base, others = names[0], names[1:]
    ratio_cols = lambda: " | ".join(f"{n}/{base}" for n in others)
    print(f"| shape | B | P | own | relay {base} us | {ratio_cols()} | paged {base} us | {ratio_cols()} |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(others) + "---:|" + "---:|" * len(others))
    logs = {n: {"relay_ms": [], "paged_ms": []} for n in others}
    for key, x in runs[base].items():
        cells = {"relay_ms": [], "paged_ms": []}
        for n in others:
            y = runs[n].get(key)
            for m in cells:
                if y is None or not math.isfinite(y[m]):
                    cells[m].append("-")
                    continue
                r = y[m] / x[m]
                logs[n][m].append(math.log(r))
                cells[m].append(f"{r:.3f}")
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {x['relay_ms'] * 1e3:.1f} | "
              + " | ".join(cells["relay_ms"]) + f" | {x['paged_ms'] * 1e3:.1f} | " + " | ".join(cells["paged_ms"]) + " |")
    print()
    for n in others:
        lr, lp = logs[n]["relay_ms"], logs[n]["paged_ms"]
        if lr and lp:
            print(f"geomean {n}/{base}: relay {math.exp(sum(lr) / len(lr)):.4f}, "
                  f"paged {math.exp(sum(lp) / len(lp)):.4f} over {len(lr)} configurations")


if __name__ == "__main__":
    main()
