#!/usr/bin/env python3
"""Prints the kernel benchmarks as a Markdown table: the median time of each kernel, its input
throughput, and that throughput as a share of the plain read bandwidth measured in the same run
over the same bytes. Reads criterion's results under target/criterion.

    cargo bench -p fedsilo --bench kernels && scripts/bench-summary.py
"""
import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
groups = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("n"))
print("| n | d | kernel | median time | input GB/s | % of read bandwidth |")
print("|---|---|---|---|---|---|")
for g in sorted(groups, key=lambda p: (int(p.name.split("_d")[1].rstrip("M")), int(p.name[1:].split("_")[0]))):
    n = int(g.name[1:].split("_")[0])
    d = int(g.name.split("_d")[1].rstrip("M")) * 1_000_000
    nbytes = n * d * 4

    def median_s(bench):
        est = json.loads((g / bench / "new" / "estimates.json").read_text())
        return est["median"]["point_estimate"] / 1e9

    benches = [b.name for b in g.iterdir() if (b / "new" / "estimates.json").exists()]
    bw = nbytes / median_s("read_bandwidth") / 1e9
    order = ["read_bandwidth", "weighted_mean", "trimmed_mean", "median", "krum", "multi_krum", "bulyan"]
    for b in sorted(benches, key=lambda b: next(i for i, o in enumerate(order) if b.startswith(o))):
        t = median_s(b)
        gbs = nbytes / t / 1e9
        tt = f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"
        print(f"| {n} | 10^{len(str(d)) - 1} | {b} | {tt} | {gbs:.1f} | {100 * gbs / bw:.0f} % |")
