#!/usr/bin/env python3
"""Splits the telco churn sample into the enterprise's business units, one file per unit: the
customers of the DSL broadband line, of the fibre broadband line and of voice-only service
(`internet_service` = DSL, Fiber optic, No). The unit decides which file a customer is in and
is left out of the files (it is constant within a unit). Eleven customers with tenure 0 have
no `total_charges` yet: it is written as 0, what they have been charged.

Run once; its output is committed under data/. Usage:
    python3 split_by_unit.py ../../../shared/datasets/wa_churn.csv data/
"""
import csv
import sys
from pathlib import Path

UNITS = {"DSL": "dsl", "Fiber optic": "fiber", "No": "voice"}

src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
with src.open(newline="") as f:
    reader = csv.DictReader(f)
    columns = [c for c in reader.fieldnames if c != "internet_service"]
    files = {u: [] for u in UNITS.values()}
    for row in reader:
        if row["total_charges"] == "":
            assert row["tenure"] == "0", row
            row["total_charges"] = "0"
        files[UNITS[row["internet_service"]]].append([row[c] for c in columns])
for unit, rows in files.items():
    with (out / f"{unit}.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    print(f"{unit}: {len(rows)} customers")
