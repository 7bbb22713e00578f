//! The one error type of `lightops-ml`.

use std::path::PathBuf;

/// Everything that can go wrong reading data, fitting, or loading a model.
///
/// Messages are lowercase and name the file, column or field involved, so the CLI can print them
/// as they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a readable parquet/CSV file.
    #[error("{path}: cannot read as {format}: {message}")]
    Unreadable {
        /// The file involved.
        path: PathBuf,
        /// `parquet` or `csv`.
        format: &'static str,
        /// What the reader reported.
        message: String,
    },
    /// The file does not have a column the feature spec needs.
    #[error("{path}: missing column `{column}` (the file has: {available})")]
    MissingColumn {
        /// The file involved.
        path: PathBuf,
        /// The column that is missing.
        column: String,
        /// The columns the file has, comma separated.
        available: String,
    },
    /// A column has a type the feature spec cannot use.
    #[error("{path}: column `{column}` has type {found}, expected {expected}")]
    ColumnType {
        /// The file involved.
        path: PathBuf,
        /// The column involved.
        column: String,
        /// The type found.
        found: String,
        /// The type(s) accepted.
        expected: &'static str,
    },
    /// A value in a column could not be parsed.
    #[error("{path}: column `{column}`, row {row}: cannot parse {value:?} as {expected}")]
    BadValue {
        /// The file involved.
        path: PathBuf,
        /// The column involved.
        column: String,
        /// Zero-based row number in the file.
        row: usize,
        /// The offending text.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// Neither the green (`lpep_*`) nor the yellow (`tpep_*`) pickup/dropoff columns are present.
    #[error(
        "{path}: not a TLC trip file: no lpep_/tpep_ pickup and dropoff datetime columns (the file has: {available})"
    )]
    NotTripData {
        /// The file involved.
        path: PathBuf,
        /// The columns the file has.
        available: String,
    },
    /// No row is left to train or evaluate on.
    #[error("{what}: no rows left after the {min}–{max} minute duration filter ({read} rows read)")]
    Empty {
        /// Which data set (`training data`, `validation data`, a file name).
        what: String,
        /// Rows read before the filter.
        read: u64,
        /// Lower bound of the filter, minutes.
        min: f64,
        /// Upper bound of the filter, minutes.
        max: f64,
    },
    /// The feature spec is not usable.
    #[error("feature spec: {0}")]
    Spec(String),
    /// The least-squares problem cannot be solved as asked.
    #[error("fit: {0}")]
    Fit(String),
    /// A reference profile or a drift comparison is not usable as given (unknown format,
    /// mismatched columns, an empty column, a method that does not apply to a column's kind).
    #[error("drift: {0}")]
    Drift(String),
    /// The model artifact is unreadable, of another format version, or fails its checksum.
    #[error("model artifact {path}: {message}")]
    Artifact {
        /// Where the artifact came from.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
