#!/usr/bin/env bash
# Predictor benchmark: lightops (HTTP with wrk, gRPC unary and streaming with lightops-loadgen),
# with the prediction log on a local directory and with it off, against the workshop's Flask
# service under gunicorn (2 workers) with the same wrk command.
#
#   cargo build --release -p lightops-cli -p lightops-loadgen
#   pip install -r bench/reference/requirements-serve.txt   # + wrk (Debian: apt-get install wrk)
#   bench/predictor_bench.sh [--duration 10s] [--warmup 2s] [--connections 16] [--rounds 3]
#                            [--flask-only | --lightops-only] [--scenarios http,unary,stream1,stream100]
#                            [--client h2|tonic]
#
# Prints a Markdown table: scenario, throughput (req/s, or predictions/s for streams), p50, p99,
# errors, and for HTTP the lightops/Flask throughput ratio; then what the prediction log costs per
# scenario: in throughput, and in the server's CPU time per prediction (from /proc/<pid>/stat),
# counting the CPU the log spends catching up after a run (records it spilled to disk at the
# highest rates, written after the load stops; the next run starts once it has caught up).
# Two ways to judge the target (the log costs at most 10% of throughput): the rounds' costs
# (1 - log on / log off, round by round), their median and a distribution-free interval for it
# (met when the whole interval is under 10%, missed when it is all over); and the log's share of
# the machine's CPU (the server's extra CPU per prediction with the log on, over the whole
# machine's CPU per prediction, load generator included), which is the throughput it costs when
# the load keeps both cores busy, and moves much less from run to run than throughput does.
# The two lightops servers (log on the local sink, log off) run side by side; each round runs
# every scenario on one, then the other, back to back, for --rounds rounds; the tables give the
# median round, so a noisy neighbour slowing one run does not decide the comparison. Load
# generator and server share the machine: on a small box the numbers measure both.
# --client picks the load generator's gRPC client for unary calls (h2 by default; see
# bench/loadgen/src/h2grpc.rs).
#
# Environment: LIGHTOPS (default target/release/lightops), LOADGEN (target/release/lightops-loadgen),
# MODEL_ARTIFACT (skip training, serve this artifact), KEEP_WORKDIR=1 (keep logs and artifacts).
set -euo pipefail
# A failure inside $(...) (a die in settle, say) stops the script too.
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIGHTOPS=${LIGHTOPS:-$ROOT/target/release/lightops}
LOADGEN=${LOADGEN:-$ROOT/target/release/lightops-loadgen}
DURATION=10s
WARMUP=2s
CONNECTIONS=16
ROUNDS=3
SCENARIOS=http,unary,stream1,stream100
RUN_LIGHTOPS=1
RUN_FLASK=1
CLIENT=${LOADGEN_CLIENT:-h2}

usage() { sed -n '2,31p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --flask-only) RUN_LIGHTOPS=0; shift ;;
    --lightops-only) RUN_FLASK=0; shift ;;
    --client) CLIENT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "predictor_bench: $*" >&2; exit 1; }
[[ $CLIENT == h2 || $CLIENT == tonic ]] || die "--client must be h2 or tonic, not $CLIENT"
log() { echo "predictor_bench: $*" >&2; }

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed ($2)"; }
need wrk "Debian: apt-get install wrk"
need curl "Debian: apt-get install curl"
need python3 "Python 3 runs the Flask reference and parses results"
[[ -x $LIGHTOPS ]] || [[ -n ${MODEL_ARTIFACT:-} && $RUN_LIGHTOPS == 0 ]] \
  || die "$LIGHTOPS not found: cargo build --release -p lightops-cli (or set LIGHTOPS)"
if [[ $RUN_LIGHTOPS == 1 ]]; then
  [[ -x $LOADGEN ]] || die "$LOADGEN not found: cargo build --release -p lightops-loadgen (or set LOADGEN)"
fi
if [[ $RUN_FLASK == 1 ]]; then
  need gunicorn "pip install -r bench/reference/requirements-serve.txt"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/predictor_bench.XXXXXX")
PIDS=()

stop() { # stop PID: SIGTERM, wait up to 10 s, then SIGKILL
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$? pid
  for pid in "${PIDS[@]}"; do stop "$pid"; done
  if [[ ${KEEP_WORKDIR:-0} == 1 || $status != 0 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port, wait_ready, sample_model, log_state, log_at_rest
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# Results, one tab-separated line each: scenario, server, throughput, unit, p50 ms, p99 ms, errors,
# server CPU (cores in use on average during the run; empty when not measured), seconds the log
# took to come to rest, records it spilled, machine CPU (cores, as for the server).
RESULTS=$WORK/results.tsv
: >"$RESULTS"

PROBE_RIDE='{"ride_id":"probe-1","ride":{"PULocationID":74,"DOLocationID":75,"trip_distance":3.2}}'

probe() { # probe BASE_URL: the predicted duration for PROBE_RIDE, checking the answer's shape
  curl -sf -H 'Content-Type: application/json' -d "$PROBE_RIDE" "$1/predict" | python3 -c '
import json, sys
answer = json.load(sys.stdin)
assert answer["ride_id"] == "probe-1", answer
print(repr(float(answer["prediction"]["duration"])))'
}

CLK_TCK=$(getconf CLK_TCK)
cpu_mark() { # cpu_mark PID: "<wall seconds> <CPU ticks of PID> <busy CPU ticks of the machine>"
  # (user, nice, system, irq, softirq: not idle, I/O wait or time stolen by the hypervisor; empty
  # without a PID)
  [[ -n ${1:-} ]] || return 0
  echo "$(date +%s.%N) $(awk '{print $14 + $15}' "/proc/$1/stat")" \
    "$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat)"
}
cpu_cores() { # cpu_cores START_MARK END_MARK [AFTER_MARK]: average cores used from START to END
  # by the server and by the whole machine (load generator, kernel), counting the CPU used up to
  # AFTER (the log's catching up) as if spent in the run
  [[ -n $1 && -n $2 ]] || return 0
  local after=${3:-$2}
  # shellcheck disable=SC2086 # three words each
  python3 -c '
import sys
t0, c0, m0, t1, _, _, _, c2, m2 = map(float, sys.argv[1:10])
ticks = float(sys.argv[10]) * (t1 - t0)
print(f"{(c2 - c0) / ticks:.3f} {(m2 - m0) / ticks:.3f}")' $1 $2 $after "$CLK_TCK"
}

# Servers whose prediction log is on (base URL -> 1): only their runs wait for the log.
declare -A LOGGED

# After a run, the log may still hold records: at the highest rates the load leaves its
# background task too little of the machine, its queue fills and records spill to disk, to be
# written once it catches up. That work belongs to the run that caused it, not to the next run
# (which it would slow): settle waits for it, the run's CPU includes it, and the table reports it.
settle() { # settle BASE_URL SPILLED_BEFORE: waits (at most 600 s) until the log is at rest;
  # prints "<seconds waited> <records spilled since SPILLED_BEFORE>"
  local base=$1 before=${2:-0} t0 state spilled
  [[ -n ${LOGGED[$base]:-} ]] || { echo "0 0"; return 0; }
  t0=$(date +%s.%N)
  state=$(log_at_rest "$base")
  read -r _ _ spilled _ <<<"$state"
  echo "$(awk -v from="$t0" -v to="$(date +%s.%N)" 'BEGIN { printf "%.1f", to - from }') $((spilled - before))"
}

spilled_so_far() { # spilled_so_far BASE_URL: records the log has spilled since it started (0: no log)
  local state
  [[ -n ${LOGGED[$1]:-} ]] || { echo 0; return 0; }
  state=$(log_state "$1")
  [[ -n $state ]] || die "no prediction-log figures on $1/metrics"
  read -r _ _ state _ <<<"$state"
  echo "$state"
}

# One run's measurement: begin_run before the load, end_run after it. end_run prints "<server
# cores> <seconds the log took to come to rest> <records it spilled> <machine cores>", cores being
# "-" when there is no server PID to measure.
begin_run() { # begin_run BASE_URL [PID]
  RUN_SPILLED=$(spilled_so_far "$1")
  RUN_START=$(cpu_mark "${2:-}")
}
end_run() { # end_run BASE_URL [PID]
  local end drain after waited spilled used cores machine
  end=$(cpu_mark "${2:-}")
  drain=$(settle "$1" "$RUN_SPILLED")
  after=$(cpu_mark "${2:-}")
  read -r waited spilled <<<"$drain"
  used=$(cpu_cores "$RUN_START" "$end" "$after")
  read -r cores machine <<<"$used"
  echo "${cores:--} ${waited:-0} ${spilled:-0} ${machine:--}"
}

run_wrk() { # run_wrk SCENARIO SERVER BASE_URL [SERVER_PID]
  local scenario=$1 server=$2 base=$3 url=$3/predict pid=${4:-} out measured
  out=$WORK/wrk-$(echo "$scenario-$server" | tr -c 'a-zA-Z0-9' '_').txt
  if [[ ! $WARMUP =~ ^0+(s|ms)?$ ]]; then
    log "$scenario: wrk warm-up ($WARMUP)"
    wrk -t2 -c"$CONNECTIONS" -d"$WARMUP" -s "$ROOT/bench/reference/predict.lua" "$url" >/dev/null
  fi
  log "$scenario: wrk -t2 -c$CONNECTIONS -d$DURATION"
  begin_run "$base" "$pid"
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$ROOT/bench/reference/predict.lua" "$url" >"$out"
  measured=$(end_run "$base" "$pid")
  # shellcheck disable=SC2086 # four words
  python3 - "$scenario" "$server" "$out" $measured >>"$RESULTS" <<'EOF'
import re, sys
scenario, server, path, cores, drain, spilled, machine = sys.argv[1:]
cores, machine = ("" if value == "-" else value for value in (cores, machine))
text = open(path).read()
def ms(value):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", text))
socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if socket:
    errors += sum(int(n) for n in socket.groups())
print(f"{scenario}\t{server}\t{rps:.0f}\treq/s\t{p50:.3f}\t{p99:.3f}\t{errors}\t{cores}\t{drain}\t{spilled}\t{machine}")
EOF
}

run_loadgen() { # run_loadgen SCENARIO SERVER BASE_URL SERVER_PID LOADGEN_ARGS...
  local scenario=$1 server=$2 url=$3 pid=$4 out measured
  shift 4
  out=$WORK/loadgen-$(echo "$scenario-$server" | tr -c 'a-zA-Z0-9' '_').json
  log "$scenario: lightops-loadgen $*"
  # The CPU is averaged over the warm-up too: the load is the same throughout.
  begin_run "$url" "$pid"
  "$LOADGEN" --url "$url" --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --json "$@" \
    >"$out" 2>>"$WORK/loadgen.log"
  measured=$(end_run "$url" "$pid")
  # shellcheck disable=SC2086 # four words
  python3 - "$scenario" "$server" "$out" $measured >>"$RESULTS" <<'EOF'
import json, sys
scenario, server, path, cores, drain, spilled, machine = sys.argv[1:]
cores, machine = ("" if value == "-" else value for value in (cores, machine))
report = json.load(open(path))
if report["mode"] == "stream":
    throughput, unit = report["predictions_per_s"], "predictions/s"
else:
    throughput, unit = report["rps"], "req/s"
p50, p99, errors = report["p50_ms"], report["p99_ms"], report["errors"]
print(f"{scenario}\t{server}\t{throughput:.0f}\t{unit}\t{p50:.3f}\t{p99:.3f}\t{errors}\t{cores}\t{drain}\t{spilled}\t{machine}")
EOF
}

# --- the model ------------------------------------------------------------------------------
ARTIFACT=$(sample_model "$LIGHTOPS")
[[ -f $ARTIFACT ]] || die "no model artifact at $ARTIFACT"
log "model: $ARTIFACT"

LIGHTOPS_PROBE=""
FLASK_PROBE=""

# --- lightops ---------------------------------------------------------------------------------
start_lightops() { # start_lightops LABEL SINK_FLAGS...: sets BASE_<LABEL> and PID_<LABEL>
  local label=$1 port pid base
  shift
  port=$(free_port)
  base=http://127.0.0.1:$port
  LIGHTOPS_HOME=$WORK/home-$label "$LIGHTOPS" serve predictor --listen "127.0.0.1:$port" --model "$ARTIFACT" "$@" \
    >"$WORK/lightops-$label.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_ready "$base/readyz" "$pid" "lightops-$label" "$WORK/lightops-$label.log"
  printf -v "BASE_$label" '%s' "$base"
  printf -v "PID_$label" '%s' "$pid"
}

if [[ $RUN_LIGHTOPS == 1 ]]; then
  start_lightops local --log-dir "$WORK/predictions"
  LOGGED[$BASE_local]=1
  start_lightops none --log-sink none
  LIGHTOPS_PROBE=$(probe "$BASE_local")
  run_scenario() { # run_scenario SCENARIO LABEL: one run of SCENARIO on server LABEL
    local scenario=$1 label=$2 base pid server
    base=BASE_$label
    pid=PID_$label
    server="lightops (log: $label)"
    case $scenario in
      http) run_wrk "HTTP POST /predict (wrk)" "$server" "${!base}" "${!pid}" ;;
      unary) run_loadgen "gRPC Predict, unary" "$server" "${!base}" "${!pid}" --mode unary --client "$CLIENT" ;;
      stream1)
        run_loadgen "gRPC PredictStream, batch 1" "$server" "${!base}" "${!pid}" --mode stream --batch 1 ;;
      stream100)
        run_loadgen "gRPC PredictStream, batch 100" "$server" "${!base}" "${!pid}" --mode stream --batch 100 ;;
      *) die "unknown scenario $scenario (expected http, unary, stream1 or stream100)" ;;
    esac
  }
  # Each scenario runs on both servers back to back, so that the two runs of a pair see the
  # same conditions on a shared machine.
  for round in $(seq "$ROUNDS"); do
    for scenario in ${SCENARIOS//,/ }; do
      for label in local none; do
        log "round $round/$ROUNDS, $scenario, lightops (log: $label)"
        run_scenario "$scenario" "$label"
      done
      # A run writes up to gigabytes of log: closed segments go (the server never touches
      # them again).
      rm -f "$WORK"/predictions/predictions-*.jsonl
    done
  done
  curl -sf "$BASE_local/metrics" | grep '^lightops_predictor_log_' >"$WORK/log-counters.txt" || true
  log "prediction log counters after the runs: $(tr '\n' ' ' <"$WORK/log-counters.txt")"
fi

# --- the workshop's Flask service ------------------------------------------------------------
if [[ $RUN_FLASK == 1 ]]; then
  port=$(free_port)
  base=http://127.0.0.1:$port
  MODEL_ARTIFACT=$ARTIFACT LOG_DIR=$WORK/flask-logs \
    gunicorn -w 2 -b "127.0.0.1:$port" --chdir "$ROOT/bench/reference" flask_serve:app \
    >"$WORK/flask.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_ready "$base/healthz" "$pid" flask "$WORK/flask.log"
  FLASK_PROBE=$(probe "$base")
  run_wrk "HTTP POST /predict (wrk)" "Flask + gunicorn -w 2 (log: file)" "$base"
  stop "$pid"
fi

if [[ -n $LIGHTOPS_PROBE && -n $FLASK_PROBE ]]; then
  python3 -c 'import sys; a, b = map(float, sys.argv[1:]); assert abs(a - b) <= 1e-9 * max(1.0, abs(b)), (a, b)' \
    "$LIGHTOPS_PROBE" "$FLASK_PROBE" || die "lightops ($LIGHTOPS_PROBE) and Flask ($FLASK_PROBE) disagree on the probe ride"
  log "lightops and Flask agree on the probe ride: $LIGHTOPS_PROBE minutes"
fi

# --- report -----------------------------------------------------------------------------------
echo
echo "Predictor benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores" \
  "($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //' || uname -m));" \
  "$DURATION per scenario after a $WARMUP warm-up, $CONNECTIONS connections, median of $ROUNDS rounds" \
  "alternating log on/off; gRPC unary client: $CLIENT."
echo
python3 - "$RESULTS" <<'EOF'
import math, sys
raw = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
# The median round per (scenario, server), in the order first seen.
groups = {}
for scenario, server, throughput, unit, p50, p99, errors, cores, drain, spilled, machine in raw:
    # Server and machine CPU per request or prediction, in ns, including the log's catching up
    # after the run (None when not measured).
    per = lambda used: float(used) / float(throughput) * 1e9 if used and float(throughput) > 0 else None
    groups.setdefault((scenario, server), []).append(
        (float(throughput), unit, float(p50), float(p99), int(errors), per(cores), float(drain), int(spilled),
         per(machine)))
rows = []
for (scenario, server), runs in groups.items():
    ordered = sorted(runs, key=lambda run: run[0])
    throughput, unit, p50, p99 = ordered[len(ordered) // 2][:4]
    rows.append((scenario, server, throughput, unit, p50, p99, sum(run[4] for run in runs), len(runs)))
rows.sort(key=lambda row: (row[1].startswith("Flask"), "none" in row[1]))
flask = next((r[2] for r in rows if r[1].startswith("Flask") and r[0].startswith("HTTP")), None)
print("| scenario | server | throughput (median) | p50 | p99 | errors | rounds | lightops/Flask |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for scenario, server, throughput, unit, p50, p99, errors, rounds in rows:
    ratio = ""
    if scenario.startswith("HTTP") and flask and not server.startswith("Flask"):
        ratio = f"{throughput / flask:.1f}x"
    elif scenario.startswith("HTTP") and server.startswith("Flask"):
        ratio = "1.0x"
    print(f"| {scenario} | {server} | {int(throughput):,} {unit} | {p50:.2f} ms | {p99:.2f} ms "
          f"| {errors} | {rounds} | {ratio} |")
on_label, off_label = "lightops (log: local)", "lightops (log: none)"
medians = {(r[0], r[1]): r[2] for r in rows}
costs = [s for s, server in groups if server == on_label and (s, off_label) in medians]

def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2

def median_interval(values, confidence=0.90):
    """A distribution-free interval for the median of what the values are drawn from: the k-th
    smallest and k-th largest of n values, with the largest k whose coverage, 1 - 2 P(B <= k - 1)
    for B ~ Binomial(n, 1/2), is at least `confidence` (None with too few values)."""
    values, n = sorted(values), len(values)
    best = None
    for k in range(1, n // 2 + 1):
        coverage = 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n
        if coverage >= confidence:
            best = (values[k - 1], values[n - k], coverage)
    return best

TARGET = 0.10
if costs:
    print()
    print("| scenario | log on (median) | log off (median) | cost of the log | each round, on vs off "
          "| the rounds' cost: median, interval | server CPU per prediction, on / off "
          "| the log's CPU per record | its share of the machine's CPU | spilled, catching up after each round |")
    print("|---|---:|---:|---:|---|---|---:|---:|---:|---|")
    for scenario in costs:
        on, off = medians[(scenario, on_label)], medians[(scenario, off_label)]
        pairs = list(zip(groups[(scenario, on_label)], groups[(scenario, off_label)]))
        each = ", ".join(f"{a[0] / b[0] - 1:+.0%}" for a, b in pairs)
        # The cost of each round (1 - on / off) and a verdict on the 10% target from all of them.
        round_costs = [1 - a[0] / b[0] for a, b in pairs]
        interval = median_interval(round_costs)
        if interval is None:
            rounds = f"{median(round_costs):.1%}, too few rounds for an interval"
        else:
            low, high, coverage = interval
            verdict = "met" if high <= TARGET else "missed" if low > TARGET else "undecided"
            rounds = f"{median(round_costs):.1%}, {low:.1%} to {high:.1%} ({coverage:.0%}): {verdict}"
        cpu_on = median(run[5] for run in groups[(scenario, on_label)])
        cpu_off = median(run[5] for run in groups[(scenario, off_label)])
        machine_on = median(run[8] for run in groups[(scenario, on_label)])
        cpu = f"{cpu_on:,.0f} / {cpu_off:,.0f} ns" if cpu_on and cpu_off else ""
        extra = f"{cpu_on - cpu_off:+,.0f} ns" if cpu_on and cpu_off else ""
        # With both cores busy, throughput is what the machine's CPU allows: the log's share of it
        # is what the log costs in throughput, measured in CPU time, which moves less from run to
        # run than throughput does.
        share = f"{(cpu_on - cpu_off) / machine_on:.1%}" if cpu_on and cpu_off and machine_on else ""
        behind = ", ".join(f"{run[7]:,} in {run[6]:.1f} s" for run in groups[(scenario, on_label)])
        print(f"| {scenario} | {int(on):,} | {int(off):,} | {1 - on / off:.1%} | {each} | {rounds} | {cpu} "
              f"| {extra} | {share} | {behind} |")
EOF
