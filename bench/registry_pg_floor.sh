#!/usr/bin/env bash
# What PostgreSQL itself needs to store 1,000 metric rows, without lightops in the way: starts the
# throwaway server of tests/postgres.sh and times (psql \timing, server round trip on loopback)
# five inserts of 1,000 rows into the registry's `metrics` table shape, for each way of sending them.
# Used to judge the registry's LogBatch figure on PostgreSQL (docs/benchmarks.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../tests/postgres.sh"
python3 - "$LIGHTOPS_TEST_POSTGRES_URL" <<'PY'
import json, subprocess, sys, uuid
url = sys.argv[1]
table = ("CREATE TABLE {t} (run_id TEXT NOT NULL, key TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, "
         "step BIGINT NOT NULL, timestamp BIGINT NOT NULL);")
rows = lambda rep: [(f"m{i % 10}", i * 0.5, rep * 100 + i // 10, 1700000000000 + i) for i in range(1000)]
cases = {}
def case(name, index, make):
    t = "t" + str(len(cases))
    sql = [table.format(t=t)]
    if index:
        sql.append(f"CREATE INDEX {t}_i ON {t} (run_id, key, step, timestamp);")
    sql.append("\\timing on")
    for rep in range(6):
        sql.append(make(t, uuid.uuid4().hex, rows(rep)))
    cases[name] = "\n".join(sql)
case("heap only, INSERT … SELECT generate_series", False, lambda t, r, _: (
    f"INSERT INTO {t} SELECT '{r}', 'm' || (i % 10), i * 0.5, i / 10, 1700000000000 + i FROM generate_series(1, 1000) i;"))
case("+ (run_id, key, step, timestamp) index, same", True, lambda t, r, _: (
    f"INSERT INTO {t} SELECT '{r}', 'm' || (i % 10), i * 0.5, i / 10, 1700000000000 + i FROM generate_series(1, 1000) i;"))
case("indexed, COPY FROM STDIN", True, lambda t, r, rs: (
    f"COPY {t} FROM STDIN;\n" + "\n".join(f"{r}\t{k}\t{v}\t{s}\t{ts}" for k, v, s, ts in rs) + "\n\\."))
case("indexed, json_to_recordset of one literal", True, lambda t, r, rs: (
    f"INSERT INTO {t} SELECT '{r}', k, v, s, ts FROM json_to_recordset('" +
    json.dumps([{"k": k, "v": v, "s": s, "ts": ts} for k, v, s, ts in rs]) +
    "') AS x(k text, v float8, s int8, ts int8);"))
case("indexed, 1,000-row VALUES literal", True, lambda t, r, rs: (
    f"INSERT INTO {t} VALUES " + ",".join(f"('{r}','{k}',{v},{s},{ts})" for k, v, s, ts in rs) + ";"))
print("| 1,000 rows into `metrics` | median of runs 2–6 |")
print("|---|---:|")
for name, script in cases.items():
    out = subprocess.run(["psql", url, "-q", "-f", "-"], input=script, text=True, capture_output=True, check=True).stdout
    times = [float(line.split()[1]) for line in out.splitlines() if line.startswith("Time:")]
    times = sorted(times[1:])  # the first insert of each case warms the caches
    print(f"| {name} | {times[len(times) // 2]:.2f} ms |")
PY
