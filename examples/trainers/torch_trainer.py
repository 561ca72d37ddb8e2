#!/usr/bin/env python3
"""A fedsilo external trainer written with PyTorch (CPU).

    pip install torch safetensors
    silo-node ... --trainer python3 --trainer-arg examples/trainers/torch_trainer.py

silo-node runs it once per round as `torch_trainer.py WORKDIR`. WORKDIR holds base.safetensors
(the global model: `dense{i}.weight` [in, out], `dense{i}.bias` [out]), train.safetensors (`x`
[rows, inputs], already encoded and scaled; `y` [rows]) and plan.json (round, epochs, batch_size,
learning_rate, seed, prox_mu, inputs, hidden). It must write weights.safetensors (the same
tensors, F32) and metrics.json ({"train_loss": …}). Replace the model or the loop with your own;
keep the file names and tensor names. The node checks what comes back and applies the
federation's clipping, noise and masking itself.
"""
import json
import sys

import torch
from safetensors.torch import load_file, save_file


def main(workdir):
    plan = json.load(open(f"{workdir}/plan.json"))
    base = load_file(f"{workdir}/base.safetensors")
    data = load_file(f"{workdir}/train.safetensors")
    x, y = data["x"], data["y"]
    widths = [plan["inputs"]] + plan["hidden"] + [1]
    layers = len(widths) - 1
    torch.manual_seed(plan["seed"])
    # fedsilo stores weights as [in, out]; a Linear layer keeps [out, in].
    linears = []
    for l in range(layers):
        lin = torch.nn.Linear(widths[l], widths[l + 1])
        with torch.no_grad():
            lin.weight.copy_(base[f"dense{l}.weight"].T)
            lin.bias.copy_(base[f"dense{l}.bias"])
        linears.append(lin)
    modules = []
    for l, lin in enumerate(linears):
        modules.append(lin)
        if l < layers - 1:
            modules.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*modules)
    anchor = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=plan["learning_rate"])
    loss_fn = torch.nn.BCEWithLogitsLoss()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=plan["batch_size"], shuffle=True
    )
    last = float("nan")
    for _ in range(plan["epochs"]):
        total, batches = 0.0, 0
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb).squeeze(1), yb)
            if plan["prox_mu"] > 0:  # FedProx
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
                (loss + plan["prox_mu"] / 2 * prox).backward()
            else:
                loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
        last = total / max(batches, 1)
    out = {}
    for l, lin in enumerate(linears):
        out[f"dense{l}.weight"] = lin.weight.detach().T.contiguous()
        out[f"dense{l}.bias"] = lin.bias.detach().contiguous()
    save_file(out, f"{workdir}/weights.safetensors")
    json.dump({"train_loss": last}, open(f"{workdir}/metrics.json", "w"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
