//! The record written for every answered prediction, schema version [`SCHEMA_VERSION`].
//!
//! The wire format (one JSON object per line or per Kinesis record) is documented in
//! `docs/prediction-log.md`; changing a field's name, type or meaning requires a new schema version.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The schema version written in [`PredictionRecord::schema`] by this crate.
pub const SCHEMA_VERSION: u32 = 1;

/// One answered prediction.
///
/// `S` is the type of the text fields: `String` (the default) for records read back or built to
/// keep, `&str` for a borrowed view the predictor logs without copying its strings first. Both
/// serialize to the same JSON. (Rust does not infer the default from a literal alone: write
/// `let record: PredictionRecord = PredictionRecord { ride_id: "r1".into(), .. }`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord<S = String> {
    /// The record's schema version, [`SCHEMA_VERSION`].
    pub schema: u32,
    /// The ride the prediction is for; empty when the client gave none.
    pub ride_id: S,
    /// The ride's own time (ms since the Unix epoch) when the client gave one.
    pub event_time_ms: Option<i64>,
    /// When the predictor received the request (ms since the Unix epoch).
    pub received_at_ms: i64,
    /// The features the model was given.
    pub features: RideFeatures,
    /// The predicted trip duration, in minutes.
    pub prediction: f64,
    /// The registered model's name (or the artifact's name when unregistered).
    pub model_name: S,
    /// The registered model version, e.g. `"3"`; empty for an unregistered artifact.
    pub model_version: S,
    /// Time spent serving the request, in microseconds.
    pub latency_us: u64,
}

/// The model's input features, named as in the NYC TLC trip records.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RideFeatures {
    /// Pick-up taxi zone.
    #[serde(rename = "PULocationID")]
    pub pu_location_id: i64,
    /// Drop-off taxi zone.
    #[serde(rename = "DOLocationID")]
    pub do_location_id: i64,
    /// Trip distance in miles.
    pub trip_distance: f64,
}

/// Just enough of a record to tell its schema version when the full parse fails.
#[derive(Deserialize)]
struct SchemaProbe {
    schema: u32,
}

impl<S: AsRef<str>> PredictionRecord<S> {
    /// Encodes the record as one line of JSON (without the trailing newline): byte for byte what
    /// serde_json writes for the derived `Serialize`.
    pub fn to_json(&self) -> Vec<u8> {
        // Most records are 200–260 bytes: one allocation instead of growing from 128.
        let mut out = Vec::with_capacity(320);
        self.write_json(&mut out);
        out
    }

    /// Appends the record's JSON line (without the newline) to `out`.
    ///
    /// Written by hand because this runs once per prediction on the request path, where it is most
    /// of what the log costs: keys and punctuation are constant text, integers go through `itoa`
    /// and floats through `zmij` (what serde_json itself calls, so the digits are the same; a
    /// non-finite float becomes `null` as in serde_json), and strings that need no escaping are
    /// copied as they are (the rest go through serde_json). A test checks the output against the
    /// derived `Serialize`, byte for byte.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut int = itoa::Buffer::new();
        out.reserve(192 + self.ride_id.as_ref().len());
        out.extend_from_slice(b"{\"schema\":");
        out.extend_from_slice(int.format(self.schema).as_bytes());
        out.extend_from_slice(b",\"ride_id\":");
        str_json(out, self.ride_id.as_ref());
        out.extend_from_slice(b",\"event_time_ms\":");
        match self.event_time_ms {
            Some(time) => out.extend_from_slice(int.format(time).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"received_at_ms\":");
        out.extend_from_slice(int.format(self.received_at_ms).as_bytes());
        out.extend_from_slice(b",\"features\":{\"PULocationID\":");
        out.extend_from_slice(int.format(self.features.pu_location_id).as_bytes());
        out.extend_from_slice(b",\"DOLocationID\":");
        out.extend_from_slice(int.format(self.features.do_location_id).as_bytes());
        out.extend_from_slice(b",\"trip_distance\":");
        out.extend_from_slice(distance_text(&mut DistanceBuffer::default(), self.features.trip_distance));
        out.extend_from_slice(b"},\"prediction\":");
        out.extend_from_slice(float_text(&mut zmij::Buffer::new(), self.prediction));
        out.extend_from_slice(b",\"model_name\":");
        str_json(out, self.model_name.as_ref());
        out.extend_from_slice(b",\"model_version\":");
        str_json(out, self.model_version.as_ref());
        out.extend_from_slice(b",\"latency_us\":");
        out.extend_from_slice(int.format(self.latency_us).as_bytes());
        out.push(b'}');
    }
}

/// The model a request was answered with, as its records name it.
///
/// Shared behind an `Arc`: [`PredictionLog::log_request`](crate::PredictionLog::log_request) tells
/// by identity that a request used the same model as the one before, and reuses that model's text
/// without reading its strings again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelId {
    /// The registered model's name (or the artifact's name when unregistered).
    pub name: String,
    /// The registered model version, e.g. `"3"`; empty for an unregistered artifact.
    pub version: String,
}

/// What all the records of one request share.
#[derive(Debug, Clone, Copy)]
pub struct RequestFields<'a> {
    /// The model that answered the request.
    pub model: &'a Arc<ModelId>,
    /// When the predictor received the request (ms since the Unix epoch).
    pub received_at_ms: i64,
    /// Time spent serving the request, in microseconds.
    pub latency_us: u64,
    /// When the request was answered: not written, but the order the local sink writes records
    /// of different threads in (see `docs/prediction-log.md`). Take it after the predictions and
    /// before the call that logs them, never later.
    pub answered_at: Instant,
}

/// The fields of one ride's record that are its own.
#[derive(Debug, Clone, Copy)]
pub struct RideFields<'a> {
    /// The ride's id; empty when the client gave none.
    pub ride_id: &'a str,
    /// The ride's own time (ms since the Unix epoch) when the client gave one.
    pub event_time_ms: Option<i64>,
    /// The features the model was given.
    pub features: RideFeatures,
    /// The predicted trip duration, in minutes.
    pub prediction: f64,
}

impl<'a> RideFields<'a> {
    /// The ride's whole record in `request`.
    pub fn record<'r>(self, request: &RequestFields<'r>) -> PredictionRecord<&'r str>
    where
        'a: 'r,
    {
        let model: &'r ModelId = request.model;
        PredictionRecord {
            schema: SCHEMA_VERSION,
            ride_id: self.ride_id,
            event_time_ms: self.event_time_ms,
            received_at_ms: request.received_at_ms,
            features: self.features,
            prediction: self.prediction,
            model_name: &model.name,
            model_version: &model.version,
            latency_us: request.latency_us,
        }
    }
}

/// Writes the lines of a request's records. Byte for byte what [`PredictionRecord::write_json`]
/// writes.
///
/// [`PredictionLog::log_request`](crate::PredictionLog::log_request) keeps one per thread. The
/// model's text lives in the writer itself and the model is recognised by its `Arc`: in a profile
/// of the predictor, reading the model's name (a small heap string whose cache line other threads'
/// allocations kept writing) missed the cache on every record, which cost more than writing the
/// text.
#[derive(Debug)]
pub struct LineWriter {
    /// The model whose text is in `model_text`.
    model: Option<Arc<ModelId>>,
    /// `,"model_name":"…","model_version":"…"`.
    model_text: [u8; MODEL_TEXT_CAPACITY],
    /// Bytes of `model_text` in use; 0 when the text does not fit (then lines are written the
    /// general way).
    model_len: usize,
    /// The current request's received time and latency.
    received_at_ms: i64,
    latency_us: u64,
    /// The digits last written for a received time and a latency, with their values: a
    /// request's lines share them, and at high rates many requests in a row share the same
    /// millisecond (formatting a 13-digit time showed in profiles). Not kept for event times:
    /// they differ from ride to ride in real traffic, so keeping them would pay off only for a
    /// load generator that stamps every ride with the same time.
    received_digits: Option<(i64, Digits)>,
    latency_digits: Option<(u64, Digits)>,
}

/// An integer's digits, kept.
#[derive(Debug, Clone, Copy, Default)]
struct Digits {
    text: [u8; 20],
    len: usize,
}

impl Digits {
    fn copy_of(digits: &[u8]) -> Self {
        let mut text = [0; 20];
        Line::new(&mut text).text(digits);
        Digits { text, len: digits.len() }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

/// The longest model text kept: model names and versions are short.
const MODEL_TEXT_CAPACITY: usize = 256;

/// The constant text of a line, in order, around the values.
mod keys {
    pub const START: &[u8; 23] = b"{\"schema\":1,\"ride_id\":\"";
    pub const EVENT_TIME: &[u8; 18] = b"\",\"event_time_ms\":";
    pub const RECEIVED_AT: &[u8; 18] = b",\"received_at_ms\":";
    pub const PU: &[u8; 28] = b",\"features\":{\"PULocationID\":";
    pub const DO: &[u8; 16] = b",\"DOLocationID\":";
    pub const DISTANCE: &[u8; 17] = b",\"trip_distance\":";
    pub const PREDICTION: &[u8; 15] = b"},\"prediction\":";
    pub const LATENCY: &[u8; 14] = b",\"latency_us\":";
    pub const END: &[u8; 1] = b"}";
    /// All of them.
    pub const LEN: usize = START.len()
        + EVENT_TIME.len()
        + RECEIVED_AT.len()
        + PU.len()
        + DO.len()
        + DISTANCE.len()
        + PREDICTION.len()
        + LATENCY.len()
        + END.len();
}
const _: () = assert!(SCHEMA_VERSION == 1, "keys::START names the schema version");

impl Default for LineWriter {
    fn default() -> Self {
        LineWriter {
            model: None,
            model_text: [0; MODEL_TEXT_CAPACITY],
            model_len: 0,
            received_at_ms: 0,
            latency_us: 0,
            received_digits: None,
            latency_digits: None,
        }
    }
}

impl LineWriter {
    /// Takes the fields `request`'s records share.
    pub fn begin(&mut self, request: &RequestFields<'_>) {
        self.received_at_ms = request.received_at_ms;
        self.latency_us = request.latency_us;
        if !self.model.as_ref().is_some_and(|model| Arc::ptr_eq(model, request.model)) {
            let mut text = Vec::with_capacity(MODEL_TEXT_CAPACITY);
            text.extend_from_slice(b",\"model_name\":");
            str_json(&mut text, &request.model.name);
            text.extend_from_slice(b",\"model_version\":");
            str_json(&mut text, &request.model.version);
            self.model = Some(request.model.clone());
            self.model_len = text.len();
            if let Some(to) = self.model_text.get_mut(..text.len()) {
                to.copy_from_slice(&text);
            } else {
                self.model_len = 0;
            }
        }
    }

    /// Appends the line of `ride` (without the newline) in the request given to `begin`, which
    /// must have been called first.
    pub fn write(&mut self, ride: &RideFields<'_>, out: &mut Vec<u8>) {
        self.write_id(ride.ride_id.as_bytes(), ride, out);
    }

    /// [`LineWriter::write`] with the ride's id given as bytes, in place of `ride.ride_id` (which
    /// is not read). An id of plain ASCII with nothing to escape (the usual one) is copied as it
    /// is, without the UTF-8 check that borrowing it as a `&str` would take (it showed in
    /// profiles); any other is read as UTF-8, invalid sequences replaced, and escaped.
    pub(crate) fn write_id(&mut self, id: &[u8], ride: &RideFields<'_>, out: &mut Vec<u8>) {
        debug_assert!(self.model.is_some(), "LineWriter::write before begin");
        if self.model_len > 0 && plain_ascii(id) {
            self.write_fast(id, ride, out);
            return;
        }
        // The model's text did not fit, the ride id is not plain ASCII, or `begin` was not called
        // (a line naming no model).
        let id = String::from_utf8_lossy(id);
        let (name, version) = self.model.as_deref().map_or(("", ""), |model| (&model.name, &model.version));
        let record = PredictionRecord {
            schema: SCHEMA_VERSION,
            ride_id: &*id,
            event_time_ms: ride.event_time_ms,
            received_at_ms: self.received_at_ms,
            features: ride.features,
            prediction: ride.prediction,
            model_name: name,
            model_version: version,
            latency_us: self.latency_us,
        };
        record.write_json(out);
    }

    /// [`LineWriter::write_id`] for the usual line: a ride id of plain ASCII and the model's text
    /// at hand. Every number is formatted first, which gives the line's length; the line is
    /// then written in place with fixed-size moves.
    ///
    /// Measured against the general way (a dozen appends to the `Vec`): each append was a call to
    /// `memcpy` for a few bytes, a third of the encoding time; copying digits right after their
    /// formatter wrote them stalled on store-to-load forwarding (a wide load over narrower
    /// stores still in flight); and writing past the line (into room reserved for the longest
    /// one) touched cache lines of the shared chunk that the other core then had to take back.
    fn write_fast(&mut self, id: &[u8], ride: &RideFields<'_>, out: &mut Vec<u8>) {
        let mut buffers = [itoa::Buffer::new(); 5];
        let [time, pu, dropoff, received, latency] = &mut buffers;
        let time = match ride.event_time_ms {
            Some(time_ms) => time.format(time_ms).as_bytes(),
            None => b"null",
        };
        let pu = pu.format(ride.features.pu_location_id).as_bytes();
        let dropoff = dropoff.format(ride.features.do_location_id).as_bytes();
        let (mut distance, mut prediction) = (DistanceBuffer::default(), zmij::Buffer::new());
        let distance = distance_text(&mut distance, ride.features.trip_distance);
        let prediction = float_text(&mut prediction, ride.prediction);
        // Digits are kept after the line that formatted them (formatting in `begin` and copying
        // them here would stall as above for one-ride requests).
        let received = match &self.received_digits {
            Some((last, digits)) if *last == self.received_at_ms => digits.as_bytes(),
            _ => received.format(self.received_at_ms).as_bytes(),
        };
        let latency = match &self.latency_digits {
            Some((last, digits)) if *last == self.latency_us => digits.as_bytes(),
            _ => latency.format(self.latency_us).as_bytes(),
        };
        let model = &self.model_text[..self.model_len];
        let len = keys::LEN
            + id.len()
            + time.len()
            + received.len()
            + pu.len()
            + dropoff.len()
            + distance.len()
            + prediction.len()
            + model.len()
            + latency.len();
        let start = out.len();
        out.resize(start + len, 0);
        let mut line = Line::new(&mut out[start..]);
        line.put(keys::START);
        line.text(id);
        line.put(keys::EVENT_TIME);
        line.text(time);
        line.put(keys::RECEIVED_AT);
        line.text(received);
        line.put(keys::PU);
        line.text(pu);
        line.put(keys::DO);
        line.text(dropoff);
        line.put(keys::DISTANCE);
        line.text(distance);
        line.put(keys::PREDICTION);
        line.text(prediction);
        line.text(model);
        line.put(keys::LATENCY);
        line.text(latency);
        line.put(keys::END);
        debug_assert_eq!(line.len, len, "the line's length was computed wrong");
        if self.received_digits.is_none_or(|(last, _)| last != self.received_at_ms) {
            self.received_digits = Some((self.received_at_ms, Digits::copy_of(received)));
        }
        if self.latency_digits.is_none_or(|(last, _)| last != self.latency_us) {
            self.latency_digits = Some((self.latency_us, Digits::copy_of(latency)));
        }
    }
}

/// Text written into a slice of the right size with fixed-size moves (what `memcpy` does, without
/// a call for every few bytes).
///
/// Written by hand: this is the inner loop of the prediction log, and no crate builds text this
/// way. Writing past the end panics (an indexing error, not memory unsafety).
struct Line<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Line<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Line { buf, len: 0 }
    }

    /// Appends constant text.
    #[inline(always)]
    fn put<const M: usize>(&mut self, bytes: &[u8; M]) {
        self.buf[self.len..self.len + M].copy_from_slice(bytes);
        self.len += M;
    }

    /// Appends text with two overlapping fixed-size moves when it is short, as `memcpy` does,
    /// else with 32-byte moves, the last one overlapping.
    #[inline(always)]
    fn text(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        let to = &mut self.buf[self.len..self.len + n];
        if n > 64 {
            let mut at = 0;
            while at + 32 < n {
                to[at..at + 32].copy_from_slice(&bytes[at..at + 32]);
                at += 32;
            }
            to[n - 32..].copy_from_slice(&bytes[n - 32..]);
        } else if n >= 32 {
            to[..32].copy_from_slice(&bytes[..32]);
            to[n - 32..].copy_from_slice(&bytes[n - 32..]);
        } else if n >= 16 {
            to[..16].copy_from_slice(&bytes[..16]);
            to[n - 16..].copy_from_slice(&bytes[n - 16..]);
        } else if n >= 8 {
            to[..8].copy_from_slice(&bytes[..8]);
            to[n - 8..].copy_from_slice(&bytes[n - 8..]);
        } else if n >= 4 {
            to[..4].copy_from_slice(&bytes[..4]);
            to[n - 4..].copy_from_slice(&bytes[n - 4..]);
        } else if n > 0 {
            to[0] = bytes[0];
            to[n / 2] = bytes[n / 2];
            to[n - 1] = bytes[n - 1];
        }
        self.len += n;
    }
}

/// A float's JSON text as serde_json writes it, formatted in `buffer`: its shortest round-trip
/// digits by `zmij`, `null` when not finite.
fn float_text(buffer: &mut zmij::Buffer, value: f64) -> &[u8] {
    if value.is_finite() { buffer.format_finite(value).as_bytes() } else { b"null" }
}

/// Room for a trip distance's text (see [`distance_text`]).
#[derive(Default)]
struct DistanceBuffer {
    hundredths: [u8; 8],
    other: zmij::Buffer,
}

/// A trip distance's JSON text: [`float_text`], but without its shortest-digits search for a
/// distance of at most two decimals (as taxi meters record them) under 10,000.
///
/// Written by hand because `zmij` was a fifth of the log's formatting time, and such a value
/// needs no search: when `value` is the double nearest to `n / 100`, that decimal (trailing zeros
/// trimmed) is its shortest text, as any other decimal of as few digits lies 0.01 or more away,
/// far outside the value's rounding interval (~1e-12 below 10,000). A test checks every such
/// value against `zmij`, byte for byte.
fn distance_text(buffer: &mut DistanceBuffer, value: f64) -> &[u8] {
    // Not negative (-0.0 included: its text is "-0.0"), not NaN, below 10,000.
    if value.is_sign_positive() && value < 10_000.0 {
        // The nearest hundredth (truncating after adding a half: `f64::round` is a libm call
        // without SSE4.1), and whether `value` is its double (the division is correctly rounded).
        let hundredths = (value * 100.0 + 0.5) as u32;
        if f64::from(hundredths) / 100.0 == value {
            let text = &mut buffer.hundredths;
            let (mut whole, part) = (hundredths / 100, hundredths % 100);
            // "2.0", "2.5", "2.53": at least one decimal, trailing zeros trimmed.
            let mut at = text.len();
            if part % 10 != 0 {
                at -= 2;
                text[at] = b'0' + (part / 10) as u8;
                text[at + 1] = b'0' + (part % 10) as u8;
            } else {
                at -= 1;
                text[at] = b'0' + (part / 10) as u8;
            }
            at -= 1;
            text[at] = b'.';
            loop {
                at -= 1;
                text[at] = b'0' + (whole % 10) as u8;
                whole /= 10;
                if whole == 0 {
                    break;
                }
            }
            return &buffer.hundredths[at..];
        }
    }
    float_text(&mut buffer.other, value)
}

/// Whether `id` is printable ASCII without the quote or the backslash: valid UTF-8 that JSON
/// takes as it is.
fn plain_ascii(id: &[u8]) -> bool {
    const PLAIN: [bool; 256] = {
        let mut table = [false; 256];
        let mut byte = 0x20;
        while byte < 0x80 {
            table[byte] = byte != b'"' as usize && byte != b'\\' as usize;
            byte += 1;
        }
        table
    };
    // Without an early exit: ids are short and nearly always plain.
    id.iter().fold(true, |plain, byte| plain & PLAIN[*byte as usize])
}

/// Whether `text` holds a byte JSON requires escaped: a control character, the quote or the
/// backslash.
fn needs_escaping(text: &str) -> bool {
    const ESCAPED: [bool; 256] = {
        let mut table = [false; 256];
        let mut byte = 0;
        while byte < 0x20 {
            table[byte] = true;
            byte += 1;
        }
        table[b'"' as usize] = true;
        table[b'\\' as usize] = true;
        table
    };
    // Without an early exit: ids are short and nearly never need escaping.
    text.bytes().fold(false, |found, byte| found | ESCAPED[byte as usize])
}

/// Writes `text` as a JSON string: as it is, quoted, when it holds nothing to escape (ride ids and
/// model names nearly always), else escaped by serde_json.
fn str_json(out: &mut Vec<u8>, text: &str) {
    if !needs_escaping(text) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

impl PredictionRecord {
    /// The record as a borrowed view (serializes identically).
    pub fn as_view(&self) -> PredictionRecord<&str> {
        PredictionRecord {
            schema: self.schema,
            ride_id: &self.ride_id,
            event_time_ms: self.event_time_ms,
            received_at_ms: self.received_at_ms,
            features: self.features,
            prediction: self.prediction,
            model_name: &self.model_name,
            model_version: &self.model_version,
            latency_us: self.latency_us,
        }
    }

    /// Parses a record written by [`PredictionRecord::to_json`], rejecting other schema versions.
    ///
    /// Unknown fields are ignored, so that fields added to schema 1 later stay readable here.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        match serde_json::from_slice::<PredictionRecord>(bytes) {
            Ok(record) if record.schema == SCHEMA_VERSION => Ok(record),
            Ok(record) => Err(Error::UnsupportedSchema { found: record.schema }),
            Err(error) => match serde_json::from_slice::<SchemaProbe>(bytes) {
                Ok(probe) if probe.schema != SCHEMA_VERSION => Err(Error::UnsupportedSchema { found: probe.schema }),
                _ => Err(Error::InvalidRecord(error)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> PredictionRecord {
        PredictionRecord {
            schema: SCHEMA_VERSION,
            ride_id: "ride-1".into(),
            event_time_ms: Some(1_700_000_000_000),
            received_at_ms: 1_700_000_000_123,
            features: RideFeatures { pu_location_id: 43, do_location_id: 151, trip_distance: 1.99 },
            prediction: 12.5,
            model_name: "trip_duration".into(),
            model_version: "3".into(),
            latency_us: 87,
        }
    }

    #[test]
    fn round_trips_with_the_documented_field_names() {
        let json = record().to_json();
        let value: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(value["features"]["PULocationID"], 43);
        assert_eq!(value["features"]["DOLocationID"], 151);
        assert_eq!(value["schema"], 1);
        assert_eq!(PredictionRecord::from_json(&json).expect("parse"), record());
        assert_eq!(record().as_view().to_json(), json, "the borrowed view writes the same line");
    }

    #[test]
    fn the_hand_written_line_is_what_serde_writes() {
        let mut tricky = record();
        tricky.ride_id = "quote\" back\\ nl\n tab\t ctl\u{1} \u{1f} del\u{7f} é 🚕".into();
        tricky.model_name = "name with \"quotes\"".into();
        tricky.model_version = String::new();
        tricky.event_time_ms = None;
        tricky.prediction = f64::NAN;
        tricky.features.trip_distance = 1e-7;
        tricky.features.pu_location_id = -3;
        tricky.latency_us = u64::MAX;
        let mut odd = record();
        odd.prediction = f64::INFINITY;
        odd.features.trip_distance = 123456789.125;
        odd.received_at_ms = i64::MIN;
        let mut records = vec![record(), tricky, odd];
        // Where float formatters differ: exponents, the smallest subnormal, negative zero.
        for (distance, prediction) in [(1e16, 1e300), (-0.0, 5e-324), (1e15, 1.5e-5), (f64::MAX, f64::MIN_POSITIVE)] {
            let mut next = record();
            (next.features.trip_distance, next.prediction) = (distance, prediction);
            records.push(next);
        }
        for record in records {
            let derived = serde_json::to_vec(&record).expect("serde");
            assert_eq!(String::from_utf8(record.to_json()), String::from_utf8(derived));
        }
    }

    #[test]
    fn a_distance_is_written_as_zmij_writes_it() {
        let zmij_text = |value: f64| float_text(&mut zmij::Buffer::new(), value).to_vec();
        let mut buffer = DistanceBuffer::default();
        // Every hundredth the fast way takes, and the doubles either side of each.
        for hundredths in 0..1_000_000u32 {
            let value = f64::from(hundredths) / 100.0;
            for value in [value, value.next_up(), value.next_down()] {
                assert_eq!(distance_text(&mut buffer, value), zmij_text(value), "{value:?}");
            }
        }
        // Sums that miss the decimal, the edges of the range, and what the fast way leaves.
        let others = [0.1 + 0.2, 9_999.99, 10_000.0, 10_000.01, 123_456.78, -0.0, -2.5, 1e-7, 5e-324];
        for value in others.into_iter().chain([f64::NAN, f64::INFINITY, f64::NEG_INFINITY]) {
            assert_eq!(distance_text(&mut buffer, value), zmij_text(value), "{value:?}");
        }
        assert_eq!(distance_text(&mut buffer, 2.5), b"2.5");
        assert_eq!(distance_text(&mut buffer, 0.07), b"0.07");
        assert_eq!(distance_text(&mut buffer, 12.0), b"12.0");
    }

    #[test]
    fn the_line_writer_writes_what_each_record_writes_alone() {
        let plain = Arc::new(ModelId { name: "trip_duration".into(), version: "3".into() });
        let escaped = Arc::new(ModelId { name: "needs \"escaping\"".into(), version: "4".into() });
        let long = Arc::new(ModelId { name: "long".repeat(70), version: "5".into() });
        // The model's text fits the writer, its latency's does not.
        let nearly = Arc::new(ModelId { name: "n".repeat(215), version: "6".into() });
        let same_text = Arc::new(ModelId { name: "trip_duration".into(), version: "3".into() });
        let mut writer = LineWriter::default();
        let requests = [
            (&plain, 87),
            (&plain, 87),
            (&plain, 12),
            (&escaped, 12),
            (&long, 12),
            (&long, 9),
            (&same_text, 9),
            (&plain, 123_456),
            (&nearly, 7),
            (&nearly, u64::MAX),
        ];
        // Rides written the fast way and the general way: ids around the fast way's limit, ids to
        // escape, numbers at their longest, floats that are not finite.
        let ids: [String; 10] = [
            "".into(),
            "r".into(),
            "ab".into(),
            "abc".into(),
            "ride-1".into(),
            "x".repeat(63),
            "y".repeat(64),
            "z".repeat(65),
            "é🚕".into(),
            "a\"b".into(),
        ];
        for (index, (model, latency_us)) in requests.into_iter().enumerate() {
            // Requests two by two in the same millisecond, as at high rates.
            let received_at_ms = if index == 3 { i64::MIN } else { 1_700_000_000_000 + (index / 2) as i64 };
            let request = RequestFields { model, received_at_ms, latency_us, answered_at: Instant::now() };
            writer.begin(&request);
            for (ride, ride_id) in ids.iter().enumerate() {
                let ride_id = format!("{ride_id}{}", if index % 2 == 0 { String::new() } else { index.to_string() });
                let extreme = ride % 3 == 2;
                let fields = RideFields {
                    ride_id: &ride_id,
                    event_time_ms: match ride % 3 {
                        0 => Some(1_600_000_000_000),
                        1 => None,
                        _ => Some(i64::MIN),
                    },
                    features: RideFeatures {
                        pu_location_id: if extreme { i64::MIN } else { ride as i64 },
                        do_location_id: if extreme { i64::MAX } else { 151 },
                        trip_distance: if extreme { -f64::MAX } else { 1.5 * ride as f64 },
                    },
                    prediction: match ride % 4 {
                        3 => f64::NAN,
                        2 => -5e-324,
                        _ => 12.25 + ride as f64 / 3.0,
                    },
                };
                let mut line = b"earlier line\n".to_vec();
                writer.write(&fields, &mut line);
                let mut derived = b"earlier line\n".to_vec();
                derived.extend(serde_json::to_vec(&fields.record(&request)).expect("serde"));
                assert_eq!(String::from_utf8(line), String::from_utf8(derived), "request {index}, ride {ride}");
            }
        }
    }

    #[test]
    fn ride_ids_given_as_bytes_are_written_as_valid_json() {
        let model = Arc::new(ModelId { name: "m".into(), version: "1".into() });
        let request = RequestFields { model: &model, received_at_ms: 5, latency_us: 6, answered_at: Instant::now() };
        let ride = RideFields {
            ride_id: "not read",
            event_time_ms: None,
            features: RideFeatures { pu_location_id: 1, do_location_id: 2, trip_distance: 3.5 },
            prediction: 9.25,
        };
        let mut writer = LineWriter::default();
        writer.begin(&request);
        // Plain ASCII (the fast way), then bytes that are not UTF-8, then a control character.
        for (id, expected) in [(&b"ride-7"[..], "ride-7"), (b"ab\xffc", "ab\u{fffd}c"), (b"a\nb", "a\nb")] {
            let mut line = Vec::new();
            writer.write_id(id, &ride, &mut line);
            let record = PredictionRecord::from_json(&line).expect("a valid record");
            assert_eq!(record.ride_id, expected);
            assert_eq!(record.prediction, 9.25);
        }
    }

    #[test]
    fn rejects_other_schema_versions_clearly() {
        let mut newer = record();
        newer.schema = 2;
        let error = PredictionRecord::from_json(&newer.to_json()).expect_err("schema 2");
        assert!(matches!(error, Error::UnsupportedSchema { found: 2 }), "{error}");
        // A future schema may also change the fields: the version is still reported.
        let error = PredictionRecord::from_json(br#"{"schema":7,"ride":"x"}"#).expect_err("schema 7");
        assert!(error.to_string().contains("schema 7"), "{error}");
        let error = PredictionRecord::from_json(br#"{"schema":1,"ride_id":"x""#).expect_err("torn");
        assert!(matches!(error, Error::InvalidRecord(_)), "{error}");
    }

    #[test]
    fn ignores_unknown_fields_and_accepts_a_missing_event_time() {
        let mut value: serde_json::Value = serde_json::from_slice(&record().to_json()).expect("json");
        value["added_later"] = serde_json::json!("x");
        value.as_object_mut().expect("object").remove("event_time_ms");
        let parsed = PredictionRecord::from_json(value.to_string().as_bytes()).expect("parse");
        assert_eq!(parsed.event_time_ms, None);
    }
}
