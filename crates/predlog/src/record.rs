//! The record written for every answered prediction, schema version [`SCHEMA_VERSION`].
//!
//! The wire format (one JSON object per line or per Kinesis record) is documented in
//! `docs/prediction-log.md`; changing a field's name, type or meaning requires a new schema version.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The schema version written in [`PredictionRecord::schema`] by this crate.
pub const SCHEMA_VERSION: u32 = 1;

/// One answered prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    /// The record's schema version, [`SCHEMA_VERSION`].
    pub schema: u32,
    /// The ride the prediction is for; empty when the client gave none.
    pub ride_id: String,
    /// The ride's own time (ms since the Unix epoch) when the client gave one.
    pub event_time_ms: Option<i64>,
    /// When the predictor received the request (ms since the Unix epoch).
    pub received_at_ms: i64,
    /// The features the model was given.
    pub features: RideFeatures,
    /// The predicted trip duration, in minutes.
    pub prediction: f64,
    /// The registered model's name (or the artifact's name when unregistered).
    pub model_name: String,
    /// The registered model version, e.g. `"3"`; empty for an unregistered artifact.
    pub model_version: String,
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

impl PredictionRecord {
    /// Encodes the record as one line of JSON (without the trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs of strings and numbers into a Vec cannot fail; non-finite floats
        // become `null` (serde_json's behaviour), which `from_json` then rejects for `prediction`.
        serde_json::to_vec(self).unwrap_or_default()
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
