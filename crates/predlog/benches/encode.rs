//! What the prediction log costs the request path per record: encoding one record's JSON line,
//! and logging a request's rides to a local directory with [`PredictionLog::log_all`] (whole
//! records) and [`PredictionLog::log_request`] (what the predictor calls: the fields the rides
//! share are given once). The logging benchmarks measure the caller's side; the background task
//! writes on another thread meanwhile.
//!
//! Run with `cargo bench -p lightops-predlog --bench encode`; results are in docs/benchmarks.md.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lightops_predlog::{
    LogConfig, ModelId, PredictionLog, PredictionRecord, RequestFields, RideFeatures, RideFields, SinkTarget,
};

/// The rides of a request as the predictor logs them: borrowed views over the request.
fn ride(index: usize, ride_id: &str) -> RideFields<'_> {
    RideFields {
        ride_id,
        event_time_ms: Some(1_700_000_000_000 + index as i64),
        features: RideFeatures {
            pu_location_id: 43 + (index % 200) as i64,
            do_location_id: 151,
            trip_distance: 0.5 + (index % 97) as f64 * 0.37,
        },
        prediction: 7.0 + (index % 89) as f64 * 0.123_456_789,
    }
}

fn request(model: &Arc<ModelId>) -> RequestFields<'_> {
    RequestFields { model, received_at_ms: 1_764_288_000_123, latency_us: 42 }
}

fn records<'a>(request: &'a RequestFields<'a>, ids: &'a [String]) -> impl Iterator<Item = PredictionRecord<&'a str>> {
    ids.iter().enumerate().map(|(index, id)| ride(index, id).record(request))
}

fn setup() -> (Arc<ModelId>, Vec<String>) {
    let model = Arc::new(ModelId { name: "trip_duration".into(), version: "3".into() });
    (model, (0..100).map(|index| format!("ride-{index:08}")).collect())
}

fn encode(c: &mut Criterion) {
    let (model, ids) = setup();
    let request = request(&model);
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(100));
    group.bench_function("write_json x100", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            for record in records(&request, &ids) {
                record.write_json(&mut out);
                out.push(b'\n');
            }
            std::hint::black_box(&out);
        });
    });
    group.finish();
}

fn log(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = LogConfig::new(SinkTarget::Local(dir.path().join("log")), dir.path().join("spill"));
    config.segment_bytes = 16 * 1024 * 1024;
    let log = runtime.block_on(PredictionLog::start(config)).expect("start");
    // A run logs tens of gigabytes: closed segments are deleted as they appear, so that the disk
    // does not fill (the log never reads them again).
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cleaner = {
        let (segments, done) = (dir.path().join("log"), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for entry in std::fs::read_dir(&segments).into_iter().flatten().flatten() {
                    if entry.path().extension().is_some_and(|extension| extension == "jsonl") {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let (model, ids) = setup();
    let request = request(&model);
    let mut group = c.benchmark_group("log");
    for rides in [1usize, 100] {
        group.throughput(Throughput::Elements(rides as u64));
        group.bench_function(format!("log_all, {rides} rides per request"), |b| {
            let _guard = runtime.enter();
            b.iter(|| log.log_all(records(&request, &ids[..rides])));
        });
        group.bench_function(format!("log_request, {rides} rides per request"), |b| {
            let _guard = runtime.enter();
            b.iter(|| log.log_request(request, ids[..rides].iter().enumerate().map(|(index, id)| ride(index, id))));
        });
    }
    group.finish();
    let counters = runtime.block_on(log.shutdown(Duration::from_secs(60)));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    cleaner.join().expect("cleaner");
    // Every record is either sent or left in the spill for the next run.
    assert_eq!(counters.queued, counters.sent + counters.spill_backlog, "{counters:?}");
    assert_eq!((counters.dropped, counters.queue_depth), (0, 0), "{counters:?}");
}

criterion_group!(benches, encode, log);
criterion_main!(benches);
