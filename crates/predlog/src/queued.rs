//! Each thread's queue for the local sink: the JSON lines of the requests it answered, and when
//! each request was answered, so that the background task can merge the threads' queues in the
//! order the requests were answered.
//!
//! The lines are written on the thread that answered, into its own queue, whose lock only the
//! background task also takes (every few milliseconds). The task then only copies whole runs of
//! lines into one chunk. (Session 7 queued a compact binary form here and formatted it on the
//! task: the copy, the decoding and the id's UTF-8 check cost more than they saved; see
//! docs/benchmarks.md, session 8.)
//!
//! Written by hand: a buffer of lines with an index of request boundaries is a few lines of code,
//! and the merge is specific to this hand-off.

use std::sync::LazyLock;
use std::time::Instant;

use crate::record::{LineWriter, PredictionRecord, RequestFields, RideFields};
use crate::sink::Encoded;

/// JSON lines (each with its newline), request after request, with each request's end and answer
/// time.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    bytes: Vec<u8>,
    /// One per request with records, in order.
    marks: Vec<Mark>,
    /// Records (lines) in the requests marked.
    count: usize,
}

/// Where a request's lines end in [`Lines::bytes`], how many there are, and when it was answered.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// Nanoseconds after [`clock_base`].
    answered: u64,
    end: usize,
    records: usize,
}

impl Lines {
    /// Records held.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes of the lines held (what the early write of the local sink is measured in).
    pub fn len(&self) -> usize {
        self.marks.last().map_or(0, |mark| mark.end)
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Memory held, for deciding whether to keep the buffer.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Empties it, keeping the memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.marks.clear();
        self.count = 0;
    }

    /// Cuts the bytes back to the last whole request: what a request whose rides iterator
    /// panicked midway left behind is not part of any.
    fn cut_to_marked(&mut self) {
        let end = self.len();
        self.bytes.truncate(end);
    }

    /// Marks the lines written since the last mark as one request of `records` records, answered
    /// at `at`.
    fn mark(&mut self, records: usize, at: Instant) {
        if records > 0 {
            self.marks.push(Mark { answered: nanos(at), end: self.bytes.len(), records });
            self.count += records;
        }
    }

    /// Appends the lines of a request's rides, written with `writer`; a request without rides
    /// adds nothing.
    pub fn push_request<'a>(
        &mut self,
        writer: &mut LineWriter,
        request: &RequestFields<'_>,
        rides: impl IntoIterator<Item = RideFields<'a>>,
    ) {
        self.cut_to_marked();
        writer.begin(request);
        let mut records = 0;
        for ride in rides {
            writer.write(&ride, &mut self.bytes);
            self.bytes.push(b'\n');
            records += 1;
        }
        self.mark(records, request.answered_at);
    }

    /// Appends one whole record's line as a request of its own, answered at `at`.
    pub fn push_record<S: AsRef<str>>(&mut self, record: &PredictionRecord<S>, at: Instant) {
        self.cut_to_marked();
        record.write_json(&mut self.bytes);
        self.bytes.push(b'\n');
        self.mark(1, at);
    }

    /// Moves `other`'s requests to the end of these, leaving `other` empty (with its memory).
    pub fn append(&mut self, other: &mut Lines) {
        other.cut_to_marked();
        if self.is_empty() && self.bytes.capacity() < other.bytes.capacity() {
            // Nothing to add to: take the whole buffer (and give ours back).
            std::mem::swap(self, other);
            other.clear();
            return;
        }
        self.cut_to_marked();
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.marks.extend(other.marks.iter().map(|mark| Mark { end: start + mark.end, ..*mark }));
        self.count += other.count;
        other.clear();
    }

    /// Where the lines of the request marked `index` start.
    fn start_of(&self, index: usize) -> usize {
        index.checked_sub(1).map_or(0, |before| self.marks[before].end)
    }
}

/// Moves the lines of several queues (one per thread) to `out`, in the order their requests were
/// answered: each queue is in the order its thread logged them, and the queues are merged by
/// answer time. A client whose requests follow one another (the messages of a stream, say, even
/// when its task moves between threads) finds its records in order: its next request is answered
/// after the previous one was logged, so nothing logged before that one can come after it here.
///
/// The queues are left with their bytes taken or copied; the caller clears them.
pub(crate) fn merge(queues: &mut [Lines], out: &mut Encoded) {
    let mut busy = queues.iter_mut().filter(|queue| !queue.is_empty());
    let (Some(only), None) = (busy.next(), busy.next()) else {
        merge_runs(queues, out);
        return;
    };
    // One thread's lines: nothing to merge, and the buffer itself can be handed over.
    only.cut_to_marked();
    if out.lines.is_empty() {
        std::mem::swap(&mut out.lines, &mut only.bytes);
    } else {
        out.lines.extend_from_slice(&only.bytes);
    }
    out.count += only.count;
}

/// [`merge`] of several busy queues: each turn copies the longest run of one queue's requests
/// answered no later than every other queue's next one.
fn merge_runs(queues: &[Lines], out: &mut Encoded) {
    let mut cursors = vec![0usize; queues.len()];
    loop {
        // Few queues (one per thread): a scan beats a heap. The earliest next request, and the
        // earliest among the other queues.
        let mut first: Option<(usize, u64)> = None;
        let mut second: Option<u64> = None;
        for (index, (queue, &at)) in queues.iter().zip(&cursors).enumerate() {
            let Some(mark) = queue.marks.get(at) else { continue };
            match first {
                Some((_, earliest)) if mark.answered >= earliest => {
                    second = Some(second.map_or(mark.answered, |s| s.min(mark.answered)));
                }
                _ => {
                    second = first.map(|(_, earliest)| earliest);
                    first = Some((index, mark.answered));
                }
            }
        }
        let Some((index, _)) = first else { return };
        let queue = &queues[index];
        let from = cursors[index];
        let mut to = from;
        let mut records = 0;
        while let Some(mark) = queue.marks.get(to)
            && second.is_none_or(|next| mark.answered <= next)
        {
            records += mark.records;
            to += 1;
        }
        out.lines.extend_from_slice(&queue.bytes[queue.start_of(from)..queue.start_of(to)]);
        out.count += records;
        cursors[index] = to;
    }
}

/// The instant answer times are counted from (the first time it is asked for).
pub(crate) fn clock_base() -> &'static Instant {
    static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);
    &BASE
}

/// Nanoseconds from [`clock_base`] to `at` (0 before it).
fn nanos(at: Instant) -> u64 {
    at.saturating_duration_since(*clock_base()).as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::record::{ModelId, RideFeatures, SCHEMA_VERSION};

    fn ride(id: &str, n: i64) -> RideFields<'_> {
        RideFields {
            ride_id: id,
            event_time_ms: (n % 2 == 0).then_some(1_700_000_000_000 + n),
            features: RideFeatures { pu_location_id: n, do_location_id: -n, trip_distance: n as f64 / 7.0 },
            prediction: n as f64 * 1.1,
        }
    }

    fn expected(model: &ModelId, received_at_ms: i64, latency_us: u64, ride: &RideFields<'_>) -> Vec<u8> {
        let record = PredictionRecord {
            schema: SCHEMA_VERSION,
            ride_id: ride.ride_id,
            event_time_ms: ride.event_time_ms,
            received_at_ms,
            features: ride.features,
            prediction: ride.prediction,
            model_name: model.name.as_str(),
            model_version: model.version.as_str(),
            latency_us,
        };
        let mut line = serde_json::to_vec(&record).expect("serialize");
        line.push(b'\n');
        line
    }

    fn merged(queues: &mut [Lines]) -> Encoded {
        let mut out = Encoded::default();
        merge(queues, &mut out);
        out
    }

    /// The ride ids of `lines`, in order.
    fn ids(lines: &[u8]) -> Vec<String> {
        lines
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| PredictionRecord::from_json(line).expect("a record").ride_id)
            .collect()
    }

    #[test]
    fn requests_come_back_as_the_lines_of_their_records_in_order() {
        let v1 = Arc::new(ModelId { name: "trip_duration".into(), version: "1".into() });
        let v2 = Arc::new(ModelId { name: "trip_duration".into(), version: "2".into() });
        let ids = ["r1", "", "ünïcode", "quote\"d", "r5"];
        let (mut queued, mut writer) = (Lines::default(), LineWriter::default());
        let mut want = Vec::new();
        // Requests of several rides, one, none, and models changing back and forth.
        for (n, (model, count)) in [(&v1, 3usize), (&v1, 1), (&v2, 0), (&v2, 2), (&v1, 5)].into_iter().enumerate() {
            let n = n as i64;
            let request = RequestFields {
                model,
                received_at_ms: 1_700_000_000_000 + n,
                latency_us: 10 + n as u64,
                answered_at: Instant::now(),
            };
            let rides: Vec<_> = (0..count).map(|i| ride(ids[i], n * 10 + i as i64)).collect();
            for ride in &rides {
                want.extend(expected(model, request.received_at_ms, request.latency_us, ride));
            }
            queued.push_request(&mut writer, &request, rides);
        }
        // A whole record.
        let record = PredictionRecord {
            schema: SCHEMA_VERSION,
            ride_id: "whole".to_owned(),
            event_time_ms: None,
            received_at_ms: -1,
            features: RideFeatures { pu_location_id: 1, do_location_id: 2, trip_distance: f64::NAN },
            prediction: f64::MAX,
            model_name: "other".into(),
            model_version: String::new(),
            latency_us: u64::MAX,
        };
        want.extend(record.to_json());
        want.push(b'\n');
        queued.push_record(&record, Instant::now());
        assert_eq!((queued.count(), queued.len()), (12, want.len()));
        assert_eq!(queued.marks.len(), 5, "a request without rides is not marked");

        let out = merged(std::slice::from_mut(&mut queued));
        assert_eq!(out.count, 12);
        assert_eq!(String::from_utf8_lossy(&out.lines), String::from_utf8_lossy(&want));
    }

    #[test]
    fn a_request_cut_short_by_a_panic_leaves_no_line_behind() {
        let model = Arc::new(ModelId { name: "m".into(), version: "1".into() });
        let request = RequestFields { model: &model, received_at_ms: 5, latency_us: 6, answered_at: Instant::now() };
        let (mut queued, mut writer) = (Lines::default(), LineWriter::default());
        queued.push_request(&mut writer, &request, [ride("a", 1)]);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let rides = [ride("b", 2), ride("c", 3)].into_iter().enumerate().map(|(i, ride)| {
                assert!(i == 0, "the caller's iterator failed");
                ride
            });
            queued.push_request(&mut writer, &request, rides);
        }));
        assert!(panicked.is_err());
        assert_eq!((queued.count(), ids(&queued.bytes[..queued.len()])), (1, vec!["a".to_owned()]));
        queued.push_request(&mut writer, &request, [ride("d", 4)]);
        let mut other = Lines::default();
        other.push_request(&mut writer, &request, [ride("e", 5)]);
        queued.append(&mut other);
        assert!(other.is_empty() && other.bytes.is_empty());
        let out = merged(std::slice::from_mut(&mut queued));
        assert_eq!((out.count, ids(&out.lines)), (3, vec!["a".to_owned(), "d".to_owned(), "e".to_owned()]));
    }

    #[test]
    fn queues_are_merged_in_the_order_their_requests_were_answered() {
        let model = Arc::new(ModelId { name: "m".into(), version: "1".into() });
        let base = *clock_base();
        let at = |us: u64| base + Duration::from_micros(us);
        let mut writer = LineWriter::default();
        let mut queues: Vec<Lines> = (0..3).map(|_| Lines::default()).collect();
        // (queue, answered µs, rides): runs of one queue, ties, a request of two rides, and a
        // queue left empty.
        let plan = [(0, 1, 1), (0, 2, 1), (1, 3, 2), (0, 4, 1), (1, 4, 1), (1, 5, 1), (0, 9, 1), (1, 9, 1)];
        let names: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
        let mut name = names.iter();
        let mut want = Vec::new();
        for (queue, us, rides) in plan {
            let request = RequestFields { model: &model, received_at_ms: 5, latency_us: 6, answered_at: at(us) };
            let rides: Vec<_> = (0..rides).map(|_| ride(name.next().unwrap(), us as i64)).collect();
            want.extend(rides.iter().map(|ride| ride.ride_id.to_owned()));
            queues[queue].push_request(&mut writer, &request, rides);
        }
        let out = merged(&mut queues);
        assert_eq!(out.count, 9);
        // Ties go either way; everything else is in answer order.
        let got = ids(&out.lines);
        let tie = |id: &str| ["r4", "r5", "r7", "r8"].contains(&id);
        assert_eq!(
            got.iter().filter(|id| !tie(id)).collect::<Vec<_>>(),
            want.iter().filter(|id| !tie(id)).collect::<Vec<_>>()
        );
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, names[..9].to_vec());
        assert_eq!(&got[..4], ["r0", "r1", "r2", "r3"]);
        assert_eq!(got[6], "r6");
    }
}
