//! Requests queued for the local sink in a compact binary form, turned into JSON lines by the
//! background task.
//!
//! The prediction path copies each ride's numbers and id (about 50 bytes) into its thread's queue
//! and no more: the ~230-byte JSON line is four cache lines that the background task's core would
//! read back. The formatting itself costs the same on either side; the compact form keeps the
//! prediction path's share of the log small and its stores few.
//!
//! Written by hand: the layout is private to this crate and lives for milliseconds in memory (a
//! serialization crate would add framing and checks this does not need). Numbers are stored
//! native-endian, as they never leave the process.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use crate::record::{LineWriter, ModelId, PredictionRecord, RequestFields, RideFeatures, RideFields};
use crate::sink::Encoded;

/// Requests one after the other:
///
/// - a header: the model's index in `models` (u32), the number of rides (u32), received_at_ms
///   (i64), latency_us (u64), when it was answered (u64 ns after [`clock_base`]);
/// - per ride: event_time_ms (i64), PULocationID (i64), DOLocationID (i64), trip_distance (f64),
///   prediction (f64), whether event_time_ms was given (u8), the ride id's length (u32) and its
///   UTF-8 bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Requests {
    bytes: Vec<u8>,
    /// The models the requests name; a request names the last one again without a new entry.
    models: Vec<Arc<ModelId>>,
    /// Rides (records) in `bytes`.
    count: usize,
}

const HEADER_BYTES: usize = 4 + 4 + 8 + 8 + 8;
const RIDE_BYTES: usize = 5 * 8 + 1 + 4;

/// Bytes of a spill frame's header: the magic `LPRQ`, the format version (u8, 1), the byte order
/// of the requests' numbers (u8: 1 little-endian, 2 big-endian: they are copied as the process
/// holds them, so a spill is read back on a machine of the same byte order), two reserved bytes,
/// the payload's length (u32, at most [`MAX_FRAME_PAYLOAD`]), its records (u32), the payload's
/// CRC-32 (u32) and the CRC-32 of the header's first 20 bytes (u32); the header's own numbers are
/// little-endian. The payload: the number of models (u32 LE), each
/// model's name and version (u32 LE length and UTF-8 bytes each), then the requests as in
/// [`Requests`], model indices into that table.
pub(crate) const FRAME_HEADER_BYTES: usize = 24;
/// The largest payload a frame may declare (frames are chunks of ~1 MiB): a larger length is a
/// damaged header, not an allocation to make.
const MAX_FRAME_PAYLOAD: u32 = 64 * 1024 * 1024;
const FRAME_MAGIC: &[u8; 4] = b"LPRQ";
const FRAME_VERSION: u8 = 1;
const BYTE_ORDER: u8 = if cfg!(target_endian = "little") { 1 } else { 2 };

/// A spill frame's header (see [`FRAME_HEADER_BYTES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub payload_bytes: u32,
    pub records: u32,
    pub checksum: u32,
}

/// Why a frame cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Not a frame this version writes, a damaged header, or not a frame at all: where the next
    /// frame starts is unknown.
    Unknown(&'static str),
    /// Cut short: the end of a segment a crash tore.
    Torn,
    /// A whole frame whose contents are damaged (its records are lost, the next frame is found).
    Damaged(&'static str),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Unknown(why) | FrameError::Damaged(why) => f.write_str(why),
            FrameError::Torn => f.write_str("torn frame"),
        }
    }
}

impl FrameHeader {
    fn to_bytes(self) -> [u8; FRAME_HEADER_BYTES] {
        let mut bytes = [0; FRAME_HEADER_BYTES];
        bytes[..4].copy_from_slice(FRAME_MAGIC);
        bytes[4] = FRAME_VERSION;
        bytes[5] = BYTE_ORDER;
        bytes[8..12].copy_from_slice(&self.payload_bytes.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.records.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.checksum.to_le_bytes());
        let own = crc32fast::hash(&bytes[..20]);
        bytes[20..24].copy_from_slice(&own.to_le_bytes());
        bytes
    }

    /// Reads a header; `Torn` when `bytes` is shorter than one.
    pub fn parse(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
        if bytes.len() < FRAME_HEADER_BYTES {
            return Err(FrameError::Torn);
        }
        if &bytes[..4] != FRAME_MAGIC {
            return Err(FrameError::Unknown("not a spill frame"));
        }
        if bytes[4] != FRAME_VERSION {
            return Err(FrameError::Unknown("unknown spill frame version"));
        }
        if bytes[5] != BYTE_ORDER {
            return Err(FrameError::Unknown("spill frame of another byte order"));
        }
        let le = |at: usize| u32::from_le_bytes(array(bytes, at));
        if crc32fast::hash(&bytes[..20]) != le(20) {
            return Err(FrameError::Unknown("damaged spill frame header"));
        }
        let header = FrameHeader { payload_bytes: le(8), records: le(12), checksum: le(16) };
        // Each record takes at least a ride's fixed bytes.
        if header.payload_bytes > MAX_FRAME_PAYLOAD
            || u64::from(header.records) * RIDE_BYTES as u64 > u64::from(header.payload_bytes)
        {
            return Err(FrameError::Unknown("implausible spill frame header"));
        }
        Ok(header)
    }

    /// The frame's whole length, header included.
    pub fn frame_bytes(&self) -> u64 {
        FRAME_HEADER_BYTES as u64 + u64::from(self.payload_bytes)
    }
}

impl Requests {
    /// Records held.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes held (what the early write of the local sink is measured in).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Memory held, for deciding whether to keep the buffer.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// About how many bytes its lines take, more than most: ~5 times its compact bytes (a usual
    /// line is ~230 bytes against ~55), plus the longest model's name and version per record (the
    /// compact form holds those once). Lines that take more are fine, only slower to write (see
    /// [`crate::sink::append::make_room`]).
    pub fn lines_bytes_estimate(&self) -> usize {
        let model = self.models.iter().map(|model| model.name.len() + model.version.len()).max().unwrap_or(0);
        self.bytes.len() * 5 + self.count * model
    }

    /// Empties it, keeping the memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.models.clear();
        self.count = 0;
    }

    /// Appends a request and its rides; a request without rides adds nothing.
    pub fn push_request<'a>(&mut self, request: &RequestFields<'_>, rides: impl IntoIterator<Item = RideFields<'a>>) {
        let header_at = self.bytes.len();
        let model = self.model_index(request.model) as u32;
        let mut header = [0u8; HEADER_BYTES];
        header[..4].copy_from_slice(&model.to_ne_bytes());
        header[8..16].copy_from_slice(&request.received_at_ms.to_ne_bytes());
        header[16..24].copy_from_slice(&request.latency_us.to_ne_bytes());
        header[24..32].copy_from_slice(&nanos(request.answered_at).to_ne_bytes());
        self.bytes.extend_from_slice(&header);
        // Should the caller's iterator panic, the request is cut off again: a header that does not
        // count its rides would make everything after it unreadable (for a buffer that is still
        // handed over as it is dropped, see `BufferedLog`).
        let mut guard = CutOnUnwind { bytes: &mut self.bytes, to: header_at };
        let mut rides_pushed: u32 = 0;
        for ride in rides {
            push_ride(guard.bytes, &ride);
            rides_pushed += 1;
        }
        guard.to = usize::MAX;
        drop(guard);
        if rides_pushed == 0 {
            self.bytes.truncate(header_at);
            return;
        }
        self.bytes[header_at + 4..header_at + 8].copy_from_slice(&rides_pushed.to_ne_bytes());
        self.count += rides_pushed as usize;
    }

    /// Appends one whole record as a request of its own (its model looked up by name and version),
    /// answered at `at`.
    pub fn push_record<S: AsRef<str>>(&mut self, record: &PredictionRecord<S>, at: Instant) {
        let (name, version) = (record.model_name.as_ref(), record.model_version.as_ref());
        let model = match self.models.last() {
            Some(last) if last.name == name && last.version == version => last.clone(),
            _ => Arc::new(ModelId { name: name.to_owned(), version: version.to_owned() }),
        };
        let request = RequestFields {
            model: &model,
            received_at_ms: record.received_at_ms,
            latency_us: record.latency_us,
            answered_at: at,
        };
        let ride = RideFields {
            ride_id: record.ride_id.as_ref(),
            event_time_ms: record.event_time_ms,
            features: record.features,
            prediction: record.prediction,
        };
        self.push_request(&request, [ride]);
    }

    /// The index in `models` of `model`, added unless it is the last one (the same, or equal:
    /// records logged one by one bring a model of their own each).
    fn model_index(&mut self, model: &Arc<ModelId>) -> usize {
        if let Some(last) = self.models.last()
            && (Arc::ptr_eq(last, model) || **last == **model)
        {
            return self.models.len() - 1;
        }
        self.models.push(model.clone());
        self.models.len() - 1
    }

    /// Empties it, keeping the memory and the last model named: requests logged next with the
    /// same model find it there, without cloning its `Arc` (a shared count that every thread
    /// logging would otherwise write once per buffer it hands over).
    fn clear_keeping_last_model(&mut self) {
        self.bytes.clear();
        self.count = 0;
        if self.models.len() > 1 {
            self.models.drain(..self.models.len() - 1);
        }
    }

    /// Moves `other`'s requests to the end of these, leaving `other` empty (with its memory, and
    /// its last model: see [`Requests::clear_keeping_last_model`]).
    pub fn append(&mut self, other: &mut Requests) {
        if self.is_empty() && self.bytes.capacity() < other.bytes.capacity() {
            // Nothing to merge with: take the whole buffer (and give ours back).
            std::mem::swap(self, other);
            other.clear();
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        // The usual case: the same models at the same indices (one model, the first here too: the
        // queues are emptied every few ms); checked without allocating, as a stream's buffer is
        // appended every few messages.
        let (mut same, mut remap) = (true, Vec::new());
        for (index, model) in other.models.iter().enumerate() {
            let to = self.model_index(model);
            if same && to != index {
                same = false;
                remap.extend(0..index as u32);
            }
            if !same {
                remap.push(to as u32);
            }
        }
        if same {
            self.count += other.count;
            other.clear_keeping_last_model();
            return;
        }
        // Renumber the models: `other`'s indices are its own.
        let mut at = start;
        while at < self.bytes.len() {
            let index = read_u32(&self.bytes, at) as usize;
            self.bytes[at..at + 4].copy_from_slice(&remap[index].to_ne_bytes());
            let rides = read_u32(&self.bytes, at + 4);
            at += HEADER_BYTES;
            for _ in 0..rides {
                at += RIDE_BYTES + read_u32(&self.bytes, at + 41) as usize;
            }
        }
        self.count += other.count;
        other.clear_keeping_last_model();
    }

    /// Writes every record's JSON line (with its newline) to `out`, in order.
    pub fn encode(&self, writer: &mut LineWriter, out: &mut Encoded) {
        let mut at = 0;
        while at < self.bytes.len() {
            at = self.encode_request(at, writer, out);
        }
    }

    /// Where the request at `at` ends (the next one starts).
    fn request_end(&self, at: usize) -> usize {
        let rides = read_u32(&self.bytes, at + 4);
        let mut end = at + HEADER_BYTES;
        for _ in 0..rides {
            end += RIDE_BYTES + read_u32(&self.bytes, end + 41) as usize;
        }
        end
    }

    /// Appends the request of `from` at `at`, its model renumbered; returns where the next one
    /// starts in `from`.
    fn copy_request(&mut self, from: &Requests, at: usize) -> usize {
        let end = from.request_end(at);
        let model = self.model_index(&from.models[read_u32(&from.bytes, at) as usize]) as u32;
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&from.bytes[at..end]);
        self.bytes[start..start + 4].copy_from_slice(&model.to_ne_bytes());
        self.count += read_u32(&from.bytes, at + 4) as usize;
        end
    }

    /// Appends these requests to `out` as one frame of a spill segment (see [`FRAME_HEADER_BYTES`]).
    pub fn write_frame(&self, out: &mut Vec<u8>) {
        let header_at = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
        let payload_at = out.len();
        out.extend_from_slice(&(self.models.len() as u32).to_le_bytes());
        for model in &self.models {
            for text in [&model.name, &model.version] {
                out.extend_from_slice(&(text.len() as u32).to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
        }
        out.extend_from_slice(&self.bytes);
        let payload = &out[payload_at..];
        let header = FrameHeader {
            payload_bytes: payload.len() as u32,
            records: self.count as u32,
            checksum: crc32fast::hash(payload),
        };
        out[header_at..payload_at].copy_from_slice(&header.to_bytes());
    }

    /// The requests of a frame's payload (its header already read and checked). Every length and
    /// index is checked, so that a damaged frame is refused rather than misread.
    pub fn from_frame(header: &FrameHeader, mut payload: Vec<u8>) -> Result<Requests, FrameError> {
        if payload.len() != header.payload_bytes as usize {
            return Err(FrameError::Torn);
        }
        if crc32fast::hash(&payload) != header.checksum {
            return Err(FrameError::Damaged("checksum mismatch"));
        }
        let damaged = FrameError::Damaged;
        let mut at = 0;
        let mut take = |len: usize| {
            let slice = payload.get(at..at + len).ok_or(damaged("truncated model table"))?;
            at += len;
            Ok::<_, FrameError>(slice)
        };
        let le_u32 = |bytes: &[u8]| u32::from_le_bytes(array(bytes, 0)) as usize;
        let models = le_u32(take(4)?);
        let mut requests = Requests::default();
        for _ in 0..models {
            let mut text = || {
                let len = le_u32(take(4)?);
                String::from_utf8(take(len)?.to_vec()).map_err(|_| damaged("model name not UTF-8"))
            };
            let (name, version) = (text()?, text()?);
            requests.models.push(Arc::new(ModelId { name, version }));
        }
        let bytes = &payload[at..];
        // Walk the requests: every header and ride must lie within the bytes.
        let mut walk = 0;
        let mut count = 0usize;
        while walk < bytes.len() {
            if walk + HEADER_BYTES > bytes.len() {
                return Err(damaged("truncated request"));
            }
            if read_u32(bytes, walk) as usize >= requests.models.len() {
                return Err(damaged("model index out of range"));
            }
            let rides = read_u32(bytes, walk + 4);
            if rides == 0 {
                return Err(damaged("request without rides"));
            }
            walk += HEADER_BYTES;
            for _ in 0..rides {
                if walk + RIDE_BYTES > bytes.len() {
                    return Err(damaged("truncated ride"));
                }
                walk += RIDE_BYTES + read_u32(bytes, walk + 41) as usize;
            }
            if walk > bytes.len() {
                return Err(damaged("truncated ride id"));
            }
            count += rides as usize;
        }
        if count != header.records as usize {
            return Err(damaged("record count mismatch"));
        }
        // The requests are the payload past the model table: moved down in place, not copied.
        payload.drain(..at);
        requests.bytes = payload;
        requests.count = count;
        Ok(requests)
    }

    /// When the request at `at` was answered.
    fn answered_at(&self, at: usize) -> u64 {
        u64::from_ne_bytes(array(&self.bytes, at + 24))
    }

    /// Writes the lines of the request at `at` to `out`; returns where the next one starts.
    fn encode_request(&self, mut at: usize, writer: &mut LineWriter, out: &mut Encoded) -> usize {
        let bytes = &self.bytes[..];
        let model = &self.models[read_u32(bytes, at) as usize];
        let rides = read_u32(bytes, at + 4);
        let request = RequestFields {
            model,
            received_at_ms: i64::from_ne_bytes(array(bytes, at + 8)),
            latency_us: u64::from_ne_bytes(array(bytes, at + 16)),
            // Not used for the lines.
            answered_at: *clock_base(),
        };
        writer.begin(&request);
        at += HEADER_BYTES;
        for _ in 0..rides {
            let id_len = read_u32(bytes, at + 41) as usize;
            // The bytes came from a `&str`; the writer checks them anyway (a corrupt buffer cannot
            // make invalid UTF-8 reach the log), more cheaply than borrowing them as a `&str`.
            let id = &bytes[at + RIDE_BYTES..at + RIDE_BYTES + id_len];
            let ride = RideFields {
                ride_id: "",
                event_time_ms: (bytes[at + 40] != 0).then(|| i64::from_ne_bytes(array(bytes, at))),
                features: RideFeatures {
                    pu_location_id: i64::from_ne_bytes(array(bytes, at + 8)),
                    do_location_id: i64::from_ne_bytes(array(bytes, at + 16)),
                    trip_distance: f64::from_ne_bytes(array(bytes, at + 24)),
                },
                prediction: f64::from_ne_bytes(array(bytes, at + 32)),
            };
            out.push_ride(writer, id, &ride);
            at += RIDE_BYTES + id_len;
        }
        at
    }
}

/// Appends one ride of a request (see [`Requests`]).
fn push_ride(bytes: &mut Vec<u8>, ride: &RideFields<'_>) {
    let mut fixed = [0u8; RIDE_BYTES];
    let id = ride.ride_id.as_bytes();
    fixed[..8].copy_from_slice(&ride.event_time_ms.unwrap_or(0).to_ne_bytes());
    fixed[8..16].copy_from_slice(&ride.features.pu_location_id.to_ne_bytes());
    fixed[16..24].copy_from_slice(&ride.features.do_location_id.to_ne_bytes());
    fixed[24..32].copy_from_slice(&ride.features.trip_distance.to_ne_bytes());
    fixed[32..40].copy_from_slice(&ride.prediction.to_ne_bytes());
    fixed[40] = u8::from(ride.event_time_ms.is_some());
    // Ride ids are short (the predictor takes at most 256 bytes): one over 4 GiB is cut.
    let id = &id[..id.len().min(u32::MAX as usize)];
    fixed[41..45].copy_from_slice(&(id.len() as u32).to_ne_bytes());
    bytes.extend_from_slice(&fixed);
    bytes.extend_from_slice(id);
}

/// Cuts `bytes` back to `to` when dropped: while a panic unwinds (disarmed with `usize::MAX`
/// otherwise).
struct CutOnUnwind<'a> {
    bytes: &'a mut Vec<u8>,
    to: usize,
}

impl Drop for CutOnUnwind<'_> {
    fn drop(&mut self) {
        if self.to != usize::MAX {
            self.bytes.truncate(self.to);
        }
    }
}

/// Copies the requests of several queues (one per thread) to `out`, in the order they were
/// answered: each queue is in the order its thread logged them, and the queues are merged by
/// answer time. A client whose requests follow one another (the messages of a stream, say, even
/// when its task moves between threads) finds its records in order: its next request is answered
/// after the previous one was logged, so nothing logged before that one can come after it here.
///
/// `cursors` (one per queue, all 0 at first) say where each queue goes on: requests are copied
/// until `out` holds `max_bytes` or more (after a whole request), and a later call with the same
/// cursors copies the next ones. Returns whether all were copied.
pub(crate) fn merge(queues: &[Requests], cursors: &mut [usize], out: &mut Requests, max_bytes: usize) -> bool {
    debug_assert_eq!(queues.len(), cursors.len(), "a cursor per queue");
    // The usual case under a light load: one thread logged, and `out` is empty: one copy.
    let mut waiting = cursors.iter().enumerate().filter(|&(index, &at)| at < queues[index].bytes.len());
    if let (Some((index, &0)), None) = (waiting.next(), waiting.next())
        && out.is_empty()
        && queues[index].bytes.len() <= max_bytes
    {
        let only = &queues[index];
        out.bytes.extend_from_slice(&only.bytes);
        out.models.extend(only.models.iter().cloned());
        out.count = only.count;
        cursors[index] = only.bytes.len();
        return true;
    }
    while out.bytes.len() < max_bytes {
        // Few queues (one per thread): a scan beats a heap.
        let mut next: Option<(usize, u64)> = None;
        for (index, (queue, &at)) in queues.iter().zip(cursors.iter()).enumerate() {
            if at < queue.bytes.len() {
                let answered = queue.answered_at(at);
                if next.is_none_or(|(_, earliest)| answered < earliest) {
                    next = Some((index, answered));
                }
            }
        }
        let Some((index, _)) = next else { return true };
        cursors[index] = out.copy_request(&queues[index], cursors[index]);
    }
    queues.iter().zip(cursors.iter()).all(|(queue, &at)| at >= queue.bytes.len())
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

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(array(bytes, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SCHEMA_VERSION;

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

    #[test]
    fn requests_come_back_as_the_lines_of_their_records_in_order() {
        let v1 = Arc::new(ModelId { name: "trip_duration".into(), version: "1".into() });
        let v2 = Arc::new(ModelId { name: "trip_duration".into(), version: "2".into() });
        let ids = ["r1", "", "ünïcode", "quote\"d", "r5"];
        let mut queued = Requests::default();
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
            queued.push_request(&request, rides);
        }
        // A whole record, through its model's name and version.
        let record: PredictionRecord = expected_record();
        want.extend(record.to_json());
        want.push(b'\n');
        queued.push_record(&record, Instant::now());
        assert_eq!(queued.count(), 12);

        let mut out = Encoded::default();
        queued.encode(&mut LineWriter::default(), &mut out);
        assert_eq!(out.count, 12);
        assert_eq!(String::from_utf8_lossy(&out.lines), String::from_utf8_lossy(&want));
    }

    #[test]
    fn a_merge_written_a_chunk_at_a_time_is_the_merge_written_at_once() {
        let model = Arc::new(ModelId { name: "m".into(), version: "1".into() });
        let base = Instant::now();
        // Two threads' queues whose requests interleave in answer time, of 1 to 3 rides.
        let mut queues = [Requests::default(), Requests::default()];
        for n in 0..40u64 {
            let request = RequestFields {
                model: &model,
                received_at_ms: n as i64,
                latency_us: n,
                answered_at: base + std::time::Duration::from_micros(n),
            };
            let ids: Vec<String> = (0..=n % 3).map(|i| format!("r{n}-{i}")).collect();
            queues[(n % 2) as usize].push_request(&request, ids.iter().map(|id| ride(id, n as i64)));
        }
        let mut whole = Requests::default();
        let mut cursors = [0, 0];
        assert!(merge(&queues, &mut cursors, &mut whole, usize::MAX));
        assert_eq!(whole.count(), queues.iter().map(Requests::count).sum::<usize>());
        let answered: Vec<u64> = {
            let mut at = 0;
            std::iter::from_fn(|| {
                (at < whole.bytes.len()).then(|| {
                    let answered = whole.answered_at(at);
                    at = whole.request_end(at);
                    answered
                })
            })
            .collect()
        };
        assert!(answered.is_sorted(), "merged by answer time");

        let (mut pieces, mut calls) = (Requests::default(), 0);
        let mut cursors = [0, 0];
        loop {
            let mut chunk = Requests::default();
            let done = merge(&queues, &mut cursors, &mut chunk, 600);
            calls += 1;
            // A chunk stops at the first whole request past the limit.
            assert!(chunk.len() < 600 + 3 * 80, "chunk of {} bytes", chunk.len());
            pieces.append(&mut chunk);
            if done {
                break;
            }
        }
        assert!(calls > 3, "copied in {calls} chunks");
        let lines = |requests: &Requests| {
            let mut out = Encoded::default();
            requests.encode(&mut LineWriter::default(), &mut out);
            (String::from_utf8(out.lines).expect("utf-8"), out.count)
        };
        assert_eq!(lines(&pieces), lines(&whole));

        // One queue waiting: copied whole, in one go.
        let mut single = Requests::default();
        let mut cursors = [queues[0].len(), 0];
        assert!(merge(&queues, &mut cursors, &mut single, usize::MAX));
        assert_eq!(single.bytes, queues[1].bytes);
        assert_eq!(cursors, [queues[0].len(), queues[1].len()]);
    }

    #[test]
    fn a_frame_reads_back_as_its_requests_and_damage_is_refused() {
        let v1 = Arc::new(ModelId { name: "trip_duration".into(), version: "1".into() });
        let v2 = Arc::new(ModelId { name: "other".into(), version: String::new() });
        let mut requests = Requests::default();
        for (n, model) in [&v1, &v2, &v1].into_iter().enumerate() {
            let request = RequestFields { model, received_at_ms: n as i64, latency_us: 7, answered_at: Instant::now() };
            requests.push_request(&request, [ride("ünï", n as i64), ride("b", 1 + n as i64)]);
        }
        let mut frame = vec![9, 9];
        requests.write_frame(&mut frame);
        let frame = &frame[2..];
        let header = FrameHeader::parse(frame).expect("header");
        assert_eq!(header.records, 6);
        assert_eq!(header.frame_bytes(), frame.len() as u64);
        let back = Requests::from_frame(&header, frame[FRAME_HEADER_BYTES..].to_vec()).expect("frame");
        let lines = |requests: &Requests| {
            let mut out = Encoded::default();
            requests.encode(&mut LineWriter::default(), &mut out);
            out.lines
        };
        assert_eq!(back.count(), 6);
        assert_eq!(lines(&back), lines(&requests));

        let payload = &frame[FRAME_HEADER_BYTES..];
        assert_eq!(
            Requests::from_frame(&header, payload[..payload.len() - 1].to_vec()).expect_err("refused"),
            FrameError::Torn
        );
        let mut flipped = payload.to_vec();
        flipped[40] ^= 1;
        assert_eq!(
            Requests::from_frame(&header, flipped).expect_err("refused"),
            FrameError::Damaged("checksum mismatch")
        );
        // A consistent checksum over inconsistent contents: the walk refuses it.
        let lying = FrameHeader { records: 7, ..header };
        assert_eq!(
            Requests::from_frame(&lying, payload.to_vec()).expect_err("refused"),
            FrameError::Damaged("record count mismatch")
        );
        let cut = payload[..payload.len() - 1].to_vec();
        let cut_header = FrameHeader { payload_bytes: cut.len() as u32, checksum: crc32fast::hash(&cut), ..header };
        assert_eq!(
            Requests::from_frame(&cut_header, cut).expect_err("refused"),
            FrameError::Damaged("truncated ride id")
        );
        assert!(matches!(FrameHeader::parse(&frame[..10]), Err(FrameError::Torn)));
        let mut other = frame.to_vec();
        other[4] = 2;
        assert!(matches!(FrameHeader::parse(&other), Err(FrameError::Unknown(_))));
        let mut length = frame.to_vec();
        length[9] ^= 1;
        assert_eq!(FrameHeader::parse(&length), Err(FrameError::Unknown("damaged spill frame header")));
        other[..4].copy_from_slice(b"{\"sc");
        assert!(matches!(FrameHeader::parse(&other), Err(FrameError::Unknown("not a spill frame"))));
    }

    fn expected_record() -> PredictionRecord {
        PredictionRecord {
            schema: SCHEMA_VERSION,
            ride_id: "whole".into(),
            event_time_ms: None,
            received_at_ms: -1,
            features: RideFeatures { pu_location_id: 1, do_location_id: 2, trip_distance: f64::NAN },
            prediction: f64::MAX,
            model_name: "other".into(),
            model_version: String::new(),
            latency_us: u64::MAX,
        }
    }

    #[test]
    fn appending_renumbers_the_models_and_keeps_the_order() {
        let v1 = Arc::new(ModelId { name: "m".into(), version: "1".into() });
        let v2 = Arc::new(ModelId { name: "m".into(), version: "2".into() });
        let request = |model| RequestFields { model, received_at_ms: 5, latency_us: 6, answered_at: Instant::now() };
        let [mut first, mut same, mut second, mut third] = [(); 4].map(|()| Requests::default());
        first.push_request(&request(&v1), [ride("a", 1)]);
        // The same model as the only one before: nothing to renumber.
        same.push_request(&request(&v1), [ride("a2", 11)]);
        first.append(&mut same);
        second.push_request(&request(&v2), [ride("b", 2), ride("c", 3)]);
        second.push_request(&request(&v1), [ride("d", 4)]);
        third.push_request(&request(&v2), [ride("e", 5)]);
        first.append(&mut second);
        assert!(second.is_empty() && second.bytes.is_empty());
        first.append(&mut third);
        // Into an empty one: the buffer is taken whole.
        let mut all = Requests::default();
        all.append(&mut first);
        assert!(first.is_empty());
        assert_eq!(all.count(), 6);

        let mut out = Encoded::default();
        all.encode(&mut LineWriter::default(), &mut out);
        let mut want = Vec::new();
        for (model, n, id) in
            [(&v1, 1, "a"), (&v1, 11, "a2"), (&v2, 2, "b"), (&v2, 3, "c"), (&v1, 4, "d"), (&v2, 5, "e")]
        {
            want.extend(expected(model, 5, 6, &ride(id, n)));
        }
        assert_eq!(String::from_utf8_lossy(&out.lines), String::from_utf8_lossy(&want));
    }

    #[test]
    fn an_appended_buffer_keeps_its_last_model_for_the_next_requests() {
        let v1 = Arc::new(ModelId { name: "m".into(), version: "1".into() });
        let v2 = Arc::new(ModelId { name: "m".into(), version: "2".into() });
        let request = |model| RequestFields { model, received_at_ms: 5, latency_us: 6, answered_at: Instant::now() };
        let (mut queue, mut buffer) = (Requests::default(), Requests::default());
        queue.push_request(&request(&v1), [ride("q", 1)]);
        buffer.push_request(&request(&v1), [ride("a", 2)]);
        buffer.push_request(&request(&v2), [ride("b", 3)]);
        queue.append(&mut buffer);
        assert!(buffer.is_empty() && buffer.bytes.is_empty());
        assert!(buffer.models.len() == 1 && Arc::ptr_eq(&buffer.models[0], &v2), "the last model kept");
        let counts = Arc::strong_count(&v2);
        buffer.push_request(&request(&v2), [ride("c", 4)]);
        assert_eq!(Arc::strong_count(&v2), counts, "the same model: not cloned again");
        buffer.push_request(&request(&v1), [ride("d", 5)]);
        queue.append(&mut buffer);
        assert_eq!(queue.count(), 5);

        let mut out = Encoded::default();
        queue.encode(&mut LineWriter::default(), &mut out);
        let mut want = Vec::new();
        for (model, n, id) in [(&v1, 1, "q"), (&v1, 2, "a"), (&v2, 3, "b"), (&v2, 4, "c"), (&v1, 5, "d")] {
            want.extend(expected(model, 5, 6, &ride(id, n)));
        }
        assert_eq!(String::from_utf8_lossy(&out.lines), String::from_utf8_lossy(&want));
    }
}
