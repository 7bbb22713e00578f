#!/usr/bin/env bash
# The prediction log under a load the machine cannot log as fast as it answers: a predictor with
# the log on a local directory, a 100-ride PredictStream load that keeps every core busy, then
# the wait until the log has caught up. Reports the throughput, the predictor's peak resident
# memory, the records spilled, how long the log took to come to rest after the load, and the
# predictor's CPU per prediction counting that catching up.
#
#   cargo build --release -p lightops-cli -p lightops-loadgen
#   bench/predictor_overload.sh [--duration 12] [--batch 100] [--runs 1]
#
# Environment: LIGHTOPS (default target/release/lightops), LOADGEN (target/release/lightops-loadgen),
# MODEL_ARTIFACT (serve this artifact instead of training the sample model).
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIGHTOPS=${LIGHTOPS:-$ROOT/target/release/lightops}
LOADGEN=${LOADGEN:-$ROOT/target/release/lightops-loadgen}
DURATION=12
BATCH=100
RUNS=1

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "predictor_overload: $*" >&2; exit 1; }
for binary in "$LIGHTOPS" "$LOADGEN"; do
  [[ -x $binary ]] || die "$binary not found (cargo build --release -p lightops-cli -p lightops-loadgen)"
done
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "--duration is whole seconds, not $DURATION"
[[ $BATCH =~ ^[1-9][0-9]*$ ]] || die "--batch is a number of rides, not $BATCH"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs is a number of runs, not $RUNS"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/predictor_overload.XXXXXX")
SERVER=""
SAMPLER=""
cleanup() {
  for pid in $SAMPLER $SERVER; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# free_port, wait_ready, sample_model, log_at_rest
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
ARTIFACT=$(sample_model "$LIGHTOPS")

echo "| run | predictions/s | peak resident memory | spilled of queued | at rest after the load | server CPU per prediction |"
echo "|---|---:|---:|---:|---:|---:|"
for run in $(seq "$RUNS"); do
  port=$(free_port)
  base=http://127.0.0.1:$port
  rm -rf "$WORK/home"
  LIGHTOPS_HOME=$WORK/home "$LIGHTOPS" serve predictor --listen "127.0.0.1:$port" --model "$ARTIFACT" \
    >"$WORK/server.log" 2>&1 &
  SERVER=$!
  wait_ready "$base/readyz" "$SERVER" "the predictor" "$WORK/server.log"
  # The peak of VmRSS, sampled every 100 ms.
  (
    peak=0
    while kill -0 "$SERVER" 2>/dev/null; do
      rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$SERVER/status" 2>/dev/null || true)
      if [[ -n $rss ]] && ((rss > peak)); then peak=$rss; echo "$peak" >"$WORK/peak"; fi
      sleep 0.1
    done
  ) &
  SAMPLER=$!
  cpu0=$(awk '{ print $14 + $15 }' "/proc/$SERVER/stat")
  "$LOADGEN" --url "$base" --mode stream --batch "$BATCH" --duration "${DURATION}s" --warmup 1s --json \
    >"$WORK/load.json" 2>>"$WORK/loadgen.log"
  t0=$(date +%s.%N)
  figures=$(log_at_rest "$base")
  read -r _ _ spilled queued _ <<<"$figures"
  t1=$(date +%s.%N)
  cpu1=$(awk '{ print $14 + $15 }' "/proc/$SERVER/stat")
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
  SERVER=""; SAMPLER=""
  [[ -s $WORK/peak ]] || die "no resident memory was sampled"
  peak=$(cat "$WORK/peak")
  rm -f "$WORK/peak"
  python3 - "$run" "$WORK/load.json" "$peak" "$spilled" "$queued" "$t0" "$t1" "$cpu0" "$cpu1" \
    "$(getconf CLK_TCK)" "$DURATION" <<'PY'
import json, sys
run, path, peak_kib, spilled, queued, t0, t1, cpu0, cpu1, tck, duration = sys.argv[1:]
rate = json.load(open(path))["predictions_per_s"]
predictions = int(queued)
cpu_s = (float(cpu1) - float(cpu0)) / float(tck)
print(f"| {run} | {rate:,.0f} | {int(peak_kib) / 1024:,.0f} MiB | {int(spilled):,} of {predictions:,} "
      f"| {float(t1) - float(t0):.1f} s | {cpu_s / predictions * 1e9:,.0f} ns |")
PY
done
