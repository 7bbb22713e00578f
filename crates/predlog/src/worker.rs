//! The background task: drains the inbox (Kinesis) or the threads' queues (local sink), sends
//! batches in order, spills when the sink cannot keep up, and sends the spill first once it can.
//!
//! Records leave in log order: `[batch in flight] [pending (memory)] [spill] [queues]`. While the
//! spill holds anything, new records are appended to it rather than sent around it, so `pending`
//! is only ever filled while the spill is empty. A batch that fails as a whole while it is only in
//! memory goes to the *front* of the spill; a batch read from the spill stays there until it is
//! acknowledged. Entries of a batch Kinesis partly rejects are retried (with backoff) before
//! anything newer is sent.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use crate::config::LogConfig;
use crate::format::{Formatted, Formatter, PATIENCE};
use crate::log::{EARLY_WRITE_BYTES, Shared};
use crate::queued::{Requests, merge};
use crate::sink::{Encoded, Sink, record_count};
use crate::spill::{Content, Spill};

/// How long the task keeps going when every handle was dropped without a shutdown.
const ORPHAN_DEADLINE: Duration = Duration::from_secs(5);
/// How often the task looks up from waiting for the formatting thread.
const SLICE: Duration = Duration::from_millis(50);

/// Where a batch came from, which decides what a failure does with it.
enum Origin {
    /// Only in memory: on failure it must be spilled (to the front).
    Memory,
    /// Read from the spill, up to `end` in segment `seq`: it stays there until acknowledged.
    Spill { seq: u64, end: u64 },
}

struct Batch {
    /// Chunks of records still to send (the failed entries after a partial failure).
    records: Vec<Encoded>,
    /// Chunks of requests (local sink), in order, still to be turned into `records`, which are
    /// empty meanwhile. Kept apart rather than appended into one: that copy of every request
    /// showed in profiles, and the formatter writes their lines one after the other all the same.
    unformatted: Vec<Requests>,
    origin: Origin,
    /// Records of the batch already acknowledged.
    acked: usize,
}

enum Delivery {
    Sent,
    Failed,
    Deadline,
}

/// Exponential backoff with jitter: the n-th wait is uniform in [cap/2, cap], cap = min(max, initial * 2^n).
struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let cap = self.initial.saturating_mul(1 << self.attempt.min(20)).min(self.max);
        self.attempt += 1;
        cap / 2 + cap.mul_f64(fastrand::f64() / 2.0)
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The buffers between the inbox or the threads' queues and the sink.
struct Buffers {
    shared: Arc<Shared>,
    spill: Spill,
    /// Encoded records waiting in memory (Kinesis; only while the spill is empty).
    pending: VecDeque<Encoded>,
    /// Requests waiting in memory (local sink; only while the spill is empty), in chunks of about
    /// [`DRAIN_CHUNK_BYTES`].
    pending_requests: VecDeque<Requests>,
    /// Emptied request chunks, kept for their memory.
    spare_requests: Vec<Requests>,
    /// Written chunks' buffers, filled again with the next requests' lines (local sink), so that
    /// their memory is reused rather than allocated, grown and faulted in anew for every batch
    /// (which cost a quarter of the server's time under a heavy load).
    recycled: Vec<Vec<u8>>,
    /// The requests taken from the threads' queues (local sink), one buffer per queue, swapped
    /// back in empty to keep the memory.
    queues: Vec<Requests>,
    /// Records held in memory before the rest goes to the spill. For the local sink this is
    /// reached when the disk is slower than the records come for a while, or when the machine's
    /// cores are so busy that the formatting thread waits (see [`crate::format`]): the spill then
    /// bounds the memory.
    capacity: usize,
    keyed: bool,
    max_record_bytes: usize,
    /// The previous inbox vector (Kinesis), swapped back in to keep its allocation.
    spare: Vec<Encoded>,
}

/// Chunk buffers kept for reuse: one being filled while another is written.
const RECYCLE_BUFFERS: usize = 2;
/// The largest chunk buffer kept for reuse: the lines of a batch of requests (up to about two
/// chunks, ~4.5 MiB of lines each); not a batch read from a spill of lines (up to the local
/// sink's batch limit, 64 MiB).
const RECYCLE_MAX_BYTES: usize = 16 * 1024 * 1024;
/// The most memory kept per buffer for the requests taken from the queues (a few times what makes
/// an early write, so that a busy server keeps it, but not what a backlog grew it to).
const RECYCLE_MAX_REQUEST_BYTES: usize = 4 * EARLY_WRITE_BYTES;
/// Request chunks kept for reuse: a batch holds a few (up to ~4) until they are formatted, and
/// the queues are drained into others meanwhile.
const RECYCLE_REQUEST_CHUNKS: usize = 8;
/// The requests (in their compact form) of one chunk taken from the threads' queues (see
/// [`Buffers::drain_queues`]), and so of one spill frame and one formatting job: a few early
/// writes' worth (~4 MiB of lines), so that the usual drain is one chunk. A chunk ends after the
/// request that reaches it: 64 KiB under a power of two, so that its buffer stays at 1 MiB.
const DRAIN_CHUNK_BYTES: usize = 1024 * 1024 - 64 * 1024;

impl Buffers {
    /// Takes everything from the inbox (Kinesis) or the threads' queues (local sink): into
    /// `pending`, or the spill when it is not empty, when memory holds `capacity` records, or when
    /// `spill_all` (shutdown past its deadline).
    fn drain(&mut self, spill_all: bool) {
        if !self.keyed {
            self.drain_queues(spill_all);
            return;
        }
        let mut taken = self.take_inbox();
        if taken.is_empty() {
            return;
        }
        let stats = &self.shared.stats;
        let mut encoded = Vec::with_capacity(taken.len());
        for record in taken.drain(..) {
            if record.count == 0 {
                continue;
            }
            // Only keyed (one-record) chunks have a limit.
            if record.size() > self.max_record_bytes {
                error!(
                    bytes = record.size(),
                    limit = self.max_record_bytes,
                    "prediction record too large for the sink; dropped"
                );
                stats.dropped.fetch_add(record.count as u64, Relaxed);
                stats.memory.fetch_sub(record.count as u64, Relaxed);
                continue;
            }
            encoded.push(record);
        }
        self.spare = taken;
        self.store(Content::Lines(encoded), spill_all);
    }

    /// Takes the requests of every thread's queue (local sink) and copies them, merged in the
    /// order they were answered, into chunks of about [`DRAIN_CHUNK_BYTES`], each stored (in
    /// memory or the spill) before the next is made. Taking millions of records at once happens
    /// when the task got too little CPU for a while; serialized into lines at once they took
    /// gigabytes of memory (`bench/predictor_overload.sh`).
    fn drain_queues(&mut self, spill_all: bool) {
        let (taken, listed) = self.take_queues();
        if taken > 0 {
            let mut cursors = vec![0; self.queues.len()];
            loop {
                let mut chunk = self.spare_requests.pop().unwrap_or_default();
                let done = merge(&self.queues, &mut cursors, &mut chunk, DRAIN_CHUNK_BYTES);
                self.store(Content::Requests(chunk), spill_all);
                if done {
                    break;
                }
            }
        }
        // One buffer per queue still listed, emptied (a dropped queue's buffer may be any of
        // them, so only once all are copied).
        self.queues.truncate(listed);
        for requests in &mut self.queues {
            requests.clear();
            if requests.capacity() > RECYCLE_MAX_REQUEST_BYTES {
                *requests = Requests::default();
            }
        }
    }

    /// Keeps an emptied chunk of requests for the next drain.
    fn recycle_requests(&mut self, mut chunk: Requests) {
        // A drain's chunk ends a request past `DRAIN_CHUNK_BYTES`; one read back from the spill
        // can be larger.
        if self.spare_requests.len() < RECYCLE_REQUEST_CHUNKS && chunk.capacity() <= 4 * DRAIN_CHUNK_BYTES {
            chunk.clear();
            self.spare_requests.push(chunk);
        }
    }

    /// Takes the inbox's records (Kinesis).
    fn take_inbox(&mut self) -> Vec<Encoded> {
        let mut inbox = self.shared.inbox();
        if inbox.count == 0 {
            return Vec::new();
        }
        // Under the lock, so that the counters never miss these records.
        self.shared.stats.memory.fetch_add(std::mem::take(&mut inbox.count), Relaxed);
        std::mem::replace(&mut inbox.records, std::mem::take(&mut self.spare))
    }

    /// Swaps the requests of every thread's queue (local sink) into `queues` (in list order) and
    /// drops the queues of threads that ended. Returns the records taken and how many queues are
    /// still listed.
    fn take_queues(&mut self) -> (u64, usize) {
        let mut taken = 0;
        let listed = {
            let mut slots = self.shared.slots();
            let slots = &mut *slots;
            if self.queues.len() < slots.list.len() {
                self.queues.resize_with(slots.list.len(), Requests::default);
            }
            // All locked at once, so that the requests taken are those logged before one moment:
            // a record logged after another one was (on any threads) is never taken before it.
            let mut locked: Vec<_> = slots.list.iter().map(|slot| slot.lock()).collect();
            for (queue, requests) in locked.iter_mut().zip(&mut self.queues) {
                if queue.count > 0 {
                    // Under the lock, so that the counters never miss these records.
                    self.shared.stats.memory.fetch_add(queue.count, Relaxed);
                    taken += std::mem::take(&mut queue.count);
                    std::mem::swap(&mut queue.requests, requests);
                }
            }
            drop(locked);
            slots.list.retain(|slot| {
                // Only the list holds it: its thread has ended, and nothing more can be added to
                // it. What was added since the swap above is taken at the next drain.
                if Arc::strong_count(slot) > 1 {
                    return true;
                }
                let queue = slot.lock();
                if queue.count > 0 {
                    return true;
                }
                slots.retired_queued += queue.queued;
                false
            });
            slots.list.len()
        };
        (taken, listed)
    }

    /// Puts records in memory (`pending` or `pending_requests`), or the spill when it is not
    /// empty or `spill_all`; spills everything in memory once it holds `capacity` records.
    fn store(&mut self, content: Content, spill_all: bool) {
        if spill_all || self.spill.backlog() > 0 {
            self.spill(content);
            return;
        }
        match content {
            Content::Lines(encoded) => self.pending.extend(encoded),
            Content::Requests(requests) if requests.is_empty() => self.recycle_requests(requests),
            Content::Requests(requests) => self.pending_requests.push_back(requests),
        }
        let in_memory = self.shared.stats.memory.load(Relaxed);
        if in_memory >= self.capacity as u64 {
            debug!(records = in_memory, "prediction log queue full; spilling");
            self.spill_pending();
        }
    }

    /// Appends records (from memory) to the spill: lines as they are, requests as one frame.
    fn spill(&mut self, content: Content) {
        let count = content.count() as u64;
        if count > 0 {
            let stats = &self.shared.stats;
            let written = match &content {
                Content::Lines(records) => self.spill.append(records),
                Content::Requests(requests) => self.spill.append_requests(requests),
            };
            match written {
                Ok(()) => {
                    stats.spilled.fetch_add(count, Relaxed);
                }
                Err(error) => {
                    error!(%error, records = count, "cannot write to the spill; records lost");
                    stats.dropped.fetch_add(count, Relaxed);
                }
            }
            stats.memory.fetch_sub(count, Relaxed);
        }
        match content {
            Content::Lines(records) => self.recycle(records),
            Content::Requests(requests) => self.recycle_requests(requests),
        }
    }

    /// Spills everything waiting in memory, in order.
    fn spill_pending(&mut self) {
        let pending = Vec::from(std::mem::take(&mut self.pending));
        self.spill(Content::Lines(pending));
        while let Some(chunk) = self.pending_requests.pop_front() {
            self.spill(Content::Requests(chunk));
        }
    }

    /// Keeps the largest buffer of a written batch for the next one (see `recycled`).
    fn recycle(&mut self, records: Vec<Encoded>) {
        if self.keyed {
            return;
        }
        for mut chunk in records {
            if self.recycled.len() < RECYCLE_BUFFERS && chunk.lines.capacity() <= RECYCLE_MAX_BYTES {
                chunk.lines.clear();
                self.recycled.push(chunk.lines);
            }
        }
    }
}

/// Shutdown signalling and the housekeeping timer.
struct Control {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<Option<Instant>>,
    /// The shutdown handle is gone: no more changes to wait for.
    orphaned: bool,
    deadline: Option<Instant>,
    tick: Interval,
}

impl Control {
    fn closing(&self) -> bool {
        self.deadline.is_some()
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Picks up a shutdown request without waiting (the select branches only see it when they
    /// get polled, which a sink that is always ready prevents).
    fn refresh(&mut self) {
        if self.orphaned {
            return;
        }
        match self.shutdown.has_changed() {
            Ok(false) => {}
            Ok(true) => self.on_shutdown_change(Ok(())),
            Err(error) => self.on_shutdown_change(Err(error)),
        }
    }

    fn on_shutdown_change(&mut self, changed: Result<(), watch::error::RecvError>) {
        match changed {
            Ok(()) => self.deadline = *self.shutdown.borrow_and_update(),
            Err(_) => {
                self.orphaned = true;
                if self.deadline.is_none() {
                    warn!("prediction log dropped without shutdown; flushing");
                    self.shared.close();
                    self.deadline = Some(Instant::now() + ORPHAN_DEADLINE);
                }
            }
        }
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Drives `work` to completion while keeping the housekeeping going and taking the queues
/// whenever they are worth a write ([`Shared::worth_a_write`]), so that they stay small while a
/// delivery waits (for the formatting thread, for the sink), or whenever the spill holds records
/// (the sink is down or behind: what is taken goes to disk at once, so a crash meanwhile loses
/// nothing); `None` if the shutdown deadline passed first (`work` is then dropped).
///
/// Otherwise smaller queues are left to the next batch. Taking them at every wake-up cost more
/// than the rest of the log at one record a request: each record into an empty queue wakes this
/// task again, so under the HTTP benchmark the task woke for nearly every request while the
/// formatting thread waited for an idle core (`perf`: ~0.6 µs a request in wake-ups, taking and
/// merging tiny queues, and fresh buffers for them; docs/benchmarks.md, session 12).
async fn pump<F: Future>(buffers: &mut Buffers, control: &mut Control, work: F) -> Option<F::Output> {
    tokio::pin!(work);
    let shared = control.shared.clone();
    loop {
        tokio::select! {
            biased;
            output = &mut work => return Some(output),
            () = until(control.deadline) => return None,
            changed = control.shutdown.changed(), if !control.orphaned => control.on_shutdown_change(changed),
            _ = control.tick.tick() => buffers.spill.flush(),
            () = shared.notify.notified() => if buffers.spill.backlog() > 0 || shared.worth_a_write() {
                buffers.drain(false);
            },
        }
    }
}

/// What came from the formatting thread while [`Worker::format`] waited a slice.
enum FromThread {
    /// Nothing yet.
    Nothing,
    /// The job: its lines, or its buffer when it was skipped.
    Back(Formatted),
    /// The thread is gone, and the job with it.
    Gone,
}

/// The background task's state.
pub(crate) struct Worker {
    sink: Sink,
    buffers: Buffers,
    /// Turns the local sink's requests into lines.
    formatter: Formatter,
    control: Control,
    backoff: Backoff,
    sink_down: bool,
    linger: Duration,
}

impl Worker {
    pub fn new(
        config: &LogConfig,
        sink: Sink,
        spill: Spill,
        shared: Arc<Shared>,
        shutdown: watch::Receiver<Option<Instant>>,
    ) -> Self {
        let mut tick = tokio::time::interval(config.flush_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let formatter = if sink.keyed() { Formatter::none() } else { Formatter::start() };
        let buffers = Buffers {
            shared: shared.clone(),
            spill,
            pending: VecDeque::new(),
            pending_requests: VecDeque::new(),
            spare_requests: Vec::new(),
            recycled: Vec::new(),
            queues: Vec::new(),
            capacity: config.queue_capacity,
            keyed: sink.keyed(),
            max_record_bytes: sink.max_record_bytes(),
            spare: Vec::new(),
        };
        Worker {
            sink,
            buffers,
            formatter,
            control: Control { shared, shutdown, orphaned: false, deadline: None, tick },
            backoff: Backoff { initial: config.initial_backoff, max: config.max_backoff, attempt: 0 },
            sink_down: false,
            linger: config.linger,
        }
    }

    pub async fn run(mut self) {
        info!(sink = self.sink.describe(), "prediction log started");
        loop {
            // Read before draining: once closing is seen, this drain is the last one needed.
            self.control.refresh();
            let closing = self.control.closing();
            self.buffers.drain(false);
            self.sink.maintain();
            if self.control.past_deadline() {
                break;
            }
            let batch = match self.next_batch() {
                Ok(Some(batch)) => batch,
                Ok(None) if closing => break,
                Ok(None) => {
                    self.idle().await;
                    continue;
                }
                Err(()) if closing => break,
                Err(()) => {
                    if !self.wait_backoff().await {
                        break;
                    }
                    continue;
                }
            };
            match self.deliver(batch).await {
                Delivery::Sent => {
                    if self.sink_down {
                        info!(
                            sink = self.sink.describe(),
                            backlog = self.buffers.spill.backlog(),
                            "prediction log sink recovered"
                        );
                        self.sink_down = false;
                    }
                    self.backoff.reset();
                }
                Delivery::Failed if closing => break,
                Delivery::Failed => {
                    if !self.wait_backoff().await {
                        break;
                    }
                }
                Delivery::Deadline => break,
            }
        }
        self.finish();
    }

    /// Waits for new records, housekeeping or shutdown. After the first new record it lingers, so
    /// that a busy server's records leave in one write per linger rather than one per request
    /// (each of which would also wake this task and a thread for it), unless they are worth a
    /// write before that ([`Shared::worth_a_write`]).
    async fn idle(&mut self) {
        let shared = self.control.shared.clone();
        let arrived = tokio::select! {
            () = shared.notify.notified() => true,
            _ = self.control.tick.tick() => {
                self.buffers.spill.flush();
                self.sink.flush();
                false
            }
            changed = self.control.shutdown.changed(), if !self.control.orphaned => {
                self.control.on_shutdown_change(changed);
                false
            }
        };
        // No linger when the records waiting are already worth a write.
        let enough = || shared.worth_a_write();
        if arrived && !self.linger.is_zero() && !self.control.closing() && !enough() {
            let until = Instant::now() + self.linger;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => break,
                    // The records waiting became worth a write, or (after a wake-up left from
                    // before) a record came into an empty queue: that one waits with the rest.
                    () = shared.notify.notified() => if enough() {
                        break;
                    },
                    changed = self.control.shutdown.changed(), if !self.control.orphaned => {
                        self.control.on_shutdown_change(changed);
                        break;
                    }
                }
            }
        }
    }

    /// Waits out the backoff, cut short when a shutdown starts meanwhile (so that it gets on with
    /// its last attempt); false if the deadline passed.
    async fn wait_backoff(&mut self) -> bool {
        let until = Instant::now() + self.backoff.next();
        let was_closing = self.control.closing();
        loop {
            let now = Instant::now();
            if now >= until || (!was_closing && self.control.closing()) {
                return true;
            }
            let slice = (until - now).min(Duration::from_millis(100));
            if pump(&mut self.buffers, &mut self.control, tokio::time::sleep(slice)).await.is_none() {
                return false;
            }
        }
    }

    /// The oldest records: the spill's front, else memory. `Err` if the spill cannot be read.
    fn next_batch(&mut self) -> Result<Option<Batch>, ()> {
        let (max_records, max_bytes) = self.sink.batch_limits();
        if self.buffers.spill.backlog() > 0 {
            match self.buffers.spill.read_batch(max_records, max_bytes, self.buffers.keyed) {
                Ok(Some(batch)) => {
                    let origin = Origin::Spill { seq: batch.seq, end: batch.end };
                    let (records, unformatted) = match batch.content {
                        Content::Lines(records) => (records, Vec::new()),
                        Content::Requests(requests) => (Vec::new(), vec![requests]),
                    };
                    return Ok(Some(Batch { records, unformatted, origin, acked: 0 }));
                }
                Ok(None) => {}
                Err(error) => {
                    error!(%error, "cannot read the spill");
                    return Err(());
                }
            }
        }
        if !self.buffers.keyed {
            // The oldest chunk of requests, with the next ones while they are small together.
            let pending = &mut self.buffers.pending_requests;
            let Some(first) = pending.pop_front() else { return Ok(None) };
            let mut bytes = first.len();
            let mut chunks = vec![first];
            while bytes < DRAIN_CHUNK_BYTES
                && let Some(next) = pending.pop_front()
            {
                bytes += next.len();
                chunks.push(next);
            }
            return Ok(Some(Batch { records: Vec::new(), unformatted: chunks, origin: Origin::Memory, acked: 0 }));
        }
        let pending = &mut self.buffers.pending;
        let mut chunks = 0;
        let mut records = 0;
        let mut bytes = 0;
        for chunk in pending.iter() {
            if chunks > 0 && (records + chunk.count > max_records || bytes + chunk.size() > max_bytes) {
                break;
            }
            chunks += 1;
            records += chunk.count;
            bytes += chunk.size();
        }
        if chunks == 0 {
            return Ok(None);
        }
        Ok(Some(Batch {
            records: pending.drain(..chunks).collect(),
            unformatted: Vec::new(),
            origin: Origin::Memory,
            acked: 0,
        }))
    }

    /// Turns a batch's requests into lines: on the formatting thread, or here when it has not done
    /// so within [`PATIENCE`] (the machine had no idle core meanwhile; the wait is what limits
    /// the formatting here to a batch per `PATIENCE`) or when closing. `None` if the shutdown
    /// deadline passed meanwhile: the batch was then put back.
    async fn format(&mut self, mut batch: Batch) -> Option<Batch> {
        if batch.unformatted.is_empty() {
            return Some(batch);
        }
        let requests = Arc::new(std::mem::take(&mut batch.unformatted));
        // Nothing else writes to the sink before this batch: where its lines will start is known.
        let lead = self.sink.lead();
        let mut lines = Some(self.buffers.recycled.pop().unwrap_or_default());
        let mut ticket = None;
        let until = Instant::now() + PATIENCE;
        // While closing, formatted here at once: the thread may get no core before the deadline.
        while !self.control.closing() && Instant::now() < until {
            // Not ready: the thread has not handed back a batch given up on; wait all the same.
            if ticket.is_none() && self.formatter.ready() {
                match self.formatter.submit(requests.clone(), lines.take().unwrap_or_default(), lead) {
                    Ok(submitted) => ticket = Some(submitted),
                    Err(back) => {
                        lines = Some(back);
                        break;
                    }
                }
            }
            // In slices, so that a shutdown starting meanwhile is seen.
            let slice = until.min(Instant::now() + SLICE);
            let waited = match ticket.as_mut() {
                Some(ticket) => {
                    let done = tokio::time::timeout_at(slice, &mut ticket.done);
                    pump(&mut self.buffers, &mut self.control, done).await.map(|done| match done {
                        Err(_elapsed) => FromThread::Nothing,
                        Ok(Ok(formatted)) => FromThread::Back(formatted),
                        Ok(Err(_closed)) => FromThread::Gone,
                    })
                }
                None => pump(&mut self.buffers, &mut self.control, tokio::time::sleep_until(slice))
                    .await
                    .map(|()| FromThread::Nothing),
            };
            let Some(waited) = waited else {
                if let Some(ticket) = ticket.take() {
                    self.formatter.give_up(ticket);
                }
                batch.unformatted = Arc::unwrap_or_clone(requests);
                self.abandon(batch);
                return None;
            };
            match waited {
                FromThread::Nothing => continue,
                FromThread::Back(Ok(encoded)) => batch.records.push(encoded),
                // Skipped (not asked for): its buffer back.
                FromThread::Back(Err(back)) => lines = Some(back),
                FromThread::Gone => {}
            }
            ticket = None;
            break;
        }
        if let Some(ticket) = ticket {
            let records: usize = requests.iter().map(Requests::count).sum();
            debug!(records, "no idle core to format the prediction log; formatting here");
            self.formatter.give_up(ticket);
        }
        if batch.records.is_empty() {
            batch.records.push(self.formatter.format_here(&requests, lines, lead));
        }
        for chunk in Arc::into_inner(requests).into_iter().flatten() {
            self.buffers.recycle_requests(chunk);
        }
        Some(batch)
    }

    /// Sends a batch, retrying the entries the sink rejected, until it is all acknowledged, the
    /// sink fails as a whole, or the deadline passes.
    async fn deliver(&mut self, batch: Batch) -> Delivery {
        let Some(mut batch) = self.format(batch).await else { return Delivery::Deadline };
        let stats = self.buffers.shared.stats.clone();
        loop {
            // Counted before sending: the local sink cuts a chunk it wrote partly to the rest.
            let before = record_count(&batch.records);
            let attempt = pump(&mut self.buffers, &mut self.control, self.sink.send(&mut batch.records)).await;
            let Some(result) = attempt else {
                self.abandon(batch);
                return Delivery::Deadline;
            };
            match result {
                Ok(failed) if failed.is_empty() => {
                    let count = record_count(&batch.records);
                    self.count_sent(&batch.origin, count);
                    if let Origin::Spill { seq, end } = batch.origin {
                        self.buffers.spill.ack(seq, end, 0);
                    }
                    self.buffers.recycle(batch.records);
                    return Delivery::Sent;
                }
                Ok(failed) => {
                    stats.sink_errors.fetch_add(1, Relaxed);
                    let mut retry = Vec::with_capacity(failed.len());
                    let mut failed = failed.into_iter().peekable();
                    for (index, record) in batch.records.drain(..).enumerate() {
                        if failed.next_if_eq(&index).is_some() {
                            retry.push(record);
                        }
                    }
                    batch.records = retry;
                    let sent = before - record_count(&batch.records);
                    batch.acked += sent;
                    self.count_sent(&batch.origin, sent);
                    debug!(sent, retry = batch.records.len(), "sink rejected part of a batch; retrying those");
                    if !self.wait_backoff().await {
                        self.abandon(batch);
                        return Delivery::Deadline;
                    }
                }
                Err(error) => {
                    stats.sink_errors.fetch_add(1, Relaxed);
                    if self.sink_down {
                        debug!(sink = self.sink.describe(), error = error.0, "prediction log sink still failing");
                    } else {
                        warn!(
                            sink = self.sink.describe(),
                            error = error.0,
                            "prediction log sink failed; spilling until it recovers"
                        );
                        self.sink_down = true;
                    }
                    self.abandon(batch);
                    self.buffers.spill_pending();
                    return Delivery::Failed;
                }
            }
        }
    }

    fn count_sent(&mut self, origin: &Origin, count: usize) {
        let stats = &self.buffers.shared.stats;
        stats.sent.fetch_add(count as u64, Relaxed);
        match origin {
            Origin::Memory => {
                stats.memory.fetch_sub(count as u64, Relaxed);
            }
            Origin::Spill { .. } => self.buffers.spill.release(count as u64),
        }
    }

    /// Puts back what is left of a batch that will not be retried now, ahead of everything else.
    fn abandon(&mut self, batch: Batch) {
        let stats = self.buffers.shared.stats.clone();
        let mut chunks = batch.unformatted.into_iter();
        let content = match chunks.next() {
            // One frame in the spill (a rare path: the copy does not matter).
            Some(mut requests) => {
                for mut chunk in chunks {
                    requests.append(&mut chunk);
                    self.buffers.recycle_requests(chunk);
                }
                Content::Requests(requests)
            }
            None => Content::Lines(batch.records),
        };
        let count = content.count() as u64;
        let spill = &mut self.buffers.spill;
        match batch.origin {
            Origin::Memory => {
                if let Err(error) = spill.push_front(&content, false) {
                    error!(%error, records = count, "cannot write to the spill; records lost");
                    stats.dropped.fetch_add(count, Relaxed);
                } else {
                    stats.spilled.fetch_add(count, Relaxed);
                }
                stats.memory.fetch_sub(count, Relaxed);
            }
            // Untouched, it is still in the spill as it was.
            Origin::Spill { .. } if batch.acked == 0 => {}
            // Partly sent: move the rest in front, then mark the whole range as sent.
            Origin::Spill { seq, end } => {
                if let Err(error) = spill.push_front(&content, true) {
                    error!(%error, records = count, "cannot write to the spill; records lost");
                    stats.dropped.fetch_add(count, Relaxed);
                    spill.release(count);
                }
                spill.ack(seq, end, 0);
                spill.persist_cursor();
            }
        }
    }

    /// Spills whatever is still in memory (older first), closes the sink and makes the spill durable.
    fn finish(&mut self) {
        self.buffers.spill_pending();
        self.buffers.drain(true);
        self.sink.close();
        self.buffers.spill.close();
        let stats = &self.buffers.shared.stats;
        // Read first: a lock guard taken inside `info!` would be held while the event is written.
        let queued = self.buffers.shared.accepted().0;
        info!(
            sink = self.sink.describe(),
            queued,
            sent = stats.sent.load(Relaxed),
            spilled = stats.spilled.load(Relaxed),
            dropped = stats.dropped.load(Relaxed),
            spill_backlog = stats.backlog.load(Relaxed),
            "prediction log stopped"
        );
    }
}
