//! The Kubernetes executor: each training job becomes a `batch/v1` Job running `lightops train`
//! in the lightops image.
//!
//! - [`KubeExecutor::submit`] creates the Job ([`KubeExecutor::job_manifest`]); its container runs
//!   `lightops` with [`train_args`] and [`train_env`], so the run lands in the registry tagged
//!   `lightops.job_id` like an in-process job's. The trainer applies the promotion policy itself
//!   afterwards.
//! - [`KubeExecutor::watch`] follows the Job and its pods and reports [`KubeEvent`]s until the
//!   Job succeeds, fails or disappears.
//! - [`KubeExecutor::cancel`] deletes the Job; [`KubeExecutor::adopt`] finds the Jobs a previous
//!   trainer process started, with their specs read back from the `lightops.io/job-spec`
//!   annotation ([`spec_to_json`]).
//!
//! The trainer's Role needs, in its namespace: `jobs` (group `batch`): `create`, `delete`, `list`,
//! `watch`; `pods` (core group): `list`, `watch`.

mod events;
mod manifest;
mod spec_doc;
mod template;

use std::collections::BTreeMap;

use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use lightops_api::trainer::v1::JobSpec;

pub use events::KubeEvent;
pub use manifest::{
    COMPONENT_LABEL, CONTAINER_NAME, JOB_ID_ANNOTATION, JOB_ID_LABEL, JOB_NAME_PREFIX, JOB_SPEC_ANNOTATION,
    LIGHTOPS_HOME, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL, SPEC_JSON_ENV, TMP_DIR, job_label_value, job_name,
    job_selector, managed_selector, train_args, train_env,
};
pub use spec_doc::{spec_from_json, spec_to_json};
pub use template::{
    DEFAULT_BACKOFF_LIMIT, DEFAULT_IMAGE, DEFAULT_RUN_AS_USER, DEFAULT_TTL_SECONDS_AFTER_FINISHED, EnvVar,
    ImagePullPolicy, JobTemplate, ResourceLimits, ResourceRequests, Resources,
};

/// Errors of the Kubernetes executor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Job with this name exists already: the job id was submitted before.
    #[error("kubernetes job {name} already exists: job {job_id} was submitted before")]
    AlreadyExists {
        /// The job id.
        job_id: String,
        /// The Kubernetes Job name.
        name: String,
    },
    /// The API server refused the request: the trainer's Role lacks a permission.
    #[error(
        "forbidden: the trainer may not {verb} {resource} in namespace {namespace}; its Role must allow \
         `{verb}` on `{resource}`: {message}"
    )]
    Forbidden {
        /// The verb refused: `create`, `list`, `delete`…
        verb: &'static str,
        /// The resource, e.g. `jobs.batch`.
        resource: &'static str,
        /// The namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },
    /// The namespace does not exist.
    #[error("namespace {namespace} not found: {message}")]
    NotFound {
        /// The namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },
    /// Any other failure talking to the API server.
    #[error("kubernetes api error on {verb} {resource} in namespace {namespace}: {source}")]
    Api {
        /// The verb attempted.
        verb: &'static str,
        /// The resource.
        resource: &'static str,
        /// The namespace.
        namespace: String,
        /// What went wrong.
        #[source]
        source: kube::Error,
    },
    /// A job spec annotation is not valid JSON of the expected shape.
    #[error("job spec json is not valid: {0}")]
    SpecJson(#[source] serde_json::Error),
    /// A job spec annotation names an executor that `lightops.trainer.v1.Executor` does not have.
    #[error("job spec names an unknown executor `{0}`")]
    UnknownExecutor(String),
    /// A Job carries the managed-by label but no usable job id or spec annotation.
    #[error("kubernetes job {name} cannot be adopted: {reason}")]
    NotAdoptable {
        /// The Kubernetes Job name.
        name: String,
        /// What is missing or wrong.
        reason: String,
    },
}

/// Result of the Kubernetes executor.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Job found by [`KubeExecutor::adopt`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdoptedJob {
    /// The job id (from the `lightops.io/job-id` annotation).
    pub job_id: String,
    /// The job spec (from the `lightops.io/job-spec` annotation).
    pub spec: JobSpec,
    /// The Kubernetes Job name.
    pub k8s_name: String,
    /// `Some(true)` when the Job completed, `Some(false)` when it failed, `None` while it runs.
    pub finished: Option<bool>,
}

/// Runs training jobs as Kubernetes Jobs in one namespace.
#[derive(Clone)]
pub struct KubeExecutor {
    client: Client,
    namespace: String,
    template: JobTemplate,
}

impl std::fmt::Debug for KubeExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeExecutor")
            .field("namespace", &self.namespace)
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

const JOBS: &str = "jobs.batch";

impl KubeExecutor {
    /// An executor creating Jobs from `template` in `namespace`.
    pub fn new(client: Client, namespace: String, template: JobTemplate) -> Self {
        Self { client, namespace, template }
    }

    /// The namespace the Jobs are created in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Job template.
    pub fn template(&self) -> &JobTemplate {
        &self.template
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The Job [`submit`](Self::submit) creates for `job_id`.
    ///
    /// Named [`job_name`]`(job_id)`; labelled `app.kubernetes.io/name=lightops`,
    /// `app.kubernetes.io/component=training`, `app.kubernetes.io/managed-by=lightops-trainer` and
    /// `lightops.io/job-id=`[`job_label_value`]`(job_id)` (pods too); annotated with the exact job
    /// id and the spec as JSON; `restartPolicy: Never`; the container runs `lightops` with
    /// [`train_args`] and [`train_env`], hardened as [`JobTemplate`] says.
    pub fn job_manifest(&self, job_id: &str, spec: &JobSpec) -> Job {
        manifest::build_job(&self.template, &self.namespace, job_id, spec)
    }

    /// Creates the Job of `job_id` and returns its name.
    ///
    /// A second submit of the same job id fails with [`Error::AlreadyExists`].
    pub async fn submit(&self, job_id: &str, spec: &JobSpec) -> Result<String> {
        let job = self.job_manifest(job_id, spec);
        let name = job.name_any();
        match self.jobs().create(&PostParams::default(), &job).await {
            Ok(created) => {
                tracing::info!(job_id, k8s_job = %created.name_any(), namespace = %self.namespace, "kubernetes job created");
                Ok(created.name_any())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Err(Error::AlreadyExists { job_id: job_id.to_owned(), name })
            }
            Err(err) => Err(self.api_error("create", JOBS, err)),
        }
    }

    /// Follows the Job of `job_id` and its pods.
    ///
    /// Watches Jobs and pods with the label selector [`job_selector`]`(job_id)` through
    /// `kube::runtime::watcher` with the default backoff. Errors of the watch (a dropped
    /// connection, an API error, an expired resource version) are logged and the watcher lists
    /// and watches again; they never end the stream. The stream starts with
    /// [`KubeEvent::Created`] (or [`KubeEvent::Deleted`] when the Job does not exist) and ends
    /// after the first terminal event.
    pub fn watch(&self, job_id: &str) -> impl Stream<Item = KubeEvent> + Send + Unpin + use<> {
        // Boxed: a Job or a Pod takes a few kilobytes.
        enum Update {
            Job(Box<std::result::Result<watcher::Event<Job>, watcher::Error>>),
            Pod(Box<std::result::Result<watcher::Event<Pod>, watcher::Error>>),
        }
        let config = watcher::Config::default().labels(&job_selector(job_id));
        let jobs =
            watcher(self.jobs(), config.clone()).default_backoff().map(|update| Update::Job(Box::new(update))).boxed();
        let pods = watcher(self.pods(), config).default_backoff().map(|update| Update::Pod(Box::new(update))).boxed();
        let updates = futures::stream::select(jobs, pods);
        let job_id = job_id.to_owned();
        let namespace = self.namespace.clone();
        let events = futures::stream::unfold(
            (updates, events::Tracker::default()),
            move |(mut updates, mut tracker)| {
                let job_id = job_id.clone();
                let namespace = namespace.clone();
                async move {
                    loop {
                        if let Some(event) = tracker.pop() {
                            tracing::debug!(job_id, ?event, "kubernetes job event");
                            return Some((event, (updates, tracker)));
                        }
                        if tracker.finished() {
                            return None;
                        }
                        match updates.next().await? {
                            Update::Job(update) => match *update {
                                Ok(event) => tracker.on_job_event(event),
                                Err(err) => {
                                    tracing::warn!(job_id, namespace, error = %err, "watching kubernetes jobs failed, retrying");
                                }
                            },
                            Update::Pod(update) => match *update {
                                Ok(event) => tracker.on_pod_event(event),
                                Err(err) => {
                                    tracing::warn!(job_id, namespace, error = %err, "watching pods failed, retrying");
                                }
                            },
                        }
                    }
                }
            },
        );
        Box::pin(events)
    }

    /// Deletes the Job of `job_id` and, in the background, its pods. A Job that is already gone is
    /// not an error.
    pub async fn cancel(&self, job_id: &str) -> Result<()> {
        let name = job_name(job_id);
        match self.jobs().delete(&name, &DeleteParams::background()).await {
            Ok(_) => {
                tracing::info!(job_id, k8s_job = %name, "kubernetes job deleted");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                tracing::debug!(job_id, k8s_job = %name, "kubernetes job already gone");
                Ok(())
            }
            Err(err) => Err(self.api_error("delete", JOBS, err)),
        }
    }

    /// The Jobs of this trainer (label `app.kubernetes.io/managed-by=lightops-trainer`) in the
    /// namespace, finished or not, so that a restarted trainer can follow them again.
    ///
    /// A Job whose job id or spec annotation is missing or unreadable is skipped with a warning
    /// (it was not created by a trainer that knows it), so one odd Job does not block the rest.
    pub async fn adopt(&self) -> Result<Vec<AdoptedJob>> {
        let mut params = ListParams::default().labels(&managed_selector()).limit(500);
        let mut adopted = Vec::new();
        loop {
            let page = self.jobs().list(&params).await.map_err(|err| self.api_error("list", JOBS, err))?;
            for job in &page.items {
                match adopted_job(job) {
                    Ok(job) => adopted.push(job),
                    Err(err) => tracing::warn!(namespace = %self.namespace, error = %err, "skipping kubernetes job"),
                }
            }
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        Ok(adopted)
    }

    fn api_error(&self, verb: &'static str, resource: &'static str, err: kube::Error) -> Error {
        let namespace = self.namespace.clone();
        match err {
            kube::Error::Api(status) if status.code == 403 => {
                Error::Forbidden { verb, resource, namespace, message: status.message }
            }
            kube::Error::Api(status) if status.code == 404 => Error::NotFound { namespace, message: status.message },
            source => Error::Api { verb, resource, namespace, source },
        }
    }
}

fn adopted_job(job: &Job) -> Result<AdoptedJob> {
    let name = job.name_any();
    let not_adoptable = |reason: String| Error::NotAdoptable { name: name.clone(), reason };
    let annotations: &BTreeMap<String, String> = job.annotations();
    let job_id = annotations
        .get(JOB_ID_ANNOTATION)
        .ok_or_else(|| not_adoptable(format!("no {JOB_ID_ANNOTATION} annotation")))?;
    let spec = annotations
        .get(JOB_SPEC_ANNOTATION)
        .ok_or_else(|| not_adoptable(format!("no {JOB_SPEC_ANNOTATION} annotation")))?;
    let spec = spec_from_json(spec).map_err(|err| not_adoptable(err.to_string()))?;
    Ok(AdoptedJob {
        job_id: job_id.clone(),
        spec,
        k8s_name: name.clone(),
        finished: events::job_outcome(job).map(|outcome| outcome.is_ok()),
    })
}
