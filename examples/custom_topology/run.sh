#!/usr/bin/env bash
# The custom-topology example, with one command: builds fedsilo, then runs the platform team's
# program (coordinator node with a custom kernel and a drift monitor) and four silos.
#   examples/custom_topology/run.sh            # 8 rounds
#   ROUNDS=5 examples/custom_topology/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-deps.sh
cargo build --release --quiet --bins --example custom_topology
exec target/release/examples/custom_topology
