//! The lightops monitor: consumes the prediction log (Kinesis shards or the local log
//! directory), archives every record once as parquet, keeps per-window statistics (event-time
//! hours, days or months), and reports drift against the model's reference profile with
//! Evidently's statistics, the missing-value share, a prediction summary and, once actuals
//! arrive, RMSE/MAE. Drifted windows raise alerts (log, stream, webhook) and, when configured,
//! a retraining request to the trainer, with a cooldown.
//!
//! - [`monitor`]: the engine; [`state`]: windows and reports; [`archive`]: parquet archive and
//!   dead letters; [`references`]: reference profiles; [`service`]: gRPC; [`error`]: one error →
//!   status mapping.

pub mod archive;
pub mod error;
pub mod monitor;
pub mod references;
pub mod service;
pub mod state;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use lightops_api::monitor::v1::monitor_server::MonitorServer;
use lightops_predlog::SourceTarget;
use tokio::net::TcpListener;

pub use error::{Error, Result};
pub use monitor::{Monitor, Retraining};
pub use references::References;
pub use state::Granularity;

/// How to run the monitor.
#[derive(Debug, Clone)]
pub struct Config {
    /// The prediction log to consume (None: only actuals and the archive).
    pub source: Option<SourceTarget>,
    /// Archive root: a directory or `s3://bucket/prefix`.
    pub archive: String,
    /// Positions, actuals and alerts.
    pub state_dir: PathBuf,
    /// Window length.
    pub granularity: Granularity,
    /// Drift settings (Evidently's defaults unless overridden).
    pub drift: lightops_ml::drift::DriftOptions,
    /// A window is judged once it has this many rows…
    pub min_rows: u64,
    /// …and no new row for this long.
    pub settle: Duration,
    /// Alert when a window's RMSE (with actuals) is above this.
    pub rmse_threshold: Option<f64>,
    /// POST alerts here as JSON.
    pub webhook: Option<String>,
    /// Ask the trainer to retrain on alerts.
    pub retraining: Option<Retraining>,
    /// Records read per batch at most.
    pub batch_records: usize,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The monitor could not open its archive or state.
    #[error("{0}")]
    Open(#[from] Error),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

pub use lightops_client::now_ms;

/// Serves the monitor on `listener` until `shutdown` completes. Health is NOT_SERVING until the
/// windows have been rebuilt from the archive.
pub async fn serve(
    config: Config,
    references: References,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    reporter.set_service_status("lightops.monitor.v1.Monitor", tonic_health::ServingStatus::NotServing).await;
    let monitor = Monitor::open(config.clone(), references).await?;
    let reflection = lightops_runtime::reflection(&["lightops.monitor.v1.Monitor"])?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let consumer = config.source.clone().map(|target| tokio::spawn(monitor.clone().consume(target, stop_rx)));
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    reporter.set_service_status("lightops.monitor.v1.Monitor", tonic_health::ServingStatus::Serving).await;
    tracing::info!(address = ?listener.local_addr().ok(), archive = %config.archive, "monitor serving");
    let served = tonic::transport::Server::builder()
        .layer(lightops_runtime::telemetry::grpc::ServerLayer::new())
        .add_service(health)
        .add_service(reflection)
        .add_service(MonitorServer::new(service::MonitorService::new(monitor)))
        .serve_with_incoming_shutdown(lightops_runtime::incoming_nodelay(listener), shutdown)
        .await;
    let _ = stop_tx.send(true);
    if let Some(consumer) = consumer {
        let _ = consumer.await;
    }
    served?;
    Ok(())
}
