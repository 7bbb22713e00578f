#!/usr/bin/env python3
"""Evidently 0.7 reference for `lightops drift`: data drift of a current TLC month against a
reference month, with Evidently's default settings (DataDriftPreset).

Rows are prepared as lightops prepares them for training (`lightops_ml::data::read_trips`):
duration = dropoff - pickup in minutes, kept when 1 <= duration <= 60, rows with a missing
PULocationID / DOLocationID / trip_distance dropped. Columns compared, in this order:
PULocationID, DOLocationID (categorical, integer categories), trip_distance (numerical) and
prediction (numerical): the prediction of the lightops model in ARTIFACT, computed as lightops
computes it, `((intercept + coef[PULocationID=pu]) + coef[DOLocationID=do]) + coef[trip_distance] * d`
(a category absent from the model contributes 0), so both sides see bit-identical values.

    python3 bench/reference/evidently_drift.py --model ARTIFACT --reference REF --current CUR [CUR ...]
        [--reference-head N] [--method COLUMN=METHOD ...]

`--reference-head N` keeps only the first N prepared reference rows (a small reference takes
Evidently's KS / chi-square / Z-test path). `--method` overrides the test of one column
(Evidently's `per_column_method`, names as Evidently registers them: ks, psi, wasserstein,
jensenshannon, chisquare, z, ...).

Prints one JSON object per current file, one per line:
{"reference": ..., "current": ..., "reference_rows": R, "rows": N, "dataset_drift": bool,
 "drift_share": 0.5, "drifted_columns": K, "share_of_drifted_columns": S,
 "columns": [{"column", "method", "method_display", "score", "threshold", "drifted"}, ...]}

Needs evidently==0.7.* with pandas < 3 (evidently 0.7.23 imports a helper pandas 3 removed); see
docs/drift.md for the environment the recorded numbers came from.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import pandas as pd

COLUMNS = ["PULocationID", "DOLocationID", "trip_distance", "prediction"]
CATEGORICAL = ["PULocationID", "DOLocationID"]
NUMERICAL = ["trip_distance", "prediction"]


def read_trips(path):
    """Rows as `lightops_ml::data::read_trips` keeps them, in file order."""
    if path.endswith(".parquet"):
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, low_memory=False)
    pickup = "lpep_pickup_datetime" if "lpep_pickup_datetime" in df else "tpep_pickup_datetime"
    dropoff = pickup.replace("pickup", "dropoff")
    start = pd.to_datetime(df[pickup])
    end = pd.to_datetime(df[dropoff])
    duration = (end - start).dt.total_seconds() / 60
    keep = (duration >= 1) & (duration <= 60)
    for column in CATEGORICAL + ["trip_distance"]:
        values = pd.to_numeric(df[column], errors="coerce")
        keep &= values.notna() & np.isfinite(values.astype("float64"))
    df = df.loc[keep, CATEGORICAL + ["trip_distance"]].reset_index(drop=True)
    for column in CATEGORICAL:
        df[column] = df[column].astype("int64")
    df["trip_distance"] = df["trip_distance"].astype("float64")
    return df


def load_model(path):
    with open(path) as f:
        artifact = json.load(f)
    model = artifact["model"]
    spec = model["feature_spec"]
    if spec["categorical"] != CATEGORICAL or spec["numerical"] != ["trip_distance"] or spec.get("crossed"):
        sys.exit(f"{path}: expected the workshop's feature spec, found {spec}")
    coefficients = dict(zip(model["features"], model["coefficients"]))
    return coefficients, float(model["intercept"])


def predict(df, coefficients, intercept):
    """lightops' arithmetic, in lightops' order (see crates/ml/src/model.rs)."""
    pu = np.array([coefficients.get(f"PULocationID={v}", 0.0) for v in df["PULocationID"]], dtype="float64")
    do = np.array([coefficients.get(f"DOLocationID={v}", 0.0) for v in df["DOLocationID"]], dtype="float64")
    part = (np.float64(intercept) + pu) + do
    return part + np.float64(coefficients["trip_distance"]) * df["trip_distance"].to_numpy()


def registered_names():
    """Evidently's display name -> registered name (`Wasserstein distance (normed)` -> `wasserstein`)."""
    from evidently.legacy.calculations.stattests import registry

    names = {}
    for name, by_type in registry._registered_stat_tests.items():
        for stattest in by_type.values():
            names[stattest.display_name] = name
    return names


def number(value):
    value = float(value)
    return value if math.isfinite(value) else None


def drift(reference, current, per_column_method):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERICAL, categorical_columns=CATEGORICAL)
    ref = Dataset.from_pandas(reference[COLUMNS], data_definition=definition)
    cur = Dataset.from_pandas(current[COLUMNS], data_definition=definition)
    preset = DataDriftPreset(columns=COLUMNS, per_column_method=per_column_method or None)
    snapshot = Report([preset], include_tests=True).run(cur, ref).dict()

    names = registered_names()
    scores, share, count, drift_share = {}, None, None, None
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            scores[config["column"]] = (config["method"], config["threshold"], metric["value"])
        elif config["type"].endswith("DriftedColumnsCount"):
            count, share = metric["value"]["count"], metric["value"]["share"]
            drift_share = config.get("drift_share", 0.5)
    status = {}
    dataset_test = None
    for test in snapshot["tests"]:
        params = test["metric_config"]["params"]
        if params["type"].endswith("ValueDrift"):
            status[params["column"]] = test["status"]
        elif params["type"].endswith("DriftedColumnsCount"):
            dataset_test = test["status"]
    columns = []
    for column in COLUMNS:
        display, threshold, score = scores[column]
        columns.append(
            {
                "column": column,
                "method": names.get(display, display),
                "method_display": display,
                "score": number(score),
                "threshold": threshold,
                "drifted": status[column] == "FAIL",
            }
        )
    drifted = sum(c["drifted"] for c in columns)
    assert drifted == int(count), (drifted, count)
    dataset_drift = bool(share >= drift_share)
    # The preset's dataset-level test is `share < drift_share`: it fails exactly when the dataset drifted.
    assert dataset_test is None or (dataset_test == "FAIL") == dataset_drift, (dataset_test, share)
    return {
        "dataset_drift": dataset_drift,
        "drift_share": drift_share,
        "drifted_columns": drifted,
        "share_of_drifted_columns": share,
        "columns": columns,
    }


def evaluate(model, reference_path, current_paths, reference_head=None, methods=None):
    """Evidently's drift of each current file against the reference: one dict per current file."""
    import evidently

    coefficients, intercept = load_model(model)
    reference = read_trips(reference_path)
    if reference_head is not None:
        reference = reference.head(reference_head).reset_index(drop=True)
    reference["prediction"] = predict(reference, coefficients, intercept)
    per_column_method = dict(methods or {})
    results = []
    for path in current_paths:
        current = read_trips(path)
        current["prediction"] = predict(current, coefficients, intercept)
        result = {
            "evidently": evidently.__version__,
            "reference": os.path.basename(reference_path),
            "reference_head": reference_head,
            "current": os.path.basename(path),
            "reference_rows": len(reference),
            "rows": len(current),
            "methods": per_column_method,
        }
        result.update(drift(reference, current, per_column_method))
        results.append(result)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="lightops model artifact (model.json)")
    parser.add_argument("--reference", required=True)
    parser.add_argument("--current", nargs="+", required=True)
    parser.add_argument("--reference-head", type=int, default=None, help="keep the first N reference rows")
    parser.add_argument("--method", action="append", default=[], help="COLUMN=METHOD override")
    args = parser.parse_args()
    methods = dict(item.split("=", 1) for item in args.method)
    for result in evaluate(args.model, args.reference, args.current, args.reference_head, methods):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
