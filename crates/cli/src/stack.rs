//! The four services in one process on embedded defaults (SQLite, local artifacts, local
//! prediction log): what `lightops up` runs and `lightops demo` drives.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;

/// Where each service listens (port 0: any free port).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Registry (5000).
    pub registry: SocketAddr,
    /// Trainer (5001).
    pub trainer: SocketAddr,
    /// Predictor (9696).
    pub predictor: SocketAddr,
    /// Monitor (5002).
    pub monitor: SocketAddr,
}

/// Retraining the monitor asks the trainer for when a window drifts.
#[derive(Debug, Clone)]
pub struct RetrainOn {
    /// Training data.
    pub train: Vec<String>,
    /// Validation data.
    pub val: String,
}

/// The running services.
pub struct Stack {
    /// Registry URL.
    pub registry: String,
    /// Trainer URL.
    pub trainer: String,
    /// Predictor URL.
    pub predictor: String,
    /// Monitor URL.
    pub monitor: String,
    stop: tokio::sync::watch::Sender<bool>,
    /// The registry stops last: the others follow it until they stop.
    stop_registry: tokio::sync::watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

fn stopped(rx: &tokio::sync::watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

async fn bind(address: SocketAddr, what: &str) -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let listener =
        tokio::net::TcpListener::bind(address).await.with_context(|| format!("{what}: binding {address}"))?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

impl Stack {
    /// Starts registry, trainer, predictor (following `models:/trip_duration@staging`) and
    /// monitor under `home`.
    pub async fn start(home: &Path, ports: Ports, retrain: Option<RetrainOn>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
        let home = std::path::absolute(home).unwrap_or_else(|_| home.to_path_buf());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (stop_registry, registry_rx) = tokio::sync::watch::channel(false);
        let (registry_listener, registry) = bind(ports.registry, "registry").await?;
        let (trainer_listener, trainer) = bind(ports.trainer, "trainer").await?;
        let (predictor_listener, predictor) = bind(ports.predictor, "predictor").await?;
        let (monitor_listener, monitor) = bind(ports.monitor, "monitor").await?;
        let path = |name: &str| -> PathBuf { home.join(name) };
        let mut tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)> = Vec::new();

        let config = lightops_registry::Config {
            store_url: format!("sqlite://{}", path("registry.db").display()),
            artifact_root: path("artifacts").display().to_string(),
        };
        let shutdown = stopped(&registry_rx);
        tasks.push((
            "registry",
            tokio::spawn(async move { Ok(lightops_registry::serve(config, registry_listener, shutdown).await?) }),
        ));
        // The others follow the registry: start them once its store is open, so that their first
        // attempt works instead of logging a warning and retrying.
        if !lightops_runtime::wait_serving(&registry, Duration::from_secs(30)).await {
            tracing::warn!(registry, "the registry is not serving after 30 s; starting the others anyway");
        }

        let config = lightops_trainer::Config {
            registry_url: registry.clone(),
            cache_dir: path("cache").join("downloads"),
            concurrency: 1,
            queue_capacity: 16,
            default_executor: lightops_api::trainer::v1::Executor::InProcess,
        };
        let shutdown = stopped(&rx);
        tasks.push((
            "trainer",
            tokio::spawn(async move { Ok(lightops_trainer::serve(config, None, trainer_listener, shutdown).await?) }),
        ));

        let log = lightops_predlog::LogConfig::new(lightops_predlog::SinkTarget::Local(path("logs")), path("spill"));
        let config = lightops_predictor::Config {
            model: "models:/trip_duration@staging".into(),
            registry: Some(registry.clone()),
            log: Some(log),
            max_body_bytes: 4 << 20,
            log_flush_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        };
        let shutdown = stopped(&rx);
        tasks.push((
            "predictor",
            tokio::spawn(async move { Ok(lightops_predictor::serve(config, predictor_listener, shutdown).await?) }),
        ));

        std::fs::create_dir_all(path("logs"))?;
        let retraining = retrain.map(|on| lightops_monitor::Retraining {
            trainer_url: trainer.clone(),
            spec: lightops_api::trainer::v1::JobSpec {
                train: on.train,
                val: on.val,
                experiment: "nyc-taxi-experiment".into(),
                register_as: "trip_duration".into(),
                alias: "staging".into(),
                promotion: Some(lightops_api::trainer::v1::PromotionPolicy {
                    metric: "rmse".into(),
                    min_improvement: 0.01,
                }),
                ..Default::default()
            },
            cooldown: Duration::from_secs(3600),
        });
        let config = lightops_monitor::Config {
            source: Some(lightops_predlog::SourceTarget::Local(path("logs"))),
            archive: path("archive").display().to_string(),
            state_dir: path("monitor"),
            granularity: lightops_monitor::Granularity::Month,
            drift: lightops_ml::drift::DriftOptions::default(),
            min_rows: 500,
            settle: Duration::from_secs(1),
            rmse_threshold: None,
            webhook: None,
            retraining,
            batch_records: 10_000,
        };
        let references = lightops_monitor::References::new(Some(registry.clone()), None);
        let shutdown = stopped(&rx);
        tasks.push((
            "monitor",
            tokio::spawn(
                async move { Ok(lightops_monitor::serve(config, references, monitor_listener, shutdown).await?) },
            ),
        ));
        Ok(Self { registry, trainer, predictor, monitor, stop, stop_registry, tasks })
    }

    /// Stops every service and waits for them (the predictor flushes its log).
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        // The registry's task is first in the list: it is told to stop once the others have.
        let mut tasks = self.tasks;
        tasks.rotate_left(1);
        for (name, task) in tasks {
            if name == "registry" {
                let _ = self.stop_registry.send(true);
            }
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => anyhow::bail!("{name}: {error:#}"),
                Ok(Err(join)) => anyhow::bail!("{name}: {join}"),
                Err(_) => anyhow::bail!("{name} did not stop within 30 s"),
            }
        }
        Ok(())
    }
}
