#!/usr/bin/env python3
"""Benchmark `lightops train` side by side with the workshop's scikit-learn pipeline.

Scenarios (issue 2):
  a  2022-01 -> 2022-02                           (the workshop's run)
  b  2022-01..11 -> 2022-12                       (eleven months)
  c  2022-01..11 passed ten times -> 2022-12     (~7.3 M training rows)

Each command runs as its own process under /usr/bin/time, so wall time is end to end (process
start, reading parquet, fitting, validating, writing the artifact) and peak RSS is the kernel's
maximum resident set size. Reports the median wall time of --repeat runs, the largest peak RSS, and
the ratio Python / lightops. Build first:  cargo build --release -p lightops-cli

    python3 bench/train_bench.py [--data ../shared/data] [--repeat 5] [--py-repeat 3] [--only a,b,c]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def months(data, numbers):
    return [os.path.join(data, f"green_tripdata_2022-{m:02d}.parquet") for m in numbers]


def scenarios(data):
    eleven = months(data, range(1, 12))
    return {
        "a": (months(data, [1]), months(data, [2])[0]),
        "b": (eleven, months(data, [12])[0]),
        "c": (eleven * 10, months(data, [12])[0]),
    }


def timed(command):
    """Runs a command under /usr/bin/time; returns (wall seconds, peak RSS bytes, stdout)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        proc = subprocess.run(
            ["/usr/bin/time", "-o", report.name, "-f", "%e %M", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if proc.returncode != 0:
            sys.exit(f"{' '.join(command[:3])}... failed:\n{proc.stderr}")
        wall, rss_kb = report.read().split()[-2:]
    return float(wall), int(rss_kb) * 1024, proc.stdout


def run(command, repeat):
    walls, rss, out = [], 0, None
    for _ in range(repeat):
        wall, peak, out = timed(command)
        walls.append(wall)
        rss = max(rss, peak)
    return statistics.median(walls), rss, json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "lightops"))
    parser.add_argument("--repeat", type=int, default=5, help="lightops runs per scenario")
    parser.add_argument("--py-repeat", type=int, default=3, help="python runs per scenario (c: at most 1)")
    parser.add_argument("--only", default="a,b,c")
    parser.add_argument("--no-python", action="store_true", help="skip the scikit-learn side")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="lightops-bench-")
    rows = []
    for name, (train, val) in scenarios(args.data).items():
        if name not in args.only.split(","):
            continue
        ours = [args.binary, "--home", home, "--quiet", "train", "--json", "--out", os.path.join(home, name),
                "--train", *train, "--val", val]
        wall, rss, summary = run(ours, args.repeat)
        row = {"scenario": name, "train_rows": summary["train_rows"], "lightops_s": wall, "lightops_rss": rss,
               "lightops_rmse": summary["rmse"]}
        if not args.no_python:
            python = [sys.executable, os.path.join(HERE, "reference", "workshop_train.py"), "--train", *train,
                      "--val", val]
            py_wall, py_rss, py_summary = run(python, 1 if name == "c" else args.py_repeat)
            row.update(python_s=py_wall, python_rss=py_rss, python_rmse=py_summary["rmse"],
                       speedup=py_wall / wall, memory_ratio=py_rss / rss)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    print()
    print("| scenario | train rows | lightops wall | lightops peak RSS | python wall | python peak RSS | "
          "wall ratio | RSS ratio | lightops RMSE | sklearn RMSE |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        mb = lambda b: f"{b / 2**20:.0f} MiB"
        py = (f"{r['python_s']:.2f} s | {mb(r['python_rss'])} | {r['speedup']:.1f}× | {r['memory_ratio']:.1f}× | "
              f"{r['lightops_rmse']:.5f} | {r['python_rmse']:.5f}") if "python_s" in r else \
            f"– | – | – | – | {r['lightops_rmse']:.5f} | –"
        print(f"| {r['scenario']} | {r['train_rows']:,} | {r['lightops_s']:.3f} s | {mb(r['lightops_rss'])} | {py} |")


if __name__ == "__main__":
    main()
