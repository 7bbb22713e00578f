//! Where the log goes and how it buffers: [`SinkTarget`], [`LogConfig`], [`KinesisOptions`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::{Error, Result};

/// Where records are shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// JSON-lines segment files in a local directory.
    Local(PathBuf),
    /// An existing Kinesis data stream.
    Kinesis {
        /// The stream's name.
        stream: String,
    },
}

impl SinkTarget {
    /// The default spill directory for this target: `<dir>/spill` for a local directory,
    /// `<home>/spill` (`home` being `$LIGHTOPS_HOME`) otherwise.
    pub fn default_spill_dir(&self, home: &Path) -> PathBuf {
        match self {
            SinkTarget::Local(dir) => dir.join("spill"),
            SinkTarget::Kinesis { .. } => home.join("spill"),
        }
    }
}

impl FromStr for SinkTarget {
    type Err = Error;

    /// Parses `DIR`, `file://DIR` or `kinesis://STREAM`.
    fn from_str(target: &str) -> Result<Self> {
        let unsupported = || Error::UnsupportedTarget(target.to_owned());
        if let Some(stream) = target.strip_prefix("kinesis://") {
            // Stream names: 1..=128 characters of [a-zA-Z0-9_.-].
            let valid = !stream.is_empty()
                && stream.len() <= 128
                && stream.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !valid {
                return Err(Error::InvalidStreamName(stream.to_owned()));
            }
            return Ok(SinkTarget::Kinesis { stream: stream.to_owned() });
        }
        if let Some(path) = target.strip_prefix("file://") {
            // file:///abs/dir (empty authority) or file://relative/dir.
            if path.is_empty() {
                return Err(unsupported());
            }
            return Ok(SinkTarget::Local(PathBuf::from(path)));
        }
        if target.is_empty() || target.contains("://") {
            return Err(unsupported());
        }
        Ok(SinkTarget::Local(PathBuf::from(target)))
    }
}

impl fmt::Display for SinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkTarget::Local(dir) => write!(f, "file://{}", dir.display()),
            SinkTarget::Kinesis { stream } => write!(f, "kinesis://{stream}"),
        }
    }
}

/// Kinesis batching and timeout knobs; the defaults suit AWS.
#[derive(Debug, Clone, PartialEq)]
pub struct KinesisOptions {
    /// Records per `PutRecords` request, 1..=500 (the API limit). Default 500.
    pub max_batch_records: usize,
    /// Bytes (data + partition keys) per `PutRecords` request, at most 5 MiB (the API limit). Default 5 MiB.
    pub max_batch_bytes: usize,
    /// Timeout of one request (connect included); past it the attempt counts as failed. Default 5 s.
    pub request_timeout: Duration,
}

/// Kinesis' limit on records per `PutRecords` request.
pub const KINESIS_MAX_BATCH_RECORDS: usize = 500;
/// Kinesis' limit on bytes (data + partition keys) per `PutRecords` request.
pub const KINESIS_MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;
/// Kinesis' limit on bytes (data + partition key) per record.
pub const KINESIS_MAX_RECORD_BYTES: usize = 1024 * 1024;

impl Default for KinesisOptions {
    fn default() -> Self {
        KinesisOptions {
            max_batch_records: KINESIS_MAX_BATCH_RECORDS,
            max_batch_bytes: KINESIS_MAX_BATCH_BYTES,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Configuration of a [`PredictionLog`](crate::PredictionLog).
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Where records go.
    pub target: SinkTarget,
    /// The disk buffer for records the sink cannot take right now; records left there by a
    /// previous run are sent first on start. One log per directory.
    pub spill_dir: PathBuf,
    /// Records held in memory before further records go to the spill.
    /// Default [`LogConfig::default_queue_capacity`]: 65,536 for Kinesis (~20 MiB of JSON), where
    /// the spill takes the surplus off a slow network sink early, and 1,048,576 for the local sink
    /// (~60–100 MiB of requests in their compact form), which holds them while its disk is slower
    /// than the records come, or while every core is busy and the lines wait for an idle one to be
    /// formatted (see `docs/prediction-log.md`). Spilling then bounds the memory (the local sink
    /// spills the compact form), at the price of I/O on the spill's disk.
    pub queue_capacity: usize,
    /// Local sink: a segment is closed before it would exceed this size. Default 64 MiB.
    pub segment_bytes: u64,
    /// Local sink: a segment is closed once it has been open this long. Default 1 h.
    pub segment_age: Duration,
    /// How often housekeeping runs: segment age, spill cursor, fsync of the spill. Default 200 ms.
    pub flush_interval: Duration,
    /// How long the background task lets records gather after the first one arrives before it
    /// writes them: one write (or `PutRecords`) per linger instead of one per request, at busy
    /// times. Records are in memory meanwhile and shutdown flushes them. Default 10 ms (2 ms cost
    /// a tenth more server CPU per logged HTTP request, in wake-ups and device requests); zero
    /// sends at once. The local sink does not wait it out once the threads' queues hold 256 KiB of
    /// requests in their compact form (0.7–1 MiB of lines), nor Kinesis once a full `PutRecords`
    /// (`kinesis.max_batch_records`) waits.
    pub linger: Duration,
    /// Wait before the first retry of a failed sink attempt; doubles on each further failure
    /// (with jitter). Default 100 ms.
    pub initial_backoff: Duration,
    /// Cap of the retry wait. Default 5 s.
    pub max_backoff: Duration,
    /// Kinesis knobs (ignored by the local sink).
    pub kinesis: KinesisOptions,
}

impl LogConfig {
    /// The default [`LogConfig::queue_capacity`] for a target.
    pub fn default_queue_capacity(target: &SinkTarget) -> usize {
        match target {
            SinkTarget::Kinesis { .. } => 65_536,
            SinkTarget::Local(_) => 1 << 20,
        }
    }

    /// A configuration with the defaults for everything but the target and the spill directory.
    pub fn new(target: SinkTarget, spill_dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            queue_capacity: Self::default_queue_capacity(&target),
            target,
            spill_dir: spill_dir.into(),
            segment_bytes: 64 * 1024 * 1024,
            segment_age: Duration::from_secs(3600),
            flush_interval: Duration::from_millis(200),
            linger: Duration::from_millis(10),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            kinesis: KinesisOptions::default(),
        }
    }

    /// Checks the knobs are within range.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidConfig(message));
        if self.queue_capacity == 0 {
            return invalid("queue capacity must be at least 1".into());
        }
        if self.segment_bytes == 0 {
            return invalid("segment size must be at least 1 byte".into());
        }
        if self.flush_interval.is_zero() || self.segment_age.is_zero() || self.initial_backoff.is_zero() {
            return invalid("flush interval, segment age and initial backoff must be positive".into());
        }
        if self.linger > self.flush_interval {
            return invalid(format!(
                "linger ({:?}) must not be longer than the flush interval ({:?})",
                self.linger, self.flush_interval
            ));
        }
        let kinesis = &self.kinesis;
        if !(1..=KINESIS_MAX_BATCH_RECORDS).contains(&kinesis.max_batch_records) {
            return invalid(format!("kinesis batch records must be 1..={KINESIS_MAX_BATCH_RECORDS}"));
        }
        if !(KINESIS_MAX_RECORD_BYTES..=KINESIS_MAX_BATCH_BYTES).contains(&kinesis.max_batch_bytes) {
            return invalid(format!(
                "kinesis batch bytes must be {KINESIS_MAX_RECORD_BYTES}..={KINESIS_MAX_BATCH_BYTES}"
            ));
        }
        if kinesis.request_timeout.is_zero() {
            return invalid("kinesis request timeout must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            "logs/predictions".parse::<SinkTarget>().expect("dir"),
            SinkTarget::Local("logs/predictions".into())
        );
        assert_eq!("file:///var/log/x".parse::<SinkTarget>().expect("file"), SinkTarget::Local("/var/log/x".into()));
        assert_eq!(
            "kinesis://ride_predictions".parse::<SinkTarget>().expect("kinesis"),
            SinkTarget::Kinesis { stream: "ride_predictions".into() }
        );
        let error = "s3://bucket/x".parse::<SinkTarget>().expect_err("s3");
        assert_eq!(
            error.to_string(),
            "unsupported log target `s3://bucket/x`: expected a directory, file://DIR or kinesis://STREAM"
        );
        assert!("".parse::<SinkTarget>().is_err());
        assert!("file://".parse::<SinkTarget>().is_err());
        assert!("kinesis://".parse::<SinkTarget>().is_err());
        assert!("kinesis://bad/name".parse::<SinkTarget>().is_err());
        let target = "kinesis://s".parse::<SinkTarget>().expect("kinesis");
        assert_eq!(target.to_string().parse::<SinkTarget>().expect("round trip"), target);
    }
}
