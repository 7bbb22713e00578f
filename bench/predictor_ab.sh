#!/usr/bin/env bash
# Two lightops builds side by side: the server's CPU time per prediction under a PredictStream
# load, with the prediction log on the local sink for both, and the second build with the log
# off as the floor. Rounds alternate between the three servers, so a slow spell of the machine
# hits them alike; CPU time per prediction (utime + stime of the server from /proc/<pid>/stat)
# moves less than throughput on a shared machine.
#
#   cp target/release/lightops /tmp/lightops-before   # then change the code and rebuild
#   bench/predictor_ab.sh --base /tmp/lightops-before [--new target/release/lightops]
#                         [--batch 1] [--rounds 3] [--duration 6s]
#
# Prints a Markdown table: each round's predictions/s and server ns per prediction for each
# server, then the medians and what the log costs each build per record (log on minus log off).
#
# Environment: LOADGEN (default target/release/lightops-loadgen), MODEL_ARTIFACT (serve this
# artifact instead of training the sample model with the new build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOADGEN=${LOADGEN:-$ROOT/target/release/lightops-loadgen}
BASE=""
NEW=$ROOT/target/release/lightops
BATCH=1
ROUNDS=3
DURATION=6s

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --base) BASE=$2; shift 2 ;;
    --new) NEW=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "predictor_ab: $*" >&2; exit 1; }
[[ -n $BASE ]] || die "--base is required (a lightops binary to compare with)"
for binary in "$BASE" "$NEW" "$LOADGEN"; do
  [[ -x $binary ]] || die "$binary not found (cargo build --release -p lightops-cli -p lightops-loadgen)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/predictor_ab.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# free_port, wait_ready, sample_model
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
ARTIFACT=$(sample_model "$NEW")

declare -A PORT PID
start() { # start LABEL BINARY LOG_FLAGS...
  local label=$1 binary=$2 port
  shift 2
  port=$(free_port)
  LIGHTOPS_HOME=$WORK/home-$label "$binary" serve predictor --listen "127.0.0.1:$port" \
    --model "$ARTIFACT" "$@" > "$WORK/server-$label.log" 2>&1 &
  PID[$label]=$!
  PIDS+=("$!")
  PORT[$label]=$port
  wait_ready "http://127.0.0.1:$port/readyz" "${PID[$label]}" "$label" "$WORK/server-$label.log"
}
start base "$BASE" --log-dir "$WORK/log-base"
start new "$NEW" --log-dir "$WORK/log-new"
start off "$NEW" --log-sink none

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

: > "$WORK/results.tsv"
for round in $(seq "$ROUNDS"); do
  for label in base new off; do
    before=$(ticks "${PID[$label]}")
    "$LOADGEN" --url "http://127.0.0.1:${PORT[$label]}" --mode stream --batch "$BATCH" \
      --duration "$DURATION" --warmup 1s --json > "$WORK/run.json"
    after=$(ticks "${PID[$label]}")
    # The server's ticks also cover the 1 s warm-up, at about the same rate.
    python3 - "$label" "$round" "$before" "$after" "$DURATION" "$WORK/run.json" >> "$WORK/results.tsv" <<'EOF'
import json, sys
label, round_, before, after, duration, path = sys.argv[1:]
report = json.load(open(path))
rate = report["predictions_per_s"]
seconds = float(duration.rstrip("s")) + 1.0
ns = (int(after) - int(before)) / 100 / (rate * seconds) * 1e9
print(f"{label}\t{round_}\t{rate:.0f}\t{ns:.0f}")
EOF
    echo "predictor_ab: round $round/$ROUNDS, $label: $(tail -1 "$WORK/results.tsv" | cut -f3,4)" >&2
    # A run writes gigabytes of log: closed segments go (the server never touches them again).
    rm -f "$WORK"/log-*/predictions-*.jsonl
  done
done

python3 - "$WORK/results.tsv" "$BATCH" "$BASE" "$NEW" <<'EOF'
import statistics, sys
path, batch, base, new = sys.argv[1:]
rows = [line.split("\t") for line in open(path).read().splitlines()]
by = {}
for label, round_, rate, ns in rows:
    by.setdefault(label, []).append((int(rate), int(ns)))
names = {"base": f"base ({base}), log on", "new": f"new ({new}), log on", "off": "new, log off"}
print(f"\nPredictStream, {batch} ride(s) per message: server CPU per prediction, rounds alternating.\n")
print("| server | predictions/s, each round | ns per prediction, each round | median ns |")
print("|---|---|---|---:|")
medians = {}
for label in ("base", "new", "off"):
    runs = by[label]
    medians[label] = statistics.median(ns for _, ns in runs)
    print(f"| {names[label]} | {', '.join(f'{r:,}' for r, _ in runs)} | {', '.join(str(n) for _, n in runs)} | {medians[label]:.0f} |")
print()
for label in ("base", "new"):
    print(f"- the log's CPU per record, {label}: +{medians[label] - medians['off']:.0f} ns")
EOF
