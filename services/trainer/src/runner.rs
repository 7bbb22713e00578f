//! Running one job in the trainer process: read, fit, evaluate, upload and register, then the
//! promotion policy. Each step is reported to the job table (and so to watchers) and traced as a
//! span.
//!
//! Cancellation is checked between steps and while waiting for the fit: a cancelled job ends at
//! once and registers nothing, but a fit already running on its blocking thread finishes in the
//! background (the solver has no interruption points) and its result is dropped.

use std::path::PathBuf;
use std::sync::Arc;

use lightops_api::trainer::v1 as pb;
use lightops_ml::{DataFile, FeatureSpec, Solver};
use tokio::sync::watch;
use tracing::Instrument;

use crate::jobs::JobTable;

/// What a job run needs from the trainer.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Registry URL.
    pub registry_url: String,
    /// Download cache for https:// data.
    pub cache_dir: PathBuf,
    /// The job table.
    pub jobs: Arc<JobTable>,
}

/// Why a job stopped early.
enum Stop {
    Failed(String),
    Cancelled,
}

/// Runs a job to its end and records the outcome in the job table.
pub async fn run(context: RunContext, job_id: String, spec: pb::JobSpec, cancelled: watch::Receiver<bool>) {
    let span = tracing::info_span!("training_job", job_id = %job_id, executor = "in-process");
    let jobs = context.jobs.clone();
    let outcome = run_steps(&context, &job_id, &spec, cancelled).instrument(span).await;
    match outcome {
        Ok(()) => {
            jobs.finish(&job_id, pb::JobState::Succeeded, "succeeded");
        }
        Err(Stop::Failed(reason)) => {
            jobs.finish(&job_id, pb::JobState::Failed, reason);
        }
        Err(Stop::Cancelled) => {
            jobs.finish(&job_id, pb::JobState::Cancelled, "cancelled");
        }
    }
}

/// Converts the protobuf feature spec (unset: the workshop's).
pub fn feature_spec(spec: Option<&lightops_api::common::v1::FeatureSpec>) -> FeatureSpec {
    let Some(spec) = spec else { return FeatureSpec::default() };
    let defaults = FeatureSpec::default();
    FeatureSpec {
        categorical: spec.categorical.clone(),
        numerical: spec.numerical.clone(),
        crossed: spec
            .crossed
            .iter()
            .map(|c| lightops_ml::spec::CrossedFeature { name: c.name.clone(), columns: c.columns.clone() })
            .collect(),
        target_min: if spec.target_min != 0.0 { spec.target_min } else { defaults.target_min },
        target_max: if spec.target_max != 0.0 { spec.target_max } else { defaults.target_max },
    }
}

/// Reports the pipeline's progress as job steps (called on the fitting thread).
struct Steps {
    jobs: Arc<JobTable>,
    job_id: String,
}

impl lightops_ml::Progress for Steps {
    fn train_file_done(&self, file: &DataFile, rows_kept: u64) {
        self.jobs.step(&self.job_id, pb::Step::Reading, format!("read {} ({rows_kept} rows kept)", file.name));
    }
    fn fitting(&self) {
        self.jobs.step(&self.job_id, pb::Step::Fitting, "fitting");
    }
    fn validating(&self) {
        self.jobs.step(&self.job_id, pb::Step::Evaluating, "evaluating on the validation data");
    }
}

async fn cancellable<T>(cancelled: &mut watch::Receiver<bool>, work: impl Future<Output = T>) -> Result<T, Stop> {
    if *cancelled.borrow() {
        return Err(Stop::Cancelled);
    }
    tokio::select! {
        value = work => Ok(value),
        _ = cancelled.wait_for(|c| *c) => Err(Stop::Cancelled),
    }
}

async fn run_steps(
    context: &RunContext,
    job_id: &str,
    spec: &pb::JobSpec,
    mut cancelled: watch::Receiver<bool>,
) -> Result<(), Stop> {
    let jobs = &context.jobs;
    jobs.step(job_id, pb::Step::Reading, format!("reading {} training file(s)", spec.train.len()));
    let features = feature_spec(spec.feature_spec.as_ref());
    let cache = context.cache_dir.clone();
    let (train, val) = (spec.train.clone(), spec.val.clone());
    let progress = Steps { jobs: jobs.clone(), job_id: job_id.to_owned() };
    let fit = tokio::task::spawn_blocking(move || -> Result<lightops_ml::Trained, String> {
        let localize = |location: &String| -> Result<DataFile, String> {
            let path = lightops_objstore::localize(location, &cache, &lightops_objstore::Silent)
                .map_err(|e| format!("data {location}: {e}"))?;
            if !path.exists() {
                return Err(format!("data {location}: no such file"));
            }
            Ok(DataFile { path, name: location.clone() })
        };
        let train_files = train.iter().map(localize).collect::<Result<Vec<_>, _>>()?;
        let val_file = localize(&val)?;
        lightops_ml::train(&features, &train_files, &val_file, Solver::Exact, &progress).map_err(|e| e.to_string())
    })
    .instrument(tracing::info_span!("fit"));
    let trained = match cancellable(&mut cancelled, fit).await? {
        Ok(Ok(trained)) => trained,
        Ok(Err(reason)) => return Err(Stop::Failed(reason)),
        Err(join) => return Err(Stop::Failed(format!("the training thread failed: {join}"))),
    };
    jobs.update(job_id, |job| {
        let v = &trained.validation;
        job.validation =
            Some(lightops_api::common::v1::RegressionMetrics { rows: v.rows, rmse: v.rmse, mae: v.mae, r2: v.r2 });
    });

    jobs.step(job_id, pb::Step::Uploading, "logging the run and uploading the model");
    let mut run = lightops_client::TrainingRun::from_trained(&trained, experiment(spec));
    run.register_as = (!spec.register_as.is_empty()).then(|| spec.register_as.clone());
    run.tags = spec.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    run.tags.push((lightops_client::JOB_ID_TAG.into(), job_id.to_owned()));
    let metrics = run.metrics.clone();
    let registry_url = context.registry_url.clone();
    let upload = async move {
        let mut registry = lightops_client::Registry::connect(&registry_url).await?;
        let logged = lightops_client::log_training(&mut registry, run).await?;
        Ok::<_, lightops_client::Error>((registry, logged))
    }
    .instrument(tracing::info_span!("upload"));
    let (mut registry, logged) = cancellable(&mut cancelled, upload).await?.map_err(|e| Stop::Failed(e.to_string()))?;
    jobs.update(job_id, |job| {
        job.run_id = logged.run_id.clone();
        job.model_version = logged.model_version.unwrap_or(0);
    });
    let Some(version) = logged.model_version else {
        return Ok(());
    };
    jobs.step(job_id, pb::Step::Registered, format!("registered {} version {version}", spec.register_as));
    if spec.alias.is_empty() {
        return Ok(());
    }
    let decision = promotion_step(&mut registry, spec, version, &logged.run_id, &metrics)
        .instrument(tracing::info_span!("promote"))
        .await
        .map_err(|e| Stop::Failed(e.to_string()))?;
    jobs.update(job_id, |job| job.promotion = Some(decision.clone()));
    jobs.step(job_id, pb::Step::Registered, decision.reason);
    Ok(())
}

async fn promotion_step(
    registry: &mut lightops_client::Registry,
    spec: &pb::JobSpec,
    version: i64,
    run_id: &str,
    metrics: &[(String, f64)],
) -> lightops_client::Result<pb::Promotion> {
    crate::promotion::apply(registry, spec.promotion.as_ref(), &spec.register_as, &spec.alias, version, run_id, metrics)
        .await
}

/// The experiment a job logs to.
pub fn experiment(spec: &pb::JobSpec) -> &str {
    if spec.experiment.is_empty() { "nyc-taxi-experiment" } else { &spec.experiment }
}
