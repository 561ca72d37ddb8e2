#!/usr/bin/env python3
"""Splits the telecom churn data into one file per US Census region (the silos).

Run once; its output is committed under data/. Usage:
    python3 split_by_region.py SOURCE.csv data/
"""
import csv
import sys
from pathlib import Path

REGIONS = {
    "northeast": "CT ME MA NH RI VT NJ NY PA",
    "midwest": "IL IN MI OH WI IA KS MN MO NE ND SD",
    "south": "DE DC FL GA MD NC SC VA WV AL KY MS TN AR LA OK TX",
    "west": "AZ CO ID MT NV NM UT WY AK CA HI OR WA",
}
STATE_TO_REGION = {s: r for r, states in REGIONS.items() for s in states.split()}

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
