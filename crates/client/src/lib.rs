//! Conversations with the lightops registry that the CLI and the trainer share: connecting,
//! logging a training run (params, metrics, model artifact), registering a version, and reading
//! back what an alias points at, with its metrics, for the promotion policy.

use std::time::Duration;

use lightops_api::registry::v1 as pb;
use lightops_runtime::telemetry::grpc::TracedChannel;
use pb::artifacts_client::ArtifactsClient;
use pb::registry_client::RegistryClient;
use pb::tracking_client::TrackingClient;
use tonic::transport::Channel;

/// Where the model file goes among a run's artifacts.
pub const MODEL_ARTIFACT_PATH: &str = "model/model.json";

/// Tag that links a run to the trainer job that produced it.
pub const JOB_ID_TAG: &str = "lightops.job_id";

/// What went wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is invalid or nothing answers there.
    #[error("registry {url}: {message}")]
    Connect {
        /// The registry URL.
        url: String,
        /// Why.
        message: String,
    },
    /// A call failed; `what` says which.
    #[error("{what}: {}", status.message())]
    Call {
        /// The operation, in words (`creating a run`).
        what: String,
        /// The gRPC status.
        status: tonic::Status,
    },
}

impl Error {
    fn call(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Call { what: what.into(), status }
    }

    /// The gRPC code of a failed call (Unavailable for a connection failure).
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::Connect { .. } => tonic::Code::Unavailable,
            Self::Call { status, .. } => status.code(),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A connection to the registry's three services. Calls carry the caller's trace context
/// ([`lightops_runtime::telemetry::grpc`]).
#[derive(Debug, Clone)]
pub struct Registry {
    /// Experiments and runs.
    pub tracking: TrackingClient<TracedChannel>,
    /// Registered models, versions, aliases.
    pub registry: RegistryClient<TracedChannel>,
    /// Run artifacts.
    pub artifacts: ArtifactsClient<TracedChannel>,
}

impl Registry {
    /// Connects to `url` (`http://host:port`), waiting at most 5 s.
    pub async fn connect(url: &str) -> Result<Self> {
        let failed = |message: String| Error::Connect { url: url.to_owned(), message };
        let channel = Channel::from_shared(url.to_owned())
            .map_err(|e| failed(format!("not a URL ({e})")))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| failed(format!("cannot connect ({e}); is `lightops serve registry` running?")))?;
        Ok(Self::from_channel(channel))
    }

    /// Uses an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        let channel = lightops_runtime::telemetry::grpc::traced(channel);
        Self {
            tracking: TrackingClient::new(channel.clone()),
            registry: RegistryClient::new(channel.clone()),
            artifacts: ArtifactsClient::new(channel),
        }
    }
}

/// What a training run logs.
#[derive(Debug, Clone)]
pub struct TrainingRun {
    /// Experiment name (created if needed).
    pub experiment: String,
    /// Run params.
    pub params: Vec<(String, String)>,
    /// Run metrics.
    pub metrics: Vec<(String, f64)>,
    /// Run tags (beyond `lightops.command`).
    pub tags: Vec<(String, String)>,
    /// The model artifact file.
    pub artifact: Vec<u8>,
    /// Registered model to add a version to.
    pub register_as: Option<String>,
    /// Alias to point at the new version.
    pub alias: Option<String>,
}

impl TrainingRun {
    /// The params, metrics and artifact of a trained model, as `lightops train` and the trainer
    /// log them.
    pub fn from_trained(trained: &lightops_ml::Trained, experiment: &str) -> Self {
        let body = &trained.artifact.body;
        let spec = &body.feature_spec;
        let crossed: Vec<String> = spec.crossed.iter().map(|c| format!("{}={}", c.name, c.columns.join("+"))).collect();
        let params = vec![
            ("categorical".to_owned(), spec.categorical.join(",")),
            ("numerical".to_owned(), spec.numerical.join(",")),
            ("crossed".to_owned(), crossed.join(",")),
            ("target_range".to_owned(), format!("{}..={}", spec.target_min, spec.target_max)),
            ("solver".to_owned(), body.training.solver.clone()),
            ("train".to_owned(), body.training.train_sources.join(",")),
            ("val".to_owned(), body.training.val_source.clone()),
        ];
        let info = &body.training;
        let metrics = vec![
            ("rmse".to_owned(), info.validation.rmse),
            ("mae".to_owned(), info.validation.mae),
            ("r2".to_owned(), info.validation.r2),
            ("train_rmse".to_owned(), info.train.rmse),
            ("train_r2".to_owned(), info.train.r2),
            ("train_rows".to_owned(), info.train_rows as f64),
            ("val_rows".to_owned(), info.val_rows as f64),
            ("features".to_owned(), trained.artifact.model.feature_count() as f64),
        ];
        Self {
            experiment: experiment.to_owned(),
            params,
            metrics,
            tags: Vec::new(),
            artifact: trained.artifact.to_bytes(),
            register_as: None,
            alias: None,
        }
    }
}

/// What the registry recorded.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The run.
    pub run_id: String,
    /// Where the model file is stored.
    pub artifact_uri: String,
    /// The registered version, when one was asked for.
    pub model_version: Option<i64>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Finds the experiment by name, creating it if needed (and tolerating a concurrent creation).
pub async fn ensure_experiment(registry: &mut Registry, name: &str) -> Result<pb::Experiment> {
    let by_name = || pb::GetExperimentRequest { by: Some(pb::get_experiment_request::By::Name(name.to_owned())) };
    match registry.tracking.get_experiment(by_name()).await {
        Ok(found) => Ok(found.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => {
            let create = pb::CreateExperimentRequest { name: name.to_owned(), artifact_location: String::new() };
            match registry.tracking.create_experiment(create).await {
                Ok(created) => Ok(created.into_inner()),
                // Another client created it in between.
                Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(registry
                    .tracking
                    .get_experiment(by_name())
                    .await
                    .map_err(Error::call(format!("experiment {name}")))?
                    .into_inner()),
                Err(status) => Err(Error::call(format!("creating experiment {name}"))(status)),
            }
        }
        Err(status) => Err(Error::call(format!("experiment {name}"))(status)),
    }
}

/// Creates (or finds) the experiment, logs a run with params, metrics and tags, uploads the
/// model, and registers a version (and alias) when asked. A failure after the run exists marks
/// it FAILED.
pub async fn log_training(registry: &mut Registry, run: TrainingRun) -> Result<Logged> {
    let experiment = ensure_experiment(registry, &run.experiment).await?;
    let mut tags = vec![pb::Tag { key: "lightops.command".into(), value: "lightops train".into() }];
    tags.extend(run.tags.iter().map(|(key, value)| pb::Tag { key: key.clone(), value: value.clone() }));
    let created = registry
        .tracking
        .create_run(pb::CreateRunRequest { experiment_id: experiment.experiment_id, tags, ..Default::default() })
        .await
        .map_err(Error::call("creating a run"))?
        .into_inner();
    let run_id = created.run_id.clone();
    let result = log_run_contents(registry, &run_id, run).await;
    let status = if result.is_ok() { pb::RunStatus::Finished } else { pb::RunStatus::Failed };
    let finish = pb::UpdateRunRequest {
        run_id: run_id.clone(),
        status: status as i32,
        end_time_ms: now_ms(),
        run_name: String::new(),
    };
    let finished = registry.tracking.update_run(finish).await;
    let (artifact_uri, model_version) = result?;
    finished.map_err(Error::call(format!("finishing run {run_id}")))?;
    Ok(Logged { run_id, artifact_uri, model_version })
}

async fn log_run_contents(registry: &mut Registry, run_id: &str, run: TrainingRun) -> Result<(String, Option<i64>)> {
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
    registry.tracking.log_batch(batch).await.map_err(Error::call(format!("logging to run {run_id}")))?;
    let chunks: Vec<pb::UploadChunk> = run
        .artifact
        .chunks(256 << 10)
        .enumerate()
        .map(|(i, data)| pb::UploadChunk {
            run_id: if i == 0 { run_id.to_owned() } else { String::new() },
            path: if i == 0 { MODEL_ARTIFACT_PATH.into() } else { String::new() },
            data: data.to_vec(),
        })
        .collect();
    let info = registry
        .artifacts
        .upload(futures::stream::iter(chunks))
        .await
        .map_err(Error::call(format!("uploading the model of run {run_id}")))?
        .into_inner();
    let Some(name) = run.register_as else {
        return Ok((info.uri, None));
    };
    let version = registry
        .registry
        .create_model_version(pb::CreateModelVersionRequest {
            name: name.clone(),
            run_id: run_id.to_owned(),
            source: info.uri.clone(),
            sha256: info.sha256,
            description: String::new(),
            create_model: true,
        })
        .await
        .map_err(Error::call(format!("registering {name}")))?
        .into_inner();
    if let Some(alias) = run.alias {
        set_alias(registry, &name, &alias, version.version).await?;
    }
    Ok((info.uri, Some(version.version)))
}

/// Points `alias` of model `name` at `version`.
pub async fn set_alias(registry: &mut Registry, name: &str, alias: &str, version: i64) -> Result<pb::ModelVersion> {
    Ok(registry
        .registry
        .set_alias(pb::SetAliasRequest { name: name.to_owned(), alias: alias.to_owned(), version })
        .await
        .map_err(Error::call(format!("setting alias {alias} of {name}")))?
        .into_inner())
}

/// The version an alias points at and its run's latest metrics; `None` when the model or the
/// alias does not exist yet.
pub async fn alias_holder(
    registry: &mut Registry,
    name: &str,
    alias: &str,
) -> Result<Option<(pb::ModelVersion, Vec<pb::Metric>)>> {
    let uri = format!("models:/{name}@{alias}");
    let version = match registry.registry.resolve(pb::ResolveRequest { uri: uri.clone() }).await {
        Ok(version) => version.into_inner(),
        Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
        Err(status) => return Err(Error::call(format!("resolving {uri}"))(status)),
    };
    let run = registry
        .tracking
        .get_run(pb::GetRunRequest { run_id: version.run_id.clone() })
        .await
        .map_err(Error::call(format!("run {} of {uri}", version.run_id)))?
        .into_inner();
    Ok(Some((version, run.metrics)))
}

/// Downloads a registered version's artifact through the registry's artifact proxy (no storage
/// credentials needed): finds the file whose storage URI is the version's source among its run's
/// artifacts, then streams it. The caller verifies it (sha256, artifact checksum).
pub async fn download_version(registry: &mut Registry, version: &pb::ModelVersion) -> Result<Vec<u8>> {
    let label = format!("models:/{}/{}", version.name, version.version);
    let files = registry
        .artifacts
        .list(pb::ListArtifactsRequest { run_id: version.run_id.clone() })
        .await
        .map_err(Error::call(format!("{label}: listing run {} artifacts", version.run_id)))?
        .into_inner()
        .files;
    let Some(file) = files.iter().find(|f| f.uri == version.source) else {
        return Err(Error::Call {
            what: label,
            status: tonic::Status::not_found(format!(
                "{} is not among run {}'s artifacts",
                version.source, version.run_id
            )),
        });
    };
    let mut chunks = registry
        .artifacts
        .download(pb::DownloadRequest { run_id: version.run_id.clone(), path: file.path.clone() })
        .await
        .map_err(Error::call(format!("{label}: downloading {}", file.path)))?
        .into_inner();
    let mut bytes = Vec::with_capacity(file.size as usize);
    while let Some(chunk) =
        chunks.message().await.map_err(Error::call(format!("{label}: downloading {}", file.path)))?
    {
        bytes.extend_from_slice(&chunk.data);
    }
    Ok(bytes)
}
