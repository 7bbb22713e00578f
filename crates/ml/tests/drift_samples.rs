//! Drift on the bundled samples against Evidently 0.7 (`DataDriftPreset`, default settings and
//! per-column overrides), recorded by `bench/reference/evidently_record.py samples` into
//! `bench/reference/expected_drift_samples.json`. They always run.
//!
//! The Python side scores rows with `bench/reference/evidently_sample_model.json`, the model
//! lightops trains on the 2022-01 → 2022-02 samples; the first test checks that retraining gives
//! that model, so both sides compare the same predictions.

mod common;

use std::collections::BTreeMap;

use common::{expected, root, sample};
use lightops_ml::data::{KeyColumn, read_trips};
use lightops_ml::drift::{DriftOptions, DriftReport, Method, compare};
use lightops_ml::profile::{DEFAULT_MAX_DISTINCT, Profile, WindowStats};
use lightops_ml::train::NoProgress;
use lightops_ml::{Artifact, FeatureSpec, Ride, Solver, train};
use serde_json::Value;

fn sample_model() -> Artifact {
    Artifact::load(&root().join("bench/reference/evidently_sample_model.json")).expect("load the sample model")
}

/// Writes the sample model the Python side scores with (`bench/reference/evidently_sample_model.json`).
/// Run with `cargo test -p lightops-ml --test drift_samples -- --ignored write_sample_model`.
#[test]
#[ignore = "regenerates a reference file"]
fn write_sample_model() {
    let spec = FeatureSpec::default();
    let mut artifact =
        train(&spec, &[sample("2022-01")], &sample("2022-02"), Solver::Exact, &NoProgress).expect("train").artifact;
    // The Python side reads only the coefficients; the validation profile (hundreds of KB of
    // JSON on the samples) is left out, as in `evidently_real_model.json`.
    artifact.body.profile = None;
    artifact.save(&root().join("bench/reference/evidently_sample_model.json")).expect("save");
}

#[test]
fn the_recorded_model_is_what_lightops_trains() {
    let spec = FeatureSpec::default();
    let trained = train(&spec, &[sample("2022-01")], &sample("2022-02"), Solver::Exact, &NoProgress).expect("train");
    let stored = sample_model();
    assert_eq!(trained.artifact.body.features, stored.body.features);
    assert_eq!(trained.artifact.body.coefficients, stored.body.coefficients);
    assert_eq!(trained.artifact.body.intercept, stored.body.intercept);
}

/// The profile of a sample month as `lightops drift` builds it: rows as for training, predictions
/// of the sample model; `head` keeps the first rows only.
fn profile(month: &str, head: Option<usize>) -> Profile {
    profile_with(month, head, DEFAULT_MAX_DISTINCT)
}

fn profile_with(month: &str, head: Option<usize>, max_distinct: usize) -> Profile {
    let model = sample_model().model;
    let mut trips = read_trips(&sample(month).path, &model.spec).expect("read");
    if let Some(head) = head {
        trips.duration.truncate(head);
        trips.pickup_us.truncate(head);
        for key in &mut trips.keys {
            match key {
                KeyColumn::Int(v) => v.truncate(head),
                KeyColumn::Str(v) => v.truncate(head),
            }
        }
        for column in &mut trips.numeric {
            column.truncate(head);
        }
    }
    let predictions = model.predict_trips(&trips);
    Profile::from_trips(&model.spec, &trips, &predictions, max_distinct).expect("profile")
}

fn month_of(file: &str) -> &str {
    file.trim_start_matches("green_sample_").split('.').next().expect("month")
}

/// Asserts that lightops' report equals Evidently's recorded run: methods, thresholds, drift
/// flags exactly, scores to `tolerance` (relative).
pub fn assert_matches(report: &DriftReport, run: &Value, tolerance: f64) {
    let what = format!("{} vs {} (methods {})", run["reference"], run["current"], run["methods"]);
    assert_eq!(report.rows, run["rows"].as_u64().expect("rows"), "{what}: rows");
    for (got, want) in report.columns.iter().zip(run["columns"].as_array().expect("columns")) {
        let column = want["column"].as_str().expect("column");
        assert_eq!(got.column, column);
        assert_eq!(got.method.name(), want["method"].as_str().expect("method"), "{what}: {column} method");
        assert_eq!(got.threshold, want["threshold"].as_f64().expect("threshold"), "{what}: {column} threshold");
        assert_eq!(got.drifted, want["drifted"].as_bool().expect("drifted"), "{what}: {column} drifted");
        let score = want["score"].as_f64().unwrap_or(f64::NAN);
        let close = got.score == score || ((got.score - score) / score).abs() <= tolerance;
        assert!(close, "{what}: {column} {} score {:e}, Evidently {score:e}", got.method, got.score);
        assert!(!got.approximate, "{what}: {column} was compacted");
    }
    assert_eq!(report.columns.len(), run["columns"].as_array().expect("columns").len());
    assert_eq!(report.drifted_columns as u64, run["drifted_columns"].as_u64().expect("drifted_columns"), "{what}");
    assert_eq!(report.drift_share, run["drift_share"].as_f64().expect("drift_share"));
    assert_eq!(report.share_of_drifted_columns, run["share_of_drifted_columns"].as_f64().expect("share"), "{what}");
    assert_eq!(report.dataset_drift, run["dataset_drift"].as_bool().expect("dataset_drift"), "{what}");
}

fn options(run: &Value) -> DriftOptions {
    let methods: BTreeMap<String, Method> = run["methods"]
        .as_object()
        .expect("methods")
        .iter()
        .map(|(column, method)| (column.clone(), method.as_str().expect("name").parse().expect("method")))
        .collect();
    DriftOptions { methods, ..DriftOptions::default() }
}

#[test]
fn sample_drift_matches_evidently() {
    let want = expected("expected_drift_samples.json");
    let runs = want["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 12);
    let mut references = BTreeMap::new();
    for run in runs {
        let head = run["reference_head"].as_u64().map(|h| h as usize);
        let reference = references.entry(head).or_insert_with(|| profile("2022-01", head));
        assert_eq!(reference.rows, run["reference_rows"].as_u64().expect("reference_rows"));
        let current = profile(month_of(run["current"].as_str().expect("current")), None);
        let report = compare(reference, &current, &options(run)).expect("compare");
        assert_matches(&report, run, 1e-9);
    }
}

#[test]
fn record_by_record_windows_equal_batch_profiles() {
    let model = sample_model().model;
    let trips = read_trips(&sample("2022-03").path, &model.spec).expect("read");
    let predictions = model.predict_trips(&trips);
    let batch = Profile::from_trips(&model.spec, &trips, &predictions, DEFAULT_MAX_DISTINCT).expect("profile");

    let (KeyColumn::Int(pu), KeyColumn::Int(dropoff)) = (&trips.keys[0], &trips.keys[1]) else {
        panic!("integer location ids")
    };
    let mut window = WindowStats::new(&batch).expect("window");
    let mut half = WindowStats::new(&batch).expect("window");
    for i in 0..trips.len() {
        let ride = Ride { pu_location_id: pu[i], do_location_id: dropoff[i], trip_distance: trips.numeric[0][i] };
        let target = if i % 2 == 0 { &mut window } else { &mut half };
        target.push_ride(&ride, predictions[i]).expect("push");
    }
    window.merge(&half).expect("merge");
    assert_eq!(window.finish(), batch);

    // A window compared with itself does not drift.
    let report = compare(&batch, &window.finish(), &DriftOptions::default()).expect("compare");
    assert!(!report.dataset_drift);
    assert!(report.columns.iter().all(|c| c.score == 0.0 && !c.drifted));
}

#[test]
fn profiles_round_trip_through_json() {
    let reference = profile("2022-01", None);
    let json = reference.to_json();
    assert_eq!(Profile::from_json(&json).expect("parse"), reference);
    eprintln!("sample reference profile: {} bytes of JSON", json.len());
}

#[test]
fn compacted_profiles_stay_within_their_bound() {
    for month in ["2022-03", "2022-06", "2020-06"] {
        let exact = compare(&profile("2022-01", None), &profile(month, None), &DriftOptions::default()).expect("exact");
        let small = 128;
        let approx =
            compare(&profile_with("2022-01", None, small), &profile_with(month, None, small), &DriftOptions::default())
                .expect("approximate");
        for (e, a) in exact.columns.iter().zip(&approx.columns) {
            assert_eq!(e.method, a.method);
            if a.method == Method::Wasserstein {
                assert!(a.approximate, "{month} {}: compacted", a.column);
                let bound = a.score_bound.expect("a bound");
                let error = (a.score - e.score).abs();
                assert!(
                    error <= bound,
                    "{month} {}: |{} - {}| = {error:e} > bound {bound:e}",
                    a.column,
                    a.score,
                    e.score
                );
                eprintln!(
                    "{month} {:14} exact {:.6} compacted {:.6} (error {error:.2e}, bound {bound:.2e})",
                    a.column, e.score, a.score
                );
            } else {
                assert_eq!(e.score, a.score, "{month} {}: categorical columns are never compacted", a.column);
            }
        }
    }
}
