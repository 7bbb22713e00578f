//! `lightops serve <service>`: one service in the foreground, stopped by Ctrl-C or SIGTERM.

use anyhow::Context;

use crate::cli::{Global, ServeCommand, ServeRegistryArgs};

pub fn run(global: &Global, command: ServeCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        match command {
            ServeCommand::Registry(args) => registry(global, args).await,
        }
    })
}

async fn registry(global: &Global, args: ServeRegistryArgs) -> anyhow::Result<()> {
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
    lightops_registry::serve(config, listener, shutdown_signal()).await?;
    eprintln!("registry stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM (what Kubernetes sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
