//! Bad input is refused with a message naming the file and the problem, never a panic.

mod common;

use std::path::{Path, PathBuf};

use lightops_ml::data::read_trips;
use lightops_ml::train::NoProgress;
use lightops_ml::{DataFile, Error, FeatureSpec, Solver, train};
use polars::prelude::*;

const MINUTE_US: i64 = 60_000_000;

/// Writes a parquet file with the given columns.
fn write_parquet(dir: &Path, name: &str, columns: Vec<Column>) -> PathBuf {
    let path = dir.join(name);
    let mut frame = DataFrame::new_infer_height(columns).expect("frame");
    let file = std::fs::File::create(&path).expect("create");
    ParquetWriter::new(file).finish(&mut frame).expect("write parquet");
    path
}

fn datetimes(name: &str, micros: &[i64]) -> Column {
    Series::new(name.into(), micros).cast(&DataType::Datetime(TimeUnit::Microseconds, None)).expect("cast").into()
}

/// Three green trips of 10, 20 and 0 minutes.
fn green_columns(prefix: &str) -> Vec<Column> {
    let start = [0, 0, 0];
    let end = [10 * MINUTE_US, 20 * MINUTE_US, 0];
    vec![
        datetimes(&format!("{prefix}_pickup_datetime"), &start),
        datetimes(&format!("{prefix}_dropoff_datetime"), &end),
        Column::new("PULocationID".into(), &[1i64, 2, 3]),
        Column::new("DOLocationID".into(), &[4i64, 5, 6]),
        Column::new("trip_distance".into(), &[1.0f64, 2.0, 3.0]),
    ]
}

fn file(path: PathBuf) -> DataFile {
    DataFile { name: path.display().to_string(), path }
}

#[test]
fn yellow_and_green_schemas_are_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    for prefix in ["lpep", "tpep"] {
        let path = write_parquet(dir.path(), &format!("{prefix}.parquet"), green_columns(prefix));
        let trips = read_trips(&path, &FeatureSpec::default()).expect("read");
        assert_eq!(trips.rows_read, 3);
        assert_eq!(trips.duration, [10.0, 20.0], "the 0-minute trip is filtered out");
    }
}

#[test]
fn a_missing_file_names_the_path() {
    let err = read_trips(Path::new("/no/such/green.parquet"), &FeatureSpec::default()).expect_err("missing");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().starts_with("/no/such/green.parquet: "), "{err}");
}

#[test]
fn a_missing_column_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut columns = green_columns("lpep");
    columns.pop();
    let path = write_parquet(dir.path(), "no_distance.parquet", columns);
    let err = read_trips(&path, &FeatureSpec::default()).expect_err("missing column");
    let text = err.to_string();
    assert!(text.contains("no_distance.parquet: missing column `trip_distance`"), "{text}");
    assert!(text.contains("PULocationID"), "lists the columns it has: {text}");
}

#[test]
fn a_wrong_column_type_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut columns = green_columns("lpep");
    columns.pop();
    columns.push(Column::new("trip_distance".into(), &["one", "two", "three"]));
    let path = write_parquet(dir.path(), "text_distance.parquet", columns);
    let err = read_trips(&path, &FeatureSpec::default()).expect_err("wrong type");
    assert!(err.to_string().contains("column `trip_distance` has type str, expected a number"), "{err}");
}

#[test]
fn corrupt_parquet_is_reported_not_panicked_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corrupt.parquet");
    std::fs::write(&path, b"PAR1 this is not a parquet footer").expect("write");
    let err = read_trips(&path, &FeatureSpec::default()).expect_err("corrupt");
    assert!(err.to_string().contains("corrupt.parquet: cannot read as parquet"), "{err}");

    // A truncated real file.
    let real = std::fs::read(common::sample("2022-01").path).expect("read sample");
    let path = dir.path().join("truncated.parquet");
    std::fs::write(&path, &real[..real.len() / 2]).expect("write");
    let err = read_trips(&path, &FeatureSpec::default()).expect_err("truncated");
    assert!(err.to_string().contains("truncated.parquet: cannot read as parquet"), "{err}");
}

#[test]
fn a_file_without_trip_times_is_not_trip_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_parquet(dir.path(), "zones.parquet", vec![Column::new("LocationID".into(), &[1i64, 2])]);
    let err = read_trips(&path, &FeatureSpec::default()).expect_err("not trips");
    assert!(err.to_string().contains("zones.parquet: not a TLC trip file"), "{err}");
}

#[test]
fn nothing_left_after_the_filter_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut columns = green_columns("lpep");
    columns[1] = datetimes("lpep_dropoff_datetime", &[0, 0, 90 * MINUTE_US]);
    let path = write_parquet(dir.path(), "short.parquet", columns);
    let err = train(&FeatureSpec::default(), &[file(path.clone())], &file(path), Solver::Exact, &NoProgress)
        .expect_err("empty");
    assert_eq!(err.to_string(), "training data: no rows left after the 1–60 minute duration filter (3 rows read)");
}

#[test]
fn bad_csv_values_name_the_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.csv");
    std::fs::write(
        &path,
        "lpep_pickup_datetime,lpep_dropoff_datetime,PULocationID,DOLocationID,trip_distance\n\
         2020-06-01 00:00:00,2020-06-01 00:10:00,1,2,1.5\n\
         2020-06-01 00:00:00,not a time,1,2,1.5\n",
    )
    .expect("write");
    let err = read_trips(&path, &FeatureSpec::default()).expect_err("bad datetime");
    assert!(err.to_string().contains("column `lpep_dropoff_datetime`, row 1: cannot parse \"not a time\""), "{err}");

    let path = dir.path().join("bad_number.csv");
    std::fs::write(
        &path,
        "lpep_pickup_datetime,lpep_dropoff_datetime,PULocationID,DOLocationID,trip_distance\n\
         2020-06-01 00:00:00,2020-06-01 00:10:00,1,2,far\n",
    )
    .expect("write");
    let err = read_trips(&path, &FeatureSpec::default()).expect_err("bad number");
    assert!(err.to_string().starts_with(&format!("{}: ", path.display())), "{err}");
}

#[test]
fn missing_values_drop_the_row_and_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut columns = green_columns("lpep");
    columns[4] = Column::new("trip_distance".into(), &[Some(1.0f64), None, Some(3.0)]);
    let path = write_parquet(dir.path(), "nulls.parquet", columns);
    let trips = read_trips(&path, &FeatureSpec::default()).expect("read");
    assert_eq!((trips.len(), trips.rows_missing), (1, 1));
}
