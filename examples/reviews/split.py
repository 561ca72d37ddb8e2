#!/usr/bin/env python3
"""Splits the 5,000 Amazon Fine Food reviews (data/fine_foods_reviews.csv) among four
retailers, the way Flower Datasets' DirichletPartitioner makes label-skewed silos: for each
label (great, other), the label's reviews are shuffled and shared among the retailers in
proportions drawn from Dirichlet(alpha = 0.5, ..., 0.5). A draw that leaves a retailer with
fewer than 300 reviews, or with fewer than 30 of either label, is discarded and drawn again from
the same generator (seeded), so the split is the same on every machine. Each retailer keeps the
source's own split: its reviews from the source's training data train, those from its testing
data are its held-out set.

    python3 examples/reviews/split.py OUT_DIR      # writes OUT_DIR/retailer-{a,b,c,d}/{train,holdout}.csv

Columns written: review (HTML line breaks turned into spaces), label (great or other).
Standard library only.
"""
import csv
import os
import random
import sys

SEED = 20261206
ALPHA = 0.5
RETAILERS = ["retailer-a", "retailer-b", "retailer-c", "retailer-d"]
MIN_ROWS = 300
MIN_PER_LABEL = 30
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fine_foods_reviews.csv")


def dirichlet(rng, n):
    g = [rng.gammavariate(ALPHA, 1.0) for _ in range(n)]
    s = sum(g)
    return [x / s for x in g]


def split(rows):
    rng = random.Random(SEED)
    by_label = {}
    for r in rows:
        by_label.setdefault(r["score"], []).append(r)
    labels = sorted(by_label)
    for rs in by_label.values():
        rng.shuffle(rs)
    while True:
        parts = {name: [] for name in RETAILERS}
        counts = {name: {l: 0 for l in labels} for name in RETAILERS}
        for label in labels:
            rs = by_label[label]
            p = dirichlet(rng, len(RETAILERS))
            cuts = [round(sum(p[: i + 1]) * len(rs)) for i in range(len(RETAILERS))]
            start = 0
            for name, end in zip(RETAILERS, cuts):
                parts[name].extend(rs[start:end])
                counts[name][label] = end - start
                start = end
        if all(len(parts[n]) >= MIN_ROWS and min(counts[n].values()) >= MIN_PER_LABEL for n in RETAILERS):
            return parts


def main(out):
    with open(SOURCE, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    parts = split(rows)
    print(f"{'retailer':<12} {'train':>6} {'held-out':>9} {'great %':>8}")
    for name in RETAILERS:
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        for which, source in (("train", "training"), ("holdout", "testing")):
            with open(os.path.join(d, f"{which}.csv"), "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["review", "label"])
                for r in parts[name]:
                    if r["source_split"] == source:
                        w.writerow([" ".join(r["review"].replace("<br />", " ").split()), r["score"]])
        rs = parts[name]
        train = sum(r["source_split"] == "training" for r in rs)
        great = 100.0 * sum(r["score"] == "great" for r in rs) / len(rs)
        print(f"{name:<12} {train:>6} {len(rs) - train:>9} {great:>7.1f}%")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/reviews/run/data")
