//! Drift on the real TLC months in `LIGHTOPS_DATA` (default `../shared/data` beside the checkout)
//! against Evidently 0.7, recorded by `bench/reference/evidently_record.py real` into
//! `bench/reference/evidently_drift_real.json`: 2022-01 (reference, scored by the model lightops
//! trains on 2022-01 → 2022-02) against 2022-03, 2022-06 and 2020-06, with Evidently's defaults
//! and with per-column overrides.
//!
//! Without the data these tests print where they looked and pass.

mod common;

use std::collections::BTreeMap;

use common::{data_dir, expected, file, root};
use lightops_ml::data::read_trips;
use lightops_ml::drift::{DriftOptions, Method, compare};
use lightops_ml::profile::{DEFAULT_MAX_DISTINCT, Distribution, Profile};
use lightops_ml::train::NoProgress;
use lightops_ml::{Artifact, FeatureSpec, Solver, train};

fn real_model(dir: &std::path::Path) -> Artifact {
    let spec = FeatureSpec::default();
    let train_file = file(dir, "green_tripdata_2022-01.parquet");
    let val_file = file(dir, "green_tripdata_2022-02.parquet");
    train(&spec, &[train_file], &val_file, Solver::Exact, &NoProgress).expect("train").artifact
}

/// Writes the model the Python side scores the real months with
/// (`bench/reference/evidently_real_model.json`). Run with
/// `cargo test -p lightops-ml --test drift_real_data -- --ignored write_real_model`.
#[test]
#[ignore = "regenerates a reference file"]
fn write_real_model() {
    let Some(dir) = data_dir() else { return };
    real_model(&dir).save(&root().join("bench/reference/evidently_real_model.json")).expect("save");
}

fn profile(artifact: &Artifact, path: &std::path::Path) -> Profile {
    profile_with(artifact, path, DEFAULT_MAX_DISTINCT)
}

fn profile_with(artifact: &Artifact, path: &std::path::Path, max_distinct: usize) -> Profile {
    let model = &artifact.model;
    let trips = read_trips(path, &model.spec).expect("read");
    let predictions = model.predict_trips(&trips);
    Profile::from_trips(&model.spec, &trips, &predictions, max_distinct).expect("profile")
}

#[test]
fn real_month_drift_matches_evidently() {
    let Some(dir) = data_dir() else { return };
    let want = expected("evidently_drift_real.json");
    let stored = Artifact::load(&root().join("bench/reference/evidently_real_model.json")).expect("load");
    let trained = real_model(&dir);
    assert_eq!(trained.body.coefficients, stored.body.coefficients, "retraining gives the recorded model");
    assert_eq!(trained.body.intercept, stored.body.intercept);

    let reference = profile(&stored, &dir.join("green_tripdata_2022-01.parquet"));
    assert_eq!(reference.rows, 59_603);
    for column in &reference.columns {
        if let Distribution::Numerical(counts) = &column.distribution {
            assert!(counts.is_exact(), "{} is kept exactly", column.name);
        }
    }
    eprintln!(
        "real reference profile: {} bytes of JSON; distinct values: {}",
        reference.to_json().len(),
        reference
            .columns
            .iter()
            .map(|c| format!("{} {}", c.name, c.distribution.distinct()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut currents = BTreeMap::new();
    let mut worst = 0.0f64;
    for run in want["runs"].as_array().expect("runs") {
        let name = run["current"].as_str().expect("current").to_owned();
        let current = currents.entry(name.clone()).or_insert_with(|| profile(&stored, &dir.join(&name)));
        let methods: BTreeMap<String, Method> = run["methods"]
            .as_object()
            .expect("methods")
            .iter()
            .map(|(column, method)| (column.clone(), method.as_str().expect("name").parse().expect("method")))
            .collect();
        let started = std::time::Instant::now();
        let report =
            compare(&reference, current, &DriftOptions { methods, ..DriftOptions::default() }).expect("compare");
        let elapsed = started.elapsed();
        let what = format!("{name} (methods {})", run["methods"]);
        assert_eq!(report.rows, run["rows"].as_u64().expect("rows"), "{what}");
        for (got, want) in report.columns.iter().zip(run["columns"].as_array().expect("columns")) {
            let column = want["column"].as_str().expect("column");
            assert_eq!(got.method.name(), want["method"].as_str().expect("method"), "{what}: {column}");
            assert_eq!(got.drifted, want["drifted"].as_bool().expect("drifted"), "{what}: {column}");
            let score = want["score"].as_f64().unwrap_or(f64::NAN);
            let rel = if got.score == score { 0.0 } else { ((got.score - score) / score).abs() };
            assert!(rel <= 1e-9, "{what}: {column} {} score {:e}, Evidently {score:e}", got.method, got.score);
            worst = worst.max(rel);
            eprintln!("{name:32} {column:14} {:14} lightops {:<24e} evidently {score:e}", got.method.name(), got.score);
        }
        assert_eq!(report.drifted_columns as u64, run["drifted_columns"].as_u64().expect("drifted"), "{what}");
        assert_eq!(report.dataset_drift, run["dataset_drift"].as_bool().expect("dataset_drift"), "{what}");
        eprintln!("{what}: compared in {elapsed:?}");
    }
    eprintln!("worst relative difference from Evidently: {worst:e}");
}

#[test]
fn compacted_real_profiles_stay_within_their_bound() {
    let Some(dir) = data_dir() else { return };
    let artifact = Artifact::load(&root().join("bench/reference/evidently_real_model.json")).expect("load");
    let max_distinct = 10_000;
    let reference = profile(&artifact, &dir.join("green_tripdata_2022-01.parquet"));
    let small_reference = profile_with(&artifact, &dir.join("green_tripdata_2022-01.parquet"), max_distinct);
    eprintln!(
        "compacted reference profile (max_distinct {max_distinct}): {} bytes of JSON",
        small_reference.to_json().len()
    );
    for name in ["green_tripdata_2022-03.parquet", "green_tripdata_2022-06.parquet", "green_tripdata_2020-06.csv.gz"] {
        let exact = compare(&reference, &profile(&artifact, &dir.join(name)), &DriftOptions::default()).expect("exact");
        let current = profile_with(&artifact, &dir.join(name), max_distinct);
        let approx = compare(&small_reference, &current, &DriftOptions::default()).expect("approximate");
        for (e, a) in exact.columns.iter().zip(&approx.columns) {
            let Some(bound) = a.score_bound else {
                assert_eq!(e.score, a.score, "{name} {}", a.column);
                continue;
            };
            let error = (a.score - e.score).abs();
            assert!(error <= bound, "{name} {}: error {error:e} > bound {bound:e}", a.column);
            eprintln!(
                "{name:32} {:12} exact {:.9} compacted {:.9} error {error:.1e} bound {bound:.1e}",
                a.column, e.score, a.score
            );
        }
        assert_eq!(exact.dataset_drift, approx.dataset_drift);
    }
}
