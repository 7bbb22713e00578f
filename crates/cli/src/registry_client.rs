//! Talking to the registry from the CLI: one conversation per command, on a single-threaded
//! runtime. The conversations themselves live in `lightops-client`, shared with the trainer.

use anyhow::Context;
pub use lightops_client::Registry;

/// Connects to the registry at `url` and runs `work` with it on a single-threaded runtime: the
/// CLI's commands are one conversation each.
pub fn with_registry<T>(url: &str, work: impl AsyncFnOnce(&mut Registry) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let mut registry = Registry::connect(url).await.with_context(|| format!("--registry {url}"))?;
        work(&mut registry).await
    })
}
