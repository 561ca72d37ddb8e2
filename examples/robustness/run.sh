#!/usr/bin/env bash
# Robustness on real data: 16 federations (4 attacks × 4 kernels), 10 silos each, 2 Byzantine.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-deps.sh
cargo build --release --quiet --bins --examples
exec target/release/examples/robustness
