#!/usr/bin/env python3
"""Splits the telecom churn data into ten silos by state (states in alphabetical order, dealt
round-robin: the 1st, 11th, 21st... state to silo-0, and so on), so every silo holds whole states.

Run once; its output is committed under data/. Usage:
    python3 split_by_state.py SOURCE.csv data/
"""
import csv
import sys
from pathlib import Path

src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
with src.open(newline="") as f:
    reader = csv.reader(f)
    header = next(reader)
    rows = list(reader)
states = sorted({r[0] for r in rows})
silo_of = {s: i % 10 for i, s in enumerate(states)}
for k in range(10):
    with (out / f"silo-{k}.csv").open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        part = [r for r in rows if silo_of[r[0]] == k]
        w.writerows(part)
    print(f"silo-{k}", len(part))
