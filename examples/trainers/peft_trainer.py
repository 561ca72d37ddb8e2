#!/usr/bin/env python3
"""A fedsilo external trainer for a Hugging Face model: a sequence classifier fine-tuned with
PEFT's LoRA in PyTorch (CPU or GPU). Only the adapters and the classification head train and
travel; the pretrained weights stay in each silo's model directory, pinned by SHA-256.

    pip install torch transformers peft safetensors

Prepare the model once (writes OUT/manifest.toml and OUT/initial.safetensors):

    peft_trainer.py --init OUT --model-dir /models/distilbert-base-uncased \
        --text review --label score --classes other,great --rank 8

Then each silo, with its own copy of the model directory:

    silo-node ... --manifest OUT/manifest.toml --model-dir /models/distilbert-base-uncased \
        --trainer python3 --trainer-arg examples/trainers/peft_trainer.py

silo-node calls `peft_trainer.py WORKDIR` with request.json, base.safetensors and train.csv
(mode "train": write weights.safetensors and metrics.json) or rows.csv (mode "predict": write
probabilities.json); see docs/fine-tuning.md, "External programs for any model". fedsilo's
tests run the same contract with examples/trainers/numpy_bow.py (this file needs PyTorch,
which the CI machine does not have).
"""
import csv
import hashlib
import json
import os
import sys

import torch
from peft import LoraConfig, TaskType, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def build(model_dir, classes, rank, alpha):
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=classes)
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=rank, lora_alpha=alpha, lora_dropout=0.0)
    return get_peft_model(base, config)


def trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def init(opts):
    out, model_dir = opts["--init"], opts["--model-dir"]
    classes = opts["--classes"].split(",")
    rank = int(opts.get("--rank", "8"))
    alpha = int(opts.get("--alpha", str(2 * rank)))
    torch.manual_seed(int(opts.get("--seed", "1")))
    model = build(model_dir, len(classes), rank, alpha)
    tensors = {n: p.detach().float().contiguous() for n, p in trainable(model).items()}
    lines = [
        'architecture = "example.hf-peft-sequence-classifier"',
        "",
        "[task]",
        f'kind = "{"binary" if len(classes) == 2 else "multiclass"}"',
        f"classes = {json.dumps(classes)}",
        "",
        "[data]",
        f"text = {json.dumps(opts['--text'].split(','))}",
        f"label = {json.dumps(opts['--label'])}",
    ]
    for name, t in tensors.items():
        lines += ["", "[[trainable]]", f"name = {json.dumps(name)}", f"shape = {list(t.shape)}"]
    for name in sorted(os.listdir(model_dir)):
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            lines += ["", "[[asset]]", f"name = {json.dumps(name)}", f'sha256 = "{sha256(path)}"']
    lines += ["", "[settings]", f"rank = {rank}", f"alpha = {alpha}", "max_length = 128", ""]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "manifest.toml"), "w") as f:
        f.write("\n".join(lines))
    save_file(tensors, os.path.join(out, "initial.safetensors"))
    print(f"wrote {out}/manifest.toml and {out}/initial.safetensors ({len(tensors)} tensors)")


def texts(rows, columns):
    return [" ".join(r[c] for c in columns) for r in rows]


def run(workdir):
    req = json.load(open(os.path.join(workdir, "request.json")))
    s = req["settings"]
    model = build(req["model_dir"], len(req["classes"]), s["rank"], s["alpha"])
    weights = load_file(os.path.join(workdir, "base.safetensors"))
    params = trainable(model)
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    tokenizer = AutoTokenizer.from_pretrained(req["model_dir"])
    encode = lambda batch: tokenizer(batch, padding=True, truncation=True, max_length=s["max_length"], return_tensors="pt")
    if req["mode"] == "train":
        rows = list(csv.DictReader(open(os.path.join(workdir, "train.csv"), newline="")))
        x = texts(rows, req["text"])
        y = torch.tensor([req["classes"].index(r[req["label"]].strip()) for r in rows])
        optim = torch.optim.AdamW(params.values(), lr=req["learning_rate"])
        g = torch.Generator().manual_seed(req["seed"])
        model.train()
        loss_sum = 0.0
        for _ in range(req["epochs"]):
            order = torch.randperm(len(x), generator=g).tolist()
            loss_sum = 0.0
            for start in range(0, len(order), req["batch_size"]):
                idx = order[start : start + req["batch_size"]]
                out = model(**encode([x[i] for i in idx]), labels=y[idx])
                optim.zero_grad()
                out.loss.backward()
                optim.step()
                loss_sum += out.loss.item() * len(idx)
        trained = {n: p.detach().float().contiguous() for n, p in trainable(model).items()}
        save_file(trained, os.path.join(workdir, "weights.safetensors"))
        json.dump({"train_loss": loss_sum / len(x)}, open(os.path.join(workdir, "metrics.json"), "w"))
    else:
        rows = list(csv.DictReader(open(os.path.join(workdir, "rows.csv"), newline="")))
        x = texts(rows, req["text"])
        model.eval()
        probs = []
        with torch.no_grad():
            for start in range(0, len(x), 32):
                logits = model(**encode(x[start : start + 32])).logits
                probs += torch.softmax(logits, dim=-1).tolist()
        json.dump(probs, open(os.path.join(workdir, "probabilities.json"), "w"))


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--init" in args:
        init(dict(zip(args[0::2], args[1::2])))
    else:
        run(args[0])
