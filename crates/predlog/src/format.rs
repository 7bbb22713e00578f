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

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::queued::Requests;
use crate::record::LineWriter;
use crate::sink::Encoded;

/// How long the background task waits for the thread before formatting a batch itself.
pub(crate) const PATIENCE: Duration = Duration::from_secs(1);

struct Job {
    requests: Arc<Requests>,
    lines: Vec<u8>,
    done: oneshot::Sender<Encoded>,
}

/// The formatting thread's handle (the thread ends when it is dropped).
pub(crate) struct Formatter {
    jobs: Option<mpsc::Sender<Job>>,
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
                // The task formatted it itself meanwhile (or gave up on it).
                if job.done.is_closed() {
                    continue;
                }
                let mut out = Encoded { lines: job.lines, count: 0, key: String::new() };
                out.lines.clear();
                job.requests.encode(&mut writer, &mut out);
                drop(job.requests);
                let _ = job.done.send(out);
            }
        });
        let jobs = match started {
            Ok(_) => Some(jobs),
            Err(error) => {
                warn!(%error, "cannot start the prediction log's formatting thread; formatting on its task");
                None
            }
        };
        Formatter { jobs, writer: LineWriter::default() }
    }

    /// A formatter without a thread (Kinesis: its records come serialized).
    pub fn none() -> Self {
        Formatter { jobs: None, writer: LineWriter::default() }
    }

    /// Sends `requests` to the thread; their lines come on the receiver (in `lines`, cleared
    /// first). `Err` gives `lines` back when there is no thread.
    pub fn submit(&mut self, requests: Arc<Requests>, lines: Vec<u8>) -> Result<oneshot::Receiver<Encoded>, Vec<u8>> {
        let Some(jobs) = &self.jobs else { return Err(lines) };
        let (done, receiver) = oneshot::channel();
        match jobs.send(Job { requests, lines, done }) {
            Ok(()) => Ok(receiver),
            Err(mpsc::SendError(job)) => {
                warn!("the prediction log's formatting thread ended; formatting on its task");
                self.jobs = None;
                Err(job.lines)
            }
        }
    }

    /// Formats `requests` here (into `lines`, cleared).
    pub fn format_here(&mut self, requests: &Requests, mut lines: Vec<u8>) -> Encoded {
        lines.clear();
        let mut out = Encoded { lines, count: 0, key: String::new() };
        requests.encode(&mut self.writer, &mut out);
        out
    }
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
