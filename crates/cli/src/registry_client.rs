//! Talking to the registry from the CLI: connecting, and logging a training run.

use anyhow::{Context, bail};
use lightops_api::registry::v1 as pb;
use pb::artifacts_client::ArtifactsClient;
use pb::registry_client::RegistryClient;
use pb::tracking_client::TrackingClient;
use tonic::transport::Channel;

/// A connection to the registry's three services.
pub struct Registry {
    pub tracking: TrackingClient<Channel>,
    pub registry: RegistryClient<Channel>,
    pub artifacts: ArtifactsClient<Channel>,
}

impl Registry {
    /// Connects to `url` (`http://host:port`).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(url.to_owned())
            .with_context(|| format!("--registry {url}: not a URL"))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("--registry {url}: cannot connect (is `lightops serve registry` running?)"))?;
        Ok(Self {
            tracking: TrackingClient::new(channel.clone()),
            registry: RegistryClient::new(channel.clone()),
            artifacts: ArtifactsClient::new(channel),
        })
    }
}

/// Connects to the registry at `url` and runs `work` with it on a single-threaded runtime: the
/// CLI's commands are one conversation each.
pub fn with_registry<T>(url: &str, work: impl AsyncFnOnce(&mut Registry) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let mut registry = Registry::connect(url).await?;
        work(&mut registry).await
    })
}

/// What `lightops train` logs.
pub struct TrainingRun<'a> {
    pub experiment: &'a str,
    pub params: Vec<(String, String)>,
    pub metrics: Vec<(String, f64)>,
    pub artifact: Vec<u8>,
    pub register_as: Option<&'a str>,
    pub alias: Option<&'a str>,
}

/// What the registry recorded.
pub struct Logged {
    pub run_id: String,
    pub artifact_uri: String,
    pub model_version: Option<i64>,
}

/// Creates (or finds) the experiment, logs a run with params and metrics, uploads the model,
/// and registers a version (and alias) when asked. A failure after the run exists marks it FAILED.
pub async fn log_training(registry: &mut Registry, run: TrainingRun<'_>) -> anyhow::Result<Logged> {
    let by_name =
        pb::GetExperimentRequest { by: Some(pb::get_experiment_request::By::Name(run.experiment.to_owned())) };
    let experiment = match registry.tracking.get_experiment(by_name).await {
        Ok(found) => found.into_inner(),
        Err(status) if status.code() == tonic::Code::NotFound => {
            let create =
                pb::CreateExperimentRequest { name: run.experiment.to_owned(), artifact_location: String::new() };
            match registry.tracking.create_experiment(create).await {
                Ok(created) => created.into_inner(),
                // Another trainer created it in between.
                Err(status) if status.code() == tonic::Code::AlreadyExists => {
                    let by_name = pb::GetExperimentRequest {
                        by: Some(pb::get_experiment_request::By::Name(run.experiment.to_owned())),
                    };
                    registry.tracking.get_experiment(by_name).await.context("experiment")?.into_inner()
                }
                Err(status) => bail!("creating experiment {}: {}", run.experiment, status.message()),
            }
        }
        Err(status) => bail!("experiment {}: {}", run.experiment, status.message()),
    };
    let created = registry
        .tracking
        .create_run(pb::CreateRunRequest {
            experiment_id: experiment.experiment_id,
            tags: vec![pb::Tag { key: "lightops.command".into(), value: "lightops train".into() }],
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("creating a run: {}", s.message()))?
        .into_inner();
    let run_id = created.run_id.clone();
    let result = log_run_contents(registry, &run_id, run).await;
    let status = if result.is_ok() { pb::RunStatus::Finished } else { pb::RunStatus::Failed };
    let finish = pb::UpdateRunRequest {
        run_id: run_id.clone(),
        status: status as i32,
        end_time_ms: lightops_registry::store::now_ms(),
        run_name: String::new(),
    };
    let finished = registry.tracking.update_run(finish).await;
    let (artifact_uri, model_version) = result?;
    finished.map_err(|s| anyhow::anyhow!("finishing run {run_id}: {}", s.message()))?;
    Ok(Logged { run_id, artifact_uri, model_version })
}

async fn log_run_contents(
    registry: &mut Registry,
    run_id: &str,
    run: TrainingRun<'_>,
) -> anyhow::Result<(String, Option<i64>)> {
    let batch = pb::LogBatchRequest {
        run_id: run_id.to_owned(),
        params: run.params.into_iter().map(|(key, value)| pb::Param { key, value }).collect(),
        metrics: run
            .metrics
            .into_iter()
            .map(|(key, value)| pb::Metric { key, value, step: 0, timestamp_ms: 0 })
            .collect(),
        tags: Vec::new(),
    };
    registry
        .tracking
        .log_batch(batch)
        .await
        .map_err(|s| anyhow::anyhow!("logging to run {run_id}: {}", s.message()))?;
    let chunks: Vec<pb::UploadChunk> = run
        .artifact
        .chunks(256 << 10)
        .enumerate()
        .map(|(i, data)| pb::UploadChunk {
            run_id: if i == 0 { run_id.to_owned() } else { String::new() },
            path: if i == 0 { "model/model.json".into() } else { String::new() },
            data: data.to_vec(),
        })
        .collect();
    let info = registry
        .artifacts
        .upload(futures::stream::iter(chunks))
        .await
        .map_err(|s| anyhow::anyhow!("uploading the model of run {run_id}: {}", s.message()))?
        .into_inner();
    let Some(name) = run.register_as else {
        return Ok((info.uri, None));
    };
    let version = registry
        .registry
        .create_model_version(pb::CreateModelVersionRequest {
            name: name.to_owned(),
            run_id: run_id.to_owned(),
            source: info.uri.clone(),
            sha256: info.sha256,
            description: String::new(),
            create_model: true,
        })
        .await
        .map_err(|s| anyhow::anyhow!("registering {name}: {}", s.message()))?
        .into_inner();
    if let Some(alias) = run.alias {
        registry
            .registry
            .set_alias(pb::SetAliasRequest { name: name.to_owned(), alias: alias.to_owned(), version: version.version })
            .await
            .map_err(|s| anyhow::anyhow!("setting alias {alias} of {name}: {}", s.message()))?;
    }
    Ok((info.uri, Some(version.version)))
}
