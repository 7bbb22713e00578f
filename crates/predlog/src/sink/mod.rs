//! The destinations: local JSON-lines segments ([`local`]) and Kinesis ([`kinesis`]).

pub(crate) mod kinesis;
pub(crate) mod local;

use crate::config::KINESIS_MAX_RECORD_BYTES;
use crate::record::PredictionRecord;

/// A record serialized by the caller of [`PredictionLog::log`](crate::PredictionLog::log), ready for
/// any sink or the spill.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    /// The record's JSON, without a trailing newline.
    pub json: Vec<u8>,
    /// The Kinesis partition key; empty for the local sink.
    pub key: String,
}

impl Encoded {
    /// Serializes a record; `keyed` computes the Kinesis partition key.
    pub fn new<S: AsRef<str>>(record: &PredictionRecord<S>, keyed: bool) -> Self {
        Encoded::from_json(record.to_json(), record.ride_id.as_ref(), keyed)
    }

    /// Wraps already serialized JSON (e.g. read back from the spill).
    pub fn from_json(json: Vec<u8>, ride_id: &str, keyed: bool) -> Self {
        let key = if keyed { partition_key(ride_id) } else { String::new() };
        Encoded { json, key }
    }

    /// Bytes counted against the sink's limits: the data plus the partition key.
    pub fn size(&self) -> usize {
        self.json.len() + self.key.len()
    }
}

/// Kinesis wants 1..=256 Unicode characters: the ride id, truncated, or a random uuid when empty
/// (spreading anonymous rides over the shards).
pub(crate) fn partition_key(ride_id: &str) -> String {
    if ride_id.is_empty() {
        return uuid::Uuid::new_v4().simple().to_string();
    }
    match ride_id.char_indices().nth(256) {
        Some((end, _)) => ride_id[..end].to_owned(),
        None => ride_id.to_owned(),
    }
}

/// A failed attempt of the whole batch (nothing of it is known to be stored).
#[derive(Debug)]
pub(crate) struct SinkError(pub String);

/// Where records end up.
pub(crate) enum Sink {
    /// JSON-lines segments in a directory.
    Local(local::LocalSink),
    /// A Kinesis data stream.
    Kinesis(kinesis::KinesisSink),
}

impl Sink {
    /// Stores `records` in order. `Ok` lists the indices (ascending) of the records that were not
    /// stored and should be retried; `Err` means none were.
    pub async fn send(&mut self, records: &[Encoded]) -> Result<Vec<usize>, SinkError> {
        match self {
            Sink::Local(sink) => sink.send(records),
            Sink::Kinesis(sink) => sink.send(records).await,
        }
    }

    /// The most records and bytes ([`Encoded::size`]) one batch may hold.
    pub fn batch_limits(&self) -> (usize, usize) {
        match self {
            // Everything pending in one write, up to 64 MiB (what accumulates while the task waits
            // for a core under a heavy load).
            Sink::Local(_) => (usize::MAX, 64 * 1024 * 1024),
            Sink::Kinesis(sink) => sink.batch_limits(),
        }
    }

    /// Whether the sink is the local directory.
    pub fn is_local(&self) -> bool {
        matches!(self, Sink::Local(_))
    }

    /// Whether records need a partition key.
    pub fn keyed(&self) -> bool {
        matches!(self, Sink::Kinesis(_))
    }

    /// The largest record ([`Encoded::size`]) the sink can ever take.
    pub fn max_record_bytes(&self) -> usize {
        match self {
            Sink::Local(_) => usize::MAX,
            Sink::Kinesis(_) => KINESIS_MAX_RECORD_BYTES,
        }
    }

    /// Periodic housekeeping: closes a local segment that is too old.
    pub fn maintain(&mut self) {
        if let Sink::Local(sink) = self {
            sink.maintain();
        }
    }

    /// Closes the sink at shutdown (fsync and close the open local segment).
    pub fn close(&mut self) {
        if let Sink::Local(sink) = self {
            sink.close();
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Sink::Local(sink) => format!("file://{}", sink.dir().display()),
            Sink::Kinesis(sink) => format!("kinesis://{}", sink.stream()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_are_valid() {
        assert_eq!(partition_key("ride-1"), "ride-1");
        let anonymous = partition_key("");
        assert_eq!(anonymous.len(), 32);
        assert_ne!(anonymous, partition_key(""));
        let long = "é".repeat(300);
        assert_eq!(partition_key(&long).chars().count(), 256);
    }
}
