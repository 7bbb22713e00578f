//! The lightops trainer: training jobs over gRPC (`lightops.trainer.v1`), run in-process (a
//! bounded queue, a configured number at once, cancellable) or as Kubernetes Jobs that run
//! `lightops train`, on demand or on cron schedules; every job logs a run to the registry,
//! registers a version and moves an alias only under the promotion policy.
//!
//! - [`service`]: the gRPC service, the in-process queue and schedules; [`jobs`]: the job table
//!   and its event streams; [`runner`]: one in-process job, step by step;
//!   [`kube_executor`]: Jobs on a cluster; [`kube_runner`]: following them to the end;
//!   [`promotion`]: the policy; [`schedule`]: cron and month templates; [`error`]: one error →
//!   status mapping.
//!
//! [`serve`] runs it with grpc.health.v1 and reflection; `lightops serve trainer` calls it.

pub mod error;
pub mod jobs;
pub mod kube_executor;
pub mod kube_runner;
pub mod promotion;
pub mod runner;
pub mod schedule;
pub mod service;

use std::future::Future;
use std::path::PathBuf;

use lightops_api::trainer::v1 as pb;
use pb::trainer_server::TrainerServer;
use tokio::net::TcpListener;

pub use error::{Error, Result};
pub use service::TrainerService;

/// How to run the trainer.
#[derive(Debug, Clone)]
pub struct Config {
    /// Registry URL, for runs, versions and aliases.
    pub registry_url: String,
    /// Download cache for `https://` data.
    pub cache_dir: PathBuf,
    /// In-process jobs running at once.
    pub concurrency: usize,
    /// In-process jobs waiting at most; more are refused (RESOURCE_EXHAUSTED).
    pub queue_capacity: usize,
    /// Executor for jobs that do not choose.
    pub default_executor: pb::Executor,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

pub use lightops_client::now_ms;

/// Serves the trainer on `listener` until `shutdown` completes. With `kube`, jobs can run on
/// the cluster, and Jobs a previous trainer started are adopted first.
pub async fn serve(
    config: Config,
    kube: Option<kube_runner::KubeRunner>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let service = TrainerService::new(&config, kube.clone());
    if let Some(kube) = &kube {
        kube.adopt(service.inner().jobs.clone(), config.registry_url.clone()).await;
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<TrainerServer<TrainerService>>().await;
    let reflection = lightops_runtime::reflection(&["lightops.trainer.v1.Trainer"])?;
    let inner = service.inner().clone();
    tracing::info!(address = ?listener.local_addr().ok(), registry = %config.registry_url, "trainer serving");
    let served = tonic::transport::Server::builder()
        .layer(lightops_runtime::telemetry::grpc::ServerLayer::new())
        .add_service(health)
        .add_service(reflection)
        .add_service(TrainerServer::new(service))
        .serve_with_incoming_shutdown(lightops_runtime::incoming_nodelay(listener), shutdown)
        .await;
    inner.stop_schedules();
    served?;
    Ok(())
}
