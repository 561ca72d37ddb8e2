#!/usr/bin/env bash
# The business-units example, with one command: builds fedsilo, then runs the federation and
# its approval workflow.
#   examples/business_units/run.sh            # 10 rounds
#   ROUNDS=3 examples/business_units/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-deps.sh
cargo build --release --quiet --bins --example business_units
exec target/release/examples/business_units
