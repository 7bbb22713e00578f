//! The job table: every job the trainer knows, its events, and subscribers waiting for more.
//!
//! Jobs live in memory. Kubernetes Jobs survive a trainer restart and are adopted again from the
//! cluster; in-process jobs that were running when the trainer stopped are gone with it.

use std::collections::HashMap;
use std::sync::Mutex;

use lightops_api::trainer::v1 as pb;
use tokio::sync::{broadcast, watch};

use crate::error::{Error, Result};
use crate::now_ms;

/// One job and what watchers need.
#[derive(Debug)]
struct Entry {
    job: pb::Job,
    events: Vec<pb::JobEvent>,
    notify: broadcast::Sender<pb::JobEvent>,
    cancel: watch::Sender<bool>,
}

/// All jobs, newest last.
#[derive(Debug, Default)]
pub struct JobTable {
    jobs: Mutex<(HashMap<String, Entry>, Vec<String>)>,
}

/// What a watcher gets: the events so far and a receiver for the next ones (None when the job has
/// already finished).
pub type Subscription = (Vec<pb::JobEvent>, Option<broadcast::Receiver<pb::JobEvent>>);

impl JobTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Entry>, Vec<String>)> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a queued job and returns it with its cancellation signal.
    pub fn insert(&self, job: pb::Job) -> (pb::Job, watch::Receiver<bool>) {
        let (notify, _) = broadcast::channel(256);
        let (cancel, cancelled) = watch::channel(false);
        let id = job.job_id.clone();
        let mut entry = Entry { job: job.clone(), events: Vec::new(), notify, cancel };
        push_event(&mut entry, pb::Step::Queued, pb::JobState::Queued, "queued".into());
        let mut guard = self.lock();
        guard.0.insert(id.clone(), entry);
        guard.1.push(id);
        (job, cancelled)
    }

    /// A job by id.
    pub fn get(&self, job_id: &str) -> Result<pb::Job> {
        self.lock().0.get(job_id).map(|e| e.job.clone()).ok_or_else(|| Error::NotFound(format!("job {job_id}")))
    }

    /// Jobs, newest first, optionally in one state.
    pub fn list(&self, state: Option<pb::JobState>, limit: usize) -> Vec<pb::Job> {
        let guard = self.lock();
        guard
            .1
            .iter()
            .rev()
            .filter_map(|id| guard.0.get(id))
            .filter(|e| state.is_none_or(|s| e.job.state == s as i32))
            .take(limit)
            .map(|e| e.job.clone())
            .collect()
    }

    /// Records progress. Ignored once the job has finished (a late event after a cancel).
    pub fn step(&self, job_id: &str, step: pb::Step, message: impl Into<String>) {
        let mut guard = self.lock();
        if let Some(entry) = guard.0.get_mut(job_id)
            && !is_finished(&entry.job)
        {
            if entry.job.state == pb::JobState::Queued as i32 {
                entry.job.state = pb::JobState::Running as i32;
                entry.job.started_ms = now_ms();
            }
            entry.job.step = step as i32;
            push_event(entry, step, pb::JobState::Running, message.into());
        }
    }

    /// Changes the job record (run id, version, metrics…) without an event.
    pub fn update(&self, job_id: &str, change: impl FnOnce(&mut pb::Job)) {
        if let Some(entry) = self.lock().0.get_mut(job_id) {
            change(&mut entry.job);
        }
    }

    /// Ends a job: SUCCEEDED, FAILED (with the reason) or CANCELLED. Returns false when it had
    /// already ended.
    pub fn finish(&self, job_id: &str, state: pb::JobState, reason: impl Into<String>) -> bool {
        let mut guard = self.lock();
        let Some(entry) = guard.0.get_mut(job_id) else { return false };
        if is_finished(&entry.job) {
            return false;
        }
        let reason = reason.into();
        let step = match state {
            pb::JobState::Succeeded => pb::Step::Succeeded,
            pb::JobState::Cancelled => pb::Step::Cancelled,
            _ => pb::Step::Failed,
        };
        entry.job.state = state as i32;
        entry.job.step = step as i32;
        entry.job.finished_ms = now_ms();
        let began = if entry.job.started_ms > 0 { entry.job.started_ms } else { entry.job.submitted_ms };
        let ran = std::time::Duration::from_millis((entry.job.finished_ms - began).max(0) as u64);
        lightops_runtime::telemetry::record_training_job(state.as_str_name(), ran);
        if state != pb::JobState::Succeeded {
            entry.job.reason = reason.clone();
        }
        push_event(entry, step, state, reason);
        true
    }

    /// Asks a job to stop; returns the job as it is now. Finished jobs cannot be cancelled.
    pub fn request_cancel(&self, job_id: &str) -> Result<pb::Job> {
        let guard = self.lock();
        let entry = guard.0.get(job_id).ok_or_else(|| Error::NotFound(format!("job {job_id}")))?;
        if is_finished(&entry.job) {
            let state = pb::JobState::try_from(entry.job.state).unwrap_or_default().as_str_name();
            return Err(Error::FailedPrecondition(format!("job {job_id} has already finished ({state})")));
        }
        let _ = entry.cancel.send(true);
        Ok(entry.job.clone())
    }

    /// The events so far and a receiver for the rest.
    pub fn subscribe(&self, job_id: &str) -> Result<Subscription> {
        let guard = self.lock();
        let entry = guard.0.get(job_id).ok_or_else(|| Error::NotFound(format!("job {job_id}")))?;
        let receiver = (!is_finished(&entry.job)).then(|| entry.notify.subscribe());
        Ok((entry.events.clone(), receiver))
    }
}

/// True for SUCCEEDED, FAILED and CANCELLED.
pub fn is_finished(job: &pb::Job) -> bool {
    [pb::JobState::Succeeded, pb::JobState::Failed, pb::JobState::Cancelled].iter().any(|s| job.state == *s as i32)
}

fn push_event(entry: &mut Entry, step: pb::Step, state: pb::JobState, message: String) {
    tracing::info!(job_id = %entry.job.job_id, step = step.as_str_name(), %message, "job event");
    let event = pb::JobEvent {
        job_id: entry.job.job_id.clone(),
        step: step as i32,
        state: state as i32,
        time_ms: now_ms(),
        message,
    };
    entry.events.push(event.clone());
    let _ = entry.notify.send(event);
}
