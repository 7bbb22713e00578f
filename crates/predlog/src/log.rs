//! The caller's side: [`PredictionLog`] and its [`Counters`].

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, warn};

use crate::config::{LogConfig, SinkTarget};
use crate::queued::Requests;
use crate::record::{PredictionRecord, RequestFields, RideFields};
use crate::sink::kinesis::KinesisSink;
use crate::sink::local::LocalSink;
use crate::sink::{Encoded, Sink};
use crate::spill::Spill;
use crate::worker::Worker;
use crate::{Error, Result, Stats};

/// Requests of at most this many rides are queued straight into the thread's queue, under its
/// lock, rather than into a scratch buffer and then copied.
const IN_PLACE_RIDES: usize = 4;

/// When the requests waiting in one thread's queue for the local sink reach this size (in their
/// compact form; 0.7–1 MiB of JSON lines), the background task is woken to write them without
/// waiting out the linger. At millions of records a second a linger gathered ~10 MB of lines,
/// more than the caches hold: copying them for the write then ran at memory speed, a quarter of
/// the log's cost under the 100-ride stream. Batches of this size stay in cache and still make
/// few writes (under a thousand a second at 1 GB/s).
pub(crate) const EARLY_WRITE_BYTES: usize = 256 * 1024;

/// A thread's scratch buffer or a stream's [`BufferedLog`] that grew past this (a request with a
/// huge batch) is let go rather than kept.
const KEEP_BUFFER_BYTES: usize = 1 << 20;

/// A snapshot of the log's counters.
///
/// At rest (nothing in flight), `queued + recovered == sent + spill_backlog + queue_depth +
/// dropped + corrupt`, where `spilled` records are counted in `sent` or `spill_backlog` depending on
/// whether they have been sent from the spill yet, and `dropped` leaves out records refused after
/// shutdown (they were never queued).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Records accepted by [`PredictionLog::log`], [`PredictionLog::log_all`] and
    /// [`PredictionLog::log_request`] (and by a [`BufferedLog`], once flushed) since start (not
    /// those refused after shutdown, which count only as `dropped`).
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

/// The hand-off between [`PredictionLog::log`] and the background task, for Kinesis.
pub(crate) struct Inbox {
    /// Records already serialized by the callers (so that the work is spread over their threads
    /// rather than queued on the one background task), a chunk (and partition key) each.
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

/// The hand-off for the local sink: a queue per thread that logs.
///
/// One queue shared by all threads cost each request a transfer of the lock's cache line from the
/// core that took it last (and the releasing store waited for it): in a profile of the predictor
/// under a one-ride stream, about a quarter of what the log cost. A thread's own queue stays in
/// its core's cache; the background task takes them all every few milliseconds and merges them
/// by answer time (see [`crate::queued::encode_merged`]).
pub(crate) struct Slots {
    pub list: Vec<Arc<Slot>>,
    /// Records accepted by queues since removed (their threads ended).
    pub retired_queued: u64,
    /// Set by shutdown: queues made after it are closed too.
    pub closed: bool,
}

/// One thread's queue (padded to its own cache lines, so that two threads' queues never share one).
#[repr(align(128))]
pub(crate) struct Slot {
    queue: Mutex<SlotQueue>,
}

/// What a [`Slot`] holds; `count`, `queued` and `closed` as in [`Inbox`].
#[derive(Default)]
pub(crate) struct SlotQueue {
    /// Requests in a compact form, serialized by the background task when it takes them.
    pub requests: Requests,
    pub count: u64,
    pub queued: u64,
    pub closed: bool,
}

/// What the callers' side of a queue counts under its lock ([`Inbox`] and [`SlotQueue`] alike).
pub(crate) struct Tally<'a> {
    pub count: &'a mut u64,
    pub queued: &'a mut u64,
    pub closed: bool,
}

impl Tally<'_> {
    /// Counts `count` records added; returns whether the queue held none before.
    fn add(self, count: u64) -> bool {
        let was_empty = *self.count == 0;
        *self.count += count;
        *self.queued += count;
        was_empty
    }
}

/// A queue the callers add records to under its lock.
pub(crate) trait Tallied {
    fn tally(&mut self) -> Tally<'_>;
}

impl Tallied for Inbox {
    fn tally(&mut self) -> Tally<'_> {
        Tally { count: &mut self.count, queued: &mut self.queued, closed: self.closed }
    }
}

impl Tallied for SlotQueue {
    fn tally(&mut self) -> Tally<'_> {
        Tally { count: &mut self.count, queued: &mut self.queued, closed: self.closed }
    }
}

impl Slot {
    /// Locks the queue, ignoring poisoning (see [`Shared::inbox`]).
    pub fn lock(&self) -> MutexGuard<'_, SlotQueue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// State shared by the handles and the background task.
///
/// Locks are taken in this order: `inbox`, `slots`, a slot's queue.
pub(crate) struct Shared {
    pub inbox: Mutex<Inbox>,
    pub slots: Mutex<Slots>,
    /// Tells this log's queues apart in the threads' lists (a number never reused, unlike an
    /// address).
    id: u64,
    pub notify: Notify,
    pub stats: Arc<Stats>,
    /// Whether records need a Kinesis partition key.
    pub keyed: bool,
    /// Records in one request to the sink (Kinesis: `PutRecords`): a full one waiting is worth a
    /// write at once.
    full_batch: u64,
    warned_closed: AtomicBool,
}

impl Shared {
    /// Locks the inbox, ignoring poisoning: under the lock there are only pushes, swaps, and the
    /// copying of small requests' fields into a `Vec` (which cannot panic short of running out of
    /// memory); the counts are raised after them.
    pub fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the list of per-thread queues, ignoring poisoning (as for the inbox).
    pub fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Refuses records from now on: the inbox and every queue, present and future.
    pub fn close(&self) {
        self.inbox().closed = true;
        let mut slots = self.slots();
        slots.closed = true;
        for slot in &slots.list {
            slot.lock().closed = true;
        }
    }

    /// Records accepted since start ([`Counters::queued`]), records waiting in the inbox and the
    /// queues, and records the background task holds in memory, read together: the task moves
    /// records from the queues to `memory` under the same locks.
    pub fn accepted(&self) -> (u64, u64, u64) {
        let inbox = self.inbox();
        let slots = self.slots();
        let queues: Vec<_> = slots.list.iter().map(|slot| slot.lock()).collect();
        let (queued, waiting) =
            queues.iter().fold((inbox.queued + slots.retired_queued, inbox.count), |(queued, waiting), queue| {
                (queued + queue.queued, waiting + queue.count)
            });
        (queued, waiting, self.stats.memory.load(Relaxed))
    }

    /// Whether the records waiting are worth taking now rather than at the end of the linger or
    /// of the delivery under way: for the local sink, [`EARLY_WRITE_BYTES`] of requests in all
    /// threads' queues; for Kinesis, a full `PutRecords` in the inbox.
    pub fn worth_a_write(&self) -> bool {
        if self.keyed {
            return self.inbox().count >= self.full_batch;
        }
        self.slots().list.iter().map(|slot| slot.lock().requests.len()).sum::<usize>() >= EARLY_WRITE_BYTES
    }

    /// A new queue for a thread, listed for the background task (a closed one, not listed, after
    /// shutdown).
    fn new_slot(&self) -> Arc<Slot> {
        let mut slots = self.slots();
        let queue = SlotQueue { closed: slots.closed, ..SlotQueue::default() };
        let slot = Arc::new(Slot { queue: Mutex::new(queue) });
        if !slots.closed {
            slots.list.push(slot.clone());
        }
        slot
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
        // Answer times are counted from here on (earlier ones would all count as this moment).
        crate::queued::clock_base();
        let stats = Arc::new(Stats::default());
        let spill = {
            let (dir, stats) = (config.spill_dir.clone(), stats.clone());
            tokio::task::spawn_blocking(move || Spill::open(&dir, stats))
                .await
                .map_err(|error| Error::Startup(error.to_string()))??
        };
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox { records: Vec::with_capacity(4096), count: 0, queued: 0, closed: false }),
            slots: Mutex::new(Slots { list: Vec::new(), retired_queued: 0, closed: false }),
            id: {
                static NEXT_ID: AtomicU64 = AtomicU64::new(0);
                NEXT_ID.fetch_add(1, Relaxed)
            },
            notify: Notify::new(),
            stats,
            keyed: sink.keyed(),
            full_batch: sink.batch_limits().0 as u64,
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

    /// Logs one record. Never blocks and never fails: the record is appended to the in-memory
    /// queue under a short lock (serialized first for Kinesis); everything else happens on the
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
                inbox.records.push(first);
                inbox.records.append(&mut rest);
            });
            return;
        }
        let at = std::time::Instant::now();
        self.with_scratch(|scratch| {
            for record in records {
                scratch.push_record(&record, at);
            }
            self.enqueue_scratch(scratch);
        });
    }

    /// Logs the records of one request's rides, in order: like [`PredictionLog::log_all`] with
    /// [`RideFields::record`] for each ride, cheaper (for the local sink, what the rides share is
    /// queued once per request, and the model's text is written once per model).
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
            let Some(first) = rides.next() else { return };
            let Some(second) = rides.next() else {
                // One ride, a stream's usual message: no array to fill.
                self.log_in_place(&request, 1, [first]);
                return;
            };
            let mut few = [None; IN_PLACE_RIDES];
            (few[0], few[1]) = (Some(first), Some(second));
            let mut count = 2;
            for slot in &mut few[2..] {
                *slot = rides.next();
                if slot.is_none() {
                    break;
                }
                count += 1;
            }
            // Looked for only when every slot is full: an iterator is not asked again after `None`.
            let extra = if count == IN_PLACE_RIDES { rides.next() } else { None };
            if extra.is_none() {
                self.log_in_place(&request, count, few.into_iter().flatten());
                return;
            }
            // More rides than the iterator said: the general way.
            self.log_through_scratch(&request, few.into_iter().flatten().chain(extra).chain(rides));
            return;
        }
        self.log_through_scratch(&request, rides);
    }

    /// A buffer of the caller's own in front of this log, for a task that logs many requests in
    /// a row (a stream's): see [`BufferedLog`].
    pub fn buffered(&self) -> BufferedLog {
        BufferedLog { log: self.clone(), requests: Requests::default() }
    }

    /// Queues a request through this thread's scratch queue (see [`PredictionLog::with_scratch`]).
    fn log_through_scratch<'a>(&self, request: &RequestFields<'_>, rides: impl Iterator<Item = RideFields<'a>>) {
        self.with_scratch(|scratch| {
            scratch.push_request(request, rides);
            self.enqueue_scratch(scratch);
        });
    }

    /// Queues a small request's `count` rides, already taken from the caller's iterator, straight
    /// into this thread's queue, under its lock.
    fn log_in_place<'a>(
        &self,
        request: &RequestFields<'_>,
        count: usize,
        rides: impl IntoIterator<Item = RideFields<'a>>,
    ) {
        self.enqueue_local(count, |requests| requests.push_request(request, rides));
    }

    /// Runs `work` with this thread's (empty) scratch queue, or a new one when it is busy (a
    /// records iterator that logs itself): requests are put there outside the lock, without
    /// running the caller's code under it, and then appended to this thread's queue.
    fn with_scratch(&self, work: impl FnOnce(&mut Requests)) {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Requests> = std::cell::RefCell::default();
        }
        let mut work = Some(work);
        let _ = SCRATCH.try_with(|scratch| {
            if let Ok(mut scratch) = scratch.try_borrow_mut()
                && let Some(work) = work.take()
            {
                scratch.clear();
                work(&mut scratch);
                // A request with a huge batch should not keep its memory on this thread.
                if scratch.capacity() > KEEP_BUFFER_BYTES {
                    *scratch = Requests::default();
                }
            }
        });
        if let Some(work) = work.take() {
            work(&mut Requests::default());
        }
    }

    /// Moves the scratch queue's requests to this thread's queue.
    fn enqueue_scratch(&self, scratch: &mut Requests) {
        if scratch.is_empty() {
            return;
        }
        self.enqueue_local(scratch.count(), |requests| requests.append(scratch));
    }

    /// Adds `count` records to this thread's queue with `add` (local sink); see
    /// [`PredictionLog::enqueue_into`]. The background task is also woken when the queue has
    /// become worth a write.
    fn enqueue_local(&self, count: usize, add: impl FnOnce(&mut Requests)) {
        with_slot(&self.inner.shared, |slot| {
            self.enqueue_into(slot.lock(), count, |queue| {
                let before = queue.requests.len();
                add(&mut queue.requests);
                before < EARLY_WRITE_BYTES && queue.requests.len() >= EARLY_WRITE_BYTES
            });
        });
    }

    /// Adds `count` records to the inbox with `add` (Kinesis); see [`PredictionLog::enqueue_into`].
    /// The background task is also woken when a full `PutRecords` is waiting.
    fn enqueue(&self, count: usize, add: impl FnOnce(&mut Inbox)) {
        self.enqueue_into(self.inner.shared.inbox(), count, |inbox| {
            add(inbox);
            // A full `PutRecords` waiting (counted once `add` returns, see `enqueue_into`).
            let full = self.inner.shared.full_batch;
            inbox.count < full && inbox.count + count as u64 >= full
        });
    }

    /// Adds `count` records to the locked `queue` with `add`, counts them, and wakes the background
    /// task if the queue was empty or `add` says it is worth a write now; after shutdown they are
    /// dropped (and counted) instead.
    fn enqueue_into<Q: Tallied>(&self, mut queue: MutexGuard<'_, Q>, count: usize, add: impl FnOnce(&mut Q) -> bool) {
        let count = count as u64;
        if queue.tally().closed {
            drop(queue);
            self.refuse(count);
            return;
        }
        let worth_a_write = add(&mut queue);
        // Counted after `add`, which leaves the counts alone.
        let was_empty = queue.tally().add(count);
        drop(queue);
        if was_empty || worth_a_write {
            self.inner.shared.notify.notify_one();
        }
    }

    /// Counts records logged after shutdown as dropped (and says so once).
    fn refuse(&self, count: u64) {
        let shared = &self.inner.shared;
        shared.stats.dropped.fetch_add(count, Relaxed);
        if !shared.warned_closed.swap(true, Relaxed) {
            warn!(target = self.inner.target, "prediction logged after shutdown; dropped");
        }
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        let shared = &self.inner.shared;
        let stats = &shared.stats;
        let (queued, waiting, memory) = shared.accepted();
        Counters {
            queued,
            sent: stats.sent.load(Relaxed),
            spilled: stats.spilled.load(Relaxed),
            dropped: stats.dropped.load(Relaxed),
            sink_errors: stats.sink_errors.load(Relaxed),
            recovered: stats.recovered.load(Relaxed),
            corrupt: stats.corrupt.load(Relaxed),
            queue_depth: memory + waiting,
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
            inner.shared.close();
            inner.shared.notify.notify_one();
            inner.shutdown.send_replace(Some(Instant::now() + deadline));
            if let Err(error) = handle.await {
                error!(target = inner.target, %error, "prediction log task failed");
            }
        }
        self.counters()
    }
}

/// A caller's own buffer of requests in front of a [`PredictionLog`], for a task that logs many
/// requests in a row: a stream's, which answers message after message in one poll.
///
/// [`BufferedLog::log_request`] puts a request in the buffer, without the lock of the thread's
/// queue; [`BufferedLog::flush`] moves everything in it to that queue in one go (one lock and one
/// copy for many requests). Flush before every point where the task may give up its thread (an
/// `.await` that may wait, or a yield for tokio's cooperative budget): then no record waits in
/// the buffer while the task sleeps, and a stream's records reach its thread's queue in the order
/// it answered them. The buffer also flushes itself when it holds [`BUFFER_FLUSH_BYTES`], and when
/// it is dropped (a request whose rides iterator panicked is left out whole).
///
/// Records a task holds here are queued when it flushes, which may be after other threads have
/// queued records answered later (within one pass of the task: until it would wait, or 32 KiB of
/// requests; tens to hundreds of microseconds under load): see the ordering notes in
/// `docs/prediction-log.md`. For Kinesis (records serialized one by one on the
/// caller's thread) it queues each request at once, like [`PredictionLog::log_request`].
pub struct BufferedLog {
    log: PredictionLog,
    requests: Requests,
}

/// A [`BufferedLog`] holding this many bytes of requests (in the compact form: ~80 bytes a
/// one-ride request) moves them to the thread's queue at once, so that the buffer stays in the
/// core's cache.
pub const BUFFER_FLUSH_BYTES: usize = 32 * 1024;

impl BufferedLog {
    /// Buffers one request's rides, in order (see [`PredictionLog::log_request`]).
    pub fn log_request<'a, I>(&mut self, request: RequestFields<'_>, rides: I)
    where
        I: IntoIterator<Item = RideFields<'a>>,
    {
        if self.log.inner.shared.keyed {
            self.log.log_request(request, rides);
            return;
        }
        self.requests.push_request(&request, rides);
        if self.requests.len() >= BUFFER_FLUSH_BYTES {
            self.flush();
        }
    }

    /// Moves the buffered requests to this thread's queue.
    pub fn flush(&mut self) {
        if self.requests.is_empty() {
            return;
        }
        self.log.enqueue_scratch(&mut self.requests);
        // Emptied by the queue (which leaves it the model, for the next requests), or refused
        // after shutdown (counted as dropped).
        if !self.requests.is_empty() {
            self.requests.clear();
        }
        // A huge request should not keep its memory in a long-lived stream.
        if self.requests.capacity() > KEEP_BUFFER_BYTES {
            self.requests = Requests::default();
        }
    }

    /// Records buffered, not yet in the log's queue.
    pub fn buffered(&self) -> usize {
        self.requests.count()
    }
}

impl Drop for BufferedLog {
    fn drop(&mut self) {
        self.flush();
    }
}

impl fmt::Debug for BufferedLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferedLog").field("log", &self.log).field("buffered", &self.buffered()).finish()
    }
}

/// Runs `work` with the calling thread's queue in `shared` (made and listed on the thread's first
/// record). The thread keeps a list of its queues, one per log it logged to (usually one).
fn with_slot(shared: &Shared, work: impl FnOnce(&Slot)) {
    thread_local! {
        static SLOTS: RefCell<Vec<(u64, Arc<Slot>)>> = const { RefCell::new(Vec::new()) };
    }
    let mut work = Some(work);
    let _ = SLOTS.try_with(|slots| {
        if let Ok(slots) = slots.try_borrow()
            && let Some((_, slot)) = slots.iter().find(|(id, _)| *id == shared.id)
            && let Some(work) = work.take()
        {
            work(slot);
            return;
        }
        if let Ok(mut slots) = slots.try_borrow_mut()
            && let Some(work) = work.take()
        {
            // Forget the queues of logs that were shut down (the background task drops a queue
            // from its list once no thread holds it and it is empty).
            slots.retain(|(_, slot)| !slot.lock().closed);
            let slot = shared.new_slot();
            work(&slot);
            slots.push((shared.id, slot));
        }
    });
    // The thread is ending (its thread-locals are gone) or `work` logs itself: a queue of its own
    // for this call.
    if let Some(work) = work.take() {
        work(&shared.new_slot());
    }
}
