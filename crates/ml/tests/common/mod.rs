//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use lightops_ml::DataFile;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A bundled sample month, e.g. `sample("2022-01")`.
pub fn sample(month: &str) -> DataFile {
    let name = if month == "2020-06" {
        format!("green_sample_{month}.csv.gz")
    } else {
        format!("green_sample_{month}.parquet")
    };
    DataFile { path: root().join("samples").join(&name), name }
}

/// Expected values recorded by `bench/reference/exact_ols.py`.
pub fn expected(name: &str) -> serde_json::Value {
    let path = root().join("bench/reference").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A number from the expected values.
pub fn num(value: &serde_json::Value, pointer: &str) -> f64 {
    value.pointer(pointer).and_then(serde_json::Value::as_f64).unwrap_or_else(|| panic!("no number at {pointer}"))
}

/// Relative difference.
pub fn rel(actual: f64, expected: f64) -> f64 {
    ((actual - expected) / expected).abs()
}

/// Asserts `actual` is within `tolerance` (relative) of `expected`.
pub fn assert_close(what: &str, actual: f64, expected: f64, tolerance: f64) {
    let r = rel(actual, expected);
    assert!(r <= tolerance, "{what}: {actual} vs expected {expected} (relative {r:e} > {tolerance:e})");
}

/// The real TLC data directory (`LIGHTOPS_DATA`, default `../shared/data` beside the checkout).
pub fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LIGHTOPS_DATA").map(PathBuf::from).unwrap_or_else(|| root().join("../shared/data"));
    if dir.join("green_tripdata_2022-01.parquet").exists() {
        Some(dir)
    } else {
        eprintln!("real TLC data not found at {} (set LIGHTOPS_DATA); skipping", dir.display());
        None
    }
}

/// A file in a directory, named by its file name.
pub fn file(dir: &Path, name: &str) -> DataFile {
    DataFile { path: dir.join(name), name: name.to_owned() }
}
