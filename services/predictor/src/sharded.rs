//! Request-path counters and histograms spread over per-thread shards.
//!
//! Why by hand: prometheus_client's `Histogram` takes a mutex on every observation, and its
//! `Counter` is one atomic that every worker thread writes. At PredictStream rates (several
//! hundred thousand messages a second on two cores) the cache line each of them lives on moves
//! between the cores on every message: profiled at 1 ride per message, prometheus_client's
//! histogram took 4.5% (log on) to 7.5% (log off) of the server's CPU samples. Here each thread
//! adds to its own shard, a
//! cache line (or a few) that no other thread writes, without a lock; a scrape adds the shards
//! up. The first threads to record (in the predictor, the runtime's workers, which start with
//! the server; any thread that records early counts) each own a shard outright and
//! update it with a plain load and store, as no other thread writes it: a locked read-modify-write
//! costs tens of cycles even on a line no other core touches, and a stream message makes six
//! updates. Threads that come later share the last shard, with atomic read-modify-writes. Both
//! types implement prometheus_client's `EncodeMetric`, so the registry, `Family` and the text
//! format stay prometheus_client's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per metric: `SHARDS - 1` owned by the first threads that record, then one shared.
const SHARDS: usize = 16;

/// Upper bounds a [`ShardedHistogram`] can have, not counting the implicit `+Inf`.
pub const MAX_BOUNDS: usize = 23;

/// The calling thread's shard, fixed at its first use, and whether the thread owns it.
#[derive(Debug, Clone, Copy)]
struct Shard {
    index: usize,
    owned: bool,
}

impl Shard {
    fn current() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SHARD: Shard = {
                let claimed = NEXT.fetch_add(1, Relaxed);
                if claimed < SHARDS - 1 { Shard { index: claimed, owned: true } } else { Shard { index: SHARDS - 1, owned: false } }
            };
        }
        SHARD.with(|shard| *shard)
    }

    /// Adds `n` to `cell` of this shard.
    fn add(self, cell: &AtomicU64, n: u64) {
        if self.owned {
            // Only this thread writes the cell: no read-modify-write can interleave.
            cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
        } else {
            cell.fetch_add(n, Relaxed);
        }
    }

    /// Adds `value` to the `f64` (as bits) in `cell` of this shard.
    fn add_f64(self, cell: &AtomicU64, value: f64) {
        let add = |bits: u64| (f64::from_bits(bits) + value).to_bits();
        if self.owned {
            cell.store(add(cell.load(Relaxed)), Relaxed);
        } else {
            let _ = cell.fetch_update(Relaxed, Relaxed, |bits| Some(add(bits)));
        }
    }
}

/// Keeps what it holds on cache lines of its own (128 bytes: adjacent-line prefetch pairs lines).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// A monotonic counter (prometheus_client's `Counter`, sharded).
#[derive(Debug, Clone, Default)]
pub struct ShardedCounter {
    shards: Arc<[Padded<AtomicU64>; SHARDS]>,
}

impl ShardedCounter {
    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        let shard = Shard::current();
        shard.add(&self.shards[shard.index].0, n);
    }

    /// Adds 1.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.shards.iter().map(|shard| shard.0.load(Relaxed)).fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One thread's part of a histogram.
#[derive(Debug, Default)]
struct HistogramShard {
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
    /// Observations per bucket (not cumulative); the one after the last bound is `+Inf`.
    counts: [AtomicU64; MAX_BOUNDS + 1],
}

/// A histogram with fixed bucket bounds (prometheus_client's classic `Histogram`, sharded).
#[derive(Debug, Clone)]
pub struct ShardedHistogram {
    /// Finite, ascending upper bounds.
    bounds: Arc<[f64]>,
    shards: Arc<[Padded<HistogramShard>; SHARDS]>,
}

impl ShardedHistogram {
    /// A histogram with these upper bounds (non-finite ones are dropped and the list is sorted;
    /// `+Inf` is always there).
    ///
    /// # Panics
    /// With more than [`MAX_BOUNDS`] finite bounds (a programming error: bounds are constants).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let mut bounds: Vec<f64> = bounds.into_iter().filter(|bound| bound.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        assert!(bounds.len() <= MAX_BOUNDS, "{} bucket bounds, at most {MAX_BOUNDS}", bounds.len());
        Self { bounds: bounds.into(), shards: Arc::default() }
    }

    /// Records `value` (NaN goes to `+Inf`, as prometheus_client does).
    pub fn observe(&self, value: f64) {
        self.observe_in(Shard::current(), value);
    }

    /// Records every value, looking up the thread's shard once (a batch's predictions).
    pub fn observe_all(&self, values: &[f64]) {
        let shard = Shard::current();
        for value in values {
            self.observe_in(shard, *value);
        }
    }

    fn observe_in(&self, shard: Shard, value: f64) {
        let bucket = self.bounds.iter().position(|bound| value <= *bound).unwrap_or(self.bounds.len());
        let cells = &self.shards[shard.index].0;
        shard.add(&cells.counts[bucket], 1);
        shard.add_f64(&cells.sum, value);
    }

    /// Sum, count and per-bucket counts (upper bound, non-cumulative count), `+Inf` last.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> =
            self.bounds.iter().copied().chain(std::iter::once(f64::INFINITY)).map(|bound| (bound, 0)).collect();
        let mut sum = 0.0;
        for shard in self.shards.iter() {
            sum += f64::from_bits(shard.0.sum.load(Relaxed));
            for (bucket, count) in buckets.iter_mut().zip(&shard.0.counts) {
                bucket.1 += count.load(Relaxed);
            }
        }
        let count = buckets.iter().map(|bucket| bucket.1).sum();
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encodes");
        out
    }

    /// The same observations give the same text as prometheus_client's own types.
    #[test]
    fn encodes_like_prometheus_client() {
        let values = [0.5, 1.0, 3.0, 7.5, 200.0, f64::NAN, 10.0, 0.0];
        let bounds = [1.0, 5.0, 10.0, 100.0];
        let mut ours = Registry::with_prefix("x");
        let histogram = ShardedHistogram::new(bounds);
        let counter = ShardedCounter::default();
        ours.register("h", "help", histogram.clone());
        ours.register("c", "help", counter.clone());
        let mut theirs = Registry::with_prefix("x");
        let reference = Histogram::new(bounds);
        let reference_counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        theirs.register("h", "help", reference.clone());
        theirs.register("c", "help", reference_counter.clone());
        let finite: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        histogram.observe_all(&finite);
        for value in &finite {
            reference.observe(*value);
            counter.inc_by(2);
            reference_counter.inc_by(2);
        }
        assert_eq!(text(&ours), text(&theirs));
        histogram.observe(f64::NAN);
        let (_, count, buckets) = histogram.snapshot();
        assert_eq!(count, 8);
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 2)), "200 and NaN are over every bound");
    }

    /// Threads writing at once lose nothing, also when there are more threads than shards (the
    /// later ones share one).
    #[test]
    fn threads_add_up() {
        let histogram = ShardedHistogram::new([1.0, 2.0]);
        let counter = ShardedCounter::default();
        std::thread::scope(|scope| {
            for thread in 0..24 {
                let (histogram, counter) = (&histogram, &counter);
                scope.spawn(move || {
                    for _ in 0..1000 {
                        histogram.observe(f64::from(thread % 3));
                        counter.inc();
                    }
                });
            }
        });
        assert_eq!(counter.get(), 24_000);
        let (sum, count, buckets) = histogram.snapshot();
        assert_eq!(count, 24_000);
        assert_eq!(sum, 24_000.0);
        assert_eq!(buckets, vec![(1.0, 16_000), (2.0, 8_000), (f64::INFINITY, 0)]);
    }
}
