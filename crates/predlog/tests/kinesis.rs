//! The Kinesis sink against moto's server: batching over shards, an outage, a restart.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Proxy, assert_exactly_once, create_stream, kinesis_client, read_stream, record, start_moto, wait_until};
use lightops_predlog::{Error, LogConfig, PredictionLog, SinkTarget};

fn config(stream: &str, spill_dir: &Path) -> LogConfig {
    let mut config = LogConfig::new(SinkTarget::Kinesis { stream: stream.into() }, spill_dir);
    config.kinesis.request_timeout = Duration::from_secs(2);
    config.initial_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_millis(400);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_the_stream_exactly_once() {
    let Some((_moto, addr)) = start_moto() else { return };
    let client = kinesis_client(addr);
    create_stream(&client, "predictions", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let log =
        PredictionLog::start_with_kinesis_client(config("predictions", dir.path()), client.clone()).await.unwrap();

    const N: u64 = 5_000;
    let started = Instant::now();
    // The first half one by one, the second as requests of 10 rides with their shared fields.
    for i in 0..N / 2 {
        log.log(record(i));
    }
    let model = std::sync::Arc::new(lightops_predlog::ModelId { name: "trip_duration".into(), version: "3".into() });
    for start in (N / 2..N).step_by(10) {
        let rides: Vec<_> = (start..start + 10).map(record).collect();
        let request = lightops_predlog::RequestFields {
            model: &model,
            received_at_ms: rides[0].received_at_ms,
            latency_us: 7,
            answered_at: std::time::Instant::now(),
        };
        log.log_request(
            request,
            rides.iter().map(|ride| lightops_predlog::RideFields {
                ride_id: &ride.ride_id,
                event_time_ms: ride.event_time_ms,
                features: ride.features,
                prediction: ride.prediction,
            }),
        );
    }
    // Records without a ride id, or with one longer than a partition key may be, are sent too.
    let mut anonymous = record(N);
    anonymous.ride_id.clear();
    log.log(anonymous);
    let mut long = record(N);
    long.ride_id = "x".repeat(300);
    log.log(long.clone());
    wait_until("all records sent", Duration::from_secs(30), || log.counters().sent == N + 2).await;
    let sending = started.elapsed();
    let counters = log.shutdown(Duration::from_secs(5)).await;
    eprintln!("sent {} records in {sending:?}; counters {counters:?}", N + 2);
    assert_eq!((counters.dropped, counters.spilled, counters.sink_errors), (0, 0, 0));

    let (mut records, shards) = read_stream(&client, "predictions").await;
    assert_eq!(records.len() as u64, N + 2);
    assert_eq!(shards, 3, "records spread over every shard");
    let anonymous = records.iter().position(|r| r.ride_id.is_empty()).expect("the anonymous record");
    records.remove(anonymous);
    let long_at = records.iter().position(|r| r.ride_id.len() == 300).expect("the long ride id, untruncated");
    assert_eq!(records.remove(long_at), long);
    assert_exactly_once(&records, N);
    let requested = records.iter().find(|r| r.ride_id == record(N - 1).ride_id).expect("a ride of a request");
    assert_eq!((requested.latency_us, requested.model_version.as_str()), (7, "3"), "{requested:?}");
    assert_eq!(requested.prediction, record(N - 1).prediction);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_put_records_is_sent_without_waiting_out_the_linger() {
    let Some((_moto, addr)) = start_moto() else { return };
    let client = kinesis_client(addr);
    create_stream(&client, "early", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config("early", dir.path());
    config.linger = Duration::from_secs(60);
    config.flush_interval = Duration::from_secs(60);
    let log = PredictionLog::start_with_kinesis_client(config, client.clone()).await.unwrap();
    common::a_few_wait_for_the_linger(&log).await;
    // A full PutRecords (500) waiting ends the linger.
    const N: u64 = 1_200;
    for i in 100..N {
        log.log(record(i));
    }
    wait_until("a full PutRecords sent", Duration::from_secs(10), || log.counters().sent >= 500).await;
    let counters = log.shutdown(Duration::from_secs(10)).await;
    assert_eq!((counters.queued, counters.sent, counters.dropped, counters.spilled), (N, N, 0, 0));
    let (records, _) = read_stream(&client, "early").await;
    assert_exactly_once(&records, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_goes_through_the_spill_exactly_once() {
    let Some((_moto, addr)) = start_moto() else { return };
    let client = kinesis_client(addr);
    create_stream(&client, "full", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config("full", dir.path());
    // Every drain finds the queue "full": what is not in flight takes the spill path.
    config.queue_capacity = 1;
    let log = PredictionLog::start_with_kinesis_client(config, client.clone()).await.unwrap();
    const N: u64 = 3_000;
    for i in 0..N {
        log.log(record(i));
    }
    wait_until("all records sent", Duration::from_secs(30), || log.counters().sent == N).await;
    let counters = log.shutdown(Duration::from_secs(5)).await;
    eprintln!("counters {counters:?}");
    assert_eq!((counters.dropped, counters.spill_backlog), (0, 0));
    assert!(counters.spilled > 0, "records went through the spill: {counters:?}");
    let (records, _) = read_stream(&client, "full").await;
    assert_exactly_once(&records, N);
    let spill_left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("spill-"))
        .collect();
    assert!(spill_left.is_empty(), "sent spill segments are deleted: {spill_left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_spills_and_recovers_without_loss_or_duplicates() {
    let Some((_moto, addr)) = start_moto() else { return };
    let client = kinesis_client(addr);
    create_stream(&client, "predictions", 2).await;
    let proxy = Proxy::start(addr).await;
    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start_with_kinesis_client(config("predictions", dir.path()), kinesis_client(proxy.addr))
        .await
        .unwrap();

    const N: u64 = 5_000;
    let started = Instant::now();
    // A steady load of N records over ~2.5 s; Kinesis goes away after 1/5 of it and comes back
    // after 3/5.
    let producer = {
        let log = log.clone();
        tokio::spawn(async move {
            for chunk in 0..N / 100 {
                for i in chunk * 100..(chunk + 1) * 100 {
                    log.log(record(i));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    wait_until("a fifth of the load", Duration::from_secs(20), || log.counters().queued >= N / 5).await;
    proxy.set_up(false);
    let outage = Instant::now();
    wait_until("records spilled", Duration::from_secs(20), || log.counters().spilled > 0).await;
    wait_until("three fifths of the load", Duration::from_secs(20), || log.counters().queued >= 3 * N / 5).await;
    let during = log.counters();
    proxy.set_up(true);
    let outage = outage.elapsed();
    producer.await.unwrap();
    wait_until("all records sent", Duration::from_secs(30), || log.counters().sent == N).await;
    let total = started.elapsed();
    let counters = log.shutdown(Duration::from_secs(5)).await;
    eprintln!("outage of {outage:?} (counters then {during:?}); all sent after {total:?}; counters {counters:?}");
    assert!(during.spilled > 0 && during.sink_errors > 0, "the outage was noticed: {during:?}");
    assert_eq!((counters.sent, counters.dropped, counters.spill_backlog), (N, 0, 0));

    let (records, _) = read_stream(&client, "predictions").await;
    assert_exactly_once(&records, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_sends_what_the_previous_run_spilled() {
    let Some((_moto, addr)) = start_moto() else { return };
    let client = kinesis_client(addr);
    create_stream(&client, "predictions", 2).await;
    let proxy = Proxy::start(addr).await;
    let dir = tempfile::tempdir().unwrap();

    // First run: Kinesis is unreachable from the start (start succeeds anyway).
    // Long backoffs: the shutdown must not wait for them.
    proxy.set_up(false);
    let mut first_config = config("predictions", dir.path());
    first_config.initial_backoff = Duration::from_secs(20);
    first_config.max_backoff = Duration::from_secs(60);
    let first = PredictionLog::start_with_kinesis_client(first_config, kinesis_client(proxy.addr)).await.unwrap();
    const N: u64 = 2_000;
    for i in 0..N {
        first.log(record(i));
    }
    wait_until("everything spilled", Duration::from_secs(10), || first.counters().spilled == N).await;
    let started = Instant::now();
    let counters = first.shutdown(Duration::from_secs(5)).await;
    let shutdown = started.elapsed();
    eprintln!("first run shut down in {shutdown:?}: {counters:?}");
    assert!(shutdown < Duration::from_secs(1), "shutdown cut the backoff short");
    assert_eq!((counters.sent, counters.spilled, counters.spill_backlog, counters.dropped), (0, N, N, 0));

    // Second run, Kinesis back: the spilled records go first, then new ones.
    proxy.set_up(true);
    let second =
        PredictionLog::start_with_kinesis_client(config("predictions", dir.path()), kinesis_client(proxy.addr))
            .await
            .unwrap();
    assert_eq!(second.counters().recovered, N);
    for i in N..N + 500 {
        second.log(record(i));
    }
    wait_until("everything sent", Duration::from_secs(30), || second.counters().sent == N + 500).await;
    let counters = second.shutdown(Duration::from_secs(5)).await;
    eprintln!("second run: {counters:?}");
    assert_eq!((counters.dropped, counters.spill_backlog, counters.corrupt), (0, 0, 0));
    let (records, _) = read_stream(&client, "predictions").await;
    assert_exactly_once(&records, N + 500);
    let spill_left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(spill_left.is_empty(), "spill emptied: {spill_left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_fails_start() {
    let Some((_moto, addr)) = start_moto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let error = PredictionLog::start_with_kinesis_client(config("nope", dir.path()), kinesis_client(addr))
        .await
        .expect_err("no such stream");
    assert!(matches!(error, Error::StreamNotFound { .. }), "{error}");
    assert_eq!(error.to_string(), "kinesis stream `nope` does not exist");
}

fn signal(moto: &common::Process, signal: &str) {
    let status = std::process::Command::new("kill").args([signal, &moto.0.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal}");
}

/// A frozen endpoint (SIGSTOP: connections accepted, no answers) is the ambiguous kind of outage:
/// a request that timed out may still be processed once the endpoint wakes up. Nothing is lost;
/// duplicates are possible and bounded by the requests that timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_endpoint_times_out_and_nothing_is_lost() {
    let Some((moto, addr)) = start_moto() else { return };
    let client = kinesis_client(addr);
    create_stream(&client, "predictions", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config("predictions", dir.path());
    config.kinesis.request_timeout = Duration::from_millis(800);
    let first = PredictionLog::start_with_kinesis_client(config.clone(), client.clone()).await.unwrap();
    for i in 0..1_000 {
        first.log(record(i));
    }
    wait_until("the first records sent", Duration::from_secs(20), || first.counters().sent == 1_000).await;

    signal(&moto, "-STOP");
    let resume = scopeguard(&moto);
    for i in 1_000..3_000 {
        first.log(record(i));
    }
    wait_until("a timeout and records spilled", Duration::from_secs(20), || first.counters().spilled > 0).await;
    // Shut down while frozen: the attempt in flight is given up at the deadline and spilled.
    let started = Instant::now();
    let counters = first.shutdown(Duration::from_millis(300)).await;
    let shutdown = started.elapsed();
    eprintln!("shutdown while frozen took {shutdown:?}: {counters:?}");
    assert!(shutdown < Duration::from_secs(2), "the deadline was kept");
    assert_eq!((counters.sent, counters.spill_backlog, counters.dropped), (1_000, 2_000, 0));
    drop(resume);

    let second = PredictionLog::start_with_kinesis_client(config, client.clone()).await.unwrap();
    wait_until("the spill sent", Duration::from_secs(20), || second.counters().sent == 2_000).await;
    let counters = second.shutdown(Duration::from_secs(5)).await;
    assert_eq!((counters.dropped, counters.spill_backlog), (0, 0));

    let (records, _) = read_stream(&client, "predictions").await;
    let mut ids: Vec<&str> = records.iter().map(|r| r.ride_id.as_str()).collect();
    ids.sort_unstable();
    let total = ids.len();
    ids.dedup();
    let duplicates = total - ids.len();
    eprintln!("{duplicates} duplicates from requests that timed out");
    assert_eq!(ids.len(), 3_000, "no record lost");
    assert!(duplicates <= 1_000, "at most the two requests that timed out are duplicated: {duplicates}");
}

/// Sends SIGCONT when dropped, so that a failing assertion does not leave moto frozen.
fn scopeguard(moto: &common::Process) -> impl Drop + '_ {
    struct Resume<'a>(&'a common::Process);
    impl Drop for Resume<'_> {
        fn drop(&mut self) {
            signal(self.0, "-CONT");
        }
    }
    Resume(moto)
}
