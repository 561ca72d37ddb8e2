#!/usr/bin/env bash
# The cross-bank example, with one command: builds fedsilo, then runs the federation.
#   examples/cross_bank/run.sh            # 12 rounds
#   ROUNDS=4 examples/cross_bank/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-deps.sh
cargo build --release --quiet --bins --example cross_bank
exec target/release/examples/cross_bank
