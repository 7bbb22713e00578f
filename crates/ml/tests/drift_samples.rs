//! Drift statistics on the bundled samples, checked against Evidently 0.7 (recorded by
//! `bench/reference/evidently_drift.py` into `bench/reference/expected_drift_samples.json`).

mod common;

use common::sample;
use lightops_ml::train::NoProgress;
use lightops_ml::{FeatureSpec, Solver, train};

/// Writes the sample model the Python side scores with (`bench/reference/evidently_sample_model.json`).
/// Run with `cargo test -p lightops-ml --test drift_samples -- --ignored write_sample_model`.
#[test]
#[ignore = "regenerates a reference file"]
fn write_sample_model() {
    let spec = FeatureSpec::default();
    let trained = train(&spec, &[sample("2022-01")], &sample("2022-02"), Solver::Exact, &NoProgress).expect("train");
    let path = common::root().join("bench/reference/evidently_sample_model.json");
    trained.artifact.save(&path).expect("save");
}
