//! Helpers shared by the integration tests: records, segment reading, moto, a switchable proxy.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use lightops_predlog::{Batch, LogSource, PredictionRecord, RideFeatures, SCHEMA_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A deterministic record; `ride_id` is `ride-<i>` zero-padded so it sorts like `i`.
pub fn record(i: u64) -> PredictionRecord {
    PredictionRecord {
        schema: SCHEMA_VERSION,
        ride_id: format!("ride-{i:08}"),
        event_time_ms: Some(1_700_000_000_000 + i as i64),
        received_at_ms: 1_700_000_000_500 + i as i64,
        features: RideFeatures {
            pu_location_id: (i % 265) as i64,
            do_location_id: ((i * 7) % 265) as i64,
            trip_distance: (i % 1000) as f64 / 100.0,
        },
        prediction: 5.0 + (i % 40) as f64 / 3.0,
        model_name: "trip_duration".into(),
        model_version: "3".into(),
        latency_us: 40 + i % 100,
    }
}

/// Records of every closed segment (`predictions-*.jsonl`) in lexical order, with the segment count.
pub fn read_segments(dir: &Path) -> (Vec<PredictionRecord>, usize) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("predictions-") && name.ends_with(".jsonl"))
        .collect();
    names.sort();
    let mut records = Vec::new();
    for name in &names {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "{name} ends with a complete line");
        for line in bytes.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
            records.push(PredictionRecord::from_json(line).unwrap_or_else(|e| panic!("{name}: {e}")));
        }
    }
    (records, names.len())
}

/// Once `log`'s task is idle, logs records 0..100 and checks that they wait out the linger (set
/// long by the caller): the first record starts it, and a few more do not end it.
pub async fn a_few_wait_for_the_linger(log: &lightops_predlog::PredictionLog) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..100 {
        log.log(record(i));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(log.counters().sent, 0, "a few records wait for the linger");
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto's server on an ephemeral port, or `None` (test skipped) when moto is not installed,
/// unless `LIGHTOPS_REQUIRE_MOTO=1`.
pub fn start_moto() -> Option<(Process, SocketAddr)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = match Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            assert!(std::env::var("LIGHTOPS_REQUIRE_MOTO").as_deref() != Ok("1"), "moto_server: {e}");
            eprintln!("moto_server not available ({e}); skipping the Kinesis test");
            return None;
        }
    };
    let process = Process(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((process, addr))
}

/// A Kinesis client for a test endpoint (no process environment involved).
pub fn kinesis_client(addr: SocketAddr) -> Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(format!("http://{addr}"))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    Client::from_conf(config)
}

/// Creates a stream and waits until it is active.
pub async fn create_stream(client: &Client, stream: &str, shards: i32) {
    client.create_stream().stream_name(stream).shard_count(shards).send().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let summary = client.describe_stream_summary().stream_name(stream).send().await.unwrap();
        let summary = summary.stream_description_summary().unwrap();
        if summary.stream_status() == &StreamStatus::Active {
            assert_eq!(summary.open_shard_count(), shards);
            return;
        }
        assert!(Instant::now() < deadline, "stream {stream} not active");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every record of every shard, read from the start until caught up, with the shard count.
pub async fn read_stream(client: &Client, stream: &str) -> (Vec<PredictionRecord>, usize) {
    let shards = client.list_shards().stream_name(stream).send().await.unwrap();
    let mut records = Vec::new();
    let mut nonempty_shards = 0;
    for shard in shards.shards() {
        let iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        let mut iterator = iterator.shard_iterator().map(str::to_owned);
        let before = records.len();
        while let Some(current) = iterator {
            let output = client.get_records().shard_iterator(current).limit(10_000).send().await.unwrap();
            if output.records().is_empty() {
                break;
            }
            for record in output.records() {
                records.push(PredictionRecord::from_json(record.data().as_ref()).unwrap());
            }
            iterator = output.next_shard_iterator().map(str::to_owned);
        }
        nonempty_shards += usize::from(records.len() > before);
    }
    (records, nonempty_shards)
}

/// Asserts that `records` hold exactly the ride ids `ride-0 .. ride-(n-1)`, each once.
pub fn assert_exactly_once(records: &[PredictionRecord], n: u64) {
    let mut ids: Vec<&str> = records.iter().map(|record| record.ride_id.as_str()).collect();
    ids.sort_unstable();
    let total = ids.len();
    ids.dedup();
    assert_eq!(total - ids.len(), 0, "duplicates in the stream");
    assert_eq!(ids.len() as u64, n, "distinct ride ids in the stream");
    let expected: Vec<String> = (0..n).map(|i| record(i).ride_id).collect();
    assert!(ids.iter().zip(&expected).all(|(a, b)| a == b), "the expected ride ids");
}

/// A TCP proxy that can be switched off: new connections are closed at once, and a connection
/// that sends a request while off is closed without forwarding a byte of it. Responses to requests
/// forwarded while on are always delivered, so an outage never leaves a request half-known (the
/// "connection refused" kind of failure, not the ambiguous timeout kind).
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let switch = up.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if !switch.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let switch = switch.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    pipe(client, server, switch).await;
                });
            }
        });
        Proxy { addr, up, task }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(mut client: TcpStream, mut server: TcpStream, up: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let mut from_client = vec![0u8; 64 * 1024];
    let mut from_server = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = client_read.read(&mut from_client) => {
                let Ok(n) = read else { return };
                if n == 0 || !up.load(Ordering::SeqCst) {
                    return;
                }
                if server_write.write_all(&from_client[..n]).await.is_err() {
                    return;
                }
            }
            read = server_read.read(&mut from_server) => {
                let Ok(n) = read else { return };
                if n == 0 || client_write.write_all(&from_server[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads batches of at most `max` records from `source` until `n` records were read in all
/// (panics after `timeout`).
pub async fn read_batches(source: &mut LogSource, n: usize, max: usize, timeout: Duration) -> Vec<Batch> {
    let deadline = Instant::now() + timeout;
    let mut batches = Vec::new();
    let mut total = 0;
    while total < n {
        assert!(Instant::now() < deadline, "timed out after {total} of {n} records");
        if let Some(batch) = source.next_batch(max, Duration::from_millis(100)).await.unwrap() {
            assert!(!batch.records.is_empty() && batch.records.len() <= max);
            total += batch.records.len();
            batches.push(batch);
        }
    }
    batches
}
