#!/usr/bin/env bash
# The round benchmark (examples/round_bench/main.rs): real federations over mutual TLS on
# loopback at several model sizes, printing a markdown table of round time, phases, bytes,
# memory and CPU. SIZES (10k,1m,10m), SILOS (4), ROUNDS (12) and WORK_DIR choose what runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
cargo build --release --workspace --examples --bins
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/examples/round_bench"
