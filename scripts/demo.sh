#!/usr/bin/env bash
# The main job: a real federation on loopback. Makes certificates, starts one coordinator and
# four silo-node processes (one per US Census region of the churn data) over mutual TLS, runs
# 20 rounds, prints the round table and the local-only vs federated comparison.
#
#   scripts/demo.sh            # everything (installs libopenblas-dev if missing, builds)
#   ROUNDS=5 scripts/demo.sh   # fewer rounds
#   POLICY=examples/churn/policy-dp.toml scripts/demo.sh   # with silo-level differential privacy
#   ROUNDS=400 POLICY=examples/churn/policy-early-stopping.toml scripts/demo.sh   # stops when validation does
#   COMPRESSION=int8 scripts/demo.sh   # compressed updates: none, int8, int4, top-k:0.1
#   INITIAL=pretrained.safetensors scripts/demo.sh   # fine-tune a pretrained model (fedsilo-pretrain)
#   CONFIG=examples/churn/federation-lora.toml scripts/demo.sh   # LoRA adapters only
#   EXAMPLE=examples/loans scripts/demo.sh   # the loans federation (prime borrowers, 4 regions)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo build --release --quiet --bins
BIN=target/release
EX=${EXAMPLE:-examples/churn}
RUN=$EX/run
rm -rf "$RUN"
mkdir -p "$RUN"
SILOS=(northeast midwest south west)

"$BIN/fedsilo" certs init --out "$RUN/certs" --consortium "$(basename "$EX")-demo" --coordinator coordinator:us \
  $(for s in "${SILOS[@]}"; do printf -- '--silo %s:us-%s ' "$s" "$s"; done) >/dev/null

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# The pooled reference: the same trainer on all four regions' training rows together (each
# split as its silo splits it). Only possible because the demo has all the data on one
# machine; the coordinator has every silo score it beside local-only and federated.
"$BIN/fedsilo-pretrain" --pooled --federation "${CONFIG:-$EX/federation.toml}" ${ROUNDS:+--rounds "$ROUNDS"} \
  $(for s in "${SILOS[@]}"; do printf -- '--data %s ' "$EX/data/$s.csv"; done) \
  --out "$RUN/pooled.safetensors" >"$RUN/pooled.log"

start=$(date +%s.%N)
# Port 0: the coordinator picks a free port and records it in its event journal.
"$BIN/fedsilo" coordinator --config "${CONFIG:-$EX/federation.toml}" --listen 127.0.0.1:0 \
  --kit "$RUN/certs/coordinator" --state-dir "$RUN/state" ${ROUNDS:+--rounds "$ROUNDS"} ${POLICY:+--policy "$POLICY"} ${COMPRESSION:+--compression "$COMPRESSION"} ${INITIAL:+--initial "$INITIAL"} \
  --pooled-reference "$RUN/pooled.safetensors" &
coord=$!
pids+=($coord)
ADDR=""
for _ in $(seq 1 200); do
  ADDR=$(grep -m1 -o '"event":"listening","addr":"[^"]*"' "$RUN/state/events.jsonl" 2>/dev/null | sed 's/.*"addr":"//; s/"$//' || true)
  [ -n "$ADDR" ] && break
  kill -0 "$coord" 2>/dev/null || break
  sleep 0.05
done
[ -n "$ADDR" ] || { echo "the coordinator did not start; see the messages above" >&2; exit 1; }
for s in "${SILOS[@]}"; do
  "$BIN/silo-node" --kit "$RUN/certs/$s" --coordinator "$ADDR" \
    --data "$EX/data/$s.csv" --schema "$EX/schema.toml" --once >"$RUN/$s.log" 2>&1 &
  pids+=($!)
done
status=0
wait "$coord" || status=$?
end=$(date +%s.%N)
echo
echo "demo wall time: $(awk "BEGIN{printf \"%.1f\", $end-$start}") s (coordinator exit status $status)"
echo "round log: $RUN/state/rounds.jsonl   checkpoints: $RUN/state/models/"
exit $status
