//! What formatting the prediction log's JSON lines costs per record: one record at a time
//! ([`PredictionRecord::write_json`], the Kinesis sink, on the request path) and a request's
//! rides with a [`LineWriter`] (the local sink, which the predictor uses by default; its lines are
//! formatted on an idle-priority thread, see `crates/predlog/src/format.rs`).
//!
//! The hand-off to the background task is not measured here: a caller logging as fast as it can
//! saturates the disk within a second, so such a benchmark measures the disk and the spill. The
//! predictor benchmark (`bench/predictor_bench.sh`) measures the whole log under real load.
//!
//! Run with `cargo bench -p lightops-predlog --bench encode`; results are in docs/benchmarks.md.

// The criterion_group! macro generates an undocumented public function.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lightops_predlog::{LineWriter, ModelId, RequestFields, RideFeatures, RideFields};

/// The rides of a request as the predictor logs them: borrowed views over the request.
fn ride(index: usize, ride_id: &str) -> RideFields<'_> {
    RideFields {
        ride_id,
        event_time_ms: Some(1_700_000_000_000 + index as i64),
        features: RideFeatures {
            pu_location_id: 43 + (index % 200) as i64,
            do_location_id: 151,
            // Two decimals, as taxi meters record them (and as a decimal parsed from JSON or
            // Parquet is held: the double nearest to it).
            trip_distance: (50 + (index % 97) * 37) as f64 / 100.0,
        },
        prediction: 7.0 + (index % 89) as f64 * 0.123_456_789,
    }
}

fn encode(c: &mut Criterion) {
    let model = Arc::new(ModelId { name: "trip_duration".into(), version: "3".into() });
    let request = RequestFields {
        model: &model,
        received_at_ms: 1_764_288_000_123,
        latency_us: 42,
        answered_at: std::time::Instant::now(),
    };
    let ids: Vec<String> = (0..100).map(|index| format!("ride-{index:08}")).collect();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(100));
    group.bench_function("write_json, 100 records", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            for (index, id) in ids.iter().enumerate() {
                ride(index, id).record(&request).write_json(&mut out);
                out.push(b'\n');
            }
            std::hint::black_box(&out);
        });
    });
    for rides in [1usize, 100] {
        group.throughput(Throughput::Elements(rides as u64));
        group.bench_function(format!("LineWriter, {rides} rides per request"), |b| {
            let mut out = Vec::with_capacity(64 * 1024);
            let mut writer = LineWriter::default();
            b.iter(|| {
                out.clear();
                writer.begin(&request);
                for (index, id) in ids[..rides].iter().enumerate() {
                    writer.write(&ride(index, id), &mut out);
                    out.push(b'\n');
                }
                std::hint::black_box(&out);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
