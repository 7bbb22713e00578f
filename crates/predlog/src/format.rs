//! The thread that turns the local sink's queued requests into JSON lines, at idle priority.
//!
//! Formatting is most of what the log costs (~0.2–0.3 µs a record, against ~0.1 µs to queue a
//! ride), and nothing waits for it but the log's readers. So it runs on a thread of its own with
//! the `SCHED_IDLE` policy (Linux): the kernel gives it a core only when the predictor's threads
//! (and anything else of normal priority) leave one idle. On a saturated machine the lines then
//! wait, in their compact form (in memory up to the queue capacity, then in the spill), instead
//! of taking CPU from predictions; they are formatted once a core is free. So that a machine that
//! is never idle still sees its log, the background task formats a batch itself when the thread
//! has not done it within [`PATIENCE`]: at most one batch (a few MiB of lines) a second, a
//! sliver of a core.
//!
//! The thread holds at most one job: one given up on (the task formatted that batch itself) is
//! cancelled, and no other is sent until the thread has handed it back, so that jobs (and their
//! buffers) never pile up on a thread that gets no core.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::queued::Requests;
use crate::record::LineWriter;
use crate::sink::Encoded;
use crate::sink::append::make_room;

/// How long the background task waits for the thread before formatting a batch itself.
pub(crate) const PATIENCE: Duration = Duration::from_secs(1);

/// What the thread hands back: the lines, or the buffer of a job cancelled before it started.
pub(crate) type Formatted = Result<Encoded, Vec<u8>>;

struct Job {
    requests: Arc<Vec<Requests>>,
    lines: Vec<u8>,
    /// The local sink's lead (see [`format_into`]).
    lead: Option<usize>,
    cancel: Arc<AtomicBool>,
    done: oneshot::Sender<Formatted>,
}

/// A job sent to the thread.
pub(crate) struct Ticket {
    pub done: oneshot::Receiver<Formatted>,
    cancel: Arc<AtomicBool>,
}

/// The formatting thread's handle (the thread ends when it is dropped).
pub(crate) struct Formatter {
    jobs: Option<mpsc::Sender<Job>>,
    /// The job given up on while the thread still holds it.
    abandoned: Option<Ticket>,
    /// A lines buffer the thread handed back, for the next batch formatted here.
    spare: Option<Vec<u8>>,
    /// For formatting on the background task.
    writer: LineWriter,
}

impl Formatter {
    /// Starts the thread. Without it (it could not be started), batches are formatted on the
    /// background task.
    pub fn start() -> Self {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new().name("predlog-format".into()).spawn(move || {
            lower_priority();
            let mut writer = LineWriter::default();
            while let Ok(job) = inbox.recv() {
                if job.cancel.load(Relaxed) || job.done.is_closed() {
                    let _ = job.done.send(Err(job.lines));
                    continue;
                }
                let out = format_into(&mut writer, &job.requests, job.lines, job.lead);
                drop(job.requests);
                let _ = job.done.send(Ok(out));
            }
        });
        let jobs = match started {
            Ok(_) => Some(jobs),
            Err(error) => {
                warn!(%error, "cannot start the prediction log's formatting thread; formatting on its task");
                None
            }
        };
        Formatter { jobs, abandoned: None, spare: None, writer: LineWriter::default() }
    }

    /// A formatter without a thread (Kinesis: its records come serialized).
    pub fn none() -> Self {
        Formatter { jobs: None, abandoned: None, spare: None, writer: LineWriter::default() }
    }

    /// Whether a job can be sent now: there is a thread, and it has handed back the job given up
    /// on, if any.
    pub fn ready(&mut self) -> bool {
        if self.jobs.is_none() {
            return false;
        }
        if let Some(ticket) = &mut self.abandoned {
            match ticket.done.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return false,
                Ok(Ok(encoded)) => self.spare = Some(encoded.lines),
                Ok(Err(lines)) => self.spare = Some(lines),
                Err(oneshot::error::TryRecvError::Closed) => {}
            }
            self.abandoned = None;
        }
        true
    }

    /// Sends chunks of requests to the thread (see [`Formatter::ready`]); their lines, in order,
    /// come on the ticket (in `lines`, cleared first; see [`format_into`] for `lead`). `Err`
    /// gives `lines` back when there is no thread.
    pub fn submit(
        &mut self,
        requests: Arc<Vec<Requests>>,
        lines: Vec<u8>,
        lead: Option<usize>,
    ) -> Result<Ticket, Vec<u8>> {
        let Some(jobs) = &self.jobs else { return Err(lines) };
        let (done, receiver) = oneshot::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        match jobs.send(Job { requests, lines, lead, cancel: cancel.clone(), done }) {
            Ok(()) => Ok(Ticket { done: receiver, cancel }),
            Err(mpsc::SendError(job)) => {
                warn!("the prediction log's formatting thread ended; formatting on its task");
                self.jobs = None;
                Err(job.lines)
            }
        }
    }

    /// Gives up on a job: the thread skips it if it has not started it, and no other job is sent
    /// until it has handed it back.
    pub fn give_up(&mut self, ticket: Ticket) {
        ticket.cancel.store(true, Relaxed);
        self.abandoned = Some(ticket);
    }

    /// Formats chunks of requests here, in order, into `lines` (or a buffer the thread handed
    /// back; see [`format_into`] for `lead`).
    pub fn format_here(&mut self, requests: &[Requests], lines: Option<Vec<u8>>, lead: Option<usize>) -> Encoded {
        let lines = lines.or_else(|| self.spare.take()).unwrap_or_default();
        format_into(&mut self.writer, requests, lines, lead)
    }
}

/// Writes the lines of chunks of requests, in order, into `lines` (emptied first). With the local
/// sink's [`AppendFile::lead`](crate::sink::append::AppendFile::lead), the lines are laid out for
/// it to write them without copying them ([`make_room`]).
fn format_into(writer: &mut LineWriter, requests: &[Requests], lines: Vec<u8>, lead: Option<usize>) -> Encoded {
    let mut out = Encoded { lines, ..Encoded::default() };
    out.lines.clear();
    if let Some(lead) = lead {
        let expected = requests.iter().map(Requests::lines_bytes_estimate).sum();
        out.room = make_room(&mut out.lines, lead, expected);
    }
    for chunk in requests {
        chunk.encode(writer, &mut out);
    }
    out
}

/// Puts the calling thread in the idle scheduling class (Linux; elsewhere it keeps its priority).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
        };
        let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        match set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, policy) {
            Ok(()) => debug!("prediction log formatting thread runs at idle priority"),
            Err(error) => warn!(?error, "cannot lower the prediction log formatting thread's priority"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{PredictionRecord, RideFeatures, SCHEMA_VERSION};

    /// Two chunks of one request each, rides "r1" and "r2".
    fn requests() -> Arc<Vec<Requests>> {
        let mut record = PredictionRecord {
            schema: SCHEMA_VERSION,
            ride_id: "r1",
            event_time_ms: None,
            received_at_ms: 5,
            features: RideFeatures { pu_location_id: 1, do_location_id: 2, trip_distance: 3.5 },
            prediction: 12.0,
            model_name: "m",
            model_version: "1",
            latency_us: 7,
        };
        let mut chunks = vec![Requests::default(), Requests::default()];
        chunks[0].push_record(&record, std::time::Instant::now());
        record.ride_id = "r2";
        chunks[1].push_record(&record, std::time::Instant::now());
        Arc::new(chunks)
    }

    #[test]
    fn the_thread_formats_a_job_into_the_buffer_it_was_given() {
        let mut formatter = Formatter::start();
        assert!(formatter.ready());
        let requests = requests();
        let given = Vec::with_capacity(64 * 1024);
        let given_at = given.as_ptr();
        let ticket = formatter.submit(requests.clone(), given, Some(100)).expect("a thread");
        let out = ticket.done.blocking_recv().expect("handed back").expect("formatted");
        assert_eq!(out.count, 2);
        assert_eq!(out.lines.as_ptr(), given_at, "the buffer given");
        let text = String::from_utf8(out.text().to_vec()).expect("utf-8");
        let ids: Vec<_> = text.lines().map(|line| line.split('"').nth(5).expect("a ride id")).collect();
        assert_eq!(ids, ["r1", "r2"], "the chunks' lines, in order");
        // Laid out for a sink whose next write starts 100 bytes into a block.
        assert!(out.room >= 100 && out.lines[out.room - 100..].as_ptr().align_offset(4096) == 0);
        let here = formatter.format_here(&requests, None, None);
        assert_eq!((here.room, here.text()), (0, out.text()), "the same lines, without room");
    }

    #[test]
    fn a_job_given_up_on_holds_back_the_next_until_the_thread_hands_it_back() {
        // The test plays the thread.
        let (jobs, inbox) = mpsc::channel();
        let mut formatter = Formatter { jobs: Some(jobs), abandoned: None, spare: None, writer: LineWriter::default() };
        let requests = requests();
        let ticket = formatter.submit(requests.clone(), vec![1, 2, 3], None).expect("sent");
        formatter.give_up(ticket);
        assert!(!formatter.ready(), "the thread still holds the job given up on");
        let job = inbox.recv().expect("a job");
        assert!(job.cancel.load(Relaxed), "cancelled");
        job.done.send(Err(job.lines)).expect("handed back");
        assert!(formatter.ready());
        assert!(inbox.try_recv().is_err(), "nothing else was sent");
        // Its buffer serves the next batch formatted here.
        assert_eq!(formatter.spare.as_deref(), Some(&[1, 2, 3][..]));
        let out = formatter.format_here(&requests, None, None);
        assert!(formatter.spare.is_none() && out.count == 2);

        let mut none = Formatter::none();
        assert!(!none.ready());
        assert_eq!(none.submit(requests, vec![9], None).err(), Some(vec![9]), "no thread: the buffer back");
    }
}
