#!/usr/bin/env python3
"""Splits the Lending Club loans into the federation's files: a seeded random 10 % of the loans
as a public-like slice (data/public.csv, for central pretraining; no silo holds these rows),
and the rest one file per US Census region of the borrower's state (the silos). Only the
columns the schema uses are kept, with `state`.

Run once; its output is committed under data/. Usage:
    python3 split_by_region.py SOURCE.csv data/
"""
import csv
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from us_regions import REGIONS, STATE_TO_REGION  # noqa: E402

COLUMNS = [
    "state", "grade", "emp_length", "homeownership", "annual_income", "verified_income",
    "debt_to_income", "delinq_2y", "inquiries_last_12m", "total_credit_lines",
    "open_credit_lines", "total_credit_limit", "total_credit_utilized",
    "num_historical_failed_to_pay", "accounts_opened_24m", "num_satisfactory_accounts",
    "num_cc_carrying_balance", "num_mort_accounts", "account_never_delinq_percent",
    "public_record_bankrupt", "loan_purpose", "loan_amount", "term",
]

src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(2018)
files = {name: [] for name in list(REGIONS) + ["public"]}
with src.open(newline="") as f:
    for row in csv.DictReader(f):
        name = "public" if rng.random() < 0.1 else STATE_TO_REGION[row["state"]]
        files[name].append([row[c] for c in COLUMNS])
for name, rows in files.items():
    with (out / f"{name}.csv").open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(rows)
    print(name, len(rows))
