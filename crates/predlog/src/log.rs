//! The caller's side: [`PredictionLog`] and its [`Counters`].

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, warn};

use crate::config::{LogConfig, SinkTarget};
use crate::record::{LineWriter, PredictionRecord, RequestFields, RideFields};
use crate::sink::kinesis::KinesisSink;
use crate::sink::local::LocalSink;
use crate::sink::{Encoded, Sink};
use crate::spill::Spill;
use crate::worker::Worker;
use crate::{Error, Result, Stats};

/// Requests of at most this many rides are encoded straight into the inbox's chunk, under its
/// lock, rather than into a scratch buffer and then copied: for one ride per request, the copy into
/// the shared chunk (whose cache lines the other cores wrote last) cost as much as encoding.
const IN_PLACE_RIDES: usize = 4;

/// When the chunk the callers append to reaches this size, the background task is woken to write
/// it without waiting out the linger. At millions of records a second a linger gathers ~10 MB,
/// more than the caches hold: copying it for the write then ran at memory speed, a quarter of the
/// log's cost under the 100-ride stream. Batches of this size stay in cache and still make few
/// writes (under a thousand a second at 1 GB/s).
pub(crate) const EARLY_WRITE_BYTES: usize = 1 << 20;

/// A snapshot of the log's counters.
///
/// At rest (nothing in flight), `queued + recovered == sent + spill_backlog + queue_depth +
/// dropped + corrupt`, where `spilled` records are counted in `sent` or `spill_backlog` depending on
/// whether they have been sent from the spill yet, and `dropped` leaves out records refused after
/// shutdown (they were never queued).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Records accepted by [`PredictionLog::log`], [`PredictionLog::log_all`] and
    /// [`PredictionLog::log_request`] since start (not those refused after shutdown, which count
    /// only as `dropped`).
    pub queued: u64,
    /// Records acknowledged by the sink (including those sent from the spill).
    pub sent: u64,
    /// Records written to the spill (a record that is spilled, then sent, counts here and in `sent`).
    pub spilled: u64,
    /// Records that could not be queued, sent or spilled at all (spill disk failure, a record larger
    /// than the sink's limit, `log()` after shutdown). Stays 0 in normal operation and sink outages.
    pub dropped: u64,
    /// Failed sink attempts (a request that failed, or a batch Kinesis partly rejected).
    pub sink_errors: u64,
    /// Records found in the spill at start, left by a previous run.
    pub recovered: u64,
    /// Spill lines skipped because they were torn by a crash or unreadable.
    pub corrupt: u64,
    /// Records in memory, neither sent nor spilled yet.
    pub queue_depth: u64,
    /// Records in the spill not yet sent.
    pub spill_backlog: u64,
}

/// The hand-off between [`PredictionLog::log`] and the background task.
pub(crate) struct Inbox {
    /// Records already serialized by the callers (so that the work is spread over their threads
    /// rather than queued on the one background task): a chunk per record for Kinesis, one
    /// growing chunk of lines for the local sink.
    pub records: Vec<Encoded>,
    /// Records in `records`. Kept here, under the lock the callers take anyway, rather than in
    /// [`Stats::memory`]: an atomic shared with the background task's core cost each request more
    /// than the rest of the hand-off. The task moves it to `Stats::memory` when it takes them.
    pub count: u64,
    /// Records accepted since start ([`Counters::queued`]), for the same reason.
    pub queued: u64,
    /// Set by shutdown; checked under the lock so no record slips in after the last drain.
    pub closed: bool,
}

impl Inbox {
    /// Bytes in the chunk the local sink's callers append to (Kinesis chunks hold one record).
    pub fn last_chunk_bytes(&self) -> usize {
        self.records.last().map_or(0, |chunk| chunk.lines.len())
    }
}

/// State shared by the handles and the background task.
pub(crate) struct Shared {
    pub inbox: Mutex<Inbox>,
    pub notify: Notify,
    pub stats: Arc<Stats>,
    /// Whether records need a Kinesis partition key.
    pub keyed: bool,
    warned_closed: AtomicBool,
}

impl Shared {
    /// Locks the inbox, ignoring poisoning: under the lock there are only pushes, swaps, and the
    /// encoding of small requests into the last chunk (numbers and strings into a `Vec`, which
    /// cannot panic short of running out of memory); the counts are raised after them.
    pub fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The prediction log: cheap to clone, all clones feed the same background task.
///
/// Created with [`PredictionLog::start`] inside a tokio runtime; call [`PredictionLog::shutdown`]
/// before exiting, or records still in memory are lost.
#[derive(Clone)]
pub struct PredictionLog {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    target: String,
    shutdown: watch::Sender<Option<Instant>>,
    worker: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for PredictionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PredictionLog").field("target", &self.inner.target).field("counters", &self.counters()).finish()
    }
}

impl PredictionLog {
    /// Opens the sink and the spill and starts the background task.
    ///
    /// A Kinesis client is built from the environment (`AWS_ENDPOINT_URL`, region, credentials).
    /// Fails if the configuration is invalid, a directory cannot be created, or the Kinesis stream
    /// does not exist; an unreachable Kinesis endpoint is only a warning (records spill until it is
    /// up). Records left in the spill by a previous run are sent before new ones.
    pub async fn start(config: LogConfig) -> Result<Self> {
        config.validate()?;
        match &config.target {
            SinkTarget::Kinesis { .. } => {
                let shared = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
                if shared.region().is_none() {
                    return Err(Error::InvalidConfig("no AWS region configured for kinesis (set AWS_REGION)".into()));
                }
                let client = aws_sdk_kinesis::Client::new(&shared);
                Self::start_with_kinesis_client(config, client).await
            }
            SinkTarget::Local(dir) => {
                let sink = LocalSink::open(dir, config.segment_bytes, config.segment_age)?;
                Self::launch(config, Sink::Local(sink)).await
            }
        }
    }

    /// Like [`PredictionLog::start`] for a `kinesis://` target, with a given client (e.g. one
    /// configured for a test endpoint). Its retry and timeout settings are replaced by the log's.
    pub async fn start_with_kinesis_client(config: LogConfig, client: aws_sdk_kinesis::Client) -> Result<Self> {
        config.validate()?;
        let SinkTarget::Kinesis { stream } = &config.target else {
            return Err(Error::InvalidConfig(format!("a kinesis client was given for target {}", config.target)));
        };
        let sink = KinesisSink::connect(client, stream.clone(), config.kinesis.clone()).await?;
        Self::launch(config, Sink::Kinesis(sink)).await
    }

    async fn launch(config: LogConfig, sink: Sink) -> Result<Self> {
        let stats = Arc::new(Stats::default());
        let spill = {
            let (dir, stats) = (config.spill_dir.clone(), stats.clone());
            tokio::task::spawn_blocking(move || Spill::open(&dir, stats))
                .await
                .map_err(|error| Error::Startup(error.to_string()))??
        };
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox { records: Vec::with_capacity(4096), count: 0, queued: 0, closed: false }),
            notify: Notify::new(),
            stats,
            keyed: sink.keyed(),
            warned_closed: AtomicBool::new(false),
        });
        let (shutdown, shutdown_rx) = watch::channel(None);
        let target = sink.describe();
        let worker = Worker::new(&config, sink, spill, shared.clone(), shutdown_rx);
        let handle = tokio::spawn(worker.run());
        Ok(PredictionLog {
            inner: Arc::new(Inner { shared, target, shutdown, worker: tokio::sync::Mutex::new(Some(handle)) }),
        })
    }

    /// Logs one record. Never blocks and never fails: the record is serialized here, then
    /// appended to the in-memory queue under a short lock; everything else happens on the
    /// background task.
    ///
    /// The queue itself is not capped here: the background task drains it continuously and moves
    /// everything beyond [`LogConfig::queue_capacity`] to the spill, so a full queue costs disk
    /// writes, not a blocked or failed call. (Waiting or writing to disk here would put I/O latency
    /// on the prediction path; dropping would lose records.) Only after [`PredictionLog::shutdown`]
    /// are records refused, counted as `dropped`.
    pub fn log<S: AsRef<str>>(&self, record: PredictionRecord<S>) {
        self.log_all(std::iter::once(record));
    }

    /// Logs several records (one request's rides) in order, under one lock: like
    /// [`PredictionLog::log`] for each, cheaper.
    pub fn log_all<S, I>(&self, records: I)
    where
        S: AsRef<str>,
        I: IntoIterator<Item = PredictionRecord<S>>,
    {
        let shared = &self.inner.shared;
        if shared.keyed {
            // Kinesis takes records one by one: a chunk (and partition key) each.
            let mut encoded = records.into_iter().map(|record| Encoded::new(&record, true));
            // The common case is one record per request: no vector for it (an empty one does not allocate).
            let Some(first) = encoded.next() else { return };
            let mut rest: Vec<Encoded> = encoded.collect();
            self.enqueue(1 + rest.len(), |inbox| {
                inbox.push(first);
                inbox.append(&mut rest);
            });
            return;
        }
        self.log_lines(|lines, _| {
            for record in records {
                lines.push(&record);
            }
        });
    }

    /// Logs the records of one request's rides, in order: like [`PredictionLog::log_all`] with
    /// [`RideFields::record`] for each ride, cheaper (for the local sink, the text the rides share
    /// is written once per request, and the model's once per model).
    pub fn log_request<'a, I>(&self, request: RequestFields<'_>, rides: I)
    where
        I: IntoIterator<Item = RideFields<'a>>,
    {
        if self.inner.shared.keyed {
            self.log_all(rides.into_iter().map(|ride| ride.record(&request)));
            return;
        }
        let mut rides = rides.into_iter();
        if rides.size_hint().1.is_some_and(|most| most <= IN_PLACE_RIDES) {
            // Taken out of the iterator first: it runs no code of the caller's under the lock.
            let mut few = [None; IN_PLACE_RIDES];
            let mut count = 0;
            for slot in &mut few {
                *slot = rides.next();
                if slot.is_none() {
                    break;
                }
                count += 1;
            }
            // Looked for only when every slot is full: an iterator is not asked again after `None`.
            let extra = if count == IN_PLACE_RIDES { rides.next() } else { None };
            if extra.is_none() {
                self.log_in_place(&request, &few[..count]);
                return;
            }
            // More rides than the iterator said: the general way.
            let rides = few.into_iter().flatten().chain(extra).chain(rides);
            self.log_lines(|lines, writer| lines.push_request(writer, &request, rides));
            return;
        }
        self.log_lines(|lines, writer| lines.push_request(writer, &request, rides));
    }

    /// Encodes a small request's lines straight into the inbox's last chunk, under its lock.
    fn log_in_place(&self, request: &RequestFields<'_>, rides: &[Option<RideFields<'_>>]) {
        if rides.is_empty() {
            return;
        }
        self.with_scratch(|_, writer| {
            writer.begin(request);
            self.enqueue(rides.len(), |chunks| {
                let chunk = last_chunk(chunks);
                for ride in rides.iter().flatten() {
                    chunk.push_ride(writer, ride);
                }
            });
        });
    }

    /// Encodes lines with `encode` into this thread's scratch buffer, outside the lock, then
    /// appends them to the inbox's last chunk: no allocation per record or request.
    fn log_lines(&self, encode: impl FnOnce(&mut Encoded, &mut LineWriter)) {
        self.with_scratch(|lines, writer| self.encode_and_enqueue(lines, writer, encode));
    }

    /// Runs `work` with this thread's scratch buffer and line writer, or new ones when they are
    /// busy (a records iterator that logs itself).
    fn with_scratch(&self, work: impl FnOnce(&mut Encoded, &mut LineWriter)) {
        thread_local! {
            static SCRATCH: std::cell::RefCell<(Encoded, LineWriter)> = std::cell::RefCell::default();
        }
        let mut work = Some(work);
        let _ = SCRATCH.try_with(|scratch| {
            if let Ok(mut scratch) = scratch.try_borrow_mut()
                && let Some(work) = work.take()
            {
                let (lines, writer) = &mut *scratch;
                work(lines, writer);
                // A request with a huge batch should not keep its memory on this thread.
                if lines.lines.capacity() > 1 << 20 {
                    *lines = Encoded::default();
                }
            }
        });
        if let Some(work) = work.take() {
            work(&mut Encoded::default(), &mut LineWriter::default());
        }
    }

    fn encode_and_enqueue(
        &self,
        scratch: &mut Encoded,
        writer: &mut LineWriter,
        encode: impl FnOnce(&mut Encoded, &mut LineWriter),
    ) {
        scratch.lines.clear();
        scratch.count = 0;
        encode(scratch, writer);
        if scratch.count == 0 {
            return;
        }
        self.enqueue(scratch.count, |chunks| {
            let chunk = last_chunk(chunks);
            chunk.lines.extend_from_slice(&scratch.lines);
            chunk.count += scratch.count;
        });
    }

    /// Adds `count` records to the inbox with `add`, under its lock, and wakes the background task
    /// if it was empty; after shutdown they are dropped (and counted) instead.
    fn enqueue(&self, count: usize, add: impl FnOnce(&mut Vec<Encoded>)) {
        let shared = &self.inner.shared;
        let count = count as u64;
        let mut inbox = shared.inbox();
        if inbox.closed {
            drop(inbox);
            shared.stats.dropped.fetch_add(count, Relaxed);
            if !shared.warned_closed.swap(true, Relaxed) {
                warn!(target = self.inner.target, "prediction logged after shutdown; dropped");
            }
            return;
        }
        let was_empty = inbox.count == 0;
        let before = inbox.last_chunk_bytes();
        add(&mut inbox.records);
        inbox.queued += count;
        inbox.count += count;
        let reached = before < EARLY_WRITE_BYTES && inbox.last_chunk_bytes() >= EARLY_WRITE_BYTES;
        drop(inbox);
        if was_empty || reached {
            shared.notify.notify_one();
        }
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        let shared = &self.inner.shared;
        let stats = &shared.stats;
        // Under the lock: the background task moves the inbox's count to `memory` under it too.
        let inbox = shared.inbox();
        Counters {
            queued: inbox.queued,
            sent: stats.sent.load(Relaxed),
            spilled: stats.spilled.load(Relaxed),
            dropped: stats.dropped.load(Relaxed),
            sink_errors: stats.sink_errors.load(Relaxed),
            recovered: stats.recovered.load(Relaxed),
            corrupt: stats.corrupt.load(Relaxed),
            queue_depth: stats.memory.load(Relaxed) + inbox.count,
            spill_backlog: stats.backlog.load(Relaxed),
        }
    }

    /// Stops accepting records, sends what is queued (and spilled) until `deadline` from now, writes
    /// whatever is left to the spill for the next run, closes the sink and returns the final
    /// counters. Calling it again (from any clone) waits for the first call and returns the counters.
    pub async fn shutdown(&self, deadline: Duration) -> Counters {
        let inner = &self.inner;
        let mut worker = inner.worker.lock().await;
        if let Some(handle) = worker.take() {
            inner.shared.inbox().closed = true;
            inner.shared.notify.notify_one();
            inner.shutdown.send_replace(Some(Instant::now() + deadline));
            if let Err(error) = handle.await {
                error!(target = inner.target, %error, "prediction log task failed");
            }
        }
        self.counters()
    }
}

/// The inbox's last chunk, which the local sink's callers append to (a new one if there is none).
fn last_chunk(chunks: &mut Vec<Encoded>) -> &mut Encoded {
    if chunks.is_empty() {
        chunks.push(Encoded::default());
    }
    let last = chunks.len() - 1;
    &mut chunks[last]
}
