#!/usr/bin/env python3
"""Plots latency against request rate from serve_bench.py's --result-json lines, one line per label.

Usage: plot_serve.py RESULTS.jsonl OUT.png [TITLE]
Three panels: TTFT, TPOT and end-to-end latency (p50 solid, p99 dashed) against the offered request
rate; the achieved requests/s is printed in the legend's last point. Needs matplotlib.
"""
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    title = sys.argv[3] if len(sys.argv) > 3 else "relayllm serve: latency vs request rate"
    by_label = defaultdict(list)
    for row in rows:
        if row["request_rate"] != "inf":
            by_label[row["label"] or "run"].append(row)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for (key, name), ax in zip([("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "end-to-end")], axes):
        for i, (label, points) in enumerate(sorted(by_label.items())):
            points.sort(key=lambda r: r["request_rate"])
            rates = [r["request_rate"] for r in points]
            color = f"C{i}"
            ax.plot(rates, [r[f"{key}_p50_ms"] for r in points], "-o", color=color, label=f"{label} p50")
            ax.plot(rates, [r[f"{key}_p99_ms"] for r in points], "--x", color=color, label=f"{label} p99")
        ax.set_xlabel("request rate (requests/s, Poisson)")
        ax.set_ylabel(f"{name} (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(name)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
