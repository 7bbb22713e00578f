//! Reading a Kinesis stream: every shard, round-robin; children after their parents.
//!
//! Each shard is read with `GetRecords` from a shard iterator obtained `AFTER_SEQUENCE_NUMBER` of
//! the last record read (`TRIM_HORIZON` for a shard not read yet). A shard is finished when
//! `GetRecords` gives no next iterator (it was closed by a reshard and is read to its end), or when
//! the shard list shows it closed and the last record read is at or after its ending sequence
//! number. A shard with parents (`ParentShardId`, `AdjacentParentShardId`) is read only once every
//! parent is finished (or gone from the list, past the retention period), so the records of one
//! partition key stay in order. The shard list is refreshed periodically and whenever a shard
//! finishes, which is how the children of a reshard are found.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::types::ShardIteratorType;
use tracing::{debug, info, warn};

use super::{Batch, KinesisPosition, Position, SourceCounters, SourceError, SourceResult, SourceTarget, parse_record};
use crate::Error;

/// `GetRecords`' limit on records per call.
const MAX_GET_RECORDS: usize = 10_000;
/// `ListShards`' limit on shards per page.
const LIST_SHARDS_PAGE: i32 = 10_000;
/// A shard with nothing new is polled again after this long (Kinesis allows 5 calls/s per shard).
const IDLE_POLL: Duration = Duration::from_millis(200);
/// The first wait after a throttled request; doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const DEFAULT_RELIST_INTERVAL: Duration = Duration::from_secs(10);

/// What is known of one shard.
#[derive(Debug)]
struct ShardState {
    /// `ParentShardId` and `AdjacentParentShardId`.
    parents: Vec<String>,
    /// `EndingSequenceNumber`: set once the shard is closed.
    ending: Option<String>,
    /// Sequence number of the last record read.
    last: Option<String>,
    iterator: Option<String>,
    /// Not polled before this (nothing new, or throttled).
    not_before: Option<Instant>,
    backoff: Duration,
}

/// What polling a shard gave.
enum Polled {
    Batch(Batch),
    /// Nothing now; the shard's `not_before` says when to try again.
    Nothing,
    /// Nothing returned, but the shard can be polled again at once (unreadable records skipped,
    /// an expired iterator renewed, the shard finished).
    Again,
}

/// Reads one stream.
#[derive(Debug)]
pub(super) struct KinesisSource {
    client: Client,
    stream: String,
    /// Every shard of the last listing, by id.
    shards: BTreeMap<String, ShardState>,
    /// Shards read to their end.
    finished: BTreeSet<String>,
    /// Last-read sequence numbers from the opening position, for shards not listed yet.
    pending: BTreeMap<String, String>,
    /// The shard the last batch came from (round-robin).
    cursor: Option<String>,
    listed_at: Instant,
    relist_interval: Duration,
    relist_now: bool,
    counters: SourceCounters,
}

impl KinesisSource {
    /// Lists the stream's shards to read after `from`.
    pub async fn open(client: Client, stream: String, from: Option<KinesisPosition>) -> SourceResult<Self> {
        let from = from.unwrap_or_else(|| KinesisPosition { stream: stream.clone(), ..KinesisPosition::default() });
        if from.stream != stream {
            return Err(SourceError::InvalidPosition {
                target: SourceTarget::Kinesis { stream }.to_string(),
                reason: format!("it is a position in stream `{}`", from.stream),
            });
        }
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(10))
            .build();
        let client = Client::from_conf(client.config().to_builder().timeout_config(timeouts).build());
        let mut source = KinesisSource {
            client,
            stream,
            shards: BTreeMap::new(),
            finished: from.finished,
            pending: from.shards,
            cursor: None,
            listed_at: Instant::now(),
            relist_interval: DEFAULT_RELIST_INTERVAL,
            relist_now: true,
            counters: SourceCounters::default(),
        };
        source.relist().await?;
        info!(
            stream = source.stream,
            shards = source.shards.len(),
            finished = source.finished.len(),
            "reading kinesis stream"
        );
        Ok(source)
    }

    pub fn set_relist_interval(&mut self, interval: Duration) {
        self.relist_interval = interval;
    }

    pub fn position(&self) -> KinesisPosition {
        let mut shards = self.pending.clone();
        for (id, shard) in &self.shards {
            if let Some(last) = &shard.last
                && !self.finished.contains(id)
            {
                shards.insert(id.clone(), last.clone());
            }
        }
        KinesisPosition { stream: self.stream.clone(), shards, finished: self.finished.clone() }
    }

    pub(super) fn counters_mut(&mut self) -> &mut SourceCounters {
        &mut self.counters
    }

    pub fn counters(&self) -> SourceCounters {
        self.counters.clone()
    }

    pub async fn next_batch(&mut self, max_records: usize, wait: Duration) -> SourceResult<Option<Batch>> {
        let deadline = Instant::now() + wait;
        let limit = max_records.min(MAX_GET_RECORDS);
        loop {
            if self.relist_now || self.listed_at.elapsed() >= self.relist_interval {
                self.relist().await?;
            }
            let readable = self.readable();
            // Round-robin: start after the shard of the last batch.
            let start =
                self.cursor.as_ref().map_or(0, |cursor| readable.iter().position(|id| id > cursor).unwrap_or(0));
            let mut again = false;
            for id in readable[start..].iter().chain(&readable[..start]) {
                let waiting =
                    self.shards.get(id).and_then(|shard| shard.not_before).is_some_and(|at| at > Instant::now());
                if waiting {
                    continue;
                }
                match self.poll_shard(id, limit).await? {
                    Polled::Batch(batch) => {
                        self.cursor = Some(id.clone());
                        self.counters.records += batch.records.len() as u64;
                        self.counters.batches += 1;
                        return Ok(Some(batch));
                    }
                    Polled::Again => again = true,
                    Polled::Nothing => {}
                }
                if self.relist_now {
                    break; // a shard finished: its children may be readable now
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if again || self.relist_now {
                continue;
            }
            let mut wake = deadline.min(self.listed_at + self.relist_interval);
            for id in &readable {
                if let Some(at) = self.shards.get(id).and_then(|shard| shard.not_before) {
                    wake = wake.min(at);
                }
            }
            tokio::time::sleep_until(wake.max(now + Duration::from_millis(1)).into()).await;
        }
    }

    /// Shards that may be read now, in id order: not finished, and every parent finished or gone.
    fn readable(&self) -> Vec<String> {
        let done = |id: &String| self.finished.contains(id) || !self.shards.contains_key(id);
        self.shards
            .iter()
            .filter(|(id, shard)| !self.finished.contains(*id) && shard.parents.iter().all(done))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// One `GetRecords` on a shard (after getting an iterator if needed).
    async fn poll_shard(&mut self, id: &str, limit: usize) -> SourceResult<Polled> {
        let Some(shard) = self.shards.get(id) else { return Ok(Polled::Nothing) };
        let iterator = match &shard.iterator {
            Some(iterator) => iterator.clone(),
            None => {
                let last = shard.last.clone();
                match self.shard_iterator(id, last).await? {
                    Some(iterator) => iterator,
                    None => return Ok(Polled::Nothing),
                }
            }
        };
        let result = self.client.get_records().shard_iterator(&iterator).limit(limit as i32).send().await;
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                let service = error.as_service_error();
                if service.is_some_and(|e| e.is_expired_iterator_exception()) {
                    debug!(shard = id, "shard iterator expired; getting a new one");
                    self.counters.retries += 1;
                    if let Some(shard) = self.shards.get_mut(id) {
                        shard.iterator = None;
                    }
                    return Ok(Polled::Again);
                }
                if service.is_some_and(|e| {
                    e.is_provisioned_throughput_exceeded_exception() || e.is_kms_throttling_exception()
                }) {
                    self.throttled(id, "GetRecords");
                    return Ok(Polled::Nothing);
                }
                if service.is_some_and(|e| e.is_resource_not_found_exception()) {
                    self.vanished(id);
                    return Ok(Polled::Nothing);
                }
                return Err(self.kinesis_error("GetRecords", error));
            }
        };

        let counters = &mut self.counters;
        let Some(shard) = self.shards.get_mut(id) else { return Ok(Polled::Nothing) };
        shard.backoff = INITIAL_BACKOFF;
        shard.not_before = None;
        shard.iterator = output.next_shard_iterator().map(str::to_owned);
        let millis_behind = output.millis_behind_latest().unwrap_or(0).max(0) as u64;
        counters.millis_behind.insert(id.to_owned(), millis_behind);
        let mut records = Vec::with_capacity(output.records().len());
        let mut first_last: Option<(&str, &str)> = None;
        for record in output.records() {
            let sequence = record.sequence_number();
            if let Some(parsed) = parse_record(record.data().as_ref(), || format!("{id}:{sequence}"), counters) {
                records.push(parsed);
                first_last = Some((first_last.map_or(sequence, |(first, _)| first), sequence));
            }
            shard.last = Some(sequence.to_owned());
        }
        // Closed and read to the end: no next iterator (Kinesis), or, in the shard list, an ending
        // sequence number the last record read has reached (also how moto's server shows it).
        let finished = shard.iterator.is_none()
            || (output.records().is_empty()
                && shard
                    .ending
                    .as_deref()
                    .is_some_and(|ending| sequence_at_or_after(shard.last.as_deref().unwrap_or("0"), ending)));
        if !finished && output.records().is_empty() && millis_behind == 0 {
            shard.not_before = Some(Instant::now() + IDLE_POLL);
        }
        let first_last = first_last.map(|(first, last)| (format!("{id}:{first}"), format!("{id}:{last}")));
        let read_any = !output.records().is_empty();
        if finished {
            self.finish(id);
        }
        match first_last {
            Some((first, last)) => Ok(Polled::Batch(Batch {
                records,
                position: Position { local: None, kinesis: Some(self.position()) },
                source: id.to_owned(),
                first,
                last,
            })),
            None if finished || read_any || millis_behind > 0 => Ok(Polled::Again),
            None => Ok(Polled::Nothing),
        }
    }

    /// A shard iterator after the last record read, `None` when the shard cannot be read now.
    async fn shard_iterator(&mut self, id: &str, last: Option<String>) -> SourceResult<Option<String>> {
        let request = self.client.get_shard_iterator().stream_name(&self.stream).shard_id(id);
        let request = match &last {
            Some(sequence) => {
                request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(sequence)
            }
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        match request.send().await {
            Ok(output) => match output.shard_iterator() {
                Some(iterator) => {
                    if let Some(shard) = self.shards.get_mut(id) {
                        shard.iterator = Some(iterator.to_owned());
                    }
                    Ok(Some(iterator.to_owned()))
                }
                None => Err(SourceError::Kinesis {
                    operation: "GetShardIterator",
                    stream: self.stream.clone(),
                    message: format!("no shard iterator returned for shard {id}"),
                }),
            },
            Err(error) => {
                let service = error.as_service_error();
                if service.is_some_and(|e| e.is_provisioned_throughput_exceeded_exception()) {
                    self.throttled(id, "GetShardIterator");
                    return Ok(None);
                }
                if service.is_some_and(|e| e.is_resource_not_found_exception()) {
                    self.vanished(id);
                    return Ok(None);
                }
                Err(self.kinesis_error("GetShardIterator", error))
            }
        }
    }

    /// Refreshes the shard list (every page), keeping what is known of the shards still listed.
    async fn relist(&mut self) -> SourceResult<()> {
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // Kinesis refuses a stream name together with a next-page token.
            let request = match &token {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.stream),
            };
            let output = match request.max_results(LIST_SHARDS_PAGE).send().await {
                Ok(output) => output,
                Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                    return Err(Error::StreamNotFound { stream: self.stream.clone() }.into());
                }
                Err(error) => return Err(self.kinesis_error("ListShards", error)),
            };
            listed.extend(output.shards().iter().cloned());
            token = output.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }

        let first_listing = self.shards.is_empty();
        let mut shards = BTreeMap::new();
        for listed in listed {
            let id = listed.shard_id().to_owned();
            let parents = [listed.parent_shard_id(), listed.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect();
            let ending =
                listed.sequence_number_range().and_then(|range| range.ending_sequence_number()).map(str::to_owned);
            let shard = match self.shards.remove(&id) {
                Some(mut shard) => {
                    shard.parents = parents;
                    shard.ending = ending;
                    shard
                }
                None => {
                    if !first_listing {
                        info!(stream = self.stream, shard = id, ?parents, "new kinesis shard");
                    }
                    ShardState {
                        parents,
                        ending,
                        last: self.pending.remove(&id),
                        iterator: None,
                        not_before: None,
                        backoff: INITIAL_BACKOFF,
                    }
                }
            };
            shards.insert(id, shard);
        }
        for id in self.shards.keys() {
            info!(stream = self.stream, shard = id, "kinesis shard gone (past the retention period)");
            self.counters.millis_behind.remove(id);
        }
        for (id, last) in std::mem::take(&mut self.pending) {
            warn!(stream = self.stream, shard = id, last, "the position names a shard the stream no longer has");
        }
        self.shards = shards;
        self.finished.retain(|id| self.shards.contains_key(id));
        self.listed_at = Instant::now();
        self.relist_now = false;
        Ok(())
    }

    fn finish(&mut self, id: &str) {
        info!(stream = self.stream, shard = id, "kinesis shard read to its end");
        self.finished.insert(id.to_owned());
        self.counters.millis_behind.remove(id);
        if let Some(shard) = self.shards.get_mut(id) {
            shard.iterator = None;
        }
        self.relist_now = true;
    }

    /// A shard the stream no longer has (past the retention period): refresh the list.
    fn vanished(&mut self, id: &str) {
        debug!(stream = self.stream, shard = id, "kinesis shard not found");
        if let Some(shard) = self.shards.get_mut(id) {
            shard.iterator = None;
        }
        self.relist_now = true;
    }

    /// Backs off a throttled shard: exponential with jitter.
    fn throttled(&mut self, id: &str, operation: &'static str) {
        self.counters.retries += 1;
        let Some(shard) = self.shards.get_mut(id) else { return };
        let wait = shard.backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
        debug!(stream = self.stream, shard = id, operation, ?wait, "kinesis throttled the shard");
        shard.not_before = Some(Instant::now() + wait);
        shard.backoff = (shard.backoff * 2).min(MAX_BACKOFF);
    }

    fn kinesis_error(&self, operation: &'static str, error: impl std::error::Error) -> SourceError {
        SourceError::Kinesis {
            operation,
            stream: self.stream.clone(),
            message: DisplayErrorContext(&error).to_string(),
        }
    }
}

/// Whether sequence number `a` is at or after `b` (decimal strings of up to 128-bit numbers).
fn sequence_at_or_after(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    (a.len(), a) >= (b.len(), b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_sequence_numbers_as_numbers() {
        assert!(sequence_at_or_after("10", "9"));
        assert!(sequence_at_or_after("10", "10"));
        assert!(!sequence_at_or_after("9", "10"));
        assert!(sequence_at_or_after("0", "0"));
        assert!(sequence_at_or_after("0010", "10"));
        assert!(!sequence_at_or_after(
            "49590338271490256608559692538361571095921575989136588898",
            "49590338271490256608559692540925702759324208523137515618"
        ));
    }
}
