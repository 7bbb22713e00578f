//! What the prediction log costs the request path per record: encoding one record's JSON line
//! alone and a request's lines with a [`LineWriter`], and logging a request's rides with [`PredictionLog::log_all`] to a local directory (the
//! caller's side only: the background task writes on its own thread).
//!
//! Run with `cargo bench -p lightops-predlog --bench encode`; results are in docs/benchmarks.md.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lightops_predlog::{
    LineWriter, LogConfig, PredictionLog, PredictionRecord, RideFeatures, SCHEMA_VERSION, SinkTarget,
};

/// A ride as the predictor logs it: a borrowed view over the request and the model.
fn record(index: usize, ride_id: &str) -> PredictionRecord<&str> {
    PredictionRecord {
        schema: SCHEMA_VERSION,
        ride_id,
        event_time_ms: Some(1_700_000_000_000 + index as i64),
        received_at_ms: 1_764_288_000_123,
        features: RideFeatures {
            pu_location_id: 43 + (index % 200) as i64,
            do_location_id: 151,
            trip_distance: 0.5 + (index % 97) as f64 * 0.37,
        },
        prediction: 7.0 + (index % 89) as f64 * 0.123_456_789,
        model_name: "trip_duration",
        model_version: "3",
        latency_us: 42,
    }
}

fn ride_ids(count: usize) -> Vec<String> {
    (0..count).map(|index| format!("ride-{index:08}")).collect()
}

fn encode(c: &mut Criterion) {
    let ids = ride_ids(100);
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(100));
    group.bench_function("write_json x100", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            for (index, id) in ids.iter().enumerate() {
                record(index, id).write_json(&mut out);
                out.push(b'\n');
            }
            std::hint::black_box(&out);
        });
    });
    group.bench_function("LineWriter x100", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        let mut writer = LineWriter::default();
        b.iter(|| {
            out.clear();
            for (index, id) in ids.iter().enumerate() {
                writer.write(&record(index, id), &mut out);
                out.push(b'\n');
            }
            std::hint::black_box(&out);
        });
    });
    group.finish();
}

fn log_all(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = LogConfig::new(SinkTarget::Local(dir.path().join("log")), dir.path().join("spill"));
    // Keep the segments small so that the benchmark does not fill the disk.
    config.segment_bytes = 8 * 1024 * 1024;
    let log = runtime.block_on(PredictionLog::start(config)).expect("start");
    let ids = ride_ids(100);
    let mut group = c.benchmark_group("log_all");
    for rides in [1usize, 100] {
        group.throughput(Throughput::Elements(rides as u64));
        group.bench_function(format!("{rides} rides per request"), |b| {
            let _guard = runtime.enter();
            b.iter(|| log.log_all(ids[..rides].iter().enumerate().map(|(index, id)| record(index, id))));
        });
    }
    group.finish();
    let counters = runtime.block_on(log.shutdown(Duration::from_secs(30)));
    // Every record is either sent or left in the spill for the next run.
    assert_eq!(counters.queued, counters.sent + counters.spill_backlog, "{counters:?}");
    assert_eq!((counters.dropped, counters.queue_depth), (0, 0), "{counters:?}");
}

criterion_group!(benches, encode, log_all);
criterion_main!(benches);
