#!/usr/bin/env bash
# End-to-end test of the docker-compose deployment (docker-compose.yml): builds the image,
# brings up the churn federation (a coordinator and three silos), waits for rounds that all
# three silos join, stops silo-west and checks that the other two carry on without it. On the
# way it scrapes the published metrics and asks the published admin API for the silos, with the
# operator kit copied out of the certs volume, as docs/operations.md describes. Then it ends
# the run and checks that the coordinator stays up (serving), deploys the current version,
# waits for the two running silos to hold it, and scores a CSV inside one of them.
#
#   scripts/compose-test.sh                 # about 20 s once the image is built
#   TIMEOUT=600 scripts/compose-test.sh     # seconds each wait may take (default 240)
#
# Skips (exit 0) when no Docker engine is reachable. It runs as its own compose project
# (fedsilo-test-PID) on free loopback ports, so it never touches a deployment of yours, and it
# always removes its containers, network and volumes: on success, on failure and on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "compose test skipped: $1"; exit 0; }
command -v docker >/dev/null 2>&1 || skip "no Docker engine (the docker command is not installed)"
if ! err=$(docker info 2>&1 >/dev/null); then
  skip "no Docker engine ($(tail -n1 <<<"${err:-docker info failed}"))"
fi
command -v docker-compose >/dev/null 2>&1 || skip "no docker-compose (the command is not installed)"

TIMEOUT=${TIMEOUT:-240}
PROJECT=fedsilo-test-$$
# Each silo waits this long before training, so a round lasts about as long and the 40 rounds
# of deploy/compose/federation.toml outlast the test.
export FEDSILO_TRAIN_DELAY_MS=${FEDSILO_TRAIN_DELAY_MS:-1500}
# A free loopback port for the published admin API (it also serves the metrics).
FEDSILO_ADMIN_PORT=$(python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
export FEDSILO_ADMIN_PORT
WORK=$(mktemp -d)

# The deployment's compose file, with the test's image and slow silos (deploy/compose/test.yml).
export FEDSILO_IMAGE=fedsilo:test
compose() { docker-compose -p "$PROJECT" -f docker-compose.yml -f deploy/compose/test.yml "$@"; }

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  echo "tearing down compose project $PROJECT"
  compose down -v --remove-orphans >/dev/null 2>&1 ||
    echo "warning: 'docker-compose -p $PROJECT down -v' failed; check docker ps -a" >&2
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT   # exit runs the EXIT trap, which tears down
trap 'exit 143' TERM

fail() {
  echo "compose test FAILED: $*" >&2
  echo "--- last coordinator log lines ---" >&2
  compose logs --no-color --no-log-prefix --tail=25 coordinator 2>&1 | cut -c1-400 >&2 || true
  exit 1
}

# The committed rounds so far, one line each: ROUND PARTICIPANTS (sorted, comma-separated).
committed() {
  compose logs --no-color --no-log-prefix coordinator 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    if not line.startswith("{"):
        continue  # the coordinator also writes plain messages and warnings
    try:
        event = json.loads(line)
    except ValueError:
        continue  # a line still being written
    if event.get("event") == "round_committed":
        print(event["round"], ",".join(sorted(event["participants"])))'
}

# wait_for WHAT CHECK: every 2 s reads the committed rounds into $ROUNDS and runs the shell
# function CHECK, until it succeeds. Fails after $TIMEOUT s, or at once if the coordinator stops.
wait_for() {
  local what=$1 check=$2 start=$SECONDS last="" said=$SECONDS
  while :; do
    ROUNDS=$(committed)
    "$check" && return 0
    [ "$(docker inspect -f '{{.State.Running}}' "$(compose ps -q coordinator)")" = true ] ||
      fail "the coordinator stopped while waiting for $what"
    [ $((SECONDS - start)) -lt "$TIMEOUT" ] || fail "no $what after ${TIMEOUT} s"
    local now
    now="$(grep -c . <<<"$ROUNDS" || true) round(s) committed, latest: $(tail -n1 <<<"$ROUNDS")"
    if [ "$now" != "$last" ] || [ $((SECONDS - said)) -ge 15 ]; then
      echo "  waiting for $what ($((SECONDS - start)) s): $now"
      last=$now said=$SECONDS
    fi
    sleep 2
  done
}

started=$SECONDS
FAULTS=1 IMAGE=$FEDSILO_IMAGE scripts/build-images.sh
echo "starting compose project $PROJECT (admin API and metrics at 127.0.0.1:$FEDSILO_ADMIN_PORT)"
compose up -d

# 1. Two committed rounds, the latest with all three silos.
ALL=midwest,northeast,west
two_with_all() {
  [ "$(grep -c . <<<"$ROUNDS")" -ge 2 ] && [ "$(tail -n1 <<<"$ROUNDS" | cut -d' ' -f2)" = "$ALL" ]
}
wait_for "2 committed rounds, the latest with all three silos" two_with_all
read -r before_round before_participants < <(tail -n1 <<<"$ROUNDS")

# 2. Stop one silo. Every round committed from now on is numbered above stop_round.
echo "stopping silo-west"
compose stop silo-west
stop_round=$(committed | tail -n1 | cut -d' ' -f1)

# 3. Two more committed rounds without west.
WEST='(^|,)west(,|$)'   # west among the participants
after_without_west() {
  awk -v r="$stop_round" -v w="$WEST" '$1 > r && $2 !~ w { n++ } END { exit !(n >= 2) }' <<<"$ROUNDS"
}
wait_for "2 committed rounds without west" after_without_west

# 4. Assertions.
[ "$(docker inspect -f '{{.State.Running}}' "$(compose ps -q silo-west)")" = false ] ||
  fail "silo-west is running again after docker-compose stop"
after=$(awk -v r="$stop_round" '$1 > r' <<<"$ROUNDS")
# Once west's absence shows in a round, it must not reappear (a round in flight when it stopped
# may still carry its update).
awk -v w="$WEST" '$2 !~ w { gone = 1 } gone && $2 ~ w { bad = 1 } END { exit bad }' <<<"$after" || fail "west took part in a round after it had left: $(tr '\n' ';' <<<"$after")"
without_west=$(awk -v w="$WEST" '$2 !~ w' <<<"$after")
awk '$2 != "midwest,northeast" { bad = 1 } END { exit bad }' <<<"$without_west" ||
  fail "rounds after the stop should have exactly midwest and northeast: $(tr '\n' ';' <<<"$without_west")"

# The admin API, with the operator kit copied out of the (exited) init container: the image has
# no shell, so docker cp is the way to get files out of its volumes.
docker cp "$(compose ps -a -q init):/certs/ops" "$WORK/ops" ||
  fail "could not copy the operator kit out of the init container"
healthy=$("${CARGO_TARGET_DIR:-target}/release/fedsilo" admin --url "https://127.0.0.1:$FEDSILO_ADMIN_PORT" --kit "$WORK/ops" silos |
  python3 -c 'import json, sys; print(",".join(sorted(s["name"] for s in json.load(sys.stdin)["silos"] if s["healthy"])))') ||
  fail "the admin API on 127.0.0.1:$FEDSILO_ADMIN_PORT did not answer"
[ "$healthy" = "midwest,northeast" ] || fail "the admin API lists healthy silos '$healthy', expected midwest,northeast"

# The metrics, through the admin API (the only way to them from outside the coordinator's
# container: the plain-HTTP endpoint is loopback only), count at least the rounds in the log.
committed_total=$("${CARGO_TARGET_DIR:-target}/release/fedsilo" admin --url "https://127.0.0.1:$FEDSILO_ADMIN_PORT" --kit "$WORK/ops" metrics |
  awk '$1 == "fedsilo_rounds_total{outcome=\"committed\"}" { print int($2) }') ||
  fail "could not read the metrics from the admin API on 127.0.0.1:$FEDSILO_ADMIN_PORT"
[ -n "$committed_total" ] || fail "the admin API's metrics have no fedsilo_rounds_total{outcome=\"committed\"}"
[ "$committed_total" -ge "$(grep -c . <<<"$ROUNDS")" ] ||
  fail "metrics count $committed_total committed rounds, the log shows $(grep -c . <<<"$ROUNDS")"

# 5. The run ends (cancelled); the coordinator serves on, idle.
FEDSILO="${CARGO_TARGET_DIR:-target}/release/fedsilo"
API=(--url "https://127.0.0.1:$FEDSILO_ADMIN_PORT" --kit "$WORK/ops")
"$FEDSILO" run "${API[@]}" cancel 1 --reason "compose test" >/dev/null ||
  fail "could not cancel run 1 through the admin API"
status_field() {
  "$FEDSILO" admin "${API[@]}" status | python3 -c "import json, sys; print(json.load(sys.stdin)[\"$1\"])"
}
idle() { [ "$(status_field state 2>/dev/null)" = idle ]; }
start=$SECONDS
until idle; do
  [ $((SECONDS - start)) -lt "$TIMEOUT" ] || fail "the coordinator is not idle ${TIMEOUT} s after run 1 was cancelled"
  sleep 1
done
[ "$(docker inspect -f '{{.State.Running}}' "$(compose ps -q coordinator)")" = true ] ||
  fail "the coordinator stopped after its run"
# 6. The current version deployed: both running silos hold it.
version=$(status_field current_version)
"$FEDSILO" deploy "${API[@]}" create --version "$version" --reason "compose test" >/dev/null ||
  fail "could not deploy v$version"
holding() {
  "$FEDSILO" deploy "${API[@]}" list | python3 -c "
import json, sys
held = sorted(s['name'] for s in json.load(sys.stdin)['silos'] if s['deployed_version'] == $version)
sys.exit(held != ['midwest', 'northeast'])"
}
start=$SECONDS
until holding; do
  [ $((SECONDS - start)) -lt "$TIMEOUT" ] || fail "midwest and northeast do not hold v$version after ${TIMEOUT} s"
  sleep 1
done
# 7. A silo scores its customers with it, inside its container.
compose exec -T silo-northeast silo-node score --kit=/certs/northeast --deploy-dir=/deployed \
  --schema=/config/schema.toml --in=/data/train.csv --out=/deployed/scores.csv >/dev/null ||
  fail "silo-node score failed in silo-northeast"
docker cp "$(compose ps -q silo-northeast):/deployed/scores.csv" "$WORK/scores.csv" ||
  fail "could not copy the scores out of silo-northeast"
scored=$(python3 -c "
import csv, sys
rows = list(csv.DictReader(open('$WORK/scores.csv')))
assert rows and all(r['model_version'] == '$version' for r in rows), 'model_version'
print(len(rows))") || fail "the scores do not name v$version"
echo
echo "compose test passed in $((SECONDS - started)) s"
echo "  rounds committed:          $(grep -c . <<<"$ROUNDS") (metrics: $committed_total)"
echo "  before stopping silo-west: round $before_round by $before_participants"
echo "  after:                     $(awk '{ printf "%sround %s by %s", sep, $1, $2; sep = ", " }' <<<"$without_west")"
echo "  admin API, healthy silos:  $healthy"
echo "  after the run:             idle, v$version deployed to midwest and northeast, $scored rows scored at northeast"
