//! The prediction log of the predictor service.
//!
//! Every answered prediction becomes one [`PredictionRecord`] (JSON, schema [`SCHEMA_VERSION`]),
//! shipped by a background task to a sink — JSON-lines segment files in a local directory or a
//! Kinesis data stream ([`SinkTarget`]) — without ever blocking the prediction and without losing
//! records:
//!
//! - [`PredictionLog::log`] moves the record into an in-memory queue (serialized for Kinesis, in
//!   a compact form for the local sink, whose JSON lines a thread of idle priority formats: see
//!   `docs/prediction-log.md`); I/O happens on the background task.
//! - When the sink is down or slow, or (local sink) every core is busy, and the queue holds
//!   [`LogConfig::queue_capacity`] records, records go to an append-only spill directory on local
//!   disk, and are sent from there, in order, once the sink takes them again. Records left in the
//!   spill by a previous run are sent first on [`PredictionLog::start`].
//! - [`PredictionLog::shutdown`] sends what it can before a deadline and spills the rest.
//!
//! The record format, the sinks and the delivery guarantees are documented for consumers in
//! `docs/prediction-log.md`.

mod config;
pub mod consumer;
mod format;
mod log;
mod queued;
mod record;
mod sink;
mod spill;
mod worker;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

pub use config::{
    KINESIS_MAX_BATCH_BYTES, KINESIS_MAX_BATCH_RECORDS, KINESIS_MAX_RECORD_BYTES, KinesisOptions, LogConfig, SinkTarget,
};
pub use consumer::{Batch, DeadLetter, LogSource, Position, SourceCounters, SourceError, SourceResult, SourceTarget};
pub use log::{BUFFER_FLUSH_BYTES, BufferedLog, Counters, PredictionLog};
pub use record::{LineWriter, ModelId, PredictionRecord, RequestFields, RideFeatures, RideFields, SCHEMA_VERSION};

/// Errors of the prediction log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log target string is not one of the supported forms.
    #[error("unsupported log target `{0}`: expected a directory, file://DIR or kinesis://STREAM")]
    UnsupportedTarget(String),
    /// A `kinesis://` target with an invalid stream name.
    #[error("invalid kinesis stream name `{0}`: expected 1 to 128 characters of a-z, A-Z, 0-9, `_`, `.`, `-`")]
    InvalidStreamName(String),
    /// A configuration value out of range.
    #[error("invalid prediction log configuration: {0}")]
    InvalidConfig(String),
    /// The Kinesis stream does not exist.
    #[error("kinesis stream `{stream}` does not exist")]
    StreamNotFound {
        /// The stream's name.
        stream: String,
    },
    /// A record is not valid JSON of the expected shape.
    #[error("invalid prediction record: {0}")]
    InvalidRecord(#[source] serde_json::Error),
    /// A record of a schema version this crate does not read.
    #[error("unsupported prediction record schema {found}: this reader understands schema {SCHEMA_VERSION}")]
    UnsupportedSchema {
        /// The record's `schema` field.
        found: u32,
    },
    /// A local file operation failed.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done, e.g. "create the spill directory".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Blocking start-up work could not complete.
    #[error("prediction log start-up task failed: {0}")]
    Startup(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The counters behind [`Counters`], shared by the caller side and the background task.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub sent: AtomicU64,
    pub spilled: AtomicU64,
    pub dropped: AtomicU64,
    pub sink_errors: AtomicU64,
    pub recovered: AtomicU64,
    pub corrupt: AtomicU64,
    /// Records the background task holds in memory, neither sent, spilled nor dropped (those still
    /// in the inbox or the threads' queues are counted there).
    pub memory: AtomicU64,
    /// Records in the spill not yet sent.
    pub backlog: AtomicU64,
}

/// Runs blocking file work (fsync) without stalling other tasks of a multi-threaded runtime.
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Makes renames and creations in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
