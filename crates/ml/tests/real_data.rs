//! Checks against the real TLC months in `LIGHTOPS_DATA` (default `../shared/data` beside the
//! checkout). Expected values come from `bench/reference/exact_ols.py` (numpy `lstsq`, a dense SVD
//! of the centred matrix), recorded in `bench/reference/expected_real.json`.
//!
//! Without the data these tests print where they looked and pass; the sample tests in
//! `samples.rs` always run.

mod common;

use common::{assert_close, data_dir, expected, file, num};
use lightops_ml::data::read_trips;
use lightops_ml::metrics::MetricsAccumulator;
use lightops_ml::train::NoProgress;
use lightops_ml::{FeatureSpec, Solver, train};

#[test]
fn january_to_february_matches_the_dense_svd_reference() {
    let Some(dir) = data_dir() else { return };
    let want = expected("expected_real.json");
    let spec = FeatureSpec::default();
    let trained = train(
        &spec,
        &[file(&dir, "green_tripdata_2022-01.parquet")],
        &file(&dir, "green_tripdata_2022-02.parquet"),
        Solver::Exact,
        &NoProgress,
    )
    .expect("train");
    let info = &trained.artifact.body.training;
    assert_eq!(info.train_rows, 59_603);
    assert_eq!(info.val_rows, 66_097);
    assert_eq!(trained.artifact.model.feature_count(), 471);
    assert_eq!(info.rank, 469, "one direction lost per one-hot group");
    // The exact optimum: numpy's dense SVD gives the same training error.
    assert_close("train rmse", info.train.rmse, num(&want, "/train_rmse"), 1e-9);
    assert_close("train r2", info.train.r2, num(&want, "/train_r2"), 1e-9);
    assert_close("val rmse", trained.validation.rmse, num(&want, "/rmse"), 1e-6);
    assert_close("val mae", trained.validation.mae, num(&want, "/mae"), 1e-6);
    assert_close("intercept", trained.artifact.model.intercept, num(&want, "/intercept"), 1e-6);
    // Lower than scikit-learn's LSQR-stopped 8.19383 (the workshop's number).
    assert!(trained.validation.rmse < 8.1938);

    // Scoring the monitoring months, including 2020-06 which exists only as gzip CSV.
    for name in ["green_tripdata_2022-03.parquet", "green_tripdata_2022-06.parquet", "green_tripdata_2020-06.csv.gz"] {
        let trips = read_trips(&dir.join(name), &spec).expect("read");
        let mut acc = MetricsAccumulator::default();
        acc.add(&trained.artifact.model.predict_trips(&trips), &trips.duration);
        let m = acc.finish();
        assert_eq!(m.rows as f64, num(&want, &format!("/scored/{name}/rows")), "{name} rows");
        assert_close(&format!("{name} rmse"), m.rmse, num(&want, &format!("/scored/{name}/rmse")), 1e-6);
        assert_close(&format!("{name} mae"), m.mae, num(&want, &format!("/scored/{name}/mae")), 1e-6);
    }
}

#[test]
fn eleven_months_and_the_crossed_feature_fit() {
    let Some(dir) = data_dir() else { return };
    let months: Vec<_> = (1..=11).map(|m| file(&dir, &format!("green_tripdata_2022-{m:02}.parquet"))).collect();
    let val = file(&dir, "green_tripdata_2022-12.parquet");
    let base = train(&FeatureSpec::default(), &months, &val, Solver::Exact, &NoProgress).expect("train");
    let info = &base.artifact.body.training;
    assert!(info.train_rows > 700_000, "{} rows", info.train_rows);
    assert_eq!(info.rank, base.artifact.model.feature_count() - 2);

    // PU_DO has thousands of categories; eliminating that group leaves a 2 × 2 system.
    let crossed = train(&FeatureSpec::pu_do(), &months, &val, Solver::Exact, &NoProgress).expect("train");
    let crossed_info = &crossed.artifact.body.training;
    assert!(crossed.artifact.model.feature_count() > 10_000, "{}", crossed.artifact.model.feature_count());
    assert_eq!(crossed_info.train_rows, info.train_rows);
    // The richer coding fits the training data better.
    assert!(crossed_info.train.rmse < info.train.rmse);
}
