//! The destinations: local JSON-lines segments ([`local`]) and Kinesis ([`kinesis`]).

pub(crate) mod append;
pub(crate) mod kinesis;
pub(crate) mod local;

use crate::config::KINESIS_MAX_RECORD_BYTES;
use crate::record::{LineWriter, PredictionRecord, RideFields};

/// The most the local sink writes in one batch: everything pending, up to this (what accumulates
/// while the task waits for a core under a heavy load).
pub(crate) const LOCAL_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Records serialized for any sink or the spill: by the callers of
/// [`PredictionLog::log`](crate::PredictionLog::log) for Kinesis, by the background task for the
/// local sink.
///
/// For Kinesis it holds exactly one record (with its partition key), since Kinesis takes records
/// one by one. For the local sink it holds the lines of many records: the background task writes
/// all the requests it takes from the threads' queues into one chunk, so that a busy server's records cost no
/// allocation each and leave in one `write` per linger.
#[derive(Debug, Clone, Default)]
pub(crate) struct Encoded {
    /// The records' JSON, each line followed by a newline, after `room`.
    pub lines: Vec<u8>,
    /// Bytes at the front of `lines` that are not lines: room for the local sink to put the
    /// start of its segment's last block in, so that it writes the lines without copying them
    /// (see [`AppendFile::append_in_place`](append::AppendFile::append_in_place)). 0 but for
    /// chunks formatted for the local sink.
    pub room: usize,
    /// How many records (lines) `lines` holds.
    pub count: usize,
    /// The Kinesis partition key (of the one record); empty for the local sink.
    pub key: String,
}

impl Encoded {
    /// Serializes one record; `keyed` computes the Kinesis partition key.
    pub fn new<S: AsRef<str>>(record: &PredictionRecord<S>, keyed: bool) -> Self {
        // Most records are 200–260 bytes: one allocation instead of growing from 128.
        let mut encoded = Encoded { lines: Vec::with_capacity(320), ..Encoded::default() };
        encoded.push(record);
        if keyed {
            encoded.key = partition_key(record.ride_id.as_ref());
        }
        encoded
    }

    /// Wraps one already serialized record (a line read back from the spill, without its newline).
    pub fn from_json(json: &[u8], ride_id: &str, keyed: bool) -> Self {
        let mut lines = Vec::with_capacity(json.len() + 1);
        lines.extend_from_slice(json);
        lines.push(b'\n');
        let key = if keyed { partition_key(ride_id) } else { String::new() };
        Encoded { lines, count: 1, key, room: 0 }
    }

    /// Appends one record's line to this chunk (a keyed chunk holds only one).
    pub fn push<S: AsRef<str>>(&mut self, record: &PredictionRecord<S>) {
        record.write_json(&mut self.lines);
        self.lines.push(b'\n');
        self.count += 1;
    }

    /// Appends the line of one ride of the request `writer` was given, its id given as bytes
    /// (see [`LineWriter::write_id`]).
    pub fn push_ride(&mut self, writer: &mut LineWriter, id: &[u8], ride: &RideFields<'_>) {
        writer.write_id(id, ride, &mut self.lines);
        self.lines.push(b'\n');
        self.count += 1;
    }

    /// The lines (after `room`).
    pub fn text(&self) -> &[u8] {
        &self.lines[self.room..]
    }

    /// The JSON of a single-record chunk, without the newline (a Kinesis record's data).
    pub fn json(&self) -> &[u8] {
        let text = self.text();
        text.strip_suffix(b"\n").unwrap_or(text)
    }

    /// Bytes counted against the sink's limits: the JSON (without newlines) plus the partition key.
    pub fn size(&self) -> usize {
        self.text().len() - self.count + self.key.len()
    }
}

/// The records held by `chunks`.
pub(crate) fn record_count(chunks: &[Encoded]) -> usize {
    chunks.iter().map(|chunk| chunk.count).sum()
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
    /// Stores the chunks in order. `Ok` lists the indices (ascending) of the chunks that were not
    /// stored and should be retried (the local sink first cuts a chunk it stored partly to the
    /// part it did not); `Err` means none were.
    pub async fn send(&mut self, records: &mut [Encoded]) -> Result<Vec<usize>, SinkError> {
        match self {
            Sink::Local(sink) => sink.send(records),
            Sink::Kinesis(sink) => sink.send(records).await,
        }
    }

    /// The most records and bytes ([`Encoded::size`]) one batch may hold.
    pub fn batch_limits(&self) -> (usize, usize) {
        match self {
            Sink::Local(_) => (usize::MAX, LOCAL_BATCH_BYTES),
            Sink::Kinesis(sink) => sink.batch_limits(),
        }
    }

    /// Where in its block the local sink's next write starts ([`local::LocalSink::lead`]);
    /// `None` for Kinesis.
    pub fn lead(&self) -> Option<usize> {
        match self {
            Sink::Local(sink) => Some(sink.lead()),
            Sink::Kinesis(_) => None,
        }
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

    /// Periodic: writes out what the local sink holds back (less than a block of the segment).
    pub fn flush(&mut self) {
        if let Sink::Local(sink) = self {
            sink.flush();
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
