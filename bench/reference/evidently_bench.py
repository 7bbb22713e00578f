#!/usr/bin/env python3
"""Evidently 0.7's side of the drift benchmark (issue 6): one data-drift report of a real month.

    /tmp/evidently-venv/bin/python bench/reference/evidently_bench.py [--data DIR] [--current 2022-03] [--runs 5]

The same report as `cargo bench -p lightops-ml --bench drift`: the current month (default
2022-03) against 2022-01, columns PULocationID, DOLocationID (categorical), trip_distance and
prediction (numerical), Evidently's defaults (`DataDriftPreset`, which picks Jensen-Shannon and
Wasserstein here), predictions of bench/reference/evidently_real_model.json computed as lightops
computes them (bench/reference/evidently_drift.py).

Timed: `evidently_drift.drift(reference, current, {})`, i.e. `Dataset.from_pandas` of both
frames, `Report([DataDriftPreset(...)], include_tests=True).run(current, reference)`, the
snapshot's `.dict()` and reading the four scores out of it. Not timed, as on the Rust side:
reading the TLC files, the 1-60 minute filter and scoring the rows. One untimed warm-up run
(imports, first-call caches), then the median of `--runs`.

Prints one JSON object with the timings, the rows and the scores (to check both sides reported the
same thing).
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from evidently_drift import drift, load_model, predict, read_trips  # noqa: E402


def month_file(data, month):
    suffix = "csv.gz" if month == "2020-06" else "parquet"
    return os.path.join(data, f"green_tripdata_{month}.{suffix}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("LIGHTOPS_DATA", os.path.join(ROOT, "..", "shared", "data")))
    parser.add_argument("--reference", default="2022-01")
    parser.add_argument("--current", default="2022-03")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import evidently

    coefficients, intercept = load_model(os.path.join(HERE, "evidently_real_model.json"))
    reference = read_trips(month_file(args.data, args.reference))
    reference["prediction"] = predict(reference, coefficients, intercept)
    current = read_trips(month_file(args.data, args.current))
    current["prediction"] = predict(current, coefficients, intercept)

    result = drift(reference, current, {})  # warm-up, untimed
    times = []
    for _ in range(max(1, args.runs)):
        start = time.perf_counter()
        result = drift(reference, current, {})
        times.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "evidently": evidently.__version__,
                "reference": args.reference,
                "current": args.current,
                "reference_rows": len(reference),
                "rows": len(current),
                "runs": len(times),
                "median_ms": statistics.median(times) * 1e3,
                "min_ms": min(times) * 1e3,
                "max_ms": max(times) * 1e3,
                "dataset_drift": result["dataset_drift"],
                "scores": {c["column"]: [c["method"], c["score"]] for c in result["columns"]},
            }
        )
    )


if __name__ == "__main__":
    main()
