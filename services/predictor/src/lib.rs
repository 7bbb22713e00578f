//! The lightops predictor: trip-duration predictions over gRPC (`lightops.predictor.v1`, and the
//! Open Inference Protocol v2 for KServe/Triton clients) and the workshop's HTTP API, all on one
//! port (9696 by default).
//!
//! - [`model`]: the model being served, loaded from an artifact URI or followed through the
//!   registry's watch stream, swapped atomically on promotion;
//! - [`predict`]: ride checks, scoring and the prediction log, shared by every API;
//! - [`grpc`], [`oip`], [`http`]: the three APIs; [`error`]: one error → gRPC status / HTTP
//!   response mapping; [`metrics`]: Prometheus text on `/metrics`.
//!
//! [`serve`] runs it with grpc.health.v1 (NOT_SERVING until a model is loaded) and reflection;
//! `lightops serve predictor` is the command that calls it.

pub mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod model;
pub mod oip;
pub mod predict;
pub mod sharded;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lightops_api::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use lightops_api::predictor::v1::predictor_server::PredictorServer;
use lightops_predlog::{LogConfig, PredictionLog};
use tokio::net::TcpListener;

pub use error::{Error, Result};
pub use model::{LoadedModel, ModelSlot, ModelSource, Serving};
pub use predict::Predictor;

/// How to run the predictor.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to serve: `models:/NAME@ALIAS` (with `registry`), a path, `file://…` or `s3://bucket/key`.
    pub model: String,
    /// Registry URL for `models:/` URIs.
    pub registry: Option<String>,
    /// Prediction log; `None` disables it.
    pub log: Option<LogConfig>,
    /// Largest HTTP request body and gRPC message, bytes.
    pub max_body_bytes: usize,
    /// How long shutdown may take to flush the prediction log before the rest is left spilled
    /// on disk for the next start.
    pub log_flush_timeout: Duration,
    /// How long shutdown waits for requests in flight and for clients to close their
    /// connections before closing them.
    pub drain_timeout: Duration,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is wrong (e.g. a models:/ URI without a registry).
    #[error("{0}")]
    Config(#[from] Error),
    /// The prediction log could not be started.
    #[error("prediction log: {0}")]
    Log(#[from] lightops_predlog::Error),
    /// The server failed.
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves predictions on `listener` until `shutdown` completes, then drains requests in flight
/// and flushes the prediction log.
///
/// A local artifact is loaded before serving and an unreadable one is an error. Otherwise the
/// server answers from the start: health NOT_SERVING, `/readyz` 503 and predictions
/// UNAVAILABLE until the model arrives, then SERVING.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let source = ModelSource::parse(&config.model, config.registry.as_deref())?;
    let slot = Arc::new(ModelSlot::default());
    if let ModelSource::Artifact(uri) = &source
        && !uri.starts_with("s3://")
    {
        slot.swap(model::load_artifact(uri).await?);
    }
    let log = match config.log.clone() {
        Some(log_config) => Some(PredictionLog::start(log_config).await?),
        None => None,
    };
    let metrics = Arc::new(metrics::Metrics::new(slot.clone(), log.clone()));
    let predictor =
        Predictor { slot: slot.clone(), log: log.clone(), metrics, requested: Arc::from(source.requested()) };

    let (reporter, health) = tonic_health::server::health_reporter();
    let set_status = {
        let reporter = reporter.clone();
        move |status: tonic_health::ServingStatus| {
            let reporter = reporter.clone();
            async move {
                for service in ["", "lightops.predictor.v1.Predictor", "inference.GRPCInferenceService"] {
                    reporter.set_service_status(service, status).await;
                }
            }
        }
    };
    set_status(tonic_health::ServingStatus::NotServing).await;
    let reflection =
        lightops_runtime::reflection(&["lightops.predictor.v1.Predictor", "inference.GRPCInferenceService"])?;
    let limit = config.max_body_bytes;
    let grpc = tonic::service::Routes::new(health)
        .add_service(reflection)
        .add_service(
            PredictorServer::new(grpc::PredictorService::new(predictor.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            GrpcInferenceServiceServer::new(oip::InferenceService::new(predictor.clone()))
                .max_decoding_message_size(limit),
        );
    let http = http::router(http::HttpState { predictor: predictor.clone(), max_body_bytes: limit });
    let app = grpc.into_axum_router().merge(http);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(model::follow(source, slot.clone(), stop_rx));
    // Flip health to SERVING once a model is in the slot.
    let readiness = {
        let slot = slot.clone();
        let mut stop = stop_tx.subscribe();
        tokio::spawn(async move {
            loop {
                if slot.current().is_some() {
                    set_status(tonic_health::ServingStatus::Serving).await;
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    };
    let address = listener.local_addr().ok();
    tracing::info!(address = ?address, model = %config.model, "predictor listening");
    let (draining_tx, draining) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .layer(lightops_runtime::telemetry::grpc::ServerLayer::new())
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(app))
        .serve_with_incoming_shutdown(lightops_runtime::incoming_nodelay(listener), async move {
            shutdown.await;
            let _ = draining_tx.send(());
        });
    // Graceful shutdown waits for clients to close their connections; a client that never does
    // (an idle keep-alive pool, a stuck peer) must not hold the process: after the drain timeout
    // the server future is dropped, which closes what is left.
    let drain_timeout = config.drain_timeout;
    let served = tokio::select! {
        served = server => served,
        () = async move {
            if draining.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(drain_timeout).await;
        } => {
            tracing::warn!(timeout = ?drain_timeout, "connections still open after the drain timeout; closing them");
            Ok(())
        }
    };
    let _ = stop_tx.send(true);
    readiness.abort();
    let _ = follower.await;
    if let Some(log) = &log {
        let counters = log.shutdown(config.log_flush_timeout).await;
        tracing::info!(
            queued = counters.queued,
            sent = counters.sent,
            spilled = counters.spilled,
            dropped = counters.dropped,
            "prediction log closed"
        );
    }
    served?;
    Ok(())
}
