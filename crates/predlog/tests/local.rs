//! The local sink end to end: segments, rotation, the spill, recovery of a previous run's spill.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{read_segments, record, wait_until};
use lightops_predlog::{LogConfig, PredictionLog, SinkTarget};

fn config(dir: &std::path::Path) -> LogConfig {
    let logs = dir.join("logs");
    LogConfig::new(SinkTarget::Local(logs.clone()), logs.join("spill"))
}

fn ride_ids(records: &[lightops_predlog::PredictionRecord]) -> Vec<String> {
    records.iter().map(|record| record.ride_id.clone()).collect()
}

fn expected(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| record(i).ride_id).collect()
}

/// A record's ride as the predictor logs it: a borrowed view.
fn fields(record: &lightops_predlog::PredictionRecord) -> lightops_predlog::RideFields<'_> {
    lightops_predlog::RideFields {
        ride_id: &record.ride_id,
        event_time_ms: record.event_time_ms,
        features: record.features,
        prediction: record.prediction,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_in_order_across_size_rotated_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_bytes = 64 * 1024;
    let log = PredictionLog::start(config).await.unwrap();
    const N: u64 = 20_000;
    let started = Instant::now();
    // The first half one by one, the second as requests of 100 borrowed records each.
    for i in 0..N / 2 {
        log.log(record(i));
    }
    for start in (N / 2..N).step_by(100) {
        let request: Vec<_> = (start..start + 100).map(record).collect();
        log.log_all(request.iter().map(|record| record.as_view()));
    }
    let logging = started.elapsed();
    let counters = log.shutdown(Duration::from_secs(10)).await;
    eprintln!("logged {N} records in {logging:?}; counters {counters:?}");

    assert_eq!((counters.queued, counters.sent, counters.dropped), (N, N, 0));
    assert_eq!((counters.queue_depth, counters.spill_backlog), (0, 0));
    let logs = dir.path().join("logs");
    let (records, segments) = read_segments(&logs);
    assert_eq!(ride_ids(&records), expected(0..N), "every record once, in order");
    assert_eq!(records[17], record(17), "records round-trip");
    assert!(segments > 50, "rotated by size: {segments} segments");
    for entry in std::fs::read_dir(&logs).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert!(!name.ends_with(".open"), "no segment left open: {name}");
        if name.ends_with(".jsonl") {
            assert!(entry.metadata().unwrap().len() <= 64 * 1024, "{name} within the size limit");
        }
    }
    // The log refuses (and counts) records after shutdown.
    log.log(record(N));
    assert_eq!(log.counters().dropped, 1);
    let late = [record(N + 1), record(N + 2)];
    log.log_all(late.iter().map(|record| record.as_view()));
    assert_eq!(log.counters().dropped, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_worth_a_write_is_written_without_waiting_out_the_linger() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.linger = Duration::from_secs(60);
    config.flush_interval = Duration::from_secs(60);
    let log = PredictionLog::start(config).await.unwrap();
    common::a_few_wait_for_the_linger(&log).await;
    // ~90 bytes a record while queued (~220 a line): past the early write's 256 KiB (~2,900
    // records) well before the last of these.
    const N: u64 = 8_000;
    for i in 100..N {
        log.log(record(i));
    }
    wait_until("the early write", Duration::from_secs(10), || log.counters().sent > 0).await;
    let sent = log.counters().sent;
    assert!(sent >= 2_500, "at least an early write's worth written: {sent} records");
    let counters = log.shutdown(Duration::from_secs(10)).await;
    assert_eq!((counters.queued, counters.sent, counters.dropped), (N, N, 0));
    let (records, _) = read_segments(&dir.path().join("logs"));
    assert_eq!(ride_ids(&records), expected(0..N), "every record once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_many_threads_are_written_once_in_the_order_they_were_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start(config(dir.path())).await.unwrap();
    // Each thread logs into a queue of its own; taking turns (the lock) gives the records a
    // global order, which the merge by answer time must give back.
    const THREADS: u64 = 4;
    const EACH: u64 = 3_000;
    let turn = std::sync::Mutex::new(0u64);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                for _ in 0..EACH {
                    let mut next = turn.lock().unwrap();
                    log.log(record(*next));
                    *next += 1;
                }
            });
        }
    });
    let counters = log.shutdown(Duration::from_secs(10)).await;
    assert_eq!((counters.queued, counters.sent, counters.dropped), (THREADS * EACH, THREADS * EACH, 0));
    assert_eq!(counters.queue_depth, 0);
    let (records, _) = read_segments(&dir.path().join("logs"));
    assert_eq!(ride_ids(&records), expected(0..THREADS * EACH), "every record once, in log order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_that_ended_leaves_its_records_and_counts_behind() {
    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start(config(dir.path())).await.unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| (0..100).for_each(|i| log.log(record(i))));
    });
    wait_until("the ended thread's records", Duration::from_secs(10), || log.counters().sent == 100).await;
    // Its queue is dropped once the thread is gone and the queue taken; what it accepted still
    // counts.
    log.log(record(100));
    wait_until("one more", Duration::from_secs(10), || log.counters().sent == 101).await;
    let counters = log.shutdown(Duration::from_secs(10)).await;
    assert_eq!((counters.queued, counters.sent, counters.queue_depth), (101, 101, 0));
    let (records, _) = read_segments(&dir.path().join("logs"));
    assert_eq!(ride_ids(&records), expected(0..101));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_rotate_by_age_and_are_visible_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.segment_age = Duration::from_millis(300);
    config.flush_interval = Duration::from_millis(50);
    let log = PredictionLog::start(config).await.unwrap();
    let logs = dir.path().join("logs");
    for i in 0..100 {
        log.log(record(i));
    }
    // Without any further record, the segment is closed once it is old enough.
    wait_until("an age-rotated segment", Duration::from_secs(10), || read_segments(&logs).0.len() == 100).await;
    for i in 100..200 {
        log.log(record(i));
    }
    wait_until("a second segment", Duration::from_secs(10), || read_segments(&logs).1 == 2).await;
    let counters = log.shutdown(Duration::from_secs(5)).await;
    assert_eq!((counters.sent, counters.dropped), (200, 0));
    assert_eq!(ride_ids(&read_segments(&logs).0), expected(0..200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_spills_and_every_record_arrives_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    // Every drain finds the queue "full": records go through the spill, which bounds the memory.
    config.queue_capacity = 1;
    let log = PredictionLog::start(config).await.unwrap();
    const N: u64 = 10_000;
    for start in (0..N).step_by(1000) {
        for i in start..start + 1000 {
            log.log(record(i));
        }
        tokio::task::yield_now().await;
    }
    let counters = log.shutdown(Duration::from_secs(10)).await;
    eprintln!("counters {counters:?}");
    assert_eq!((counters.sent, counters.dropped, counters.spill_backlog, counters.corrupt), (N, 0, 0, 0));
    assert!(counters.spilled > 0, "records went through the spill: {counters:?}");
    let logs = dir.path().join("logs");
    assert_eq!(ride_ids(&read_segments(&logs).0), expected(0..N), "every record once, in order");
}

/// On one thread the background task only runs when the test yields: it then takes all the
/// records at once, as it does after the predictor's threads kept the cores from it for a while.
/// They are copied a chunk at a time (~1 MiB of requests): the first chunk finds the queue over
/// its capacity (counting the records taken and not yet stored) and goes to the spill, and so do
/// the others after it. Checks order and counts across chunks; that the chunks are stored one by
/// one is what `bench/predictor_overload.sh` measures (peak memory).
#[tokio::test(flavor = "current_thread")]
async fn a_backlog_taken_at_once_goes_to_the_spill_a_chunk_at_a_time_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.queue_capacity = 10_000;
    let log = PredictionLog::start(config).await.unwrap();
    // ~90 bytes a one-ride request in the compact form: about 8 MiB, several chunks.
    const N: u64 = 90_000;
    for i in 0..N {
        log.log(record(i));
    }
    let counters = log.shutdown(Duration::from_secs(30)).await;
    eprintln!("counters {counters:?}");
    assert_eq!((counters.sent, counters.dropped, counters.spill_backlog, counters.corrupt), (N, 0, 0, 0));
    assert_eq!(counters.spilled, N, "the first chunk was over the capacity: all went through the spill");
    let logs = dir.path().join("logs");
    assert_eq!(ride_ids(&read_segments(&logs).0), expected(0..N), "every record once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_spilled_by_a_previous_run_are_sent_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    // What a killed run leaves: two spill segments, the second with a line torn mid-write, and a
    // cursor saying the first 10 records of the first segment were already sent.
    std::fs::create_dir_all(&config.spill_dir).unwrap();
    let lines = |range: std::ops::Range<u64>| {
        range.flat_map(|i| [record(i).to_json(), b"\n".to_vec()].concat()).collect::<Vec<u8>>()
    };
    let first = "spill-09000000000000000000-aaaaaaaaaaaa.jsonl";
    let second = "spill-09000000000000000001-aaaaaaaaaaaa.jsonl";
    std::fs::write(config.spill_dir.join(first), lines(0..300)).unwrap();
    let sent_before = lines(0..10).len();
    std::fs::write(config.spill_dir.join("cursor"), format!("{first} {sent_before}\n")).unwrap();
    let mut torn = lines(300..500);
    torn.extend_from_slice(&record(500).to_json()[..40]);
    std::fs::write(config.spill_dir.join(second), torn).unwrap();

    let log = PredictionLog::start(config).await.unwrap();
    let at_start = log.counters();
    assert_eq!(at_start.recovered, 290 + 200 + 1, "the torn line counts until it is read");
    for i in 1000..1100 {
        log.log(record(i));
    }
    let counters = log.shutdown(Duration::from_secs(10)).await;
    eprintln!("counters {counters:?}");
    assert_eq!((counters.sent, counters.corrupt, counters.dropped, counters.spill_backlog), (490 + 100, 1, 0, 0));
    let logs = dir.path().join("logs");
    let expected: Vec<String> = expected(10..500).into_iter().chain(expected(1000..1100)).collect();
    assert_eq!(ride_ids(&read_segments(&logs).0), expected, "the spill first, then new records");
    let spill_left: Vec<_> = std::fs::read_dir(logs.join("spill")).unwrap().collect();
    assert!(spill_left.is_empty(), "spill emptied: {spill_left:?}");
}

/// The frames of a `.requests` spill segment: (offset, records) each. The layout is the one
/// `queued::FRAME_HEADER_BYTES` documents: 24-byte header, payload length at 8..12 and records at
/// 12..16 (little-endian).
fn frames(segment: &[u8]) -> Vec<(usize, u64)> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < segment.len() {
        assert_eq!(&segment[at..at + 4], b"LPRQ", "a frame at {at}");
        let le = |from: usize| u32::from_le_bytes(segment[from..from + 4].try_into().unwrap());
        frames.push((at, u64::from(le(at + 12))));
        at += 24 + le(at + 8) as usize;
    }
    frames
}

/// Records still in memory when the shutdown deadline passes are spilled in their compact form
/// (not formatted), and the next run sends them, in order. A frame damaged on disk is skipped and
/// its records counted as corrupt, the frames after it are read; so is a frame a crash cut short.
#[tokio::test(flavor = "current_thread")]
async fn requests_spilled_compactly_are_sent_by_the_next_run_and_damaged_frames_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let log = PredictionLog::start(config.clone()).await.unwrap();
    // ~60 bytes a record in the compact form: about 3 MiB, several frames. The background task
    // has not run yet (one thread, no await): the deadline passes before it takes them.
    const N: u64 = 50_000;
    for i in 0..N {
        log.log(record(i));
    }
    let counters = log.shutdown(Duration::ZERO).await;
    assert_eq!((counters.sent, counters.spilled, counters.spill_backlog, counters.dropped), (0, N, N, 0));
    let mut spilled: Vec<_> = std::fs::read_dir(&config.spill_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "requests"))
        .collect();
    assert_eq!(spilled.len(), 1, "one segment of requests: {spilled:?}");
    let path = spilled.pop().unwrap();
    let mut segment = std::fs::read(&path).unwrap();
    assert!(segment.len() < 100 * N as usize, "compact (the lines take ~250 bytes): {} bytes", segment.len());
    let frames = frames(&segment);
    assert!(frames.len() >= 3, "frames: {frames:?}");
    assert_eq!(frames.iter().map(|frame| frame.1).sum::<u64>(), N);
    // Damage the second frame's payload, and cut the last frame short.
    let (second_at, second_records) = frames[1];
    segment[second_at + 24 + 100] ^= 0x40;
    let (_, last_records) = *frames.last().unwrap();
    segment.truncate(segment.len() - 10);
    std::fs::write(&path, &segment).unwrap();

    let log = PredictionLog::start(config).await.unwrap();
    assert_eq!(log.counters().recovered, N, "counted from the frames' headers");
    let counters = log.shutdown(Duration::from_secs(30)).await;
    eprintln!("counters {counters:?}");
    let lost = second_records + last_records;
    assert_eq!((counters.sent, counters.corrupt, counters.dropped, counters.spill_backlog), (N - lost, lost, 0, 0));
    let first = frames[0].1;
    let expected: Vec<String> =
        expected(0..first).into_iter().chain(expected(first + second_records..N - last_records)).collect();
    let logs = dir.path().join("logs");
    assert_eq!(ride_ids(&read_segments(&logs).0), expected, "every readable record once, in order");
    let spill_left: Vec<_> = std::fs::read_dir(logs.join("spill")).unwrap().collect();
    assert!(spill_left.is_empty(), "spill emptied: {spill_left:?}");
}

/// Lines are formatted on a thread of idle priority: with every core kept busy by threads of
/// normal priority it gets next to no CPU, and the background task formats a batch itself once
/// it has waited a second. So records are still written, within seconds, on a machine never idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_written_while_every_core_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start(config(dir.path())).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let hogs: Vec<_> = (0..cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut spins = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
            })
        })
        .collect();
    const N: u64 = 1000;
    for i in 0..N {
        log.log(record(i));
    }
    let started = Instant::now();
    wait_until("the records written", Duration::from_secs(20), || log.counters().sent == N).await;
    eprintln!("written {:?} after logging, {cores} cores busy", started.elapsed());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
    let counters = log.shutdown(Duration::from_secs(10)).await;
    assert_eq!((counters.sent, counters.dropped, counters.spilled), (N, 0, 0));
    let logs = dir.path().join("logs");
    assert_eq!(ride_ids(&read_segments(&logs).0), expected(0..N));
}

/// The formatting thread (`predlog-format`) is scheduled `SCHED_IDLE` (policy 5 in
/// `/proc/<pid>/task/<tid>/stat`, field 41).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_formatting_thread_has_idle_priority() {
    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start(config(dir.path())).await.unwrap();
    let policies = || -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| {
                let task = task.ok()?.path();
                let comm = std::fs::read_to_string(task.join("comm")).ok()?;
                if comm.trim() != "predlog-format" {
                    return None;
                }
                let stat = std::fs::read_to_string(task.join("stat")).ok()?;
                // Fields after the command (which is in parentheses): field 3 is the first.
                let after = &stat[stat.rfind(')')? + 2..];
                after.split(' ').nth(41 - 3).map(str::to_owned)
            })
            .collect()
    };
    wait_until("a formatting thread", Duration::from_secs(5), || !policies().is_empty()).await;
    let policies = policies();
    assert!(policies.iter().all(|policy| policy == "5"), "SCHED_IDLE is 5: {policies:?}");
    log.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start(config(dir.path())).await.unwrap();
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 25_000;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let log = log.clone();
            scope.spawn(move || {
                for i in 0..PER_THREAD {
                    log.log(record(t * PER_THREAD + i));
                }
            });
        }
    });
    let logging = started.elapsed();
    let counters = log.shutdown(Duration::from_secs(20)).await;
    eprintln!("{THREADS} threads logged {} records in {logging:?}; counters {counters:?}", THREADS * PER_THREAD);
    assert_eq!((counters.sent, counters.dropped), (THREADS * PER_THREAD, 0));
    let records = read_segments(&dir.path().join("logs")).0;
    let mut ids = ride_ids(&records);
    // Each thread's records stay in that thread's order.
    let mut last = vec![None; THREADS as usize];
    for record in &records {
        let i: u64 = record.ride_id["ride-".len()..].parse().unwrap();
        let thread = (i / PER_THREAD) as usize;
        assert!(last[thread] < Some(i), "thread {thread} in order");
        last[thread] = Some(i);
    }
    ids.sort();
    assert_eq!(ids, expected(0..THREADS * PER_THREAD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_iterator_that_logs_itself_is_logged_too() {
    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start(config(dir.path())).await.unwrap();
    // The nested calls find the thread's encoding buffer in use and take one of their own.
    let nested = log.clone();
    let outer: Vec<_> = (0..3).map(record).collect();
    log.log_all(outer.iter().map(|record| {
        let inner =
            lightops_predlog::PredictionRecord { ride_id: format!("inner-{}", record.ride_id), ..record.clone() };
        nested.log(inner);
        record.as_view()
    }));
    let counters = log.shutdown(Duration::from_secs(10)).await;
    assert_eq!((counters.queued, counters.sent, counters.dropped), (6, 6, 0));
    let mut ids = ride_ids(&read_segments(&dir.path().join("logs")).0);
    ids.sort();
    let mut expected: Vec<String> = expected(0..3).into_iter().flat_map(|id| [format!("inner-{id}"), id]).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_logged_with_their_shared_fields_give_the_same_records() {
    use std::sync::Arc;

    use lightops_predlog::{ModelId, PredictionRecord, RequestFields};

    /// An iterator that gives more rides than its size hint promises.
    struct Understated<I>(I);
    impl<I: Iterator> Iterator for Understated<I> {
        type Item = I::Item;
        fn next(&mut self) -> Option<I::Item> {
            self.0.next()
        }
        fn size_hint(&self) -> (usize, Option<usize>) {
            (0, Some(1))
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start(config(dir.path())).await.unwrap();
    let v3 = Arc::new(ModelId { name: "trip_duration".into(), version: "3".into() });
    let v4 = Arc::new(ModelId { name: "trip_duration".into(), version: "4".into() });
    let mut expected = Vec::new();
    let mut next = 0;
    // Requests of 1, 3, 4 (encoded in place), 5 and 100 rides (through the scratch buffer), one
    // with an understated size, and a model swap in between.
    for (index, size) in [1u64, 3, 4, 5, 100, 1, 7, 2].into_iter().enumerate() {
        let model = if index < 5 { &v3 } else { &v4 };
        let request = RequestFields {
            model,
            received_at_ms: 1_700_000_000_000 + index as i64,
            latency_us: 10 + size,
            answered_at: Instant::now(),
        };
        let records: Vec<PredictionRecord> = (next..next + size).map(record).collect();
        next += size;
        if index == 6 {
            log.log_request(request, Understated(records.iter().map(fields)));
        } else {
            log.log_request(request, records.iter().map(fields));
        }
        expected.extend(records.iter().map(|record| PredictionRecord {
            received_at_ms: request.received_at_ms,
            latency_us: request.latency_us,
            model_name: model.name.clone(),
            model_version: model.version.clone(),
            ..record.clone()
        }));
    }
    // A request without rides logs nothing.
    log.log_request(
        RequestFields { model: &v4, received_at_ms: 1, latency_us: 1, answered_at: Instant::now() },
        std::iter::empty(),
    );
    let counters = log.shutdown(Duration::from_secs(10)).await;
    assert_eq!((counters.queued, counters.sent, counters.dropped), (next, next, 0));
    let (records, _) = read_segments(&dir.path().join("logs"));
    assert_eq!(records, expected, "every ride's whole record, in order");
    assert_eq!(records.last().unwrap().model_version, "4");
    // After shutdown a request's rides are refused and counted, small and large alike.
    let late: Vec<PredictionRecord> = (0..7).map(record).collect();
    let request = RequestFields { model: &v4, received_at_ms: 2, latency_us: 2, answered_at: Instant::now() };
    log.log_request(request, late[..2].iter().map(fields));
    log.log_request(request, late.iter().map(fields));
    assert_eq!(log.counters().dropped, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_log_queues_its_requests_when_flushed_full_or_dropped_in_order() {
    use std::sync::Arc;

    use lightops_predlog::{BUFFER_FLUSH_BYTES, ModelId, RequestFields};

    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start(config(dir.path())).await.unwrap();
    let model = Arc::new(ModelId { name: "trip_duration".into(), version: "3".into() });
    let records: Vec<_> = (0..2_000).map(record).collect();
    let mut next = records.iter();
    let mut log_one = |buffer: &mut lightops_predlog::BufferedLog| {
        let record = next.next().unwrap();
        let request = RequestFields {
            model: &model,
            received_at_ms: record.received_at_ms,
            latency_us: record.latency_us,
            answered_at: Instant::now(),
        };
        buffer.log_request(request, [fields(record)]);
    };

    // Buffered requests are not queued until flushed.
    let mut buffer = log.buffered();
    for _ in 0..3 {
        log_one(&mut buffer);
    }
    assert_eq!((buffer.buffered(), log.counters().queued), (3, 0));
    buffer.flush();
    assert_eq!((buffer.buffered(), log.counters().queued), (0, 3));
    buffer.flush();
    assert_eq!(log.counters().queued, 3, "flushing an empty buffer queues nothing");
    // A full buffer queues itself: a one-ride request takes more than 45 bytes.
    let mut logged: u64 = 3;
    while buffer.buffered() > 0 || logged == 3 {
        log_one(&mut buffer);
        logged += 1;
        assert!(logged < 3 + (BUFFER_FLUSH_BYTES / 45) as u64, "still buffering {} records", buffer.buffered());
    }
    assert_eq!(log.counters().queued, logged);
    // Dropping it queues what it holds.
    for _ in 0..5 {
        log_one(&mut buffer);
    }
    drop(buffer);
    logged += 5;
    assert_eq!(log.counters().queued, logged);

    let counters = log.shutdown(Duration::from_secs(10)).await;
    assert_eq!((counters.queued, counters.sent, counters.dropped), (logged, logged, 0));
    let (written, _) = read_segments(&dir.path().join("logs"));
    assert_eq!(ride_ids(&written), expected(0..logged), "in the order they were logged");
    assert_eq!(written[0].model_version, "3");
    // After shutdown a flush is refused and counted, and empties the buffer.
    let mut late = log.buffered();
    log_one(&mut late);
    log_one(&mut late);
    late.flush();
    assert_eq!((late.buffered(), log.counters().dropped), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rides_iterator_that_panics_leaves_a_buffered_log_readable() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Arc;

    use lightops_predlog::{ModelId, RequestFields};

    let dir = tempfile::tempdir().unwrap();
    let log = PredictionLog::start(config(dir.path())).await.unwrap();
    let model = Arc::new(ModelId { name: "trip_duration".into(), version: "3".into() });
    let request = RequestFields { model: &model, received_at_ms: 1, latency_us: 2, answered_at: Instant::now() };
    let records: Vec<_> = (0..4).map(record).collect();
    let mut buffer = log.buffered();
    buffer.log_request(request, [fields(&records[0])]);
    // A caller's iterator that panics after one ride: that request is left out whole.
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        buffer.log_request(
            request,
            records[1..3].iter().enumerate().map(|(i, record)| {
                assert!(i == 0, "a caller's bug");
                fields(record)
            }),
        );
    }));
    assert!(panicked.is_err());
    assert_eq!(buffer.buffered(), 1);
    buffer.log_request(request, [fields(&records[3])]);
    drop(buffer);
    let counters = log.shutdown(Duration::from_secs(10)).await;
    assert_eq!((counters.queued, counters.sent, counters.dropped), (2, 2, 0));
    let (written, _) = read_segments(&dir.path().join("logs"));
    assert_eq!(ride_ids(&written), [records[0].ride_id.clone(), records[3].ride_id.clone()]);
}
