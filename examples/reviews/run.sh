#!/usr/bin/env bash
# The customer-review example, with one command: installs the model, builds, splits the reviews
# among four retailers, prepares the model and runs the federation and its references.
#   examples/reviews/run.sh             # 3 rounds (about 25 min on 2 cores)
#   ROUNDS=1 examples/reviews/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-deps.sh
scripts/ensure-model.sh
cargo build --release --quiet --bins --example reviews
exec target/release/examples/reviews
