//! The predictor as users run it: `lightops serve predictor` as a real process, following a
//! registry alias under load, and shipping its prediction log to Kinesis (moto's server) without
//! losing a record when Kinesis stops or the predictor restarts.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    connect, json_of, lightops, runtime, sample, signal, start_moto, start_registry, start_service, wait_exit,
    wait_serving,
};
use lightops_api::common::v1::Ride;
use lightops_api::predictor::v1 as pb;
use lightops_api::registry::v1 as registry;
use pb::predictor_client::PredictorClient;
use tonic::transport::Channel;

fn train(home: &Path, train: &str, val: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["train", "--train", train, "--val", val, "--json"];
    args.extend_from_slice(extra);
    json_of(&lightops(home, &args))
}

fn ride(i: u64) -> Ride {
    Ride {
        ride_id: format!("ride-{i}"),
        pu_location_id: [43, 74, 75, 166, 41][i as usize % 5],
        do_location_id: [151, 42, 236, 74, 7][i as usize % 5],
        trip_distance: 0.5 + (i % 40) as f64 * 0.37,
        event_time_ms: 1_646_092_800_000 + i as i64,
    }
}

/// Polls GetModel until the predictor serves `version`.
async fn wait_version(client: &mut PredictorClient<Channel>, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let serving = client.get_model(pb::GetModelRequest {}).await.expect("get model").into_inner();
        if serving.model.as_ref().is_some_and(|m| m.version == version) {
            return;
        }
        assert!(Instant::now() < deadline, "the predictor never switched to version {version}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn follows_the_alias_under_load_with_zero_failed_requests() {
    let home = tempfile::tempdir().expect("tempdir");
    let (_registry, registry_url) = start_registry(home.path(), &[], &[]);
    wait_serving(&registry_url);
    let common_args =
        ["--registry", &registry_url, "--experiment", "nyc-taxi-experiment", "--register-as", "trip_duration"];
    let mut v1_args = common_args.to_vec();
    v1_args.extend(["--alias", "staging"]);
    let v1 = train(home.path(), &sample("2022-01"), &sample("2022-02"), &v1_args);
    let v2 = train(home.path(), &sample("2022-02"), &sample("2022-03"), &common_args);
    assert_eq!((v1["model_version"].as_str(), v2["model_version"].as_str()), (Some("1"), Some("2")));

    let (_predictor, url) = start_service(
        "predictor",
        home.path(),
        &["--model", "models:/trip_duration@staging", "--registry", &registry_url],
        &[],
    );
    wait_serving(&url);
    runtime().block_on(async {
        let channel = connect(&url).await;
        let mut client = PredictorClient::new(channel.clone());
        wait_version(&mut client, "1").await;

        // Four clients on their own connections send Predict continuously and record which
        // version answered, in order.
        let running = Arc::new(AtomicBool::new(true));
        let failures = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for worker in 0..4u64 {
            let running = running.clone();
            let failures = failures.clone();
            let channel = connect(&url).await;
            workers.push(tokio::spawn(async move {
                let mut client = PredictorClient::new(channel);
                let mut versions: Vec<String> = Vec::new();
                let mut n = 0u64;
                while running.load(Ordering::Relaxed) {
                    n += 1;
                    match client.predict(pb::PredictRequest { ride: Some(ride(worker * 1_000_000 + n)) }).await {
                        Ok(answer) => {
                            let version = answer.into_inner().model_version;
                            if versions.last() != Some(&version) {
                                versions.push(version);
                            }
                        }
                        Err(status) => {
                            eprintln!("request failed: {status:?}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                (n, versions)
            }));
        }
        let mut registry_client = registry::registry_client::RegistryClient::new(connect(&registry_url).await);
        let set_alias =
            |version: i64| registry::SetAliasRequest { name: "trip_duration".into(), alias: "staging".into(), version };
        tokio::time::sleep(Duration::from_millis(300)).await;
        registry_client.set_alias(set_alias(2)).await.expect("alias → v2");
        wait_version(&mut client, "2").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        registry_client.set_alias(set_alias(1)).await.expect("alias → v1");
        wait_version(&mut client, "1").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        running.store(false, Ordering::Relaxed);
        let mut total = 0;
        for worker in workers {
            let (sent, versions) = worker.await.expect("worker");
            total += sent;
            assert_eq!(versions, ["1", "2", "1"], "each client saw v1, then v2, then v1 again");
        }
        assert_eq!(failures.load(Ordering::Relaxed), 0, "no request failed during the swaps");
        assert!(total > 100, "the load ran ({total} requests)");
    });
}

/// Kinesis client for moto.
fn kinesis(endpoint: &str) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new("test", "test", None, None, "tests"))
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str) {
    client.create_stream().stream_name(name).shard_count(2).send().await.expect("create stream");
}

/// How many times each ride_id is in the stream (every shard, from the start).
async fn ride_ids_in_stream(client: &aws_sdk_kinesis::Client, name: &str) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    let shards = client.list_shards().stream_name(name).send().await.expect("list shards");
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(name)
            .shard_id(shard.shard_id())
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("iterator")
            .shard_iterator;
        while let Some(current) = iterator {
            let page = client.get_records().shard_iterator(current).limit(10_000).send().await.expect("records");
            for record in page.records() {
                let value: serde_json::Value = serde_json::from_slice(record.data().as_ref()).expect("record JSON");
                *counts.entry(value["ride_id"].as_str().expect("ride_id").to_owned()).or_insert(0) += 1;
            }
            if page.records().is_empty() || page.millis_behind_latest() == Some(0) && page.records().len() < 10_000 {
                break;
            }
            iterator = page.next_shard_iterator;
        }
    }
    counts
}

/// Sends `rides` as PredictBatch calls of 50; every call must succeed. Runs on its own runtime,
/// so the connection is closed when it returns.
fn send(url: &str, rides: std::ops::Range<u64>) {
    runtime().block_on(async {
        let mut client = PredictorClient::new(connect(url).await);
        let all: Vec<Ride> = rides.map(ride).collect();
        for chunk in all.chunks(50) {
            client.predict_batch(pb::PredictBatchRequest { rides: chunk.to_vec() }).await.expect("prediction answered");
        }
    });
}

fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

#[test]
fn kinesis_outage_and_predictor_restart_lose_nothing() {
    let Some((moto, endpoint)) = start_moto() else { return };
    let home = tempfile::tempdir().expect("tempdir");
    let out = home.path().join("model");
    let trained = train(home.path(), &sample("2022-01"), &sample("2022-02"), &["--out", &out.display().to_string()]);
    let artifact = trained["artifact"].as_str().expect("artifact").to_owned();
    let client = kinesis(&endpoint);
    let rt = runtime();
    rt.block_on(create_stream(&client, "predictions"));
    let env = aws_env(&endpoint);
    let predictor_args =
        ["--model", artifact.as_str(), "--log-sink", "kinesis://predictions", "--log-flush-timeout", "2s"];

    // 1. Kinesis stops in the middle of a load of 3,000 predictions and comes back.
    let (predictor, url) = start_service("predictor", home.path(), &predictor_args, &env);
    wait_serving(&url);
    send(&url, 0..1_000);
    signal(&moto, "STOP");
    send(&url, 1_000..2_000); // answered while the stream is down
    signal(&moto, "CONT");
    send(&url, 2_000..3_000);
    signal(&predictor, "TERM");
    wait_exit(predictor);
    let counts = rt.block_on(ride_ids_in_stream(&client, "predictions"));
    let missing: Vec<u64> = (0..3_000).filter(|i| !counts.contains_key(&format!("ride-{i}"))).collect();
    assert!(missing.is_empty(), "{} ride_ids missing, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    assert_eq!(counts.len(), 3_000, "only the rides sent");
    // Kinesis PutRecords is at-least-once: a request that timed out while moto was stopped may
    // still be applied when it resumes, so a resend can duplicate (docs/prediction-log.md).
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    eprintln!("outage: 3000 ride_ids delivered, {duplicated} of them more than once");

    // 2. The predictor is stopped while Kinesis is down: its records wait on disk and are sent by
    //    the next predictor.
    rt.block_on(client.delete_stream().stream_name("predictions").send()).expect("delete");
    rt.block_on(create_stream(&client, "predictions2"));
    let restart_args =
        ["--model", artifact.as_str(), "--log-sink", "kinesis://predictions2", "--log-flush-timeout", "1s"];
    let (predictor, url) = start_service("predictor", home.path(), &restart_args, &env);
    wait_serving(&url);
    signal(&moto, "STOP");
    send(&url, 10_000..12_000);
    signal(&predictor, "TERM");
    wait_exit(predictor);
    signal(&moto, "CONT");
    let (_predictor, _url) = start_service("predictor", home.path(), &restart_args, &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    let counts = loop {
        let counts = rt.block_on(ride_ids_in_stream(&client, "predictions2"));
        if counts.len() >= 2_000 || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let missing = (10_000..12_000).filter(|i| !counts.contains_key(&format!("ride-{i}"))).count();
    assert_eq!(missing, 0, "records spilled by the stopped predictor were sent by the next one");
    assert_eq!(counts.len(), 2_000, "only the rides sent");
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    eprintln!("restart: 2000 ride_ids delivered, {duplicated} of them more than once");
}
