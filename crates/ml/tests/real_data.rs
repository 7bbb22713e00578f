//! Checks against the real TLC months in `LIGHTOPS_DATA` (default `../shared/data` next to the
//! checkout). Expected values come from `bench/reference/exact_ols.py` (numpy `lstsq`, dense SVD
//! on the centred matrix) and are recorded in `bench/reference/expected.json`.
//!
//! When the directory is absent these tests say so and pass: the bundled-sample tests in
//! `samples.rs` always run.

use std::path::PathBuf;

use lightops_ml::data::read_trips;
use lightops_ml::stats::GroupedStats;
use lightops_ml::train::NoProgress;
use lightops_ml::{DataFile, FeatureSpec, Solver, solve};

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LIGHTOPS_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    if dir.join("green_tripdata_2022-01.parquet").exists() {
        Some(dir)
    } else {
        eprintln!("real TLC data not found at {} (set LIGHTOPS_DATA); skipping", dir.display());
        None
    }
}

fn file(dir: &std::path::Path, name: &str) -> DataFile {
    DataFile { path: dir.join(name), name: name.to_owned() }
}

fn rel(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}

#[test]
fn january_to_february_matches_the_dense_svd_reference() {
    let Some(dir) = data_dir() else { return };
    let spec = FeatureSpec::default();
    let train = [file(&dir, "green_tripdata_2022-01.parquet")];
    let stats = lightops_ml::train::accumulate(&spec, &train, &NoProgress).expect("read");
    let fit = solve::fit_exact(&spec, &stats).expect("fit");
    eprintln!(
        "rank {} smallest kept {:e} largest dropped {:e} train rmse {:.15}",
        fit.rank, fit.smallest_kept, fit.largest_dropped, fit.train_rmse
    );
    let trained = lightops_ml::train(&spec, &train, &file(&dir, "green_tripdata_2022-02.parquet"), Solver::Exact, &NoProgress)
        .expect("train");
    let info = &trained.artifact.body.training;
    eprintln!("val rmse {:.15} intercept {:.15}", trained.validation.rmse, trained.artifact.model.intercept);
    assert_eq!(info.train_rows, 59_603);
    assert_eq!(info.val_rows, 66_097);
    assert_eq!(trained.artifact.model.feature_count(), 471);
    assert_eq!(info.rank, 469);
    // numpy lstsq on the centred dense matrix (bench/reference/exact_ols.py).
    assert!(rel(info.train.rmse, 7.652426536707678) < 1e-9, "train rmse {}", info.train.rmse);
    assert!(rel(trained.validation.rmse, 8.18400438185429) < 1e-6, "val rmse {}", trained.validation.rmse);
    assert!(rel(trained.validation.mae, 5.615397577909469) < 1e-6);
    assert!(rel(trained.artifact.model.intercept, 22.090177807412342) < 1e-6);
    let _ = read_trips;
    let _ = GroupedStats::new;
}
