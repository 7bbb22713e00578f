//! The registry over real gRPC on an ephemeral port, against SQLite and PostgreSQL.
//!
//! PostgreSQL: `tests/run` starts a local server and sets `LIGHTOPS_TEST_POSTGRES_URL`; without it
//! the PostgreSQL variants say so and pass, unless `LIGHTOPS_REQUIRE_POSTGRES=1` (set by
//! `tests/run`) makes that a failure.

use std::time::Duration;

use lightops_api::registry::v1 as pb;
use pb::registry_client::RegistryClient;
use pb::tracking_client::TrackingClient;
use tonic::Code;
use tonic::transport::Channel;

struct Server {
    url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(store_url: Option<String>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store_url = store_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("registry.db").display()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config =
            lightops_registry::Config { store_url, artifact_root: dir.path().join("artifacts").display().to_string() };
        let task = tokio::spawn(async move {
            lightops_registry::serve(config, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("registry serves");
        });
        let server = Self { url, shutdown: Some(tx), task, _dir: dir };
        server.wait_serving().await;
        server
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone()).expect("url").connect().await.expect("connect")
    }

    /// Polls grpc.health.v1 until SERVING, with a deadline.
    async fn wait_serving(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(channel) = Channel::from_shared(self.url.clone()).expect("url").connect().await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let request = tonic_health::pb::HealthCheckRequest { service: "lightops.registry.v1.Registry".into() };
                if let Ok(reply) = health.check(request).await
                    && reply.into_inner().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "registry did not become SERVING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task).await.expect("stops").expect("no panic");
    }
}

fn postgres_url() -> Option<String> {
    match std::env::var("LIGHTOPS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("LIGHTOPS_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "LIGHTOPS_REQUIRE_POSTGRES=1 but LIGHTOPS_TEST_POSTGRES_URL is not set"
            );
            eprintln!("LIGHTOPS_TEST_POSTGRES_URL is not set: skipping the PostgreSQL variant");
            None
        }
    }
}

/// A fresh PostgreSQL database per test, so tests do not see each other's rows.
async fn fresh_postgres(base: &str, name: &str) -> String {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(base).await.expect("connect to postgres");
    let db = format!("lightops_test_{name}_{}", std::process::id());
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}"))).execute(&mut admin).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}"))).execute(&mut admin).await.expect("create db");
    let (prefix, _) = base.rsplit_once('/').expect("url has a database");
    format!("{prefix}/{db}")
}

fn tag(key: &str, value: &str) -> pb::Tag {
    pb::Tag { key: key.into(), value: value.into() }
}

fn param(key: &str, value: &str) -> pb::Param {
    pb::Param { key: key.into(), value: value.into() }
}

fn metric(key: &str, value: f64, step: i64) -> pb::Metric {
    pb::Metric { key: key.into(), value, step, timestamp_ms: 0 }
}

async fn tracking_scenario(server: &Server) {
    let mut tracking = TrackingClient::new(server.channel().await);
    let experiment = tracking
        .create_experiment(pb::CreateExperimentRequest {
            name: "nyc-taxi-experiment".into(),
            artifact_location: String::new(),
        })
        .await
        .expect("create experiment")
        .into_inner();
    assert!(experiment.artifact_location.ends_with(&format!("/{}", experiment.experiment_id)));
    let duplicate = tracking
        .create_experiment(pb::CreateExperimentRequest {
            name: "nyc-taxi-experiment".into(),
            artifact_location: String::new(),
        })
        .await
        .expect_err("duplicate");
    assert_eq!(duplicate.code(), Code::AlreadyExists, "{duplicate:?}");
    let by_name = tracking
        .get_experiment(pb::GetExperimentRequest {
            by: Some(pb::get_experiment_request::By::Name("nyc-taxi-experiment".into())),
        })
        .await
        .expect("by name")
        .into_inner();
    assert_eq!(by_name, experiment);
    let missing = tracking
        .get_experiment(pb::GetExperimentRequest {
            by: Some(pb::get_experiment_request::By::ExperimentId("999".into())),
        })
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
    let bad_id = tracking
        .get_experiment(pb::GetExperimentRequest {
            by: Some(pb::get_experiment_request::By::ExperimentId("abc".into())),
        })
        .await
        .expect_err("bad id");
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    assert!(bad_id.message().starts_with("experiment_id:"), "{}", bad_id.message());

    // Paging through experiments.
    for name in ["b", "c"] {
        tracking
            .create_experiment(pb::CreateExperimentRequest { name: name.into(), ..Default::default() })
            .await
            .expect("more");
    }
    let page = tracking
        .list_experiments(pb::ListExperimentsRequest { page_size: 2, page_token: String::new() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.experiments.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["c", "b"]);
    let last = tracking
        .list_experiments(pb::ListExperimentsRequest { page_size: 2, page_token: page.next_page_token })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(last.experiments.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["nyc-taxi-experiment"]);
    assert!(last.next_page_token.is_empty());
    let bad_token = tracking
        .list_experiments(pb::ListExperimentsRequest { page_size: 2, page_token: "x".into() })
        .await
        .expect_err("token");
    assert_eq!(bad_token.code(), Code::InvalidArgument);

    // Three runs with different metrics and params.
    let mut run_ids = Vec::new();
    for (i, (rmse, features)) in [(8.2, "PU,DO"), (7.9, "PU_DO"), (9.1, "PU,DO")].into_iter().enumerate() {
        let run = tracking
            .create_run(pb::CreateRunRequest {
                experiment_id: experiment.experiment_id.clone(),
                run_name: format!("run-{i}"),
                start_time_ms: 1_000 + i as i64,
                tags: vec![tag("team", if i == 2 { "y" } else { "x" })],
            })
            .await
            .expect("create run")
            .into_inner();
        assert_eq!(run.status, pb::RunStatus::Running as i32);
        tracking
            .log_batch(pb::LogBatchRequest {
                run_id: run.run_id.clone(),
                metrics: vec![metric("rmse", rmse + 1.0, 0), metric("rmse", rmse, 1)],
                params: vec![param("features", features)],
                tags: vec![],
            })
            .await
            .expect("log");
        if i < 2 {
            tracking
                .update_run(pb::UpdateRunRequest {
                    run_id: run.run_id.clone(),
                    status: pb::RunStatus::Finished as i32,
                    end_time_ms: 5_000,
                    run_name: String::new(),
                })
                .await
                .expect("finish");
        }
        run_ids.push(run.run_id);
    }

    // Params are write-once: the same value again is fine, another value is refused.
    let same = pb::LogBatchRequest {
        run_id: run_ids[0].clone(),
        params: vec![param("features", "PU,DO")],
        ..Default::default()
    };
    tracking.log_batch(same).await.expect("same param value");
    let rewrite = pb::LogBatchRequest {
        run_id: run_ids[0].clone(),
        params: vec![param("features", "other")],
        ..Default::default()
    };
    let err = tracking.log_batch(rewrite).await.expect_err("rewrite");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("params are write-once"), "{}", err.message());
    let nan = pb::LogBatchRequest {
        run_id: run_ids[0].clone(),
        metrics: vec![metric("rmse", f64::NAN, 2)],
        ..Default::default()
    };
    let err = tracking.log_batch(nan).await.expect_err("nan");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("metrics: metrics[0] (rmse) is not a finite number"), "{}", err.message());

    // Latest metric and history.
    let run = tracking.get_run(pb::GetRunRequest { run_id: run_ids[0].clone() }).await.expect("get run").into_inner();
    assert_eq!(run.status, pb::RunStatus::Finished as i32);
    assert_eq!(run.end_time_ms, 5_000);
    assert_eq!(run.metrics.len(), 1);
    assert_eq!((run.metrics[0].value, run.metrics[0].step), (8.2, 1));
    assert_eq!(run.params, vec![param("features", "PU,DO")]);
    assert_eq!(run.tags, vec![tag("team", "x")]);
    let history = tracking
        .get_metric_history(pb::GetMetricHistoryRequest { run_id: run_ids[0].clone(), key: "rmse".into() })
        .await
        .expect("history")
        .into_inner()
        .metrics;
    assert_eq!(history.iter().map(|m| m.value).collect::<Vec<_>>(), [9.2, 8.2]);

    // Search with the filter language, ordering and paging.
    let search = |filter: &str, order: &[&str], page_size: u32, page_token: &str| pb::SearchRunsRequest {
        experiment_ids: vec![experiment.experiment_id.clone()],
        filter: filter.into(),
        order_by: order.iter().map(|o| o.to_string()).collect(),
        page_size,
        page_token: page_token.into(),
    };
    let found = tracking
        .search_runs(search(r#"metrics.rmse < 8.5 and params.features = "PU,DO" and tags.team = 'x' and attributes.status = "FINISHED""#, &[], 0, ""))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(found.runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), [run_ids[0].as_str()]);
    let ordered = tracking.search_runs(search("", &["metrics.rmse ASC"], 2, "")).await.expect("order").into_inner();
    assert_eq!(
        ordered.runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
        [run_ids[1].as_str(), run_ids[0].as_str()]
    );
    let rest = tracking
        .search_runs(search("", &["metrics.rmse ASC"], 2, &ordered.next_page_token))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(rest.runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), [run_ids[2].as_str()]);
    assert!(rest.next_page_token.is_empty());
    let like = tracking.search_runs(search("params.features LIKE 'PU\\_%' or", &[], 0, "")).await.expect_err("or");
    assert_eq!(like.code(), Code::InvalidArgument);
    let bad = tracking.search_runs(search("metrics.rmse == 8", &[], 0, "")).await.expect_err("bad filter");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("filter: at column 14: expected a comparison operator"), "{}", bad.message());
    let ilike =
        tracking.search_runs(search("params.features ILIKE 'pu\\_do'", &[], 0, "")).await.expect("ilike").into_inner();
    assert_eq!(ilike.runs.len(), 1);

    // Delete.
    tracking.delete_run(pb::DeleteRunRequest { run_id: run_ids[2].clone() }).await.expect("delete");
    let gone = tracking.get_run(pb::GetRunRequest { run_id: run_ids[2].clone() }).await.expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
}

/// Runs every registry call; returns a watch stream left open, to show shutdown ends it.
async fn registry_scenario(server: &Server) -> tonic::Streaming<pb::WatchEvent> {
    let mut registry = RegistryClient::new(server.channel().await);
    let model = registry
        .create_registered_model(pb::CreateRegisteredModelRequest {
            name: "trip_duration".into(),
            description: "ride duration in minutes".into(),
            tags: vec![tag("owner", "ml")],
        })
        .await
        .expect("create model")
        .into_inner();
    assert_eq!(model.latest_version, 0);
    let dup = registry
        .create_registered_model(pb::CreateRegisteredModelRequest {
            name: "trip_duration".into(),
            ..Default::default()
        })
        .await
        .expect_err("duplicate");
    assert_eq!(dup.code(), Code::AlreadyExists);
    let unknown = registry
        .get_registered_model(pb::GetRegisteredModelRequest { name: "nope".into() })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);

    let sha = "ab".repeat(32);
    for expected in 1..=3 {
        let version = registry
            .create_model_version(pb::CreateModelVersionRequest {
                name: "trip_duration".into(),
                source: format!("/artifacts/{expected}/model.json"),
                sha256: sha.clone(),
                ..Default::default()
            })
            .await
            .expect("version")
            .into_inner();
        assert_eq!(version.version, expected);
    }
    let bad_sha = registry
        .create_model_version(pb::CreateModelVersionRequest {
            name: "trip_duration".into(),
            source: "x".into(),
            sha256: "zz".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad sha");
    assert_eq!(bad_sha.code(), Code::InvalidArgument);
    let no_model = registry
        .create_model_version(pb::CreateModelVersionRequest {
            name: "other".into(),
            source: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("no model");
    assert_eq!(no_model.code(), Code::NotFound);

    // Stages: moving v3 to Production archives v1 there.
    let stage = |version: i64, stage: pb::Stage, archive: bool| pb::TransitionStageRequest {
        name: "trip_duration".into(),
        version,
        stage: stage as i32,
        archive_existing_versions: archive,
    };
    registry.transition_stage(stage(1, pb::Stage::Production, false)).await.expect("v1 prod");
    registry.transition_stage(stage(3, pb::Stage::Production, true)).await.expect("v3 prod");
    let v1 = registry
        .get_model_version(pb::GetModelVersionRequest { name: "trip_duration".into(), version: 1 })
        .await
        .expect("v1")
        .into_inner();
    assert_eq!(v1.stage, pb::Stage::Archived as i32);

    // Aliases and the three URI forms.
    registry
        .set_alias(pb::SetAliasRequest { name: "trip_duration".into(), alias: "staging".into(), version: 2 })
        .await
        .expect("alias");
    let resolve = |uri: &str| pb::ResolveRequest { uri: uri.into() };
    let by_alias = registry.resolve(resolve("models:/trip_duration@staging")).await.expect("alias").into_inner();
    assert_eq!((by_alias.version, by_alias.aliases.clone()), (2, vec!["staging".to_string()]));
    assert_eq!(
        registry.resolve(resolve("models:/trip_duration/Production")).await.expect("stage").into_inner().version,
        3
    );
    assert_eq!(registry.resolve(resolve("models:/trip_duration/1")).await.expect("version").into_inner().version, 1);
    let missing_alias = registry.resolve(resolve("models:/trip_duration@champion")).await.expect_err("no alias");
    assert_eq!(missing_alias.code(), Code::NotFound);
    let bad_uri = registry.resolve(resolve("runs:/abc")).await.expect_err("bad uri");
    assert_eq!(bad_uri.code(), Code::InvalidArgument);
    let bad_alias = registry
        .set_alias(pb::SetAliasRequest { name: "trip_duration".into(), alias: "12".into(), version: 2 })
        .await
        .expect_err("numeric alias");
    assert_eq!(bad_alias.code(), Code::InvalidArgument);

    let updated = registry
        .update_registered_model(pb::UpdateRegisteredModelRequest {
            name: "trip_duration".into(),
            description: Some("minutes, exact OLS".into()),
            set_tags: vec![tag("owner", "platform"), tag("team", "ml")],
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.description, "minutes, exact OLS");
    assert_eq!(updated.tags, vec![tag("owner", "platform"), tag("team", "ml")]);
    let unknown_update = registry
        .update_registered_model(pb::UpdateRegisteredModelRequest { name: "nope".into(), ..Default::default() })
        .await
        .expect_err("unknown");
    assert_eq!(unknown_update.code(), Code::NotFound);

    let listed = registry
        .list_registered_models(pb::ListRegisteredModelsRequest { name_contains: "trip".into(), ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.models.len(), 1);
    assert_eq!(listed.models[0].aliases.get("staging"), Some(&2));
    let versions = registry
        .list_model_versions(pb::ListModelVersionsRequest { name: "trip_duration".into() })
        .await
        .expect("versions")
        .into_inner();
    assert_eq!(versions.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [3, 2, 1]);

    // Watch: the current target first, then the alias move.
    let mut watch = registry
        .watch(pb::WatchRequest { uri: "models:/trip_duration@staging".into() })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("first event").expect("open");
    assert_eq!(first.version.map(|v| v.version), Some(2));
    registry
        .set_alias(pb::SetAliasRequest { name: "trip_duration".into(), alias: "staging".into(), version: 3 })
        .await
        .expect("move alias");
    let moved = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("event in time")
        .expect("ok")
        .expect("open");
    assert_eq!(moved.version.map(|v| v.version), Some(3));
    registry
        .delete_alias(pb::DeleteAliasRequest { name: "trip_duration".into(), alias: "staging".into() })
        .await
        .expect("delete alias");
    let cleared = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("event in time")
        .expect("ok")
        .expect("open");
    assert_eq!(cleared.version, None, "a deleted alias resolves to nothing");

    registry
        .delete_registered_model(pb::DeleteRegisteredModelRequest { name: "trip_duration".into() })
        .await
        .expect("delete");
    let gone = registry
        .get_model_version(pb::GetModelVersionRequest { name: "trip_duration".into(), version: 1 })
        .await
        .expect_err("gone");
    assert_eq!(gone.code(), Code::NotFound);

    // Keep a subscriber open: stopping the server must end its stream, not wait for it.
    let mut lingering = registry
        .watch(pb::WatchRequest { uri: "models:/trip_duration@staging".into() })
        .await
        .expect("watch")
        .into_inner();
    lingering.message().await.expect("first").expect("open");
    lingering
}

/// Stops the server while a watch stream is open: the registry ends the stream and
/// the server stops promptly (a subscriber never holds up a rolling restart).
async fn stop_with_subscriber(server: Server, mut lingering: tonic::Streaming<pb::WatchEvent>) {
    server.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(5), lingering.message()).await.expect("the watch stream ends");
    assert!(!matches!(ended, Ok(Some(_))), "no event after shutdown: {ended:?}");
}

async fn concurrency_scenario(server: &Server) {
    let channel = server.channel().await;
    let mut registry = RegistryClient::new(channel.clone());
    registry
        .create_registered_model(pb::CreateRegisteredModelRequest { name: "busy".into(), ..Default::default() })
        .await
        .expect("model");
    let mut tasks = Vec::new();
    for i in 0..32 {
        let mut client = RegistryClient::new(server.channel().await);
        tasks.push(tokio::spawn(async move {
            client
                .create_model_version(pb::CreateModelVersionRequest {
                    name: "busy".into(),
                    source: format!("s{i}"),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().version)
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.expect("join").expect("no error, no database is locked"));
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=32).collect::<Vec<_>>());

    let mut tracking = TrackingClient::new(channel);
    let experiment = tracking
        .create_experiment(pb::CreateExperimentRequest { name: "concurrent".into(), ..Default::default() })
        .await
        .expect("experiment")
        .into_inner();
    let run = tracking
        .create_run(pb::CreateRunRequest { experiment_id: experiment.experiment_id, ..Default::default() })
        .await
        .expect("run")
        .into_inner();
    let mut tasks = Vec::new();
    for client_id in 0..32i32 {
        let mut client = TrackingClient::new(server.channel().await);
        let run_id = run.run_id.clone();
        tasks.push(tokio::spawn(async move {
            let metrics = (0..50i32)
                .map(|s| metric("loss", f64::from(client_id) + f64::from(s) / 100.0, i64::from(client_id * 100 + s)))
                .collect();
            client.log_batch(pb::LogBatchRequest { run_id, metrics, ..Default::default() }).await.map(|_| ())
        }));
    }
    for task in tasks {
        task.await.expect("join").expect("logged");
    }
    let history = tracking
        .get_metric_history(pb::GetMetricHistoryRequest { run_id: run.run_id.clone(), key: "loss".into() })
        .await
        .expect("history")
        .into_inner()
        .metrics;
    assert_eq!(history.len(), 32 * 50, "no metric lost");
    let latest = tracking.get_run(pb::GetRunRequest { run_id: run.run_id }).await.expect("run").into_inner();
    assert_eq!(latest.metrics[0].step, 31 * 100 + 49, "latest is the highest step");
}

#[tokio::test]
async fn sqlite_tracking() {
    let server = Server::start(None).await;
    tracking_scenario(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn sqlite_registry() {
    let server = Server::start(None).await;
    let lingering = registry_scenario(&server).await;
    stop_with_subscriber(server, lingering).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrency() {
    let server = Server::start(None).await;
    concurrency_scenario(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn postgres_tracking() {
    let Some(base) = postgres_url() else { return };
    let server = Server::start(Some(fresh_postgres(&base, "tracking").await)).await;
    tracking_scenario(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn postgres_registry() {
    let Some(base) = postgres_url() else { return };
    let server = Server::start(Some(fresh_postgres(&base, "registry").await)).await;
    let lingering = registry_scenario(&server).await;
    stop_with_subscriber(server, lingering).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrency() {
    let Some(base) = postgres_url() else { return };
    let server = Server::start(Some(fresh_postgres(&base, "concurrency").await)).await;
    concurrency_scenario(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let server = Server::start(None).await;
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies =
        reflection.server_reflection_info(futures::stream::iter([request])).await.expect("reflection").into_inner();
    let reply = replies.message().await.expect("reply").expect("one");
    let Some(tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["lightops.registry.v1.Tracking", "lightops.registry.v1.Registry"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    server.stop().await;
}

async fn artifacts_scenario(server: &Server, artifact_root: &std::path::Path) {
    use pb::artifacts_client::ArtifactsClient;
    let channel = server.channel().await;
    let mut tracking = TrackingClient::new(channel.clone());
    let mut artifacts = ArtifactsClient::new(channel);
    let experiment = tracking
        .create_experiment(pb::CreateExperimentRequest { name: "files".into(), ..Default::default() })
        .await
        .expect("experiment")
        .into_inner();
    let run = tracking
        .create_run(pb::CreateRunRequest { experiment_id: experiment.experiment_id.clone(), ..Default::default() })
        .await
        .expect("run")
        .into_inner();
    // 200 kB of deterministic bytes, uploaded in 7 kB chunks.
    let content: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let chunks: Vec<pb::UploadChunk> = content
        .chunks(7_000)
        .enumerate()
        .map(|(i, data)| pb::UploadChunk {
            run_id: if i == 0 { run.run_id.clone() } else { String::new() },
            path: if i == 0 { "model/model.json".into() } else { String::new() },
            data: data.to_vec(),
        })
        .collect();
    let info = artifacts.upload(futures::stream::iter(chunks)).await.expect("upload").into_inner();
    assert_eq!(info.size, 200_000);
    {
        use sha2::Digest;
        assert_eq!(info.sha256, hex::encode(sha2::Sha256::digest(&content)));
    }
    let listed =
        artifacts.list(pb::ListArtifactsRequest { run_id: run.run_id.clone() }).await.expect("list").into_inner();
    assert_eq!(listed.files, vec![info.clone()]);

    let download = |path: &str| pb::DownloadRequest { run_id: run.run_id.clone(), path: path.into() };
    let mut stream = artifacts.download(download("model/model.json")).await.expect("download").into_inner();
    let mut received = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        received.extend_from_slice(&chunk.data);
    }
    assert_eq!(received, content, "byte-identical round trip");

    let escape = artifacts
        .upload(futures::stream::iter([pb::UploadChunk {
            run_id: run.run_id.clone(),
            path: "../../etc/x".into(),
            data: vec![1],
        }]))
        .await
        .expect_err("escaping path");
    assert_eq!(escape.code(), Code::InvalidArgument);
    let unknown =
        artifacts.download(pb::DownloadRequest { run_id: "nope".into(), path: "a".into() }).await.expect_err("run");
    assert_eq!(unknown.code(), Code::NotFound);

    // Tamper with the stored file: the registry refuses to serve it.
    let stored = artifact_root.join(&experiment.experiment_id).join(&run.run_id).join("artifacts/model/model.json");
    assert_eq!(std::path::PathBuf::from(&info.uri), stored);
    let mut bytes = std::fs::read(&stored).expect("stored file");
    bytes[1_000] ^= 0xff;
    std::fs::write(&stored, &bytes).expect("tamper");
    let tampered = artifacts.download(download("model/model.json")).await.expect_err("tampered");
    assert_eq!(tampered.code(), Code::DataLoss);
    assert!(tampered.message().contains("refusing to serve it"), "{}", tampered.message());
}

#[tokio::test]
async fn sqlite_artifacts_on_local_disk() {
    let server = Server::start(None).await;
    let root = server._dir.path().join("artifacts");
    artifacts_scenario(&server, &root).await;
    server.stop().await;
}

#[tokio::test]
async fn postgres_artifacts_on_local_disk() {
    let Some(base) = postgres_url() else { return };
    let server = Server::start(Some(fresh_postgres(&base, "artifacts").await)).await;
    let root = server._dir.path().join("artifacts");
    artifacts_scenario(&server, &root).await;
    server.stop().await;
}

/// Until its store is open the registry answers health checks with NOT_SERVING and calls with
/// UNAVAILABLE. The store here is a "PostgreSQL" that accepts connections and never answers.
#[tokio::test]
async fn not_serving_until_the_store_is_open() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = lightops_registry::Config {
        store_url: format!("postgres://lightops@127.0.0.1:{silent_port}/registry"),
        artifact_root: dir.path().display().to_string(),
    };
    let server = tokio::spawn(lightops_registry::serve(config, listener, std::future::pending()));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let channel = loop {
        if let Ok(channel) = Channel::from_shared(url.clone()).expect("url").connect().await {
            break channel;
        }
        assert!(tokio::time::Instant::now() < deadline, "the registry never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in
        ["", "lightops.registry.v1.Registry", "lightops.registry.v1.Tracking", "lightops.registry.v1.Artifacts"]
    {
        let reply =
            health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.expect("health");
        assert_eq!(
            reply.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::NotServing as i32,
            "{service:?}"
        );
    }
    let mut registry = RegistryClient::new(channel);
    let early = registry.resolve(pb::ResolveRequest { uri: "models:/m@staging".into() }).await.expect_err("not ready");
    assert_eq!(early.code(), Code::Unavailable, "{early:?}");
    server.abort();
    hold.abort();
}
