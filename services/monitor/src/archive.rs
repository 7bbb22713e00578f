//! The prediction archive: every counted record, as parquet, under
//! `predictions/date=YYYY-MM-DD/part-<source>-<first>-<last>.parquet` (the date of the record's
//! event time, UTC) on local disk or S3.
//!
//! Object names come from the stable ids of the batch's first and last record in the stream, so
//! writing the same batch again (after a restart) replaces the object instead of adding a second
//! copy. The archive is also what a restarted monitor rebuilds its windows from.

use std::collections::BTreeMap;
use std::io::Cursor;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use lightops_objstore::artifacts::ArtifactStore;
use lightops_predlog::{PredictionRecord, RideFeatures, SCHEMA_VERSION};
use polars::prelude::*;

use crate::error::{Error, Result};

/// Where archived predictions live under the archive root.
pub const PREFIX: &str = "predictions/";

/// Where unreadable records go under the archive root.
pub const DEAD_LETTER_PREFIX: &str = "dead-letter/";

/// Object-name-safe form of a stream id (`shardId-000:4955…` → `shardId-000-4955…`).
fn safe(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect()
}

/// The date partition of a record.
pub fn date_of(record: &PredictionRecord) -> String {
    let time = record.event_time_ms.unwrap_or(record.received_at_ms);
    Utc.timestamp_millis_opt(time).single().unwrap_or_default().format("%Y-%m-%d").to_string()
}

/// Writes records (already de-duplicated) grouped by date; returns how many were written.
pub async fn write(store: &ArtifactStore, records: &[PredictionRecord], first: &str, last: &str) -> Result<usize> {
    let mut by_date: BTreeMap<String, Vec<&PredictionRecord>> = BTreeMap::new();
    for record in records {
        by_date.entry(date_of(record)).or_default().push(record);
    }
    for (date, group) in &by_date {
        let key = format!("{PREFIX}date={date}/part-{}-{}.parquet", safe(first), safe(last));
        let bytes = to_parquet(group)?;
        store.put(&key, Bytes::from(bytes)).await.map_err(|e| Error::Archive(format!("{key}: {e}")))?;
    }
    Ok(records.len())
}

/// Stores an unreadable record as it was, under `dead-letter/<id>.json` with its reason beside it.
pub async fn dead_letter(store: &ArtifactStore, letter: &lightops_predlog::DeadLetter) -> Result<()> {
    let key = format!("{DEAD_LETTER_PREFIX}{}.json", safe(&letter.id));
    let body = serde_json::json!({
        "id": letter.id,
        "reason": letter.reason,
        "data": String::from_utf8_lossy(&letter.data),
    });
    store.put(&key, Bytes::from(body.to_string().into_bytes())).await.map_err(|e| Error::Archive(format!("{key}: {e}")))
}

fn to_parquet(records: &[&PredictionRecord]) -> Result<Vec<u8>> {
    let mut frame = DataFrame::new(
        records.len(),
        vec![
            Column::new("ride_id".into(), records.iter().map(|r| r.ride_id.as_str()).collect::<Vec<_>>()),
            Column::new("event_time_ms".into(), records.iter().map(|r| r.event_time_ms).collect::<Vec<_>>()),
            Column::new("received_at_ms".into(), records.iter().map(|r| r.received_at_ms).collect::<Vec<_>>()),
            Column::new("PULocationID".into(), records.iter().map(|r| r.features.pu_location_id).collect::<Vec<_>>()),
            Column::new("DOLocationID".into(), records.iter().map(|r| r.features.do_location_id).collect::<Vec<_>>()),
            Column::new("trip_distance".into(), records.iter().map(|r| r.features.trip_distance).collect::<Vec<_>>()),
            Column::new("prediction".into(), records.iter().map(|r| r.prediction).collect::<Vec<_>>()),
            Column::new("model_name".into(), records.iter().map(|r| r.model_name.as_str()).collect::<Vec<_>>()),
            Column::new("model_version".into(), records.iter().map(|r| r.model_version.as_str()).collect::<Vec<_>>()),
            Column::new("latency_us".into(), records.iter().map(|r| r.latency_us).collect::<Vec<_>>()),
        ],
    )
    .map_err(|e| Error::Archive(e.to_string()))?;
    let mut out = Vec::new();
    ParquetWriter::new(&mut out).finish(&mut frame).map_err(|e| Error::Archive(e.to_string()))?;
    Ok(out)
}

/// Reads one archive object back into records.
pub fn from_parquet(bytes: &[u8]) -> Result<Vec<PredictionRecord>> {
    let bad = |e: PolarsError| Error::Archive(e.to_string());
    let frame = ParquetReader::new(Cursor::new(bytes)).finish().map_err(bad)?;
    let text = |name: &str| -> Result<Vec<String>> {
        Ok(frame.column(name).map_err(bad)?.str().map_err(bad)?.iter().map(|v| v.unwrap_or("").to_owned()).collect())
    };
    let int = |name: &str| -> Result<Vec<Option<i64>>> {
        let column = frame.column(name).map_err(bad)?.cast(&DataType::Int64).map_err(bad)?;
        Ok(column.i64().map_err(bad)?.iter().collect())
    };
    let float = |name: &str| -> Result<Vec<f64>> {
        Ok(frame.column(name).map_err(bad)?.f64().map_err(bad)?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    };
    let (ids, names, versions) = (text("ride_id")?, text("model_name")?, text("model_version")?);
    let (events, received, pu, do_, latency) =
        (int("event_time_ms")?, int("received_at_ms")?, int("PULocationID")?, int("DOLocationID")?, int("latency_us")?);
    let (distance, prediction) = (float("trip_distance")?, float("prediction")?);
    Ok((0..frame.height())
        .map(|i| PredictionRecord {
            schema: SCHEMA_VERSION,
            ride_id: ids[i].clone(),
            event_time_ms: events[i],
            received_at_ms: received[i].unwrap_or(0),
            features: RideFeatures {
                pu_location_id: pu[i].unwrap_or(0),
                do_location_id: do_[i].unwrap_or(0),
                trip_distance: distance[i],
            },
            prediction: prediction[i],
            model_name: names[i].clone(),
            model_version: versions[i].clone(),
            latency_us: latency[i].unwrap_or(0).max(0) as u64,
        })
        .collect())
}

/// Every archived record, oldest object first (object names sort by date, then stream id).
pub async fn read_all(store: &ArtifactStore) -> Result<Vec<PredictionRecord>> {
    let mut objects = store.list(PREFIX).await.map_err(|e| Error::Archive(e.to_string()))?;
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let mut records = Vec::new();
    for object in objects.iter().filter(|o| o.key.ends_with(".parquet")) {
        let bytes = store.get(&object.key).await.map_err(|e| Error::Archive(format!("{}: {e}", object.key)))?;
        records.extend(from_parquet(&bytes).map_err(|e| Error::Archive(format!("{}: {e}", object.key)))?);
    }
    Ok(records)
}
