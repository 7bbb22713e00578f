//! `lightops.trainer.v1.Trainer` over gRPC: job submission, the in-process executor's bounded
//! queue, watching, cancelling, and schedules.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::Stream;
use lightops_api::trainer::v1 as pb;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::jobs::JobTable;
use crate::runner::RunContext;
use crate::schedule::{Cron, expand_months};
use crate::{Config, now_ms};

/// The trainer's state, shared by the gRPC service and the schedule tasks.
#[derive(Debug)]
pub struct Inner {
    /// Every job.
    pub jobs: Arc<JobTable>,
    context: RunContext,
    permits: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    queue_capacity: usize,
    default_executor: pb::Executor,
    kube: Option<crate::kube_runner::KubeRunner>,
    schedules: Mutex<HashMap<String, (pb::Schedule, tokio::task::JoinHandle<()>)>>,
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct TrainerService {
    inner: Arc<Inner>,
}

impl TrainerService {
    /// A trainer with no jobs yet.
    pub fn new(config: &Config, kube: Option<crate::kube_runner::KubeRunner>) -> Self {
        let jobs = Arc::new(JobTable::default());
        let context = RunContext {
            registry_url: config.registry_url.clone(),
            cache_dir: config.cache_dir.clone(),
            jobs: jobs.clone(),
        };
        Self {
            inner: Arc::new(Inner {
                jobs,
                context,
                permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
                queued: Arc::new(AtomicUsize::new(0)),
                queue_capacity: config.queue_capacity,
                default_executor: config.default_executor,
                kube,
                schedules: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The shared state.
    pub fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

/// Checks a job spec; errors name the field (`spec.val`).
pub fn validate(spec: &pb::JobSpec) -> Result<()> {
    if spec.train.is_empty() || spec.train.iter().any(|t| t.trim().is_empty()) {
        return Err(Error::invalid("spec.train", "needs at least one non-empty data URI"));
    }
    if spec.val.trim().is_empty() {
        return Err(Error::invalid("spec.val", "is empty; give the validation data URI"));
    }
    if !spec.alias.is_empty() && spec.register_as.is_empty() {
        return Err(Error::invalid("spec.alias", "needs spec.register_as (the model the alias belongs to)"));
    }
    if let Some(policy) = &spec.promotion {
        if !policy.metric.is_empty() && !crate::promotion::METRICS.contains(&policy.metric.as_str()) {
            return Err(Error::invalid(
                "spec.promotion.metric",
                format!("{:?} is not one of {:?}", policy.metric, crate::promotion::METRICS),
            ));
        }
        if !policy.min_improvement.is_finite() {
            return Err(Error::invalid("spec.promotion.min_improvement", "must be a finite number"));
        }
    }
    let features = crate::runner::feature_spec(spec.feature_spec.as_ref());
    features.validate().map_err(|e| Error::invalid("spec.feature_spec", e.to_string()))?;
    Ok(())
}

impl Inner {
    /// Submits a job (already expanded) and starts it on its executor.
    pub fn submit(&self, mut spec: pb::JobSpec, schedule_id: &str) -> Result<pb::Job> {
        // Unset duration bounds mean the workshop's 1–60 minutes, for every executor.
        if let Some(features) = &mut spec.feature_spec {
            let defaults = lightops_ml::FeatureSpec::default();
            if features.target_min == 0.0 {
                features.target_min = defaults.target_min;
            }
            if features.target_max == 0.0 {
                features.target_max = defaults.target_max;
            }
        }
        validate(&spec)?;
        let executor = match pb::Executor::try_from(spec.executor).unwrap_or_default() {
            pb::Executor::Unspecified => self.default_executor,
            chosen => chosen,
        };
        let job = pb::Job {
            job_id: uuid::Uuid::new_v4().simple().to_string(),
            spec: Some(spec.clone()),
            state: pb::JobState::Queued as i32,
            step: pb::Step::Queued as i32,
            submitted_ms: now_ms(),
            schedule_id: schedule_id.to_owned(),
            executor: executor as i32,
            ..Default::default()
        };
        match executor {
            pb::Executor::Kubernetes => {
                let Some(kube) = &self.kube else {
                    return Err(Error::Unavailable(
                        "the Kubernetes executor is not configured on this trainer (start it with --executor kubernetes \
                         or set kubernetes in its config)"
                            .into(),
                    ));
                };
                let (job, cancelled) = self.jobs.insert(job);
                kube.start(self.jobs.clone(), self.context.registry_url.clone(), job.job_id.clone(), spec, cancelled);
                Ok(job)
            }
            _ => {
                if self.queued.load(Ordering::SeqCst) >= self.queue_capacity {
                    return Err(Error::ResourceExhausted(format!(
                        "{} jobs are already queued (the limit); try again later",
                        self.queue_capacity
                    )));
                }
                self.queued.fetch_add(1, Ordering::SeqCst);
                let (job, mut cancelled) = self.jobs.insert(job);
                let (permits, queued, context) = (self.permits.clone(), self.queued.clone(), self.context.clone());
                let job_id = job.job_id.clone();
                tokio::spawn(async move {
                    // Wait for a slot, or for a cancel while queued.
                    let permit = tokio::select! {
                        permit = permits.acquire_owned() => permit.ok(),
                        _ = cancelled.wait_for(|c| *c) => None,
                    };
                    queued.fetch_sub(1, Ordering::SeqCst);
                    let Some(_permit) = permit else {
                        context.jobs.finish(&job_id, pb::JobState::Cancelled, "cancelled while queued");
                        return;
                    };
                    crate::runner::run(context, job_id, spec, cancelled).await;
                });
                Ok(job)
            }
        }
    }

    /// Adds a schedule and starts its task.
    pub fn create_schedule(self: &Arc<Self>, cron_text: &str, spec: pb::JobSpec) -> Result<pb::Schedule> {
        let cron = Cron::parse(cron_text)?;
        // Expanding now checks the templates.
        let probe = expand(&spec, chrono::Utc::now())?;
        validate(&probe)?;
        let next = cron.next_after(chrono::Utc::now()).map_or(0, |t| t.timestamp_millis());
        let schedule = pb::Schedule {
            schedule_id: uuid::Uuid::new_v4().simple().to_string(),
            cron: cron.as_str().to_owned(),
            spec: Some(spec.clone()),
            next_run_ms: next,
            created_ms: now_ms(),
        };
        let inner = Arc::downgrade(self);
        let schedule_id = schedule.schedule_id.clone();
        let task = tokio::spawn(async move {
            loop {
                let now = chrono::Utc::now();
                let Some(next) = cron.next_after(now) else { return };
                let wait = (next - now).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                let Some(inner) = inner.upgrade() else { return };
                let outcome = expand(&spec, next).and_then(|spec| inner.submit(spec, &schedule_id));
                match outcome {
                    Ok(job) => {
                        tracing::info!(schedule_id = %schedule_id, job_id = %job.job_id, "scheduled job submitted")
                    }
                    Err(error) => tracing::error!(schedule_id = %schedule_id, %error, "scheduled job not submitted"),
                }
                if let Some(after) = cron.next_after(chrono::Utc::now())
                    && let Ok(mut schedules) = inner.schedules.lock()
                    && let Some((recorded, _)) = schedules.get_mut(&schedule_id)
                {
                    recorded.next_run_ms = after.timestamp_millis();
                }
            }
        });
        self.schedules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(schedule.schedule_id.clone(), (schedule.clone(), task));
        Ok(schedule)
    }

    fn list_schedules(&self) -> Vec<pb::Schedule> {
        let schedules = self.schedules.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<pb::Schedule> = schedules.values().map(|(s, _)| s.clone()).collect();
        out.sort_by_key(|s| s.created_ms);
        out
    }

    fn delete_schedule(&self, schedule_id: &str) -> Result<()> {
        let removed = self.schedules.lock().unwrap_or_else(|p| p.into_inner()).remove(schedule_id);
        let (_, task) = removed.ok_or_else(|| Error::NotFound(format!("schedule {schedule_id}")))?;
        task.abort();
        Ok(())
    }

    /// Stops every schedule task (at shutdown).
    pub fn stop_schedules(&self) {
        for (_, (_, task)) in self.schedules.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            task.abort();
        }
    }
}

/// The spec with `{month…}` placeholders expanded for a run at `date`.
fn expand(spec: &pb::JobSpec, date: chrono::DateTime<chrono::Utc>) -> Result<pb::JobSpec> {
    let mut out = spec.clone();
    out.train = spec.train.iter().map(|t| expand_months(t, date)).collect::<Result<_>>()?;
    out.val = expand_months(&spec.val, date)?;
    Ok(out)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::trainer_server::Trainer for TrainerService {
    async fn submit_job(&self, request: Request<pb::SubmitJobRequest>) -> Result<Response<pb::Job>, Status> {
        let spec = request.into_inner().spec.ok_or_else(|| Error::invalid("spec", "is missing"))?;
        let spec = expand(&spec, chrono::Utc::now())?;
        Ok(Response::new(self.inner.submit(spec, "")?))
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        Ok(Response::new(self.inner.jobs.get(&request.into_inner().job_id)?))
    }

    async fn list_jobs(&self, request: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let state = match pb::JobState::try_from(request.state).unwrap_or_default() {
            pb::JobState::Unspecified => None,
            state => Some(state),
        };
        let limit = if request.limit == 0 { 100 } else { request.limit as usize };
        Ok(Response::new(pb::ListJobsResponse { jobs: self.inner.jobs.list(state, limit) }))
    }

    async fn cancel_job(&self, request: Request<pb::CancelJobRequest>) -> Result<Response<pb::Job>, Status> {
        let job_id = request.into_inner().job_id;
        self.inner.jobs.request_cancel(&job_id)?;
        // Wait briefly for the executor to record the cancellation, so the answer shows it.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let job = self.inner.jobs.get(&job_id)?;
            if crate::jobs::is_finished(&job) || tokio::time::Instant::now() > deadline {
                return Ok(Response::new(job));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    type WatchJobStream = EventStream;

    async fn watch_job(&self, request: Request<pb::WatchJobRequest>) -> Result<Response<Self::WatchJobStream>, Status> {
        let (past, receiver) = self.inner.jobs.subscribe(&request.into_inner().job_id)?;
        let past = futures::stream::iter(past.into_iter().map(Ok));
        let Some(receiver) = receiver else {
            return Ok(Response::new(Box::pin(past)));
        };
        // Events after the subscription; ends after the terminal event. A watcher too slow to
        // keep up (256 events behind) misses events rather than holding the job back.
        let live = futures::stream::unfold((receiver, false), |(mut receiver, done)| async move {
            if done {
                return None;
            }
            loop {
                match receiver.recv().await {
                    Ok(event) => {
                        let terminal = [pb::JobState::Succeeded, pb::JobState::Failed, pb::JobState::Cancelled]
                            .iter()
                            .any(|s| event.state == *s as i32);
                        return Some((Ok(event), (receiver, terminal)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        // The snapshot and the subscription are taken under one lock: no event is missed or
        // repeated between them.
        Ok(Response::new(Box::pin(futures::StreamExt::chain(past, live))))
    }

    async fn create_schedule(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let request = request.into_inner();
        let spec = request.spec.ok_or_else(|| Error::invalid("spec", "is missing"))?;
        Ok(Response::new(self.inner.create_schedule(&request.cron, spec)?))
    }

    async fn list_schedules(
        &self,
        _request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        Ok(Response::new(pb::ListSchedulesResponse { schedules: self.inner.list_schedules() }))
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        self.inner.delete_schedule(&request.into_inner().schedule_id)?;
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }
}
