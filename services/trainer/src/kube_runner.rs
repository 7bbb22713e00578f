//! Following a Kubernetes Job to its end and turning what happens into job events.
//!
//! The Job runs `lightops train … --job-id ID` (see [`crate::kube_executor::train_args`]), which
//! logs its run to the registry tagged `lightops.job_id = ID`. When the Job succeeds, the trainer
//! reads that run (and its registered version) back from the registry and applies the promotion
//! policy, exactly as for an in-process job.

use std::sync::Arc;

use futures::StreamExt;
use lightops_api::registry::v1 as registry;
use lightops_api::trainer::v1 as pb;
use tokio::sync::watch;
use tracing::Instrument;

use crate::jobs::JobTable;
use crate::kube_executor::{KubeEvent, KubeExecutor};

/// The Kubernetes executor as the trainer uses it.
#[derive(Debug, Clone)]
pub struct KubeRunner {
    executor: Arc<KubeExecutor>,
}

impl KubeRunner {
    /// Wraps an executor.
    pub fn new(executor: KubeExecutor) -> Self {
        Self { executor: Arc::new(executor) }
    }

    /// Creates the Job and follows it on a task.
    pub fn start(
        &self,
        jobs: Arc<JobTable>,
        registry_url: String,
        job_id: String,
        spec: pb::JobSpec,
        cancelled: watch::Receiver<bool>,
    ) {
        let executor = self.executor.clone();
        let span = tracing::info_span!("training_job", job_id = %job_id, executor = "kubernetes");
        tokio::spawn(
            async move {
                match executor.submit(&job_id, &spec).await {
                    Ok(name) => jobs.update(&job_id, |job| job.kubernetes_job = name),
                    Err(error) => {
                        jobs.finish(&job_id, pb::JobState::Failed, format!("creating the Kubernetes Job: {error}"));
                        return;
                    }
                }
                follow(&executor, &jobs, &registry_url, &job_id, &spec, cancelled).await;
            }
            .instrument(span),
        );
    }

    /// Picks up the Jobs a previous trainer started: finished ones are completed from the
    /// registry, running ones are followed again.
    pub async fn adopt(&self, jobs: Arc<JobTable>, registry_url: String) {
        let adopted = match self.executor.adopt().await {
            Ok(adopted) => adopted,
            Err(error) => {
                tracing::error!(%error, "cannot list the Kubernetes Jobs a previous trainer started");
                return;
            }
        };
        for found in adopted {
            let job = pb::Job {
                job_id: found.job_id.clone(),
                spec: Some(found.spec.clone()),
                state: pb::JobState::Running as i32,
                step: pb::Step::Reading as i32,
                submitted_ms: crate::now_ms(),
                executor: pb::Executor::Kubernetes as i32,
                kubernetes_job: found.k8s_name.clone(),
                ..Default::default()
            };
            let (_, cancelled) = jobs.insert(job);
            tracing::info!(job_id = %found.job_id, k8s_job = %found.k8s_name, "adopted a Kubernetes Job");
            let (executor, jobs, registry_url) = (self.executor.clone(), jobs.clone(), registry_url.clone());
            tokio::spawn(async move {
                match found.finished {
                    Some(true) => complete(&jobs, &registry_url, &found.job_id, &found.spec).await,
                    Some(false) => {
                        jobs.finish(&found.job_id, pb::JobState::Failed, "the Kubernetes Job had failed");
                    }
                    None => follow(&executor, &jobs, &registry_url, &found.job_id, &found.spec, cancelled).await,
                }
            });
        }
    }
}

async fn follow(
    executor: &KubeExecutor,
    jobs: &JobTable,
    registry_url: &str,
    job_id: &str,
    spec: &pb::JobSpec,
    mut cancelled: watch::Receiver<bool>,
) {
    let events = executor.watch(job_id);
    futures::pin_mut!(events);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = async { let _ = cancelled.wait_for(|c| *c).await; } => {
                if let Err(error) = executor.cancel(job_id).await {
                    tracing::warn!(job_id, %error, "deleting the cancelled Kubernetes Job");
                }
                jobs.finish(job_id, pb::JobState::Cancelled, "cancelled (the Kubernetes Job was deleted)");
                return;
            }
        };
        match event {
            Some(KubeEvent::Created) => jobs.step(job_id, pb::Step::Queued, "Kubernetes Job created"),
            Some(KubeEvent::Running) => jobs.step(job_id, pb::Step::Reading, "pod running `lightops train`"),
            Some(KubeEvent::PodFailed { pod, reason }) => {
                jobs.step(job_id, pb::Step::Reading, format!("pod {pod} failed: {reason}"));
            }
            Some(KubeEvent::Succeeded) => {
                complete(jobs, registry_url, job_id, spec).await;
                return;
            }
            Some(KubeEvent::Failed { reason }) => {
                jobs.finish(job_id, pb::JobState::Failed, format!("the Kubernetes Job failed: {reason}"));
                return;
            }
            Some(KubeEvent::Deleted) | None => {
                jobs.finish(job_id, pb::JobState::Failed, "the Kubernetes Job was deleted before it finished");
                return;
            }
        }
    }
}

/// After `lightops train --job-id ID` has finished: finds its run and version in the registry,
/// applies the promotion policy and ends the job.
pub async fn complete(jobs: &JobTable, registry_url: &str, job_id: &str, spec: &pb::JobSpec) {
    match read_back(jobs, registry_url, job_id, spec).await {
        Ok(()) => {
            jobs.finish(job_id, pb::JobState::Succeeded, "succeeded");
        }
        Err(reason) => {
            jobs.finish(job_id, pb::JobState::Failed, reason);
        }
    }
}

async fn read_back(jobs: &JobTable, registry_url: &str, job_id: &str, spec: &pb::JobSpec) -> Result<(), String> {
    let mut client = lightops_client::Registry::connect(registry_url).await.map_err(|e| e.to_string())?;
    let filter = format!("tags.`{}` = \"{job_id}\"", lightops_client::JOB_ID_TAG);
    let runs = client
        .tracking
        .search_runs(registry::SearchRunsRequest { filter: filter.clone(), page_size: 10, ..Default::default() })
        .await
        .map_err(|s| format!("searching the run of job {job_id}: {}", s.message()))?
        .into_inner()
        .runs;
    let run = runs
        .into_iter()
        .find(|r| r.status == registry::RunStatus::Finished as i32)
        .ok_or_else(|| format!("the Job succeeded but the registry has no finished run tagged {filter}"))?;
    let metric = |key: &str| run.metrics.iter().find(|m| m.key == key).map(|m| m.value);
    let metrics: Vec<(String, f64)> = run.metrics.iter().map(|m| (m.key.clone(), m.value)).collect();
    jobs.update(job_id, |job| {
        job.run_id = run.run_id.clone();
        job.validation = Some(lightops_api::common::v1::RegressionMetrics {
            rows: metric("val_rows").unwrap_or(0.0) as u64,
            rmse: metric("rmse").unwrap_or(f64::NAN),
            mae: metric("mae").unwrap_or(f64::NAN),
            r2: metric("r2").unwrap_or(f64::NAN),
        });
    });
    jobs.step(job_id, pb::Step::Uploading, format!("run {} logged", run.run_id));
    if spec.register_as.is_empty() {
        return Ok(());
    }
    let versions = client
        .registry
        .list_model_versions(registry::ListModelVersionsRequest { name: spec.register_as.clone() })
        .await
        .map_err(|s| format!("versions of {}: {}", spec.register_as, s.message()))?
        .into_inner()
        .versions;
    let version = versions
        .iter()
        .find(|v| v.run_id == run.run_id)
        .map(|v| v.version)
        .ok_or_else(|| format!("run {} registered no version of {}", run.run_id, spec.register_as))?;
    jobs.update(job_id, |job| job.model_version = version);
    jobs.step(job_id, pb::Step::Registered, format!("registered {} version {version}", spec.register_as));
    if spec.alias.is_empty() {
        return Ok(());
    }
    let decision = crate::promotion::apply(
        &mut client,
        spec.promotion.as_ref(),
        &spec.register_as,
        &spec.alias,
        version,
        &run.run_id,
        &metrics,
    )
    .await
    .map_err(|e| e.to_string())?;
    let reason = decision.reason.clone();
    jobs.update(job_id, |job| job.promotion = Some(decision));
    jobs.step(job_id, pb::Step::Registered, reason);
    Ok(())
}
