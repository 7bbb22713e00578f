//! The model being served and where it comes from.
//!
//! [`ModelSlot`] holds the current model behind an [`arc_swap::ArcSwapOption`]: a request takes
//! one `Arc` of the model at its start and scores every ride with it, so a swap never changes the
//! model under a request in flight, and readers never wait for a writer.
//!
//! [`follow`] fills the slot: a direct artifact URI (a path, `file://…` or `s3://bucket/key`) is
//! loaded once; a `models:/NAME@ALIAS` (or `/STAGE`, `/VERSION`) URI is resolved through the
//! registry's watch stream, and every change it reports is fetched through the registry's
//! artifact proxy (no storage credentials needed here), checked against the sha256 the registry
//! recorded and against the artifact's own checksum, and only then swapped in. A bad artifact is
//! refused and the previous model keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use lightops_api::registry::v1 as registry;
use lightops_ml::{Artifact, RideScorer};
use lightops_predlog::ModelId;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::error::{Error, Result};

/// A model ready to serve.
#[derive(Debug)]
pub struct LoadedModel {
    /// The compiled model.
    pub scorer: RideScorer,
    /// Registered name (the requested URI's name, or the artifact's file stem when unregistered)
    /// and version (`"3"`, empty for an unregistered artifact): shared with the prediction log,
    /// which recognises the model by this `Arc`.
    pub id: Arc<ModelId>,
    /// Where the artifact came from.
    pub source: String,
    /// sha256 of the artifact file, lowercase hex.
    pub sha256: String,
    /// The run that produced it, when known.
    pub run_id: String,
    /// Number of model features.
    pub features: usize,
    /// When it started serving, ms since the Unix epoch.
    pub loaded_at_ms: i64,
}

impl LoadedModel {
    /// Verifies and compiles artifact bytes. `expected_sha256` (from the registry) is checked
    /// against the file's bytes when given; the artifact's own content checksum always is.
    /// `id` names the model in answers and in the prediction log (shared with it as an `Arc`).
    pub fn from_bytes(bytes: &[u8], source: &str, expected_sha256: Option<&str>, id: ModelId) -> Result<Self> {
        let bad = |message: String| Error::Model { uri: source.to_owned(), message };
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Some(expected) = expected_sha256.filter(|e| !e.is_empty())
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(bad(format!(
                "sha256 is {sha256}, the registry recorded {expected}; refusing a corrupt artifact"
            )));
        }
        let artifact = Artifact::from_bytes(bytes, source).map_err(|e| bad(e.to_string()))?;
        let scorer = RideScorer::new(&artifact.model).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            scorer,
            id: Arc::new(id),
            source: source.to_owned(),
            sha256,
            run_id: String::new(),
            features: artifact.model.feature_count(),
            loaded_at_ms: now_ms(),
        })
    }
}

/// The model a request is answered with, borrowed from the [`ModelSlot`] without a reference
/// count: arc_swap's `load` records the borrow in a slot of the calling thread. (Cloning the `Arc`
/// per request made both cores write the count's cache line for every message; profiled at 1 ride
/// per message, taking the model was ~4.6% of the server's CPU.) Hold it for a request, not
/// across long waits; a swap in the meantime is not held up, the old model lives until the borrow
/// ends.
pub struct Serving(arc_swap::Guard<Option<Arc<LoadedModel>>>);

impl std::ops::Deref for Serving {
    type Target = LoadedModel;

    fn deref(&self) -> &LoadedModel {
        match self.0.as_deref() {
            Some(model) => model,
            // `ModelSlot::serving` makes a `Serving` only of a loaded model.
            None => unreachable!("a Serving holds a model"),
        }
    }
}

/// The current model, swapped atomically.
#[derive(Debug, Default)]
pub struct ModelSlot {
    current: ArcSwapOption<LoadedModel>,
    swaps: AtomicU64,
    refused: AtomicU64,
}

impl ModelSlot {
    /// The model now serving, if any.
    pub fn current(&self) -> Option<Arc<LoadedModel>> {
        self.current.load_full()
    }

    /// The model now serving, borrowed for one request: see [`Serving`].
    pub fn serving(&self) -> Option<Serving> {
        let guard = self.current.load();
        guard.is_some().then_some(Serving(guard))
    }

    /// Puts a new model in service; requests already running finish on the old one.
    pub fn swap(&self, model: LoadedModel) {
        tracing::info!(name = %model.id.name, version = %model.id.version, sha256 = %model.sha256, "model serving");
        self.current.store(Some(Arc::new(model)));
        self.swaps.fetch_add(1, Ordering::Relaxed);
    }

    /// Models loaded so far (the first load included).
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }

    /// Candidate models refused (fetch failed, checksum mismatch, unservable spec).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn refuse(&self, error: &Error) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::error!(%error, "model refused; the previous model keeps serving");
    }
}

/// What to serve.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A `models:/…` URI followed through the registry at this URL.
    Registry {
        /// The models:/ URI.
        uri: String,
        /// Registry URL (`http://host:port`).
        registry: String,
    },
    /// An artifact file: a path, `file://…` or `s3://bucket/key`.
    Artifact(String),
}

impl ModelSource {
    /// Parses `--model` with `--registry`. A `models:/` URI needs a registry URL.
    pub fn parse(model: &str, registry: Option<&str>) -> Result<Self> {
        if model.starts_with("models:/") {
            let Some(registry) = registry.filter(|r| !r.is_empty()) else {
                return Err(Error::invalid("model", format!("{model} needs --registry URL to be resolved")));
            };
            return Ok(Self::Registry { uri: model.to_owned(), registry: registry.to_owned() });
        }
        if model.is_empty() {
            return Err(Error::invalid("model", "is empty; give models:/NAME@ALIAS or an artifact path or s3:// URI"));
        }
        if model.contains("://") && !model.starts_with("file://") && !model.starts_with("s3://") {
            return Err(Error::invalid(
                "model",
                format!("{model}: unsupported URI; expected models:/…, a path, file://… or s3://bucket/key"),
            ));
        }
        Ok(Self::Artifact(model.to_owned()))
    }

    /// What was asked for, for display.
    pub fn requested(&self) -> &str {
        match self {
            Self::Registry { uri, .. } => uri,
            Self::Artifact(uri) => uri,
        }
    }
}

/// Loads an artifact file given by URI: a path, `file://PATH` or `s3://bucket/key`.
pub async fn load_artifact(uri: &str) -> Result<LoadedModel> {
    let bad = |message: String| Error::Model { uri: uri.to_owned(), message };
    let bytes = if let Some(rest) = uri.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').ok_or_else(|| bad("expected s3://bucket/key".into()))?;
        let store = lightops_objstore::artifacts::ArtifactStore::open(&format!("s3://{bucket}"))
            .await
            .map_err(|e| bad(e.to_string()))?;
        store.get(key).await.map_err(|e| bad(e.to_string()))?.to_vec()
    } else {
        let path = uri.strip_prefix("file://").unwrap_or(uri);
        tokio::fs::read(path).await.map_err(|e| bad(e.to_string()))?
    };
    let name = std::path::Path::new(uri)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    LoadedModel::from_bytes(&bytes, uri, None, ModelId { name, version: String::new() })
}

/// Keeps `slot` filled from `source` until `stop` fires.
///
/// A direct artifact is loaded once (retried with backoff while it cannot be read, e.g. S3 is
/// unreachable). A registry URI is watched: the watch stream reconnects with backoff when the
/// registry goes away, and serving continues on the current model meanwhile.
pub async fn follow(source: ModelSource, slot: Arc<ModelSlot>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut backoff = Backoff::default();
    loop {
        let outcome = match &source {
            ModelSource::Artifact(uri) => match load_artifact(uri).await {
                Ok(model) => {
                    slot.swap(model);
                    return;
                }
                Err(error) => Err(error),
            },
            ModelSource::Registry { uri, registry } => tokio::select! {
                outcome = watch_registry(uri, registry, &slot, &mut backoff) => outcome,
                _ = stop.changed() => return,
            },
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, retry_in = ?backoff.current(), "model source unavailable");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next()) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One watch session: connect, follow events until the stream ends or fails.
async fn watch_registry(uri: &str, registry_url: &str, slot: &ModelSlot, backoff: &mut Backoff) -> Result<()> {
    let unavailable = |e: &dyn std::fmt::Display| Error::Registry(format!("{registry_url}: {e}"));
    let endpoint = Channel::from_shared(registry_url.to_owned()).map_err(|e| unavailable(&e))?;
    let channel = endpoint.connect_timeout(Duration::from_secs(5)).connect().await.map_err(|e| unavailable(&e))?;
    let mut client = lightops_client::Registry::from_channel(channel);
    let mut events = client
        .registry
        .watch(registry::WatchRequest { uri: uri.to_owned() })
        .await
        .map_err(|s| Error::Registry(format!("watching {uri}: {}", s.message())))?
        .into_inner();
    tracing::info!(uri, registry = registry_url, "following the registry");
    loop {
        let event = match events.message().await {
            Ok(Some(event)) => event,
            Ok(None) => return Err(Error::Registry(format!("the watch of {uri} ended"))),
            Err(status) => return Err(Error::Registry(format!("watching {uri}: {}", status.message()))),
        };
        backoff.reset();
        let Some(version) = event.version else {
            if slot.current().is_some() {
                tracing::warn!(uri, "the URI resolves to no version now; the current model keeps serving");
            } else {
                tracing::info!(uri, "the URI resolves to no version yet; waiting for one");
            }
            continue;
        };
        let current = slot.current();
        if current.as_ref().is_some_and(|m| m.id.version == version.version.to_string() && m.sha256 == version.sha256) {
            continue;
        }
        match fetch_version(&mut client, &version).await {
            Ok(model) => slot.swap(model),
            Err(error) => slot.refuse(&error),
        }
    }
}

/// Downloads a registered version's artifact through the registry and verifies it.
async fn fetch_version(
    registry: &mut lightops_client::Registry,
    version: &registry::ModelVersion,
) -> Result<LoadedModel> {
    let label = format!("models:/{}/{}", version.name, version.version);
    let bytes = lightops_client::download_version(registry, version)
        .await
        .map_err(|e| Error::Model { uri: label.clone(), message: e.to_string() })?;
    let id = ModelId { name: version.name.clone(), version: version.version.to_string() };
    let mut model = LoadedModel::from_bytes(&bytes, &version.source, Some(&version.sha256), id)?;
    model.run_id = version.run_id.clone();
    Ok(model)
}

/// Exponential backoff from 100 ms to 5 s.
#[derive(Debug)]
struct Backoff {
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { delay: Duration::from_millis(100) }
    }
}

impl Backoff {
    fn current(&self) -> Duration {
        self.delay
    }

    fn next(&mut self) -> Duration {
        let delay = self.delay;
        self.delay = (self.delay * 2).min(Duration::from_secs(5));
        delay
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}

pub use lightops_client::now_ms;
