# Shell helpers shared by the predictor benchmarks (sourced, not run). The sourcing script
# defines `die MESSAGE` and, for `sample_model`, `WORK` (a scratch directory) and `ROOT` (the
# repository).

free_port() { # free_port: a TCP port free on 127.0.0.1 right now
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() { # wait_ready URL PID NAME [LOG]: poll URL until it answers, for at most 30 s; on
  # failure the end of LOG is shown (the scripts may delete it on exit)
  local url=$1 pid=$2 name=$3 log=${4:-} tail=""
  for _ in $(seq 300); do
    curl -sf -o /dev/null "$url" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n $log && -f $log ]] && tail=$'\n'$(tail -5 "$log")
  kill -0 "$pid" 2>/dev/null || die "$name exited before it was ready$tail"
  die "$name was not ready after 30 s$tail"
}

sample_model() { # sample_model LIGHTOPS: $MODEL_ARTIFACT if set, else trains the sample model with
  # LIGHTOPS into $WORK/model (saying so on stderr); prints the artifact's path
  if [[ -n ${MODEL_ARTIFACT:-} ]]; then
    echo "$MODEL_ARTIFACT"
    return 0
  fi
  echo "${0##*/}: training the sample model" >&2
  "$1" train --train "$ROOT/samples/green_sample_2022-01.parquet" \
    --val "$ROOT/samples/green_sample_2022-02.parquet" --out "$WORK/model" --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["artifact"])'
}

log_state() { # log_state BASE_URL: "<queue depth> <spill backlog> <spilled> <queued> <sent> <dropped>"
  # of the server's prediction log (empty if /metrics did not answer)
  { curl -sf --max-time 2 "$1/metrics" || true; } | awk '
    /^lightops_predictor_log_queue_depth / { queue = $2 }
    /^lightops_predictor_log_spill_backlog / { backlog = $2 }
    /^lightops_predictor_log_records_total\{state="spilled"\} / { spilled = $2 }
    /^lightops_predictor_log_records_total\{state="queued"\} / { queued = $2 }
    /^lightops_predictor_log_records_total\{state="sent"\} / { sent = $2 }
    /^lightops_predictor_log_records_total\{state="dropped"\} / { dropped = $2 }
    END { if (queue != "" && dropped != "") print queue, backlog, spilled, queued, sent, dropped }'
}

log_at_rest() { # log_at_rest BASE_URL: waits (at most 600 s) until the server's prediction log is at
  # rest: nothing in memory or in the spill, and every record queued sent (or dropped; the
  # servers start with an empty spill, so nothing is recovered from one); prints its log_state
  local state queue backlog queued sent dropped until=$((SECONDS + 600))
  while ((SECONDS < until)); do
    state=$(log_state "$1")
    if [[ -n $state ]]; then
      read -r queue backlog _ queued sent dropped <<<"$state"
      if [[ $queue == 0 && $backlog == 0 && $queued == $((sent + dropped)) ]]; then
        echo "$state"
        return 0
      fi
    fi
    sleep 0.1
  done
  die "the prediction log of $1 did not come to rest within 600 s (${state:-no /metrics})"
}
