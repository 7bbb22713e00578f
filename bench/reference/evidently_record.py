#!/usr/bin/env python3
"""Records Evidently 0.7's drift numbers that lightops' drift tests compare against.

    python3 bench/reference/evidently_record.py samples   # -> bench/reference/expected_drift_samples.json
    python3 bench/reference/evidently_record.py real [DATA_DIR]   # -> bench/reference/evidently_drift_real.json

`samples` uses the bundled samples and bench/reference/evidently_sample_model.json (the model
lightops trains on the 2022-01 -> 2022-02 samples); `real` the full TLC months in DATA_DIR
(default ../shared/data beside the checkout) and bench/reference/evidently_real_model.json.
Both models are written by the ignored `write_*_model` tests in crates/ml/tests/drift_*.rs.

Each file holds the runs of `evidently_drift.evaluate`: the reference month against 2022-03,
2022-06 and 2020-06 with Evidently's defaults, with per-column method overrides (every test
lightops implements appears at least once), and (samples) with only the first 500 reference rows,
which takes Evidently's small-reference tests (KS, chi-square).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from evidently_drift import evaluate  # noqa: E402

OVERRIDES = [
    {},
    {"PULocationID": "psi", "DOLocationID": "chisquare", "trip_distance": "ks", "prediction": "psi"},
    {"PULocationID": "z", "DOLocationID": "jensenshannon", "trip_distance": "psi", "prediction": "jensenshannon"},
]


def record(model, reference, currents, heads):
    runs = []
    for methods in OVERRIDES:
        runs += evaluate(model, reference, currents, None, methods)
    for head in heads:
        runs += evaluate(model, reference, currents, head, {})
    return runs


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "samples"
    if which == "samples":
        samples = os.path.join(ROOT, "samples")
        reference = os.path.join(samples, "green_sample_2022-01.parquet")
        currents = [os.path.join(samples, f"green_sample_{m}") for m in ["2022-03.parquet", "2022-06.parquet", "2020-06.csv.gz"]]
        runs = record(os.path.join(HERE, "evidently_sample_model.json"), reference, currents, [500])
        out = os.path.join(HERE, "expected_drift_samples.json")
    elif which == "real":
        data = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "..", "shared", "data")
        reference = os.path.join(data, "green_tripdata_2022-01.parquet")
        currents = [os.path.join(data, f"green_tripdata_{m}") for m in ["2022-03.parquet", "2022-06.parquet", "2020-06.csv.gz"]]
        runs = record(os.path.join(HERE, "evidently_real_model.json"), reference, currents, [])
        out = os.path.join(HERE, "evidently_drift_real.json")
    else:
        sys.exit("usage: evidently_record.py samples|real [DATA_DIR]")
    with open(out, "w") as f:
        json.dump({"runs": runs}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(runs)} runs to {out}")


if __name__ == "__main__":
    main()
