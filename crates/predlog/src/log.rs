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
use crate::queued::Lines;
use crate::record::{LineWriter, PredictionRecord, RequestFields, RideFields};
use crate::sink::kinesis::KinesisSink;
use crate::sink::local::LocalSink;
use crate::sink::{Encoded, Sink};
use crate::spill::Spill;
use crate::worker::Worker;
use crate::{Error, Result, Stats};

/// Requests of at most this many rides (by the iterator's size hint) have their lines written
/// straight into the thread's queue, under its lock; larger ones are written into a scratch
/// buffer first, so that the background task, the only other taker of that lock, never waits
/// long for it.
const IN_PLACE_RIDES: usize = 256;

/// When the lines waiting in one thread's queue for the local sink reach this size, the
/// background task is woken to write them without waiting out the linger. At millions of records
/// a second a linger gathered ~10 MB of lines, more than the caches hold: copying them for the
/// write then ran at memory speed, a quarter of the log's cost under the 100-ride stream. Batches
/// of this size stay in cache and still make few writes (under two thousand a second at 1 GB/s).
pub(crate) const EARLY_WRITE_BYTES: usize = 512 * 1024;

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
/// by answer time (see [`crate::queued::merge`]).
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

/// What a [`Slot`] holds; `queued` and `closed` as in [`Inbox`].
#[derive(Default)]
pub(crate) struct SlotQueue {
    /// The lines of the requests waiting (their count is the records waiting).
    pub lines: Lines,
    /// Writes them: the thread's own, so it keeps the model's text and recent digits.
    pub writer: LineWriter,
    pub queued: u64,
    pub closed: bool,
}

impl Slot {
    /// Locks the queue, ignoring poisoning: a caller's rides iterator runs under it and may panic,
    /// but the lines of a request cut short are never marked (see [`Lines`]) and the counts are
    /// raised after the lines are written.
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
    warned_closed: AtomicBool,
}

impl Shared {
    /// Locks the inbox, ignoring poisoning: under the lock there are only pushes and swaps (which
    /// cannot panic short of running out of memory); the counts are raised after them.
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
                (queued + queue.queued, waiting + queue.lines.count() as u64)
            });
        (queued, waiting, self.stats.memory.load(Relaxed))
    }

    /// Bytes of the lines waiting for the local sink, in all threads' queues (see
    /// [`EARLY_WRITE_BYTES`]).
    pub fn waiting_bytes(&self) -> usize {
        self.slots().list.iter().map(|slot| slot.lock().lines.len()).sum()
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
        self.with_scratch(|scratch, _| {
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
        let rides = rides.into_iter();
        let id = self.inner.shared.id;
        if rides.size_hint().1.is_some_and(|most| most <= IN_PLACE_RIDES) && Writing::can_enter(id) {
            // The caller's iterator runs under the thread's queue lock: only the background task
            // also takes it, and a few hundred rides take microseconds. Records the iterator logs
            // itself wait in `NESTED` until the request's lines are written (see `enqueue_local`).
            self.enqueue_local(|lines, writer| {
                {
                    let _writing = Writing::enter(id);
                    lines.push_request(writer, &request, rides);
                }
                let _ = NESTED.try_with(|nested| {
                    if let Ok(mut nested) = nested.try_borrow_mut() {
                        lines.append(&mut nested);
                    }
                });
            });
            return;
        }
        self.with_scratch(|scratch, writer| {
            scratch.push_request(writer, &request, rides);
            self.enqueue_scratch(scratch);
        });
    }

    /// Runs `work` with this thread's (empty) scratch lines and line writer, or new ones when they
    /// are busy (a records iterator that logs itself): lines are written there outside the queue's
    /// lock and then appended to this thread's queue.
    fn with_scratch(&self, work: impl FnOnce(&mut Lines, &mut LineWriter)) {
        thread_local! {
            static SCRATCH: RefCell<(Lines, LineWriter)> = RefCell::default();
        }
        let mut work = Some(work);
        let _ = SCRATCH.try_with(|scratch| {
            if let Ok(mut scratch) = scratch.try_borrow_mut()
                && let Some(work) = work.take()
            {
                let (lines, writer) = &mut *scratch;
                lines.clear();
                work(lines, writer);
                // A request with a huge batch should not keep its memory on this thread.
                if lines.capacity() > 1 << 20 {
                    *lines = Lines::default();
                }
            }
        });
        if let Some(work) = work.take() {
            work(&mut Lines::default(), &mut LineWriter::default());
        }
    }

    /// Moves the scratch lines to this thread's queue.
    fn enqueue_scratch(&self, scratch: &mut Lines) {
        if scratch.is_empty() {
            return;
        }
        self.enqueue_local(|lines, _| lines.append(scratch));
    }

    /// Adds records to this thread's queue with `add`, under its lock, and wakes the background
    /// task if the queue was empty or has become worth a write; after shutdown they are dropped
    /// (and counted) instead.
    fn enqueue_local(&self, add: impl FnOnce(&mut Lines, &mut LineWriter)) {
        let shared = &self.inner.shared;
        if Writing::is_writing(shared.id) {
            // Logged by a rides iterator while this thread writes that request's lines into this
            // log's queue, whose lock it holds: the lines wait in `NESTED` for that call to add
            // them. (Such calls take the scratch path, so `add` runs no caller code here.)
            let mut add = Some(add);
            let _ = NESTED.try_with(|nested| {
                if let Ok(mut nested) = nested.try_borrow_mut()
                    && let Some(add) = add.take()
                {
                    add(&mut nested, &mut LineWriter::default());
                }
            });
            if let Some(add) = add {
                // Not reached (no caller code runs while `NESTED` is borrowed), short of the
                // thread's locals being destroyed in between; counted rather than lost silently.
                let mut lost = Lines::default();
                add(&mut lost, &mut LineWriter::default());
                shared.stats.dropped.fetch_add(lost.count() as u64, Relaxed);
                error!(target = self.inner.target, records = lost.count(), "prediction log: nested records dropped");
            }
            return;
        }
        with_slot(shared, |slot| {
            let mut queue = slot.lock();
            if queue.closed {
                drop(queue);
                let mut refused = Lines::default();
                add(&mut refused, &mut LineWriter::default());
                if !refused.is_empty() {
                    self.refuse(refused.count() as u64);
                }
                return;
            }
            let (count, bytes) = (queue.lines.count(), queue.lines.len());
            let SlotQueue { lines, writer, .. } = &mut *queue;
            add(lines, writer);
            let added = queue.lines.count() - count;
            queue.queued += added as u64;
            let reached = bytes < EARLY_WRITE_BYTES && queue.lines.len() >= EARLY_WRITE_BYTES;
            drop(queue);
            if (count == 0 && added > 0) || reached {
                shared.notify.notify_one();
            }
        });
    }

    /// Adds `count` records to the inbox with `add` (Kinesis), under its lock, and wakes the
    /// background task if it was empty; after shutdown they are dropped (and counted) instead.
    fn enqueue(&self, count: usize, add: impl FnOnce(&mut Inbox)) {
        let shared = &self.inner.shared;
        let count = count as u64;
        let mut inbox = shared.inbox();
        if inbox.closed {
            drop(inbox);
            self.refuse(count);
            return;
        }
        let was_empty = inbox.count == 0;
        add(&mut inbox);
        inbox.queued += count;
        inbox.count += count;
        drop(inbox);
        if was_empty {
            shared.notify.notify_one();
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

thread_local! {
    /// Lines logged by a rides iterator while its request's lines are written into this thread's
    /// queue of the same log (see [`Writing`]), added to the queue right after them. Should the
    /// iterator panic, they are added after the thread's next request instead.
    static NESTED: RefCell<Lines> = RefCell::default();
}

/// Marks the thread as writing a request's lines into its queue of one log, under the queue's
/// lock, while the caller's rides iterator runs: a record that iterator logs to the same log must
/// not take that lock again (see [`PredictionLog::enqueue_local`]).
struct Writing {
    /// What was marked before (a log's iterator that logs to another log, writing in place too).
    previous: u64,
}

impl Writing {
    thread_local! {
        /// The id (plus one) of the log being written to; 0 when none.
        static LOG: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// Marks the thread as writing into its queue of log `id`; call only after
    /// [`Writing::can_enter`].
    fn enter(id: u64) -> Self {
        Writing { previous: Self::LOG.with(|log| log.replace(id + 1)) }
    }

    /// Whether the thread may write a request's lines into its queue of log `id` in place: it is
    /// not doing so already, and its thread-locals are still there to say so.
    fn can_enter(id: u64) -> bool {
        Self::LOG.try_with(|log| log.get() != id + 1).unwrap_or(false)
    }

    /// Whether the thread is writing into its queue of log `id`.
    fn is_writing(id: u64) -> bool {
        Self::LOG.try_with(|log| log.get() == id + 1).unwrap_or(false)
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let _ = Self::LOG.try_with(|log| log.set(self.previous));
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
        // Borrowed for the whole call: a nested call (a rides iterator that logs itself) finds the
        // list in use and takes a queue of its own rather than this one, whose lock is held.
        if let Ok(slots) = slots.try_borrow_mut()
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
