#!/usr/bin/env python3
"""A fedsilo external trainer for a model of its own architecture (numpy only).

The model: hashed bag-of-words features of the text columns, and a softmax regression on them
(`w` [buckets, classes], `b` [classes]) -- architecture `example.bow-softmax`; with
`--regression`, a linear model of a numeric label instead (`w` [buckets, 1], `b` [1], squared
error). It shows the
contract an external program keeps for a model with a manifest (see docs/fine-tuning.md,
"External programs for any model"); a PyTorch + PEFT program keeps the same one.

Prepare the model once (writes OUT/manifest.toml and OUT/initial.safetensors):
    numpy_bow.py --init OUT --text review --label score --classes other,great [--buckets 512]
    numpy_bow.py --init OUT --text review --label stars --regression [--buckets 512]
Then each silo runs with
    silo-node ... --manifest OUT/manifest.toml --model-dir OUT \
                  --trainer python3 --trainer-arg examples/trainers/numpy_bow.py
and silo-node calls `numpy_bow.py WORKDIR`: WORKDIR holds request.json, base.safetensors and
train.csv (mode "train": write weights.safetensors and metrics.json) or rows.csv (mode
"predict": write probabilities.json, or predictions.json for a regression).

--fail-with MODE misbehaves on purpose (for fedsilo's tests): wrong-shape, nan, bad-probabilities,
huge-prediction.
"""
import csv
import json
import re
import struct
import sys
import zlib

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {info['dtype']}, F32 expected")
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    header, body = {}, bytearray()
    for name in sorted(tensors):
        raw = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(tensors[name].shape),
            "data_offsets": [len(body), len(body) + len(raw)],
        }
        body += raw
    head = json.dumps(header).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + bytes(body))


def features(rows, text_columns, buckets):
    x = np.zeros((len(rows), buckets), dtype=np.float32)
    for i, row in enumerate(rows):
        words = re.findall(r"[a-z0-9']+", " ".join(row[c] for c in text_columns).lower())
        for w in words:
            x[i, zlib.crc32(w.encode()) % buckets] += 1.0
        if words:
            x[i] /= np.sqrt(len(words))
    return x


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def init(args):
    regression = "--regression" in args
    args = [a for a in args if a != "--regression"]
    opts = dict(zip(args[0::2], args[1::2]))
    out = opts["--init"]
    buckets = int(opts.get("--buckets", "512"))
    if regression:
        classes, task = [None], 'kind = "regression"'
    else:
        classes = opts["--classes"].split(",")
        kind = "binary" if len(classes) == 2 else "multiclass"
        task = f'kind = "{kind}"\nclasses = {json.dumps(classes)}'
    import os

    os.makedirs(out, exist_ok=True)
    manifest = f"""architecture = "example.bow-softmax"

[task]
{task}

[data]
text = {json.dumps(opts["--text"].split(","))}
label = "{opts["--label"]}"

[[trainable]]
name = "w"
shape = [{buckets}, {len(classes)}]

[[trainable]]
name = "b"
shape = [{len(classes)}]

[settings]
buckets = {buckets}
"""
    with open(f"{out}/manifest.toml", "w") as f:
        f.write(manifest)
    write_safetensors(
        f"{out}/initial.safetensors",
        {"w": np.zeros((buckets, len(classes)), np.float32), "b": np.zeros(len(classes), np.float32)},
    )
    print(f"wrote {out}/manifest.toml and {out}/initial.safetensors")


def main(argv):
    if "--init" in argv:
        return init(argv)
    fail = None
    if argv[0] == "--fail-with":
        fail, argv = argv[1], argv[2:]
    workdir = argv[0]
    req = json.load(open(f"{workdir}/request.json"))
    weights = read_safetensors(f"{workdir}/base.safetensors")
    w, b = weights["w"], weights["b"]
    buckets = w.shape[0]
    if req["mode"] == "train":
        rows = list(csv.DictReader(open(f"{workdir}/train.csv", newline="")))
        x = features(rows, req["text"], buckets)
        regression = req["task"] == "regression"
        if regression:
            onehot = np.array([[float(r[req["label"]])] for r in rows], dtype=np.float32)
            y = None
        else:
            classes = req["classes"]
            y = np.array([classes.index(r[req["label"]].strip()) for r in rows])
            onehot = np.eye(len(classes), dtype=np.float32)[y]
        rng = np.random.default_rng(req["seed"])
        lr, batch = req["learning_rate"], max(1, req["batch_size"])
        mu, w0, b0 = req.get("prox_mu", 0.0), w.copy(), b.copy()
        loss = 0.0
        for _ in range(req["epochs"]):
            order = rng.permutation(len(rows))
            total = 0.0
            for start in range(0, len(order), batch):
                idx = order[start : start + batch]
                if regression:
                    p = x[idx] @ w + b
                    total += ((p - onehot[idx]) ** 2).sum()
                    g = 2.0 * (p - onehot[idx]) / len(idx)
                else:
                    p = softmax(x[idx] @ w + b)
                    total += -np.log(np.clip(p[np.arange(len(idx)), y[idx]], 1e-7, 1.0)).sum()
                    g = (p - onehot[idx]) / len(idx)
                # FedProx: the proximal term's gradient mu * (theta - theta_0).
                w -= lr * (x[idx].T @ g + mu * (w - w0))
                b -= lr * (g.sum(axis=0) + mu * (b - b0))
            loss = total / len(rows)
        if fail == "wrong-shape":
            w = w[:-1]
        if fail == "nan":
            w[0, 0] = np.nan
        write_safetensors(f"{workdir}/weights.safetensors", {"w": w, "b": b})
        json.dump({"train_loss": float(loss)}, open(f"{workdir}/metrics.json", "w"))
    else:
        rows = list(csv.DictReader(open(f"{workdir}/rows.csv", newline="")))
        if req["task"] == "regression":
            p = features(rows, req["text"], buckets) @ w + b
            if fail == "huge-prediction":
                p[0, 0] = 1e13
            json.dump(p.tolist(), open(f"{workdir}/predictions.json", "w"))
            return
        p = softmax(features(rows, req["text"], buckets) @ w + b)
        if fail == "bad-probabilities":
            p = p * 2.0
        json.dump(p.tolist(), open(f"{workdir}/probabilities.json", "w"))


if __name__ == "__main__":
    main(sys.argv[1:])
