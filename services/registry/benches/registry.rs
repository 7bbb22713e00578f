//! Registry benchmark: `cargo bench -p lightops-registry --bench registry`.
//!
//! Starts the registry in-process on an ephemeral port (SQLite in a temporary directory, or
//! PostgreSQL when `LIGHTOPS_BENCH_POSTGRES_URL` is set) and measures, over real gRPC:
//! - LogBatch with 1,000 metrics: latency p50/p99 (target p99 ≤ 5 ms);
//! - Resolve `models:/NAME@ALIAS`: latency p50/p99 (target p99 ≤ 1 ms);
//! - runs created + logged + finished per second from 32 concurrent clients;
//! - Watch: time from sending SetAlias to the subscriber receiving the change, SetAlias's own
//!   round trip included (target < 100 ms).
//!
//! Prints a Markdown table for docs/benchmarks.md.

use std::time::{Duration, Instant};

use lightops_api::registry::v1 as pb;
use pb::registry_client::RegistryClient;
use pb::tracking_client::TrackingClient;
use tonic::transport::Channel;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index.min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store_url, backend) = match std::env::var("LIGHTOPS_BENCH_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => (url, "PostgreSQL"),
        _ => (format!("sqlite://{}", dir.path().join("registry.db").display()), "SQLite"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config =
        lightops_registry::Config { store_url, artifact_root: dir.path().join("artifacts").display().to_string() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lightops_registry::serve(config, listener, async {
        let _ = stopped.await;
    }));
    let channel = loop {
        if let Ok(channel) = Channel::from_shared(url.clone()).expect("url").connect().await {
            let mut tracking = TrackingClient::new(channel.clone());
            if tracking.list_experiments(pb::ListExperimentsRequest::default()).await.is_ok() {
                break channel;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut tracking = TrackingClient::new(channel.clone());
    let mut registry = RegistryClient::new(channel.clone());
    let experiment = tracking
        .create_experiment(pb::CreateExperimentRequest { name: "bench".into(), ..Default::default() })
        .await
        .expect("experiment")
        .into_inner();
    let new_run = |tracking: &mut TrackingClient<Channel>| {
        let request = pb::CreateRunRequest { experiment_id: experiment.experiment_id.clone(), ..Default::default() };
        let mut tracking = tracking.clone();
        async move { tracking.create_run(request).await.expect("run").into_inner() }
    };

    // 1. LogBatch of 1,000 metrics (10 keys × 100 steps), 200 calls after 20 warm-up calls.
    let run = new_run(&mut tracking).await;
    let mut batch_latency = Vec::new();
    for i in 0..220i64 {
        let metrics = (0..1000i64)
            .map(|j| pb::Metric {
                key: format!("m{}", j % 10),
                value: j as f64,
                step: i * 100 + j / 10,
                timestamp_ms: 0,
            })
            .collect();
        let request = pb::LogBatchRequest { run_id: run.run_id.clone(), metrics, ..Default::default() };
        let started = Instant::now();
        tracking.log_batch(request).await.expect("log batch");
        if i >= 20 {
            batch_latency.push(started.elapsed());
        }
    }

    // 2. Alias resolution, 5,000 calls after 100 warm-up calls.
    registry
        .create_registered_model(pb::CreateRegisteredModelRequest { name: "m".into(), ..Default::default() })
        .await
        .expect("model");
    for _ in 0..2 {
        registry
            .create_model_version(pb::CreateModelVersionRequest {
                name: "m".into(),
                source: "s".into(),
                ..Default::default()
            })
            .await
            .expect("version");
    }
    registry
        .set_alias(pb::SetAliasRequest { name: "m".into(), alias: "staging".into(), version: 1 })
        .await
        .expect("alias");
    let mut resolve_latency = Vec::new();
    for i in 0..5100 {
        let started = Instant::now();
        registry.resolve(pb::ResolveRequest { uri: "models:/m@staging".into() }).await.expect("resolve");
        if i >= 100 {
            resolve_latency.push(started.elapsed());
        }
    }

    // 3. 32 concurrent clients, each creating 25 runs with 5 params and 10 metrics, then finishing them.
    let clients = 32;
    let per_client = 25;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut tracking =
            TrackingClient::new(Channel::from_shared(url.clone()).expect("url").connect().await.expect("connect"));
        let experiment_id = experiment.experiment_id.clone();
        tasks.push(tokio::spawn(async move {
            for r in 0..per_client {
                let run = tracking
                    .create_run(pb::CreateRunRequest { experiment_id: experiment_id.clone(), ..Default::default() })
                    .await
                    .expect("run")
                    .into_inner();
                let params = (0..5).map(|p| pb::Param { key: format!("p{p}"), value: format!("{c}-{r}") }).collect();
                let metrics = (0..10)
                    .map(|m| pb::Metric { key: format!("m{m}"), value: f64::from(m), step: 0, timestamp_ms: 0 })
                    .collect();
                tracking
                    .log_batch(pb::LogBatchRequest { run_id: run.run_id.clone(), params, metrics, tags: vec![] })
                    .await
                    .expect("log");
                tracking
                    .update_run(pb::UpdateRunRequest {
                        run_id: run.run_id,
                        status: pb::RunStatus::Finished as i32,
                        end_time_ms: 1,
                        run_name: String::new(),
                    })
                    .await
                    .expect("finish");
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    let runs_per_second = f64::from(clients * per_client) / started.elapsed().as_secs_f64();

    // 4. Watch: SetAlias sent → event received (an upper bound: includes the SetAlias call), 50 moves.
    let mut watch =
        registry.watch(pb::WatchRequest { uri: "models:/m@staging".into() }).await.expect("watch").into_inner();
    watch.message().await.expect("first").expect("open");
    let mut watch_latency = Vec::new();
    for i in 0..50 {
        let started = Instant::now();
        registry
            .set_alias(pb::SetAliasRequest {
                name: "m".into(),
                alias: "staging".into(),
                version: if i % 2 == 0 { 2 } else { 1 },
            })
            .await
            .expect("move");
        watch.message().await.expect("event").expect("open");
        watch_latency.push(started.elapsed());
    }

    let _ = stop.send(());
    let _ = server.await;

    println!("backend: {backend}");
    println!();
    println!("| measurement | p50 | p99 | target |");
    println!("|---|---:|---:|---|");
    println!(
        "| LogBatch, 1,000 metrics (200 calls) | {} | {} | p99 ≤ 5 ms |",
        ms(percentile(&mut batch_latency, 0.5)),
        ms(percentile(&mut batch_latency, 0.99))
    );
    println!(
        "| Resolve models:/m@staging (5,000 calls) | {} | {} | p99 ≤ 1 ms |",
        ms(percentile(&mut resolve_latency, 0.5)),
        ms(percentile(&mut resolve_latency, 0.99))
    );
    println!(
        "| Watch: SetAlias sent → subscriber notified (50 moves) | {} | {} (max {}) | < 100 ms |",
        ms(percentile(&mut watch_latency, 0.5)),
        ms(percentile(&mut watch_latency, 0.99)),
        ms(*watch_latency.iter().max().expect("samples"))
    );
    println!();
    println!(
        "32 concurrent clients: {runs_per_second:.0} runs/s created + logged (5 params, 10 metrics) + finished ({} runs)",
        clients * per_client
    );
}
