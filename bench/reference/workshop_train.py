#!/usr/bin/env python3
"""The workshop's training pipeline, as the course wrote it: pandas + DictVectorizer +
scikit-learn's LinearRegression. It is the Python side of `bench/train_bench.py`.

    python3 bench/reference/workshop_train.py --train A.parquet [B ...] --val C.parquet

Prints one JSON object: rows, features, validation RMSE and the seconds each step took.
"""
import argparse
import json
import sys
import time

import pandas as pd
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LinearRegression
from sklearn.metrics import root_mean_squared_error

CATEGORICAL = ["PULocationID", "DOLocationID"]
NUMERICAL = ["trip_distance"]


def read_dataframe(filename):
    if filename.endswith(".parquet"):
        df = pd.read_parquet(filename)
    else:
        df = pd.read_csv(filename)
    pickup = "lpep_pickup_datetime" if "lpep_pickup_datetime" in df else "tpep_pickup_datetime"
    dropoff = pickup.replace("pickup", "dropoff")
    df[pickup] = pd.to_datetime(df[pickup])
    df[dropoff] = pd.to_datetime(df[dropoff])
    df["duration"] = (df[dropoff] - df[pickup]).dt.total_seconds() / 60
    df = df[(df.duration >= 1) & (df.duration <= 60)]
    df[CATEGORICAL] = df[CATEGORICAL].astype(str)
    return df


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="+", required=True)
    parser.add_argument("--val", required=True)
    args = parser.parse_args()

    t0 = time.perf_counter()
    df_train = pd.concat([read_dataframe(f) for f in args.train], ignore_index=True)
    df_val = read_dataframe(args.val)
    t1 = time.perf_counter()
    dv = DictVectorizer()
    x_train = dv.fit_transform(df_train[CATEGORICAL + NUMERICAL].to_dict(orient="records"))
    x_val = dv.transform(df_val[CATEGORICAL + NUMERICAL].to_dict(orient="records"))
    y_train = df_train["duration"].values
    y_val = df_val["duration"].values
    t2 = time.perf_counter()
    lr = LinearRegression()
    lr.fit(x_train, y_train)
    t3 = time.perf_counter()
    rmse = root_mean_squared_error(y_val, lr.predict(x_val))
    t4 = time.perf_counter()
    json.dump(
        {
            "train_rows": len(y_train),
            "val_rows": len(y_val),
            "features": x_train.shape[1],
            "rmse": rmse,
            "seconds": {"read": t1 - t0, "vectorize": t2 - t1, "fit": t3 - t2, "validate": t4 - t3, "total": t4 - t0},
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
