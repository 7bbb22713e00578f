//! The lightops registry service: experiment tracking (experiments, runs, params, metrics, tags,
//! run search with MLflow's filter language) and the model registry (registered models,
//! versions, stages, aliases, `models:/` resolution and a watch stream), over gRPC.
//!
//! [`serve`] runs it on a listener with grpc.health.v1 (NOT_SERVING until the store is open) and
//! reflection; `lightops serve registry` is the command that calls it.

pub mod artifacts;
pub mod error;
pub mod filter;
pub mod service;
pub mod store;
pub mod uri;

use std::future::Future;
use std::sync::Arc;

use lightops_api::registry::v1::artifacts_server::ArtifactsServer;
use lightops_api::registry::v1::registry_server::RegistryServer;
use lightops_api::registry::v1::tracking_server::TrackingServer;
use tokio::net::TcpListener;

pub use artifacts::ArtifactService;
pub use error::{Error, Result};
pub use service::RegistryService;
pub use store::Store;

/// How to run the registry.
#[derive(Debug, Clone)]
pub struct Config {
    /// Metadata store URL: `sqlite://PATH` or `postgres://…`.
    pub store_url: String,
    /// Default artifact root for new experiments (a directory path or `s3://bucket/prefix`).
    pub artifact_root: String,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened or migrated.
    #[error("opening the registry store: {0}")]
    Store(#[from] Error),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves the registry on `listener` until `shutdown` completes, then drains in-flight calls.
///
/// The server answers health checks from the start (NOT_SERVING), opens the metadata store and
/// the artifact store, then flips `lightops.registry.v1.Tracking`, `…Registry`, `…Artifacts` and
/// the overall status to SERVING.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = Arc::new(tokio::sync::OnceCell::new());
    let files = Arc::new(tokio::sync::OnceCell::new());
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let service = RegistryService::new(store.clone(), closing);
    let artifacts = ArtifactService::new(store.clone(), files.clone());
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_not_serving::<TrackingServer<RegistryService>>().await;
    reporter.set_not_serving::<RegistryServer<RegistryService>>().await;
    reporter.set_not_serving::<ArtifactsServer<ArtifactService>>().await;
    reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    let reflection = lightops_runtime::reflection(&[
        "lightops.registry.v1.Tracking",
        "lightops.registry.v1.Registry",
        "lightops.registry.v1.Artifacts",
    ])?;
    let address = listener.local_addr().ok();
    let server = tonic::transport::Server::builder()
        .layer(lightops_runtime::telemetry::grpc::ServerLayer::new())
        .add_service(health)
        .add_service(reflection)
        .add_service(TrackingServer::new(service.clone()))
        .add_service(RegistryServer::new(service))
        .add_service(ArtifactsServer::new(artifacts))
        .serve_with_incoming_shutdown(lightops_runtime::incoming_nodelay(listener), async move {
            shutdown.await;
            // End watch streams so draining in-flight calls does not wait for subscribers.
            let _ = closing_tx.send(true);
        });
    let server = tokio::spawn(server);

    let opened = match Store::open(&config.store_url, &config.artifact_root).await {
        Ok(opened) => lightops_objstore::artifacts::ArtifactStore::open(&config.artifact_root)
            .await
            .map(|artifact_store| (opened, artifact_store))
            .map_err(Error::from),
        Err(error) => Err(error),
    };
    match opened {
        Ok((opened, artifact_store)) => {
            let _ = store.set(opened);
            let _ = files.set(artifact_store);
            reporter.set_serving::<ArtifactsServer<ArtifactService>>().await;
            reporter.set_serving::<TrackingServer<RegistryService>>().await;
            reporter.set_serving::<RegistryServer<RegistryService>>().await;
            reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
            tracing::info!(address = ?address, store = %redact(&config.store_url), "registry serving");
        }
        Err(error) => {
            server.abort();
            return Err(error.into());
        }
    }
    match server.await {
        Ok(result) => result.map_err(ServeError::from),
        Err(join) => Err(ServeError::Store(Error::FailedPrecondition(format!("server task ended: {join}")))),
    }
}

/// A store URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
