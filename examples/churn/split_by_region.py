#!/usr/bin/env python3
"""Splits the telecom churn data into one file per US Census region (the silos).

Run once; its output is committed under data/. Usage:
    python3 split_by_region.py SOURCE.csv data/
"""
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from us_regions import REGIONS, STATE_TO_REGION  # noqa: E402


src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
with src.open(newline="") as f:
    reader = csv.reader(f)
    header = next(reader)
    rows = {r: [] for r in REGIONS}
    for row in reader:
        rows[STATE_TO_REGION[row[0]]].append(row)
for region, rs in rows.items():
    with (out / f"{region}.csv").open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rs)
    print(region, len(rs))
