#!/usr/bin/env bash
# `fedsilo aggregate` as a whole process against its own in-process kernel time, on 4 update
# files per size (F32 safetensors). Prints, per size, the median of 5 runs: the whole process,
# its read, combine and write times, and whole / combine (issue 20's target: at most 1.5).
# SIZES (values per file, default 1000000,10000000), KERNEL (mean), WORK_DIR choose what runs.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
if [ ! -x "$target/release/fedsilo" ]; then
  bash scripts/ensure-deps.sh
  cargo build --release -p fedsilo --bin fedsilo
fi
SIZES="${SIZES:-1000000,10000000}" KERNEL="${KERNEL:-mean}" \
WORK_DIR="${WORK_DIR:-$(mktemp -d)}" FEDSILO="$target/release/fedsilo" python3 - <<'PY'
import json, os, re, statistics, struct, subprocess, time
from array import array

work, fedsilo, kernel = os.environ["WORK_DIR"], os.environ["FEDSILO"], os.environ["KERNEL"]

def write(path, n, seed):
    """One F32 tensor of n values, as safetensors lays it out."""
    header = json.dumps({"update": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    header += b" " * (-len(header) % 8)
    block = array("f", [((i * 7919 + seed * 104729) % 2001 - 1000) / 1000.0 for i in range(1000)])
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        whole, rest = divmod(n, 1000)
        f.write(block.tobytes() * whole)
        f.write(block[:rest].tobytes())

print("| values per file | files | whole process | read | combine | digest and write | whole / combine |")
print("|---|---|---|---|---|---|---|")
for n in [int(s) for s in os.environ["SIZES"].split(",")]:
    files = [os.path.join(work, f"u{n}-{i}.safetensors") for i in range(4)]
    for i, f in enumerate(files):
        write(f, n, i)
    os.sync()  # the inputs' dirty pages would otherwise slow the output's write
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        out = subprocess.run([fedsilo, "aggregate", "--kernel", kernel, "--out",
                              os.path.join(work, "out.safetensors"), *files],
                             check=True, capture_output=True, text=True).stdout
        whole = (time.perf_counter() - t) * 1e3
        m = re.search(r"read ([\d.]+) ms .*combine ([\d.]+) ms, digest and write ([\d.]+) ms", out)
        runs.append((whole, *map(float, m.groups())))
    med = lambda k: statistics.median(r[k] for r in runs)
    print(f"| {n} | 4 | {med(0):.1f} ms | {med(1):.1f} ms | {med(2):.1f} ms | {med(3):.1f} ms | {med(0) / med(2):.2f} |")
    for f in files:
        os.remove(f)
PY
