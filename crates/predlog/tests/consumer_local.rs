//! The consumer side on a local log directory: segments written by the crate's own log, rotation
//! and renames while reading, restarts from a checkpointed position, torn and bad lines.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::record;
use lightops_predlog::{Batch, LogConfig, LogSource, Position, PredictionLog, SinkTarget, SourceError, SourceTarget};

/// Reads `n` records in batches of at most `max` (panics after `timeout`), then checks that
/// nothing more comes.
async fn read(source: &mut LogSource, n: usize, max: usize, timeout: Duration) -> Vec<Batch> {
    let batches = common::read_batches(source, n, max, timeout).await;
    assert!(source.next_batch(300, Duration::from_millis(200)).await.unwrap().is_none(), "nothing more");
    batches
}

fn ride_ids(batches: &[Batch]) -> Vec<String> {
    batches.iter().flat_map(|batch| batch.records.iter().map(|record| record.ride_id.clone())).collect()
}

fn expected(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| record(i).ride_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_every_record_once_in_order_while_segments_rotate_and_resumes_from_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let mut config = LogConfig::new(SinkTarget::Local(logs.clone()), logs.join("spill"));
    config.segment_bytes = 16 * 1024; // ~50 records per segment: many renames while being read
    let log = PredictionLog::start(config).await.unwrap();
    let mut source =
        LogSource::open(format!("file://{}", logs.display()).parse().unwrap(), Position::default()).await.unwrap();

    // Produce in bursts while consuming, so that the consumer tails `.open` segments that are
    // renamed under it.
    const N: u64 = 6_000;
    let started = Instant::now();
    let producer = {
        let log = log.clone();
        tokio::spawn(async move {
            for chunk in 0..N / 200 {
                for i in chunk * 200..(chunk + 1) * 200 {
                    log.log(record(i));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let batches = read(&mut source, N as usize, 37, Duration::from_secs(30)).await;
    let reading = started.elapsed();
    producer.await.unwrap();
    let counters = log.shutdown(Duration::from_secs(5)).await;
    assert_eq!((counters.sent, counters.dropped), (N, 0));
    let segments = batches.iter().map(|batch| batch.source.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    eprintln!("read {N} records in {} batches from {segments} segments in {reading:?}", batches.len());
    assert_eq!(ride_ids(&batches), expected(0..N), "every record once, in order");
    assert_eq!(batches[0].records[0], record(0), "records round-trip");
    assert!(segments > 50, "rotation happened while reading: {segments} segments");
    let source_counters = source.counters();
    assert_eq!((source_counters.records, source_counters.bad_records), (N, 0));
    assert_eq!(source_counters.batches, batches.len() as u64);
    assert_eq!(source.position(), batches.last().unwrap().position);

    // Stable ids: `<segment>:<offset>`, increasing within a segment.
    let batch = &batches[batches.len() / 2];
    assert!(batch.first.starts_with(&format!("{}:", batch.source)), "{}", batch.first);
    let offset = |id: &str| id.rsplit_once(':').unwrap().1.parse::<u64>().unwrap();
    assert!(offset(&batch.first) <= offset(&batch.last));

    // A consumer restarted from a checkpoint (serialized and back) reads exactly the rest. The
    // checkpoint is the first one past 2/5 of the records that ends within a segment (a full batch
    // of 37 records, segments being ~60 records).
    let (at, checkpoint) = batches
        .iter()
        .scan(0, |read, batch| {
            *read += batch.records.len();
            Some((*read, batch))
        })
        .find(|(read, batch)| *read >= N as usize * 2 / 5 && batch.records.len() == 37)
        .map(|(read, batch)| (read, &batch.position))
        .unwrap();
    let json = serde_json::to_string(checkpoint).unwrap();
    eprintln!("checkpoint after {at} records: {json}");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let segment = logs.join(format!("{}.jsonl", value["local"]["segment"].as_str().unwrap()));
    let offset = value["local"]["offset"].as_u64().unwrap();
    assert!(offset > 0 && offset < std::fs::metadata(segment).unwrap().len(), "a mid-segment checkpoint: {json}");
    let started = Instant::now();
    let mut restarted =
        LogSource::open(SourceTarget::Local(logs.clone()), serde_json::from_str(&json).unwrap()).await.unwrap();
    let rest = read(&mut restarted, N as usize - at, 300, Duration::from_secs(30)).await;
    eprintln!("restart read the remaining {} records in {:?}", N as usize - at, started.elapsed());
    assert_eq!(ride_ids(&rest), expected(at as u64..N));
    assert_eq!(restarted.counters().bytes_behind, 0, "caught up");

    // The position at the very end: nothing more to read.
    let mut at_end = LogSource::open(SourceTarget::Local(logs), restarted.position()).await.unwrap();
    assert!(at_end.next_batch(100, Duration::ZERO).await.unwrap().is_none());
}

fn line(i: u64) -> Vec<u8> {
    let mut line = record(i).to_json();
    line.push(b'\n');
    line
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_line_is_read_only_once_complete_and_bad_lines_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path();
    let first = logs.join("predictions-00000000000000000001.jsonl");
    let second = "predictions-00000000000000000002";
    let open = logs.join(format!("{second}.jsonl.open"));
    std::fs::write(logs.join("unrelated.txt"), b"not a segment\n").unwrap();
    append(&first, &[line(0), b"{\"schema\":1,\"garbage\n".to_vec(), line(1)].concat());
    let torn = line(3);
    let (head, tail) = torn.split_at(40);
    append(&open, &[line(2), head.to_vec()].concat());

    let mut source = LogSource::open(SourceTarget::Local(logs.to_owned()), Position::default()).await.unwrap();
    let batch = source.next_batch(100, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(ride_ids(std::slice::from_ref(&batch)), expected(0..2), "the bad line skipped");
    assert_eq!(batch.source, "predictions-00000000000000000001");
    let second_line = line(0).len() + b"{\"schema\":1,\"garbage\n".len();
    assert_eq!(batch.first, "predictions-00000000000000000001:0");
    assert_eq!(batch.last, format!("predictions-00000000000000000001:{second_line}"));
    assert_eq!(source.counters().bad_records, 1);

    let batch = source.next_batch(100, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(ride_ids(std::slice::from_ref(&batch)), expected(2..3), "only the complete line");
    assert_eq!(batch.source, second);
    let checkpoint = batch.position.clone();
    assert!(source.next_batch(100, Duration::from_millis(150)).await.unwrap().is_none(), "the torn line waits");

    // The line is completed, another one is written, the segment is closed (renamed) and a new
    // one started: read on at the same offset under the new name, then the next segment.
    append(&open, &[tail.to_vec(), line(4)].concat());
    std::fs::rename(&open, logs.join(format!("{second}.jsonl"))).unwrap();
    append(&logs.join("predictions-00000000000000000003.jsonl.open"), &line(5));
    let batch = source.next_batch(100, Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(ride_ids(std::slice::from_ref(&batch)), expected(3..5));
    assert_eq!(batch.source, second);
    let batch = source.next_batch(100, Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(ride_ids(std::slice::from_ref(&batch)), expected(5..6));
    assert_eq!(source.counters().bad_records, 1);

    // From the checkpoint taken while the segment was open and torn: the rest, once.
    let mut restarted = LogSource::open(SourceTarget::Local(logs.to_owned()), checkpoint).await.unwrap();
    let rest = read(&mut restarted, 3, 100, Duration::from_secs(5)).await;
    assert_eq!(ride_ids(&rest), expected(3..6));
}

#[tokio::test]
async fn refuses_bad_targets_and_positions() {
    let dir = tempfile::tempdir().unwrap();
    let missing = LogSource::open(SourceTarget::Local(dir.path().join("missing")), Position::default()).await;
    assert!(matches!(missing, Err(SourceError::Log(lightops_predlog::Error::Io { .. }))), "{missing:?}");

    let kinesis: Position = serde_json::from_str(r#"{"kinesis":{"stream":"s","shards":{}}}"#).unwrap();
    let error = LogSource::open(SourceTarget::Local(dir.path().to_owned()), kinesis).await.unwrap_err();
    assert!(matches!(error, SourceError::InvalidPosition { .. }), "{error}");
    let bad: Position = serde_json::from_str(r#"{"local":{"segment":"../etc/passwd","offset":0}}"#).unwrap();
    let error = LogSource::open(SourceTarget::Local(dir.path().to_owned()), bad).await.unwrap_err();
    assert!(error.to_string().contains("is not a segment name"), "{error}");

    assert_eq!(
        "kinesis://predictions".parse::<SourceTarget>().unwrap(),
        SourceTarget::Kinesis { stream: "predictions".into() }
    );
    assert_eq!("file:///var/log/x".parse::<SourceTarget>().unwrap(), SourceTarget::Local("/var/log/x".into()));
    assert!("s3://bucket".parse::<SourceTarget>().is_err());
    assert_eq!(SourceTarget::Kinesis { stream: "s".into() }.to_string(), "kinesis://s");
    assert!(Position::default().is_start());
    assert_eq!(serde_json::to_string(&Position::default()).unwrap(), "{}");
}
