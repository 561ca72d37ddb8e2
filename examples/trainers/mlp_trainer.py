#!/usr/bin/env python3
"""A fedsilo external trainer in plain Python (standard library only).

silo-node runs it as `mlp_trainer.py [OPTIONS] WORKDIR` once per round (see `silo-node --trainer`).
WORKDIR holds base.safetensors (the global model), train.safetensors (x, y: the silo's training
split, already encoded and scaled) and plan.json; the trainer writes weights.safetensors and
metrics.json there. It trains the same network as the built-in trainer: dense layers
`dense{i}.weight` [in, out] and `dense{i}.bias` [out], ReLU between them, a sigmoid output,
binary cross-entropy, mini-batch SGD with FedProx's proximal term when plan.json asks for it.

--fail-with MODE makes it misbehave on purpose (for fedsilo's tests): wrong-shape, nan, sleep,
crash, no-weights, bad-loss.
"""
import array
import json
import math
import random
import struct
import sys
import time


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
        values = array.array("f")
        values.frombytes(body[start:end])
        if sys.byteorder != "little":
            values.byteswap()
        out[name] = (info["shape"], list(values))
    return out


def write_safetensors(path, tensors):
    header, body = {}, bytearray()
    for name in sorted(tensors):
        shape, values = tensors[name]
        raw = array.array("f", values)
        if sys.byteorder != "little":
            raw.byteswap()
        raw = raw.tobytes()
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    head = json.dumps(header).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        f.write(body)


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def train(workdir, fail_with):
    plan = json.load(open(f"{workdir}/plan.json"))
    model = read_safetensors(f"{workdir}/base.safetensors")
    data = read_safetensors(f"{workdir}/train.safetensors")
    (rows, inputs), xs = data["x"]
    ys = data["y"][1]
    widths = [plan["inputs"]] + plan["hidden"] + [1]
    layers = len(widths) - 1
    w = [model[f"dense{l}.weight"][1][:] for l in range(layers)]
    b = [model[f"dense{l}.bias"][1][:] for l in range(layers)]
    w0 = [v[:] for v in w]
    b0 = [v[:] for v in b]
    lr, mu = plan["learning_rate"], plan["prox_mu"]
    rng = random.Random(plan["seed"])
    order = list(range(rows))
    loss = float("nan")
    for _ in range(plan["epochs"]):
        rng.shuffle(order)
        total, batches = 0.0, 0
        for start in range(0, rows, plan["batch_size"]):
            batch = order[start : start + plan["batch_size"]]
            gw = [[0.0] * len(v) for v in w]
            gb = [[0.0] * len(v) for v in b]
            batch_loss = 0.0
            for r in batch:
                acts = [xs[r * inputs : (r + 1) * inputs]]
                for l in range(layers):
                    n_in, n_out = widths[l], widths[l + 1]
                    a, wl, bl = acts[-1], w[l], b[l]
                    z = [bl[j] + sum(a[i] * wl[i * n_out + j] for i in range(n_in)) for j in range(n_out)]
                    acts.append([max(0.0, v) for v in z] if l < layers - 1 else z)
                logit, y = acts[-1][0], ys[r]
                batch_loss += max(logit, 0.0) - logit * y + math.log1p(math.exp(-abs(logit)))
                delta = [(sigmoid(logit) - y) / len(batch)]
                for l in reversed(range(layers)):
                    n_in, n_out = widths[l], widths[l + 1]
                    a = acts[l]
                    for i in range(n_in):
                        if a[i] != 0.0:
                            base = i * n_out
                            for j in range(n_out):
                                gw[l][base + j] += a[i] * delta[j]
                    for j in range(n_out):
                        gb[l][j] += delta[j]
                    if l > 0:
                        wl = w[l]
                        delta = [
                            sum(wl[i * n_out + j] * delta[j] for j in range(n_out)) if a[i] > 0.0 else 0.0
                            for i in range(n_in)
                        ]
            for l in range(layers):
                for k in range(len(w[l])):
                    w[l][k] -= lr * (gw[l][k] + mu * (w[l][k] - w0[l][k]))
                for k in range(len(b[l])):
                    b[l][k] -= lr * (gb[l][k] + mu * (b[l][k] - b0[l][k]))
            total += batch_loss / len(batch)
            batches += 1
        loss = total / max(batches, 1)
    out = {}
    for l in range(layers):
        out[f"dense{l}.weight"] = ([widths[l], widths[l + 1]], w[l])
        out[f"dense{l}.bias"] = ([widths[l + 1]], b[l])
    if fail_with == "wrong-shape":
        out["dense0.weight"] = ([widths[1], widths[0]], w[0])
    elif fail_with == "nan":
        out["dense0.bias"][1][0] = float("nan")
    elif fail_with == "sleep":
        time.sleep(600)
    elif fail_with == "crash":
        raise SystemExit("mlp_trainer: crashing on purpose (--fail-with crash)")
    if fail_with != "no-weights":
        write_safetensors(f"{workdir}/weights.safetensors", out)
    if fail_with == "bad-loss":
        loss = float("inf")
    json.dump({"train_loss": loss}, open(f"{workdir}/metrics.json", "w"))


if __name__ == "__main__":
    args = sys.argv[1:]
    fail_with = None
    if len(args) >= 2 and args[0] == "--fail-with":
        fail_with, args = args[1], args[2:]
    if len(args) != 1:
        raise SystemExit(__doc__)
    train(args[0], fail_with)
