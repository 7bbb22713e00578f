//! Turning Job and pod statuses into [`KubeEvent`]s.

use std::collections::{HashSet, VecDeque};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;
use kube::runtime::watcher;

/// What happened to a job's Kubernetes Job, as [`super::KubeExecutor::watch`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeEvent {
    /// The Job exists. Always the first event.
    Created,
    /// A pod of the Job runs, or the Job has an active pod. Reported once.
    Running,
    /// A pod attempt failed: a container ended with a non-zero exit code (`OOMKilled` included),
    /// the image cannot be pulled (`ErrImagePull`, `ImagePullBackOff`) or the pod was evicted. Not
    /// terminal: the Job may retry (`backoff_limit`), and an image pull keeps failing until the
    /// Job's `active_deadline_seconds`, if any, fails the Job.
    PodFailed {
        /// Pod name.
        pod: String,
        /// Kubernetes' reason, the container and exit code, and the message, e.g.
        /// `Error: container train exited with code 1: no such file`.
        reason: String,
    },
    /// The Job completed (condition `Complete`). Terminal.
    Succeeded,
    /// The Job failed (condition `Failed`). Terminal.
    Failed {
        /// The condition's reason and message, e.g.
        /// `BackoffLimitExceeded: Job has reached the specified backoff limit`.
        reason: String,
    },
    /// The Job does not exist (any more): it was deleted, e.g. cancelled, or never existed.
    /// Terminal.
    Deleted,
}

impl KubeEvent {
    /// True for the events that end the watch: `Succeeded`, `Failed` and `Deleted`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed { .. } | Self::Deleted)
    }
}

/// Waiting reasons that mean the container will not start without outside help.
const STUCK_WAITING_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The state of one watch: what has been reported so far.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    created: bool,
    running: bool,
    finished: bool,
    /// Whether the Job was in the current (re)list; a list without it means it is gone.
    listed: bool,
    /// Pod failures already reported, by pod, container and reason.
    pod_failures: HashSet<(String, String, String)>,
    pending: VecDeque<KubeEvent>,
}

impl Tracker {
    /// The next event to report.
    pub(super) fn pop(&mut self) -> Option<KubeEvent> {
        self.pending.pop_front()
    }

    /// True once a terminal event was queued: nothing more is reported.
    pub(super) fn finished(&self) -> bool {
        self.finished
    }

    fn push(&mut self, event: KubeEvent) {
        if self.finished {
            return;
        }
        if !self.created && event != KubeEvent::Deleted {
            self.created = true;
            self.pending.push_back(KubeEvent::Created);
        }
        self.finished = event.is_terminal();
        self.pending.push_back(event);
    }

    fn running(&mut self) {
        if !self.running {
            self.running = true;
            self.push(KubeEvent::Running);
        }
    }

    /// Takes in an event of the Job watcher.
    pub(super) fn on_job_event(&mut self, event: watcher::Event<Job>) {
        match event {
            watcher::Event::Init => self.listed = false,
            watcher::Event::InitApply(job) => {
                self.listed = true;
                self.on_job(&job);
            }
            watcher::Event::InitDone => {
                if !self.listed {
                    self.push(KubeEvent::Deleted);
                }
            }
            watcher::Event::Apply(job) => self.on_job(&job),
            watcher::Event::Delete(_) => self.push(KubeEvent::Deleted),
        }
    }

    /// Takes in an event of the pod watcher.
    pub(super) fn on_pod_event(&mut self, event: watcher::Event<Pod>) {
        if let watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) = event {
            self.on_pod(&pod);
        }
    }

    fn on_job(&mut self, job: &Job) {
        if !self.created {
            self.created = true;
            self.pending.push_back(KubeEvent::Created);
        }
        match job_outcome(job) {
            Some(Ok(())) => self.push(KubeEvent::Succeeded),
            Some(Err(reason)) => self.push(KubeEvent::Failed { reason }),
            None => {
                let status = job.status.as_ref();
                let active = status.and_then(|status| status.active).unwrap_or(0);
                let ready = status.and_then(|status| status.ready).unwrap_or(0);
                if active > 0 || ready > 0 {
                    self.running();
                }
            }
        }
    }

    fn on_pod(&mut self, pod: &Pod) {
        let pod_name = pod.name_any();
        let Some(status) = &pod.status else {
            return;
        };
        if status.phase.as_deref() == Some("Running") {
            self.running();
        }
        let containers = status.init_container_statuses.iter().chain(&status.container_statuses);
        let mut reported_container = false;
        for container in containers.flatten() {
            if let Some((kind, reason)) = container_failure(container) {
                reported_container = true;
                if self.pod_failures.insert((pod_name.clone(), container.name.clone(), kind)) {
                    self.push(KubeEvent::PodFailed { pod: pod_name.clone(), reason });
                }
            }
        }
        if status.phase.as_deref() == Some("Failed") && !reported_container {
            // Evicted, DeadlineExceeded, …: the pod failed without a container saying why.
            let kind = status.reason.clone().unwrap_or_else(|| "Failed".to_owned());
            if self.pod_failures.insert((pod_name.clone(), String::new(), kind.clone())) {
                self.push(KubeEvent::PodFailed {
                    pod: pod_name,
                    reason: with_message(kind, status.message.as_deref()),
                });
            }
        }
    }
}

/// `Some(Ok)` when the Job completed, `Some(Err(reason))` when it failed, `None` while it runs.
pub(super) fn job_outcome(job: &Job) -> Option<Result<(), String>> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let is_true =
        |kind: &str| conditions.iter().find(|condition| condition.type_ == kind && condition.status == "True");
    if let Some(failed) = is_true("Failed") {
        let reason = failed.reason.clone().unwrap_or_else(|| "Failed".to_owned());
        return Some(Err(with_message(reason, failed.message.as_deref())));
    }
    is_true("Complete").map(|_| Ok(()))
}

/// The failure of a container, as (reason kind for de-duplication, description).
fn container_failure(container: &ContainerStatus) -> Option<(String, String)> {
    let state = container.state.as_ref()?;
    if let Some(terminated) = &state.terminated
        && terminated.exit_code != 0
    {
        let kind = terminated.reason.clone().unwrap_or_else(|| "Error".to_owned());
        let what = format!("{kind}: container {} exited with code {}", container.name, terminated.exit_code);
        return Some((kind, with_message(what, terminated.message.as_deref())));
    }
    let waiting = state.waiting.as_ref()?;
    let kind = waiting.reason.as_deref()?;
    if !STUCK_WAITING_REASONS.contains(&kind) {
        return None;
    }
    let what = format!("{kind}: container {} cannot start", container.name);
    Some((kind.to_owned(), with_message(what, waiting.message.as_deref())))
}

fn with_message(what: String, message: Option<&str>) -> String {
    match message.map(str::trim) {
        Some(message) if !message.is_empty() => format!("{what}: {message}"),
        _ => what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "lightops-train-a", "resourceVersion": "1"},
            "status": status,
        }))
        .unwrap_or_else(|err| panic!("test job: {err}"))
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "lightops-train-a-xyz", "resourceVersion": "1"},
            "status": status,
        }))
        .unwrap_or_else(|err| panic!("test pod: {err}"))
    }

    fn drain(tracker: &mut Tracker) -> Vec<KubeEvent> {
        std::iter::from_fn(|| tracker.pop()).collect()
    }

    #[test]
    fn a_job_that_runs_and_completes() {
        let mut tracker = Tracker::default();
        tracker.on_job_event(watcher::Event::Init);
        tracker.on_job_event(watcher::Event::InitApply(job(serde_json::json!({}))));
        tracker.on_job_event(watcher::Event::InitDone);
        tracker.on_pod_event(watcher::Event::Apply(pod(serde_json::json!({"phase": "Running"}))));
        tracker.on_job_event(watcher::Event::Apply(job(serde_json::json!({"active": 1}))));
        tracker.on_job_event(watcher::Event::Apply(job(
            serde_json::json!({"conditions": [{"type": "Complete", "status": "True"}]}),
        )));
        tracker.on_job_event(watcher::Event::Delete(job(serde_json::json!({}))));
        assert_eq!(drain(&mut tracker), [KubeEvent::Created, KubeEvent::Running, KubeEvent::Succeeded]);
        assert!(tracker.finished());
    }

    #[test]
    fn pod_failures_are_reported_once_each() {
        let mut tracker = Tracker::default();
        let pulling = |reason: &str| {
            pod(serde_json::json!({"phase": "Pending", "containerStatuses": [{
                "name": "train", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": "pull access denied"}}
            }]}))
        };
        tracker.on_pod_event(watcher::Event::Apply(pulling("ErrImagePull")));
        tracker.on_pod_event(watcher::Event::Apply(pulling("ImagePullBackOff")));
        tracker.on_pod_event(watcher::Event::Apply(pulling("ErrImagePull")));
        tracker.on_pod_event(watcher::Event::Apply(pulling("ContainerCreating")));
        let oom = pod(serde_json::json!({"phase": "Failed", "containerStatuses": [{
            "name": "train", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
        }]}));
        tracker.on_pod_event(watcher::Event::Apply(oom.clone()));
        tracker.on_pod_event(watcher::Event::Apply(oom));
        let evicted = pod(serde_json::json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}));
        tracker.on_pod_event(watcher::Event::Apply(evicted));
        let pod = "lightops-train-a-xyz".to_owned();
        assert_eq!(
            drain(&mut tracker),
            [
                KubeEvent::Created,
                KubeEvent::PodFailed {
                    pod: pod.clone(),
                    reason: "ErrImagePull: container train cannot start: pull access denied".into()
                },
                KubeEvent::PodFailed {
                    pod: pod.clone(),
                    reason: "ImagePullBackOff: container train cannot start: pull access denied".into()
                },
                KubeEvent::PodFailed {
                    pod: pod.clone(),
                    reason: "OOMKilled: container train exited with code 137".into()
                },
                KubeEvent::PodFailed { pod, reason: "Evicted: low on memory".into() },
            ]
        );
    }

    #[test]
    fn a_failed_job_reports_its_reason() {
        let mut tracker = Tracker::default();
        tracker.on_job_event(watcher::Event::Apply(job(serde_json::json!({"conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"},
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
             "message": "Job was active longer than specified deadline"}
        ]}))));
        assert_eq!(
            drain(&mut tracker),
            [
                KubeEvent::Created,
                KubeEvent::Failed { reason: "DeadlineExceeded: Job was active longer than specified deadline".into() }
            ]
        );
    }

    #[test]
    fn a_list_without_the_job_means_it_is_gone() {
        let mut tracker = Tracker::default();
        tracker.on_job_event(watcher::Event::Init);
        tracker.on_job_event(watcher::Event::InitDone);
        assert_eq!(drain(&mut tracker), [KubeEvent::Deleted]);
    }
}
