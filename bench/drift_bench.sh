#!/usr/bin/env bash
# Drift / monitor benchmark (issue 6): lightops and Evidently 0.7 on the same report, side by side.
#
#   bench/drift_bench.sh            # LIGHTOPS_DATA (default ../shared/data), RUNS (Evidently, default 5)
#
# Runs `cargo bench -p lightops-ml --bench drift` (release build; see crates/ml/benches/drift.rs:
# the 10 M-row window, one report per month, the correctness table), then
# bench/reference/evidently_bench.py on the same month with the Evidently virtualenv
# (EVIDENTLY_PYTHON, default /tmp/evidently-venv/bin/python; docs/drift.md says how to make it),
# and prints the per-report ratio. Both sides exclude reading, filtering and scoring the rows.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${EVIDENTLY_PYTHON:-/tmp/evidently-venv/bin/python}
export LIGHTOPS_DATA=${LIGHTOPS_DATA:-$PWD/../shared/data}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "load before: $(uptime)" >&2
cargo bench -q -p lightops-ml --bench drift | tee "$out"
result() { sed -n "s/^RESULT $1=//p" "$out"; }

python_json=$("$PY" bench/reference/evidently_bench.py --data "$LIGHTOPS_DATA" --runs "${RUNS:-5}")
echo "$python_json"
echo "load after: $(uptime)" >&2

python3 - "$python_json" "$(result report_ms)" "$(result report_with_reference_ms)" "$(result report_rows)" <<'EOF'
import json, sys
evidently = json.loads(sys.argv[1])
given, built, rows = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
assert evidently["rows"] == rows, (evidently["rows"], rows)
e = evidently["median_ms"]
print()
print(f"## One report: {evidently['current']} ({rows} rows) against {evidently['reference']} ({evidently['reference_rows']} rows)")
print()
print("| Evidently 0.7.23 | lightops (reference given) | ratio | lightops (reference built too) | ratio |")
print("|---:|---:|---:|---:|---:|")
print(f"| {e:.0f} ms | {given:.2f} ms | {e / given:.0f}x | {built:.2f} ms | {e / built:.0f}x |")
EOF
