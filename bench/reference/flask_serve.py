#!/usr/bin/env python3
"""The workshop's Flask prediction service (serve_v2.py), as the Python reference for the
predictor benchmarks (bench/predictor_bench.sh).

    MODEL_ARTIFACT=/path/model.json LOG_DIR=/tmp/logs \\
        gunicorn -w 2 -b 127.0.0.1:9696 --chdir bench/reference flask_serve:app

Shaped like the workshop's service: POST /predict takes `{"ride_id": "...", "ride": {...}}` or the
older bare ride `{"PULocationID": 100, "DOLocationID": 102, "trip_distance": 30}`, prepares the
features (location IDs as strings), runs DictVectorizer.transform + LinearRegression.predict on
every request, writes one JSON line per request to a log file, and answers
`{"prediction": {"duration": ...}, "ride_id": "...", "model_version": "..."}` (`ride_id` only when
given).

The model is a lightops artifact (docs/model-artifact.md), turned into the scikit-learn pipeline
the workshop trained: a fitted DictVectorizer whose vocabulary is the artifact's feature list and
a LinearRegression holding its coefficients and intercept. Nothing is refitted.

Environment:
  MODEL_ARTIFACT  path of the lightops model.json (required)
  LOG_DIR         directory for the request log, one `predictions-<pid>.jsonl` per worker
                  process (default ./logs)
  MODEL_VERSION   reported as model_version (default: the artifact's content sha256)
"""
import json
import os
import sys
import time

import numpy as np
from flask import Flask, jsonify, request
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline

ARTIFACT_FORMAT = "lightops.model"
ARTIFACT_FORMAT_VERSION = 1


def load_artifact(path):
    """Reads a lightops artifact and returns (feature_spec, sklearn pipeline, content sha256).

    The artifact's own sha256 is not re-verified here: it covers serde_json's float formatting,
    which Python's json module does not reproduce byte for byte.
    """
    with open(path, "rb") as f_in:
        artifact = json.load(f_in)
    if artifact.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"{path}: format is {artifact.get('format')!r}, expected {ARTIFACT_FORMAT!r}")
    if artifact.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {artifact.get('format_version')!r} is not supported")
    body = artifact["model"]
    features = body["features"]
    coefficients = body["coefficients"]
    if len(features) != len(coefficients):
        raise ValueError(f"{path}: {len(features)} features but {len(coefficients)} coefficients")

    # A DictVectorizer "fitted" on exactly the artifact's features (already in its sorted order).
    dv = DictVectorizer()
    dv.feature_names_ = list(features)
    dv.vocabulary_ = {name: i for i, name in enumerate(features)}

    model = LinearRegression()
    model.coef_ = np.asarray(coefficients, dtype=np.float64)
    model.intercept_ = float(body["intercept"])
    model.n_features_in_ = len(features)

    return body["feature_spec"], make_pipeline(dv, model), artifact.get("sha256", "")


def category(value):
    """A categorical value as DictVectorizer saw it at training time: the workshop cast the
    location IDs to strings, and integers carry no decimal point (`100`, not `100.0`)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def prepare_features(ride, spec):
    """The workshop's prepare_features, driven by the artifact's feature spec."""
    features = {}
    for column in spec["categorical"]:
        features[column] = category(ride[column])
    for crossed in spec.get("crossed", []):
        features[crossed["name"]] = "_".join(category(ride[c]) for c in crossed["columns"])
    for column in spec["numerical"]:
        features[column] = float(ride[column])
    return features


MODEL_ARTIFACT = os.environ.get("MODEL_ARTIFACT")
if not MODEL_ARTIFACT:
    sys.exit("flask_serve: set MODEL_ARTIFACT to the path of a lightops model.json")
LOG_DIR = os.environ.get("LOG_DIR", "logs")
FEATURE_SPEC, PIPELINE, ARTIFACT_SHA256 = load_artifact(MODEL_ARTIFACT)
MODEL_VERSION = os.environ.get("MODEL_VERSION", ARTIFACT_SHA256)


def predict(features):
    preds = PIPELINE.predict(features)
    return float(preds[0])


class RequestLog:
    """One JSON line per request, in a file per worker process (gunicorn forks workers; each
    opens its own file on its first request). Every line is flushed before the answer is sent."""

    def __init__(self, directory):
        self.directory = directory
        self.pid = None
        self.file = None

    def write(self, record):
        pid = os.getpid()
        if self.file is None or self.pid != pid:
            os.makedirs(self.directory, exist_ok=True)
            path = os.path.join(self.directory, f"predictions-{pid}.jsonl")
            self.file = open(path, "a", encoding="utf-8")
            self.pid = pid
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()


REQUEST_LOG = RequestLog(LOG_DIR)

app = Flask("duration-prediction")


@app.route("/predict", methods=["POST"])
def predict_endpoint():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify({"error": "the body must be a JSON object"}), 400
    ride_id = body.get("ride_id")
    ride = body.get("ride", body)
    if not isinstance(ride, dict):
        return jsonify({"error": "`ride` must be a JSON object"}), 400
    try:
        features = prepare_features(ride, FEATURE_SPEC)
    except KeyError as missing:
        return jsonify({"error": f"missing field {missing.args[0]}"}), 400
    except (TypeError, ValueError) as bad:
        return jsonify({"error": f"invalid ride: {bad}"}), 400

    duration = predict(features)

    result = {"prediction": {"duration": duration}, "model_version": MODEL_VERSION}
    if ride_id is not None:
        result["ride_id"] = ride_id
    REQUEST_LOG.write(
        {
            "ts_ms": int(time.time() * 1000),
            "ride_id": ride_id,
            "ride": ride,
            "prediction": {"duration": duration},
            "model_version": MODEL_VERSION,
        }
    )
    return jsonify(result)


@app.route("/healthz", methods=["GET"])
def healthz():
    return jsonify({"status": "ok", "model_version": MODEL_VERSION})


if __name__ == "__main__":
    app.run(debug=False, host="127.0.0.1", port=int(os.environ.get("PORT", "9696")))
