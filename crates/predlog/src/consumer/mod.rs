//! The consumer side of the prediction log: [`LogSource`] reads the records a [`PredictionLog`]
//! wrote, in batches, each with the [`Position`] after it.
//!
//! The caller applies a batch, then persists its position together with its own state (atomically),
//! and on restart opens the source at that position: it resumes after the last applied record and
//! never applies a record twice. Positions are cumulative snapshots, so the caller may checkpoint
//! any batch's position, not necessarily every one.
//!
//! - A local directory ([`SourceTarget::Local`]): closed segments in name order, then the open
//!   segment up to its last complete line, following its rename to `.jsonl`.
//! - A Kinesis stream ([`SourceTarget::Kinesis`]): every shard, round-robin; after a reshard, a
//!   child shard is read only once its parents are read to their end, so the records of one ride
//!   (one partition key) keep their order.
//!
//! Records that do not parse are counted ([`SourceCounters::bad_records`]), logged and skipped:
//! they never stop the consumer.
//!
//! [`PredictionLog`]: crate::PredictionLog

mod kinesis;
mod local;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{PredictionRecord, SinkTarget};
use kinesis::KinesisSource;
use local::LocalSource;

/// Errors of a [`LogSource`].
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A target, file or stream error shared with the producer side (an unsupported target, a
    /// directory that cannot be read, a stream that does not exist, …).
    #[error(transparent)]
    Log(#[from] crate::Error),
    /// A Kinesis request failed with an error that is not retried internally (throttling and
    /// expired iterators are). The source stays usable: call [`LogSource::next_batch`] again,
    /// after a pause.
    #[error("kinesis {operation} on stream `{stream}` failed: {message}")]
    Kinesis {
        /// The API operation, e.g. `GetRecords`.
        operation: &'static str,
        /// The stream's name.
        stream: String,
        /// The error, with its context.
        message: String,
    },
    /// The position given to [`LogSource::open`] cannot be used with this source.
    #[error("invalid position for {target}: {reason}")]
    InvalidPosition {
        /// The source's target.
        target: String,
        /// What is wrong with the position.
        reason: String,
    },
    /// A blocking file read could not complete.
    #[error("log reading task failed: {0}")]
    Task(String),
}

/// `Result` with [`SourceError`].
pub type SourceResult<T, E = SourceError> = std::result::Result<T, E>;

/// Where records are read from: the same forms as [`SinkTarget`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceTarget {
    /// JSON-lines segment files in a local directory, written by the local sink.
    Local(PathBuf),
    /// A Kinesis data stream.
    Kinesis {
        /// The stream's name.
        stream: String,
    },
}

impl From<SinkTarget> for SourceTarget {
    fn from(target: SinkTarget) -> Self {
        match target {
            SinkTarget::Local(dir) => SourceTarget::Local(dir),
            SinkTarget::Kinesis { stream } => SourceTarget::Kinesis { stream },
        }
    }
}

impl FromStr for SourceTarget {
    type Err = crate::Error;

    /// Parses `DIR`, `file://DIR` or `kinesis://STREAM`, like [`SinkTarget`].
    fn from_str(target: &str) -> crate::Result<Self> {
        target.parse::<SinkTarget>().map(SourceTarget::from)
    }
}

impl fmt::Display for SourceTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceTarget::Local(dir) => write!(f, "file://{}", dir.display()),
            SourceTarget::Kinesis { stream } => write!(f, "kinesis://{stream}"),
        }
    }
}

/// How far a consumer has read: persist it with the state the records were applied to, and give it
/// back to [`LogSource::open`] to resume right after them.
///
/// Opaque to callers; serialize it with serde (JSON: `{}` for the start,
/// `{"local":{"segment":"predictions-<key>","offset":N}}` or
/// `{"kinesis":{"stream":"S","shards":{"shardId-…":"<last sequence number>"},"finished":["shardId-…"]}}`).
/// [`Position::default`] is the beginning of the log.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Position {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local: Option<LocalPosition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kinesis: Option<KinesisPosition>,
}

impl Position {
    /// Whether this is the beginning of the log (nothing read yet).
    pub fn is_start(&self) -> bool {
        self.local.is_none() && self.kinesis.as_ref().is_none_or(|k| k.shards.is_empty() && k.finished.is_empty())
    }
}

/// Local directory: every segment before `segment` and the first `offset` bytes of `segment`
/// (whole lines) have been read.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct LocalPosition {
    /// The segment's base name, `predictions-<key>` (without `.jsonl` / `.jsonl.open`).
    segment: String,
    /// Bytes of the segment read, always at a line boundary.
    offset: u64,
}

/// Kinesis: per shard, the sequence number of the last record read; shards read to their end.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct KinesisPosition {
    /// The stream the position belongs to.
    stream: String,
    /// Shard id → sequence number of the last record read, for shards not finished.
    #[serde(default)]
    shards: BTreeMap<String, String>,
    /// Closed shards read to their end.
    #[serde(default)]
    finished: BTreeSet<String>,
}

/// Records read together from one segment or one shard, in log order.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The records, at least one.
    pub records: Vec<PredictionRecord>,
    /// The position after this batch: checkpoint it once the batch is applied.
    pub position: Position,
    /// Where the records come from: the segment's base name (`predictions-<key>`) or the shard id.
    pub source: String,
    /// A stable id of the first record: `<segment>:<byte offset>` or `<shard id>:<sequence number>`.
    /// The same record always has the same id, e.g. to name archive objects idempotently.
    pub first: String,
    /// A stable id of the last record, like [`Batch::first`].
    pub last: String,
}

/// What a [`LogSource`] has done since it was opened.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceCounters {
    /// Records returned in batches.
    pub records: u64,
    /// Records (lines or Kinesis records) skipped because they did not parse.
    pub bad_records: u64,
    /// Unreadable records not yet taken with [`LogSource::take_dead_letters`].
    pub dead_letters: Vec<DeadLetter>,
    /// Batches returned.
    pub batches: u64,
    /// Kinesis requests retried after throttling or an expired shard iterator.
    pub retries: u64,
    /// Kinesis: `MillisBehindLatest` of the last `GetRecords` per shard being read.
    pub millis_behind: BTreeMap<String, u64>,
    /// Local directory: bytes not read yet (approximate: the current segment and the newer
    /// segments as last listed).
    pub bytes_behind: u64,
}

/// Reads prediction records from a local directory or a Kinesis stream, resuming at a [`Position`].
#[derive(Debug)]
pub struct LogSource {
    target: SourceTarget,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Local(LocalSource),
    Kinesis(Box<KinesisSource>),
}

impl LogSource {
    /// Opens the source, to read the records after `from` ([`Position::default`] for all).
    ///
    /// A local directory must exist. For Kinesis, a client is built from the standard AWS
    /// environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials) and the stream's shards are
    /// listed: a missing stream or an unreachable endpoint fails the open. A position of another
    /// kind of source, or of another stream, is refused.
    pub async fn open(target: SourceTarget, from: Position) -> SourceResult<Self> {
        match target {
            SourceTarget::Local(dir) => {
                if from.kinesis.is_some() {
                    return Err(SourceError::InvalidPosition {
                        target: SourceTarget::Local(dir).to_string(),
                        reason: "it is a kinesis position".into(),
                    });
                }
                let source = LocalSource::open(dir.clone(), from.local).await?;
                Ok(LogSource { target: SourceTarget::Local(dir), inner: Inner::Local(source) })
            }
            SourceTarget::Kinesis { stream } => {
                let shared = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
                if shared.region().is_none() {
                    return Err(crate::Error::InvalidConfig(
                        "no AWS region configured for kinesis (set AWS_REGION)".into(),
                    )
                    .into());
                }
                Self::open_kinesis_with_client(stream, aws_sdk_kinesis::Client::new(&shared), from).await
            }
        }
    }

    /// Like [`LogSource::open`] for a Kinesis stream, with a given client (e.g. one configured for a
    /// test endpoint). The client's retry settings are kept; its timeouts are set to 5 s to connect
    /// and 10 s per attempt.
    pub async fn open_kinesis_with_client(
        stream: impl Into<String>,
        client: aws_sdk_kinesis::Client,
        from: Position,
    ) -> SourceResult<Self> {
        let stream = stream.into();
        let target = SourceTarget::Kinesis { stream: stream.clone() };
        if from.local.is_some() {
            return Err(SourceError::InvalidPosition {
                target: target.to_string(),
                reason: "it is a local directory position".into(),
            });
        }
        let source = KinesisSource::open(client, stream, from.kinesis).await?;
        Ok(LogSource { target, inner: Inner::Kinesis(Box::new(source)) })
    }

    /// The next batch of at most `max_records` records (at least 1), or `None` when nothing new
    /// arrived within `wait`.
    ///
    /// Waiting polls the source (local: every 50 ms; Kinesis: each shard at most every 200 ms when
    /// it has nothing new). A Kinesis request in flight when `wait` runs out is completed first.
    /// After an error the source stays usable (nothing was consumed): call again, after a pause.
    pub async fn next_batch(&mut self, max_records: usize, wait: Duration) -> SourceResult<Option<Batch>> {
        let max_records = max_records.max(1);
        match &mut self.inner {
            Inner::Local(source) => source.next_batch(max_records, wait).await,
            Inner::Kinesis(source) => source.next_batch(max_records, wait).await,
        }
    }

    /// The position after the last batch returned (or the one the source was opened at).
    pub fn position(&self) -> Position {
        match &self.inner {
            Inner::Local(source) => Position { local: source.position(), kinesis: None },
            Inner::Kinesis(source) => Position { local: None, kinesis: Some(source.position()) },
        }
    }

    /// What the source has done since it was opened.
    pub fn counters(&self) -> SourceCounters {
        match &self.inner {
            Inner::Local(source) => source.counters(),
            Inner::Kinesis(source) => source.counters(),
        }
    }

    /// The unreadable records met since the last call (bad JSON, unknown schema version), for a
    /// dead-letter location. They are also counted in [`SourceCounters::bad_records`].
    pub fn take_dead_letters(&mut self) -> Vec<DeadLetter> {
        match &mut self.inner {
            Inner::Local(source) => std::mem::take(&mut source.counters_mut().dead_letters),
            Inner::Kinesis(source) => std::mem::take(&mut source.counters_mut().dead_letters),
        }
    }

    /// Where the records come from.
    pub fn target(&self) -> &SourceTarget {
        &self.target
    }

    /// Kinesis: how often the shard list is refreshed to discover the shards a reshard created
    /// (default 10 s; it is also refreshed whenever a shard is read to its end). No effect on a
    /// local directory.
    pub fn set_relist_interval(&mut self, interval: Duration) {
        if let Inner::Kinesis(source) = &mut self.inner {
            source.set_relist_interval(interval);
        }
    }
}

/// A record that could not be read: kept for a dead-letter location.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// Its stable id (`<segment>:<offset>` or `<shard>:<sequence>`).
    pub id: String,
    /// The bytes as they were in the stream.
    pub data: Vec<u8>,
    /// Why it was refused.
    pub reason: String,
}

/// Most dead letters kept between two [`LogSource::take_dead_letters`] calls; beyond that they
/// are only counted.
const MAX_PENDING_DEAD_LETTERS: usize = 10_000;

/// Parses `payload`, counting, logging and keeping it as a dead letter when it is not a valid
/// record.
fn parse_record(
    payload: &[u8],
    id: impl FnOnce() -> String,
    counters: &mut SourceCounters,
) -> Option<PredictionRecord> {
    match PredictionRecord::from_json(payload) {
        Ok(record) => Some(record),
        Err(error) => {
            counters.bad_records += 1;
            let id = id();
            tracing::warn!(record = %id, %error, "skipping an unreadable prediction record");
            if counters.dead_letters.len() < MAX_PENDING_DEAD_LETTERS {
                counters.dead_letters.push(DeadLetter { id, data: payload.to_vec(), reason: error.to_string() });
            }
            None
        }
    }
}
