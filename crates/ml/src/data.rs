//! Reading NYC TLC trip files with polars.
//!
//! A trip file is parquet or CSV (optionally gzip-compressed), green (`lpep_*` datetimes) or
//! yellow (`tpep_*`); the flavour is detected from the columns. Only the columns the feature spec
//! needs are read (a lazy scan with projection pushdown). The target, `duration` in minutes, is
//! `dropoff - pickup`; rows outside the spec's duration filter or with a missing value are dropped
//! and counted, as the workshop's `read_dataframe` does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::spec::FeatureSpec;

/// Microseconds in a minute.
const MICROS_PER_MINUTE: f64 = 60_000_000.0;

/// The file formats lightops reads trip records from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Apache Parquet, as the TLC publishes it.
    Parquet,
    /// Comma-separated values with a header, optionally gzip-compressed.
    Csv,
}

impl FileFormat {
    /// Detects the format from the file name, falling back to the parquet magic bytes.
    pub fn detect(path: &Path) -> Result<Self> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        if name.ends_with(".parquet") || name.ends_with(".parq") {
            return Ok(Self::Parquet);
        }
        if name.ends_with(".csv") || name.ends_with(".csv.gz") || name.ends_with(".csv.zst") {
            return Ok(Self::Csv);
        }
        let mut magic = [0u8; 4];
        let read = std::fs::File::open(path)
            .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic))
            .map_err(|source| Error::Io { path: path.to_path_buf(), source });
        match read {
            Ok(()) if &magic == b"PAR1" => Ok(Self::Parquet),
            Ok(()) => Ok(Self::Csv),
            Err(err) => Err(err),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Csv => "csv",
        }
    }
}

/// The values of one categorical (key) column for the kept rows.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyColumn {
    /// Integer categories (location IDs); their string form has no decimal point.
    Int(Vec<i64>),
    /// String categories.
    Str(Vec<String>),
}

impl KeyColumn {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Self::Int(values) => values.len(),
            Self::Str(values) => values.len(),
        }
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The rows of one trip file that survived the filter, column by column.
#[derive(Debug, Clone)]
pub struct Trips {
    /// Where the rows came from (for messages and training metadata).
    pub source: PathBuf,
    /// Rows in the file.
    pub rows_read: u64,
    /// Rows dropped because a needed value was missing or not finite.
    pub rows_missing: u64,
    /// Duration in minutes (the target) of each kept row.
    pub duration: Vec<f64>,
    /// Pickup time of each kept row, microseconds since the Unix epoch (naive, as recorded).
    pub pickup_us: Vec<i64>,
    /// One entry per [`FeatureSpec::key_columns`] column.
    pub keys: Vec<KeyColumn>,
    /// One entry per [`FeatureSpec::numerical`] column.
    pub numeric: Vec<Vec<f64>>,
}

impl Trips {
    /// Number of kept rows.
    pub fn len(&self) -> usize {
        self.duration.len()
    }

    /// True when no row was kept.
    pub fn is_empty(&self) -> bool {
        self.duration.is_empty()
    }
}

/// Reads a local TLC trip file, keeping the rows whose duration passes the spec's filter.
pub fn read_trips(path: &Path, spec: &FeatureSpec) -> Result<Trips> {
    let format = FileFormat::detect(path)?;
    let unreadable = |err: PolarsError| Error::Unreadable {
        path: path.to_path_buf(),
        format: format.name(),
        message: err.to_string(),
    };
    if let Err(source) = std::fs::metadata(path) {
        return Err(Error::Io { path: path.to_path_buf(), source });
    }
    let mut source = match format {
        // The eager reader with a projection decodes only the needed columns. (polars 0.55's lazy
        // parquet scan kept every decoded file alive until exit — ~2.7 MB a month, 600 MB over
        // 220 files — so it is not used for parquet.)
        FileFormat::Parquet => {
            let file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
            Source::Parquet(ParquetReader::new(file))
        }
        FileFormat::Csv => {
            // Datetimes stay text (parsed below, so a bad one is reported by row); numbers are
            // read as floats whatever the first rows look like.
            let mut overwrite = Schema::default();
            for column in &spec.numerical {
                overwrite.insert(column.as_str().into(), DataType::Float64);
            }
            for column in
                ["lpep_pickup_datetime", "lpep_dropoff_datetime", "tpep_pickup_datetime", "tpep_dropoff_datetime"]
            {
                overwrite.insert(column.into(), DataType::String);
            }
            let plpath = PlRefPath::new(path.to_string_lossy().as_ref());
            let lazy = LazyCsvReader::new(plpath)
                .with_dtype_overwrite(Some(Arc::new(overwrite)))
                .with_infer_schema_length(Some(10_000))
                .finish()
                .map_err(unreadable)?;
            Source::Csv(lazy)
        }
    };
    let names = source.column_names().map_err(unreadable)?;
    let has = |name: &str| names.iter().any(|n| n == name);
    let available = || names.join(", ");

    let (pickup, dropoff) = if has("lpep_pickup_datetime") && has("lpep_dropoff_datetime") {
        ("lpep_pickup_datetime", "lpep_dropoff_datetime")
    } else if has("tpep_pickup_datetime") && has("tpep_dropoff_datetime") {
        ("tpep_pickup_datetime", "tpep_dropoff_datetime")
    } else {
        return Err(Error::NotTripData { path: path.to_path_buf(), available: available() });
    };
    let key_columns = spec.key_columns();
    for column in key_columns.iter().chain(&spec.numerical) {
        if !has(column) {
            return Err(Error::MissingColumn {
                path: path.to_path_buf(),
                column: column.clone(),
                available: available(),
            });
        }
    }

    let mut wanted = vec![pickup.to_owned(), dropoff.to_owned()];
    for column in key_columns.iter().chain(&spec.numerical) {
        if !wanted.contains(column) {
            wanted.push(column.clone());
        }
    }
    let frame = source.load(wanted).map_err(unreadable)?;
    let rows = frame.height();

    let column =
        |name: &str| -> Result<&Series> { frame.column(name).map(Column::as_materialized_series).map_err(unreadable) };
    let pickup_us = datetime_micros(path, pickup, column(pickup)?)?;
    let dropoff_us = datetime_micros(path, dropoff, column(dropoff)?)?;
    let raw_keys: Vec<RawKey> =
        key_columns.iter().map(|name| raw_key(path, name, column(name)?)).collect::<Result<_>>()?;
    let raw_numeric: Vec<Vec<Option<f64>>> =
        spec.numerical.iter().map(|name| numeric(path, name, column(name)?)).collect::<Result<_>>()?;

    let mut trips = Trips {
        source: path.to_path_buf(),
        rows_read: rows as u64,
        rows_missing: 0,
        duration: Vec::with_capacity(rows),
        pickup_us: Vec::with_capacity(rows),
        keys: raw_keys.iter().map(RawKey::empty_like).collect(),
        numeric: vec![Vec::with_capacity(rows); spec.numerical.len()],
    };
    for row in 0..rows {
        let (Some(start), Some(end)) = (pickup_us[row], dropoff_us[row]) else {
            trips.rows_missing += 1;
            continue;
        };
        let duration = (end - start) as f64 / MICROS_PER_MINUTE;
        if !(duration >= spec.target_min && duration <= spec.target_max) {
            continue;
        }
        let complete = raw_keys.iter().all(|k| k.is_present(row))
            && raw_numeric.iter().all(|values| values[row].is_some_and(f64::is_finite));
        if !complete {
            trips.rows_missing += 1;
            continue;
        }
        trips.duration.push(duration);
        trips.pickup_us.push(start);
        for (out, key) in trips.keys.iter_mut().zip(&raw_keys) {
            key.push_to(row, out);
        }
        for (out, values) in trips.numeric.iter_mut().zip(&raw_numeric) {
            out.push(values[row].unwrap_or_default());
        }
    }
    Ok(trips)
}

/// An opened trip file, before the columns are decoded.
enum Source {
    Parquet(ParquetReader<std::fs::File>),
    Csv(LazyFrame),
}

impl Source {
    fn column_names(&mut self) -> PolarsResult<Vec<String>> {
        Ok(match self {
            Self::Parquet(reader) => reader.schema()?.iter_names().map(|n| n.to_string()).collect(),
            Self::Csv(lazy) => lazy.collect_schema()?.iter_names().map(|n| n.to_string()).collect(),
        })
    }

    /// Decodes only the `columns`.
    fn load(self, columns: Vec<String>) -> PolarsResult<DataFrame> {
        match self {
            Self::Parquet(reader) => reader.with_columns(Some(columns)).finish(),
            Self::Csv(lazy) => lazy.select(columns.iter().map(|c| col(c.as_str())).collect::<Vec<_>>()).collect(),
        }
    }
}

/// A key column as read, before the filter.
enum RawKey {
    Int(Vec<Option<i64>>),
    Str(Vec<Option<String>>),
}

impl RawKey {
    fn empty_like(&self) -> KeyColumn {
        match self {
            Self::Int(_) => KeyColumn::Int(Vec::new()),
            Self::Str(_) => KeyColumn::Str(Vec::new()),
        }
    }

    fn is_present(&self, row: usize) -> bool {
        match self {
            Self::Int(values) => values[row].is_some(),
            Self::Str(values) => values[row].is_some(),
        }
    }

    fn push_to(&self, row: usize, out: &mut KeyColumn) {
        match (self, out) {
            (Self::Int(values), KeyColumn::Int(out)) => out.push(values[row].unwrap_or_default()),
            (Self::Str(values), KeyColumn::Str(out)) => out.push(values[row].clone().unwrap_or_default()),
            _ => unreachable!("key column kinds are fixed by empty_like"),
        }
    }
}

fn type_error(path: &Path, name: &str, series: &Series, expected: &'static str) -> Error {
    Error::ColumnType { path: path.to_path_buf(), column: name.into(), found: series.dtype().to_string(), expected }
}

/// Integer columns and integral floats become integer categories (`43`, as pandas' `astype(str)`
/// gives for an int64 column); strings stay strings.
fn raw_key(path: &Path, name: &str, series: &Series) -> Result<RawKey> {
    let dtype = series.dtype();
    if dtype.is_integer() {
        let cast = series.cast(&DataType::Int64).map_err(|_| type_error(path, name, series, "integer or string"))?;
        let values = cast.i64().map_err(|_| type_error(path, name, series, "integer or string"))?;
        return Ok(RawKey::Int(values.iter().collect()));
    }
    if dtype.is_float() {
        let cast = series.cast(&DataType::Float64).map_err(|_| type_error(path, name, series, "integer or string"))?;
        let values = cast.f64().map_err(|_| type_error(path, name, series, "integer or string"))?;
        let mut out = Vec::with_capacity(values.len());
        for (row, value) in values.iter().enumerate() {
            out.push(match value {
                None => None,
                Some(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Some(v as i64),
                Some(v) => {
                    return Err(Error::BadValue {
                        path: path.to_path_buf(),
                        column: name.into(),
                        row,
                        value: v.to_string(),
                        expected: "an integer category",
                    });
                }
            });
        }
        return Ok(RawKey::Int(out));
    }
    if let Ok(values) = series.str() {
        return Ok(RawKey::Str(values.iter().map(|v| v.map(str::to_owned)).collect()));
    }
    Err(type_error(path, name, series, "integer or string"))
}

fn numeric(path: &Path, name: &str, series: &Series) -> Result<Vec<Option<f64>>> {
    let dtype = series.dtype();
    if !(dtype.is_integer() || dtype.is_float() || dtype.is_null()) {
        return Err(type_error(path, name, series, "a number"));
    }
    let cast = series.cast(&DataType::Float64).map_err(|_| type_error(path, name, series, "a number"))?;
    let values = cast.f64().map_err(|_| type_error(path, name, series, "a number"))?;
    Ok(values.iter().collect())
}

/// Datetimes as microseconds since the epoch; text in CSV files is parsed here.
fn datetime_micros(path: &Path, name: &str, series: &Series) -> Result<Vec<Option<i64>>> {
    if let DataType::Datetime(unit, _) = series.dtype() {
        let per_us: (i64, i64) = match unit {
            TimeUnit::Nanoseconds => (1, 1000),
            TimeUnit::Microseconds => (1, 1),
            TimeUnit::Milliseconds => (1000, 1),
        };
        let values = series.datetime().map_err(|_| type_error(path, name, series, "a datetime"))?;
        return Ok(values.physical().iter().map(|v| v.map(|v| v * per_us.0 / per_us.1)).collect());
    }
    let Ok(text) = series.str() else {
        return Err(type_error(path, name, series, "a datetime or datetime text"));
    };
    let mut out = Vec::with_capacity(text.len());
    for (row, value) in text.iter().enumerate() {
        out.push(match value {
            None | Some("") => None,
            Some(value) => Some(parse_datetime(value).ok_or_else(|| Error::BadValue {
                path: path.to_path_buf(),
                column: name.into(),
                row,
                value: value.into(),
                expected: "a datetime like 2020-06-01 00:22:07",
            })?),
        });
    }
    Ok(out)
}

fn parse_datetime(text: &str) -> Option<i64> {
    let text = text.trim();
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .map(|t| t.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tlc_datetime_text() {
        assert_eq!(parse_datetime("1970-01-01 00:01:00"), Some(60_000_000));
        assert_eq!(parse_datetime("1970-01-01T00:00:01.5"), Some(1_500_000));
        assert_eq!(parse_datetime("06/01/2020 12:00:00 AM"), Some(1_590_969_600_000_000));
        assert_eq!(parse_datetime("yesterday"), None);
    }
}
