//! The record written for every answered prediction, schema version [`SCHEMA_VERSION`].
//!
//! The wire format (one JSON object per line or per Kinesis record) is documented in
//! `docs/prediction-log.md`; changing a field's name, type or meaning requires a new schema version.

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
        self.write_head(out);
        self.write_tail(out);
    }

    /// The line up to the prediction: what differs from ride to ride.
    fn write_head(&self, out: &mut Vec<u8>) {
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
        f64_json(out, self.features.trip_distance);
        out.extend_from_slice(b"},\"prediction\":");
        f64_json(out, self.prediction);
    }

    /// The rest of the line: the model and the latency, the same for all the rides of a request.
    fn write_tail(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"model_name\":");
        str_json(out, self.model_name.as_ref());
        out.extend_from_slice(b",\"model_version\":");
        str_json(out, self.model_version.as_ref());
        out.extend_from_slice(b",\"latency_us\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.latency_us).as_bytes());
        out.push(b'}');
    }
}

/// Writes a float as serde_json does: its shortest round-trip digits by `zmij`, `null` when not
/// finite.
fn f64_json(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Writes records' lines one after another like [`PredictionRecord::write_json`], reusing the
/// text of the fields a request's rides share (model name, version, latency) instead of writing
/// them again for each ride.
///
/// The shared text is kept in the writer itself, not on the heap: in a profile of the predictor a
/// small heap string compared per record missed the cache on every call (small blocks of the
/// allocator share cache lines with blocks other threads write), which cost more than writing the
/// text again.
#[derive(Debug)]
pub struct LineWriter {
    /// `,"model_name":"…","model_version":"…","latency_us":N}` of the last record, when its name
    /// and version needed no escaping (so they appear in it as they are) and it fits.
    tail: [u8; TAIL_CAPACITY],
    /// Bytes of `tail` in use; 0 when nothing is kept.
    len: usize,
    name_len: usize,
    version_len: usize,
    latency_us: u64,
}

/// The longest shared text kept: model names and versions are short.
const TAIL_CAPACITY: usize = 192;
const NAME_AT: usize = ",\"model_name\":\"".len();
const VERSION_GAP: usize = "\",\"model_version\":\"".len();

impl Default for LineWriter {
    fn default() -> Self {
        LineWriter { tail: [0; TAIL_CAPACITY], len: 0, name_len: 0, version_len: 0, latency_us: 0 }
    }
}

impl LineWriter {
    /// Appends `record`'s JSON line (without the newline) to `out`.
    pub fn write<S: AsRef<str>>(&mut self, record: &PredictionRecord<S>, out: &mut Vec<u8>) {
        record.write_head(out);
        let (name, version) = (record.model_name.as_ref().as_bytes(), record.model_version.as_ref().as_bytes());
        let version_at = NAME_AT + self.name_len + VERSION_GAP;
        if self.len > 0
            && self.latency_us == record.latency_us
            && self.name_len == name.len()
            && self.version_len == version.len()
            && &self.tail[NAME_AT..NAME_AT + name.len()] == name
            && &self.tail[version_at..version_at + version.len()] == version
        {
            out.extend_from_slice(&self.tail[..self.len]);
            return;
        }
        let start = out.len();
        record.write_tail(out);
        let written = &out[start..];
        let version_at = NAME_AT + name.len() + VERSION_GAP;
        // Kept only if the name and version were written as they are (no escapes).
        let plain = written.len() <= TAIL_CAPACITY
            && written.get(NAME_AT..NAME_AT + name.len()) == Some(name)
            && written.get(NAME_AT + name.len()) == Some(&b'"')
            && written.get(version_at..version_at + version.len()) == Some(version)
            && written.get(version_at + version.len()) == Some(&b'"');
        if plain {
            self.tail[..written.len()].copy_from_slice(written);
            (self.len, self.name_len, self.version_len) = (written.len(), name.len(), version.len());
            self.latency_us = record.latency_us;
        } else {
            self.len = 0;
        }
    }
}

/// Writes `text` as a JSON string: as it is, quoted, when it holds nothing to escape (ride ids and
/// model names nearly always), else escaped by serde_json.
fn str_json(out: &mut Vec<u8>, text: &str) {
    /// The bytes JSON requires escaped: control characters, the quote and the backslash.
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
    if !text.bytes().any(|byte| ESCAPED[byte as usize]) {
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
        for record in [record(), tricky, odd] {
            let derived = serde_json::to_vec(&record).expect("serde");
            assert_eq!(String::from_utf8(record.to_json()), String::from_utf8(derived));
        }
    }

    #[test]
    fn the_line_writer_writes_what_each_record_writes_alone() {
        let mut records = Vec::new();
        for (latency_us, model_version) in [(87, "3"), (87, "3"), (12, "3"), (12, "4"), (12, "4"), (87, "3")] {
            let mut next = record();
            next.latency_us = latency_us;
            next.model_version = model_version.into();
            next.ride_id = format!("ride-{}", records.len());
            records.push(next);
        }
        records[5].model_name = "other".into();
        for model_name in ["needs \"escaping\"", "needs \"escaping\"", &"long".repeat(60), &"long".repeat(60), "short"]
        {
            let mut next = record();
            next.model_name = model_name.into();
            records.push(next);
        }
        records.push(record());
        let mut writer = LineWriter::default();
        for record in &records {
            let mut line = Vec::new();
            writer.write(record, &mut line);
            assert_eq!(String::from_utf8(line), String::from_utf8(record.to_json()));
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
