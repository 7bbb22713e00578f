#!/usr/bin/env python3
"""Dense-SVD reference for lightops' exact least-squares fit.

Reads TLC trip files the way the workshop does (duration in minutes from the pickup/dropoff
times, kept when 1 <= duration <= 60; PULocationID/DOLocationID as strings, one-hot like
scikit-learn's DictVectorizer; trip_distance as is), then solves the *centred* problem with
numpy's `lstsq` (LAPACK gelsd: SVD, minimum-norm solution) and prints one JSON object:
rows, features, rank, train/validation RMSE, MAE, R², intercept and a few predictions.

    python3 bench/reference/exact_ols.py --train A.parquet [B ...] --val C.parquet

This is the number lightops must match: training RMSE to 1e-9 relative (it is the exact
optimum) and validation RMSE to 1e-6.
"""
import argparse
import json
import sys

import numpy as np
import pandas as pd
from sklearn.feature_extraction import DictVectorizer
from workshop_train import read_dataframe as workshop_read_dataframe

CATEGORICAL = ["PULocationID", "DOLocationID"]
NUMERICAL = ["trip_distance"]
CROSSED = False  # --pu-do: the course's variant, categorical PU_DO = PU + "_" + DO


def read_dataframe(path):
    """The workshop's reader (shared with workshop_train.py), plus the crossed PU_DO column."""
    df = workshop_read_dataframe(path)
    if CROSSED:
        df["PU_DO"] = df["PULocationID"] + "_" + df["DOLocationID"]
    return df


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="+", required=True)
    parser.add_argument("--val", required=True)
    parser.add_argument("--score", nargs="*", default=[], help="more files to score with the model")
    parser.add_argument("--show", type=int, default=5, help="validation predictions to print")
    parser.add_argument("--pu-do", action="store_true", help="use the crossed PU_DO feature instead")
    args = parser.parse_args()
    global CATEGORICAL, CROSSED
    if args.pu_do:
        CATEGORICAL, CROSSED = ["PU_DO"], True

    train = pd.concat([read_dataframe(p) for p in args.train], ignore_index=True)
    val = read_dataframe(args.val)
    dv = DictVectorizer()
    x_train = dv.fit_transform(train[CATEGORICAL + NUMERICAL].to_dict(orient="records")).toarray()
    x_val = dv.transform(val[CATEGORICAL + NUMERICAL].to_dict(orient="records")).toarray()
    y_train = train["duration"].to_numpy()
    y_val = val["duration"].to_numpy()

    x_mean = x_train.mean(axis=0)
    y_mean = y_train.mean()
    coef, _, rank, _ = np.linalg.lstsq(x_train - x_mean, y_train - y_mean, rcond=None)
    intercept = y_mean - x_mean @ coef

    def metrics(x, y):
        pred = x @ coef + intercept
        err = pred - y
        ss_tot = ((y - y.mean()) ** 2).sum()
        return pred, {
            "rmse": float(np.sqrt((err**2).mean())),
            "mae": float(np.abs(err).mean()),
            "r2": float(1.0 - (err**2).sum() / ss_tot),
        }

    _, train_m = metrics(x_train, y_train)
    val_pred, val_m = metrics(x_val, y_val)
    names = dv.get_feature_names_out()
    out = {
        "train_rows": int(len(y_train)),
        "val_rows": int(len(y_val)),
        "features": int(x_train.shape[1]),
        "rank": int(rank),
        "train_rmse": train_m["rmse"],
        "train_mae": train_m["mae"],
        "train_r2": train_m["r2"],
        "rmse": val_m["rmse"],
        "mae": val_m["mae"],
        "r2": val_m["r2"],
        "intercept": float(intercept),
        "coef_trip_distance": float(coef[list(names).index("trip_distance")]),
        "coef_norm": float(np.linalg.norm(coef)),
        "val_predictions_head": [float(v) for v in val_pred[: args.show]],
        "scored": {},
    }
    for path in args.score:
        df = read_dataframe(path)
        x = dv.transform(df[CATEGORICAL + NUMERICAL].to_dict(orient="records")).toarray()
        _, m = metrics(x, df["duration"].to_numpy())
        out["scored"][path.rsplit("/", 1)[-1]] = {"rows": int(len(df)), **m}
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
