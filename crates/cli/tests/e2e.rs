//! End to end, as on a cluster: the four services as separate OS processes on ephemeral ports,
//! the registry on PostgreSQL with artifacts on S3, the prediction log on Kinesis and the
//! archive on S3 (moto's server), driven through the workshop's story: a training job registers
//! v1 as staging, the predictor follows it, three months are replayed with their own event
//! times while the predictor is restarted and the monitor killed, actuals are joined, the
//! monitor flags 2020-06 only, asks the trainer to retrain, and the archive on S3 holds every
//! ride_id exactly once.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    connect, json_of, lightops, replay, rides, runtime, signal, start_moto, start_service, wait_exit, wait_serving,
};
use lightops_api::monitor::v1 as monitor;

fn postgres_url() -> Option<String> {
    match std::env::var("LIGHTOPS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(std::env::var("LIGHTOPS_REQUIRE_POSTGRES").as_deref() != Ok("1"), "PostgreSQL required");
            eprintln!("LIGHTOPS_TEST_POSTGRES_URL is not set: skipping the end-to-end test");
            None
        }
    }
}

/// A fresh database on the test server (psql is beside the server tests/postgres.sh starts).
fn fresh_database(base: &str) -> String {
    let name = format!("lightops_e2e_{}", std::process::id());
    for sql in [format!("DROP DATABASE IF EXISTS {name}"), format!("CREATE DATABASE {name}")] {
        let status = Command::new("psql").args([base, "-q", "-c", &sql]).status().expect("psql");
        assert!(status.success(), "{sql}");
    }
    let (prefix, _) = base.rsplit_once('/').expect("database in the URL");
    format!("{prefix}/{name}")
}

#[test]
fn the_workshop_story_across_processes_with_postgres_s3_and_kinesis() {
    let Some(base) = postgres_url() else { return };
    let Some((_moto, endpoint)) = start_moto() else { return };
    let store = fresh_database(&base);
    let env = vec![
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ];
    let rt = runtime();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "tests"))
            .force_path_style(true)
            .build(),
    );
    rt.block_on(s3.create_bucket().bucket("lightops").send()).expect("bucket");
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new("test", "test", None, None, "tests"))
            .build(),
    );
    rt.block_on(kinesis.create_stream().stream_name("predictions").shard_count(2).send()).expect("stream");

    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let (_registry, registry) =
        start_service("registry", h, &["--store", &store, "--artifact-root", "s3://lightops/artifacts"], &env);
    wait_serving(&registry);
    let (_trainer, trainer) = start_service("trainer", h, &["--registry", &registry], &env);
    wait_serving(&trainer);
    let predictor_args =
        ["--model", "models:/trip_duration@staging", "--registry", &registry, "--log-sink", "kinesis://predictions"];
    let (predictor, predictor_url) = start_service("predictor", h, &predictor_args, &env);
    let retrain_train = common::sample("2022-03");
    let retrain_val = common::sample("2022-06");
    let monitor_args = [
        "--registry",
        &registry,
        "--source",
        "kinesis://predictions",
        "--archive",
        "s3://lightops/archive",
        "--min-rows",
        "500",
        "--settle",
        "1s",
        "--trainer",
        &trainer,
        "--retrain-train",
        &retrain_train,
        "--retrain-val",
        &retrain_val,
    ];
    let (monitor_process, monitor_url) = start_service("monitor", h, &monitor_args, &env);
    wait_serving(&monitor_url);

    // 1. A training job registers v1 and gives it the staging alias; the predictor follows.
    let job = json_of(&lightops(
        h,
        &[
            "jobs",
            "submit",
            "--trainer",
            &trainer,
            "--train",
            &common::sample("2022-01"),
            "--val",
            &common::sample("2022-02"),
            "--register-as",
            "trip_duration",
            "--alias",
            "staging",
            "--wait",
            "--json",
        ],
    ));
    assert_eq!(
        (job["state"].as_str(), job["model_version"].as_i64(), job["promoted"].as_bool()),
        (Some("SUCCEEDED"), Some(1), Some(true))
    );
    wait_serving(&predictor_url);

    // 2. Replay: March; the predictor is restarted (SIGTERM: it flushes its log); June; the
    //    monitor is killed (SIGKILL) and 2020-06 arrives while it is down; a new monitor resumes.
    let (march, march_actual) = rides("2022-03");
    let (june, june_actual) = rides("2022-06");
    let (covid, covid_actual) = rides("2020-06");
    replay(&predictor_url, &march);
    signal(&predictor, "TERM");
    wait_exit(predictor);
    let (_predictor, predictor_url) = start_service("predictor", h, &predictor_args, &env);
    wait_serving(&predictor_url);
    replay(&predictor_url, &june);
    let mut monitor_process = monitor_process;
    let _ = monitor_process.0.kill();
    let _ = monitor_process.0.wait();
    replay(&predictor_url, &covid);
    let (_monitor, monitor_url) = start_service("monitor", h, &monitor_args, &env);
    wait_serving(&monitor_url);
    let total = (march.len() + june.len() + covid.len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    let retraining_job = rt.block_on(async {
        let mut client = monitor::monitor_client::MonitorClient::new(connect(&monitor_url).await);
        loop {
            let status = client.get_status(monitor::GetStatusRequest {}).await.expect("status").into_inner();
            if status.records >= total {
                assert_eq!(status.records, total, "every ride counted once");
                break;
            }
            assert!(Instant::now() < deadline, "monitor counted {} of {total}", status.records);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Actuals for every month.
        for (rides, actual) in [(&march, &march_actual), (&june, &june_actual), (&covid, &covid_actual)] {
            let actuals: Vec<monitor::Actual> = rides
                .iter()
                .zip(actual.iter())
                .map(|(r, d)| monitor::Actual { ride_id: r.ride_id.clone(), duration: *d })
                .collect();
            let answer =
                client.ingest_actuals(monitor::IngestActualsRequest { actuals }).await.expect("actuals").into_inner();
            assert_eq!(answer.matched as usize, rides.len());
        }
        // 3. Verdicts: only 2020-06 drifts; RMSE per month once actuals arrived.
        for (month, drifts) in [("2022-03", false), ("2022-06", false), ("2020-06", true)] {
            let report = client
                .get_report(monitor::GetReportRequest { window: month.into() })
                .await
                .expect("report")
                .into_inner();
            assert_eq!(report.dataset_drift, drifts, "{month}: {:?}", report.columns);
            assert!(report.quality.is_some_and(|q| q.rmse > 5.0 && q.rmse < 15.0), "{month}");
        }
        // 4. The alert for 2020-06 and the retraining job it asked for.
        let deadline = Instant::now() + Duration::from_secs(30);
        let alert = loop {
            let mut stream =
                client.watch_alerts(monitor::WatchAlertsRequest { replay: true }).await.expect("alerts").into_inner();
            if let Ok(Ok(Some(alert))) = tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                break alert;
            }
            assert!(Instant::now() < deadline, "no alert");
        };
        assert_eq!((alert.window.as_str(), alert.kind.as_str()), ("2020-06", "dataset_drift"));
        assert!(!alert.retraining_job_id.is_empty(), "retraining requested");
        alert.retraining_job_id
    });
    let retrained = json_of(&lightops(h, &["jobs", "watch", &retraining_job, "--trainer", &trainer, "--json"]));
    assert_eq!(retrained["state"], "SUCCEEDED", "{retrained}");
    assert_eq!(retrained["model_version"], 2);

    // 5. The archive on S3 holds every ride_id exactly once.
    let counts: HashMap<String, u32> = rt.block_on(async {
        let mut counts = HashMap::new();
        let mut token = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket("lightops")
                .prefix("archive/predictions/")
                .set_continuation_token(token)
                .send()
                .await
                .expect("list");
            for object in page.contents() {
                let key = object.key().expect("key");
                let body = s3
                    .get_object()
                    .bucket("lightops")
                    .key(key)
                    .send()
                    .await
                    .expect("get")
                    .body
                    .collect()
                    .await
                    .expect("body");
                for record in lightops_monitor::archive::from_parquet(&body.into_bytes()).expect("parquet") {
                    *counts.entry(record.ride_id).or_insert(0) += 1;
                }
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        counts
    });
    assert_eq!(counts.len() as u64, total, "every replayed ride_id is archived");
    assert!(counts.values().all(|n| *n == 1), "and only once");
}
