//! `lightops serve <service>`: one service in the foreground, stopped by Ctrl-C or SIGTERM.

use anyhow::Context;

use crate::cli::{
    ExecutorArg, Global, ServeCommand, ServeMonitorArgs, ServePredictorArgs, ServeRegistryArgs, ServeTrainerArgs,
};

pub fn run(global: &Global, command: ServeCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        match command {
            ServeCommand::Registry(args) => registry(global, args).await,
            ServeCommand::Predictor(args) => predictor(global, args).await,
            ServeCommand::Trainer(args) => trainer(global, args).await,
            ServeCommand::Monitor(args) => monitor(global, *args).await,
        }
    })
}

async fn registry(global: &Global, args: ServeRegistryArgs) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    std::fs::create_dir_all(&global.home).with_context(|| format!("creating {}", global.home.display()))?;
    let home = std::path::absolute(&global.home).unwrap_or_else(|_| global.home.clone());
    let store_url = args.store.unwrap_or_else(|| format!("sqlite://{}", home.join("registry.db").display()));
    let artifact_root = args.artifact_root.unwrap_or_else(|| home.join("artifacts").display().to_string());
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("--listen {}", args.listen))?;
    eprintln!(
        "registry listening on http://{} (store {}, artifacts {artifact_root})",
        listener.local_addr()?,
        lightops_registry::redact(&store_url)
    );
    let config = lightops_registry::Config { store_url, artifact_root };
    lightops_registry::serve(config, listener, stop).await?;
    eprintln!("registry stopped");
    Ok(())
}

async fn predictor(global: &Global, args: ServePredictorArgs) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let home = std::path::absolute(&global.home).unwrap_or_else(|_| global.home.clone());
    let sink = args.log_sink.unwrap_or_else(|| home.join("logs").display().to_string());
    let log = if sink == "none" {
        None
    } else {
        let target: lightops_predlog::SinkTarget = sink.parse().with_context(|| format!("--log-sink {sink}"))?;
        let spill_dir = args.spill_dir.unwrap_or_else(|| home.join("spill"));
        let mut config = lightops_predlog::LogConfig::new(target, spill_dir);
        config.linger = args.log_linger;
        config.queue_capacity = args.log_queue.unwrap_or(config.queue_capacity);
        Some(config)
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("--listen {}", args.listen))?;
    eprintln!(
        "predictor listening on http://{} (gRPC and HTTP; model {}, prediction log {sink})",
        listener.local_addr()?,
        args.model
    );
    let config = lightops_predictor::Config {
        model: args.model,
        registry: args.registry,
        log,
        max_body_bytes: args.max_body_bytes,
        log_flush_timeout: args.log_flush_timeout,
        drain_timeout: args.drain_timeout,
    };
    lightops_predictor::serve(config, listener, stop).await?;
    eprintln!("predictor stopped");
    Ok(())
}

async fn trainer(global: &Global, args: ServeTrainerArgs) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let home = std::path::absolute(&global.home).unwrap_or_else(|_| global.home.clone());
    let kube = match &args.job_template {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("--job-template {}", path.display()))?;
            let template: lightops_trainer::kube_executor::JobTemplate = serde_json::from_str(&text)
                .with_context(|| format!("--job-template {}: not a Job template", path.display()))?;
            let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
            let namespace = args.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
            let executor = lightops_trainer::kube_executor::KubeExecutor::new(client, namespace, template);
            Some(lightops_trainer::kube_runner::KubeRunner::new(executor))
        }
        None => None,
    };
    let default_executor = match args.executor {
        ExecutorArg::InProcess => lightops_api::trainer::v1::Executor::InProcess,
        ExecutorArg::Kubernetes if kube.is_none() => {
            anyhow::bail!("--executor kubernetes needs --job-template FILE")
        }
        ExecutorArg::Kubernetes => lightops_api::trainer::v1::Executor::Kubernetes,
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("--listen {}", args.listen))?;
    eprintln!(
        "trainer listening on http://{} (registry {}, executor {:?}, {} at once)",
        listener.local_addr()?,
        args.registry,
        args.executor,
        args.concurrency
    );
    let config = lightops_trainer::Config {
        registry_url: args.registry,
        cache_dir: home.join("cache").join("downloads"),
        concurrency: args.concurrency,
        queue_capacity: args.queue,
        default_executor,
    };
    lightops_trainer::serve(config, kube, listener, stop).await?;
    eprintln!("trainer stopped");
    Ok(())
}

async fn monitor(global: &Global, args: ServeMonitorArgs) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let home = std::path::absolute(&global.home).unwrap_or_else(|_| global.home.clone());
    let source_text = args.source.unwrap_or_else(|| home.join("logs").display().to_string());
    let source = if source_text == "none" {
        None
    } else {
        let target: lightops_predlog::SourceTarget =
            source_text.parse().with_context(|| format!("--source {source_text}"))?;
        if let lightops_predlog::SourceTarget::Local(dir) = &target {
            std::fs::create_dir_all(dir).with_context(|| format!("--source {}", dir.display()))?;
        }
        Some(target)
    };
    let archive = args.archive.unwrap_or_else(|| home.join("archive").display().to_string());
    let fixed = match &args.reference {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("--reference {}", path.display()))?;
            let profile = lightops_monitor::references::profile_of_artifact(&bytes, &path.display().to_string())?;
            Some((path.display().to_string(), profile))
        }
        None => None,
    };
    let retraining = match (&args.trainer, args.retrain_val.clone()) {
        (Some(trainer), Some(val)) if !args.retrain_train.is_empty() => Some(lightops_monitor::Retraining {
            trainer_url: trainer.clone(),
            spec: lightops_api::trainer::v1::JobSpec {
                train: args.retrain_train.clone(),
                val,
                register_as: args.retrain_register_as.clone(),
                alias: args.retrain_alias.clone(),
                promotion: Some(lightops_api::trainer::v1::PromotionPolicy {
                    metric: "rmse".into(),
                    min_improvement: args.retrain_min_improvement,
                }),
                ..Default::default()
            },
            cooldown: args.retrain_cooldown,
        }),
        (Some(_), _) => anyhow::bail!("--trainer needs --retrain-train and --retrain-val (what to retrain on)"),
        _ => None,
    };
    let config = lightops_monitor::Config {
        source,
        archive: archive.clone(),
        state_dir: args.state_dir.unwrap_or_else(|| home.join("monitor")),
        granularity: args.window.parse()?,
        drift: lightops_ml::drift::DriftOptions::default(),
        min_rows: args.min_rows,
        settle: args.settle,
        rmse_threshold: args.rmse_threshold,
        webhook: args.webhook,
        retraining,
        batch_records: 10_000,
    };
    let references = lightops_monitor::References::new(args.registry.clone(), fixed);
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("--listen {}", args.listen))?;
    eprintln!(
        "monitor listening on http://{} (source {source_text}, archive {archive}, windows by {})",
        listener.local_addr()?,
        args.window
    );
    lightops_monitor::serve(config, references, listener, stop).await?;
    eprintln!("monitor stopped");
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM (what Kubernetes sends).
///
/// The handlers are installed when this is called, not when the future is first polled, so a
/// signal that arrives while a service is still starting is not lost (nor fatal: without a
/// handler SIGINT would kill the process instead of stopping it cleanly).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let interrupt = async {
                match interrupt {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            let terminate = async {
                match terminate {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = interrupt => {}
                () = terminate => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
