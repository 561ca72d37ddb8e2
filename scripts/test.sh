#!/usr/bin/env bash
# The whole test suite: unit, property and integration tests (the integration tests start real
# coordinator and silo-node processes over mutual TLS on loopback). Installs libopenblas-dev
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --test
scripts/ensure-model.sh
cargo test --workspace --release "$@"
# The docker-compose deployment, from images built here (skipped, saying why, without a Docker
# engine).
scripts/compose-test.sh
