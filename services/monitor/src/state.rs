//! What the monitor knows: per-window statistics of the predictions it has consumed (each
//! ride_id counted once), the actual durations joined to them, and the reports built from both.
//!
//! Windows are event-time windows (the ride's own time when the record has one, else when the
//! predictor received it), in UTC: an hour, a day or a month.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use lightops_api::common::v1::RegressionMetrics;
use lightops_api::monitor::v1 as pb;
use lightops_ml::profile::{Distribution, Profile, WindowStats};
use lightops_ml::{FeatureSpec, Ride};
use lightops_predlog::PredictionRecord;

use crate::error::{Error, Result};

/// How long a window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// `2022-03-01T13`.
    Hour,
    /// `2022-03-01`.
    Day,
    /// `2022-03` (the workshop compared months).
    #[default]
    Month,
}

impl std::str::FromStr for Granularity {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "hour" => Ok(Self::Hour),
            "day" => Ok(Self::Day),
            "month" => Ok(Self::Month),
            other => Err(Error::invalid("window", format!("{other:?}: expected hour, day or month"))),
        }
    }
}

impl Granularity {
    /// The window holding `time_ms`: its key, start and end (ms).
    pub fn window(self, time_ms: i64) -> (String, i64, i64) {
        let time = Utc.timestamp_millis_opt(time_ms).single().unwrap_or_default();
        let at = |y: i32, m: u32, d: u32, h: u32| {
            Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single().map_or(0, |t: DateTime<Utc>| t.timestamp_millis())
        };
        match self {
            Self::Hour => {
                let start = at(time.year(), time.month(), time.day(), time.hour());
                (time.format("%Y-%m-%dT%H").to_string(), start, start + 3_600_000)
            }
            Self::Day => {
                let start = at(time.year(), time.month(), time.day(), 0);
                (time.format("%Y-%m-%d").to_string(), start, start + 86_400_000)
            }
            Self::Month => {
                let start = at(time.year(), time.month(), 1, 0);
                let (y, m) = if time.month() == 12 { (time.year() + 1, 1) } else { (time.year(), time.month() + 1) };
                (time.format("%Y-%m").to_string(), start, at(y, m, 1, 0))
            }
        }
    }
}

/// One window's accumulators.
#[derive(Debug, Clone)]
pub struct Window {
    /// Window key.
    pub key: String,
    /// Start, ms (inclusive).
    pub start_ms: i64,
    /// End, ms (exclusive).
    pub end_ms: i64,
    /// Feature and prediction value counts.
    pub stats: WindowStats,
    /// Rows per model (`name/version`).
    pub models: BTreeMap<String, u64>,
    /// Actuals joined: count, Σ squared error, Σ absolute error.
    pub quality: (u64, f64, f64),
    /// Alert kinds already raised for this window (once each).
    pub alerted: HashSet<String>,
    /// When it last changed, ms.
    pub updated_ms: i64,
}

/// All windows, the ride ids seen, and actuals.
#[derive(Debug)]
pub struct MonitorState {
    granularity: Granularity,
    windows: BTreeMap<String, Window>,
    /// Every ride_id counted, with its window and prediction (for joining actuals).
    rides: HashMap<String, (String, f64)>,
    /// Actuals whose prediction has not arrived yet.
    pending_actuals: HashMap<String, f64>,
    /// Records counted (after de-duplication).
    pub records: u64,
    /// Records skipped as duplicates.
    pub duplicates: u64,
}

impl MonitorState {
    /// Empty state.
    pub fn new(granularity: Granularity) -> Self {
        Self {
            granularity,
            windows: BTreeMap::new(),
            rides: HashMap::new(),
            pending_actuals: HashMap::new(),
            records: 0,
            duplicates: 0,
        }
    }

    /// True when this record's ride_id was already counted (rides without an id are never
    /// duplicates).
    pub fn is_duplicate(&self, record: &PredictionRecord) -> bool {
        !record.ride_id.is_empty() && self.rides.contains_key(&record.ride_id)
    }

    /// Counts a record into its window; returns the window key, or None for a duplicate.
    pub fn apply(&mut self, record: &PredictionRecord) -> Result<Option<String>> {
        if self.is_duplicate(record) {
            self.duplicates += 1;
            return Ok(None);
        }
        let time = record.event_time_ms.unwrap_or(record.received_at_ms);
        let (key, start_ms, end_ms) = self.granularity.window(time);
        if !self.windows.contains_key(&key) {
            let stats = WindowStats::for_spec(&FeatureSpec::default(), lightops_ml::profile::DEFAULT_MAX_DISTINCT)
                .map_err(|e| Error::Internal(e.to_string()))?;
            let window = Window {
                key: key.clone(),
                start_ms,
                end_ms,
                stats,
                models: BTreeMap::new(),
                quality: (0, 0.0, 0.0),
                alerted: HashSet::new(),
                updated_ms: 0,
            };
            self.windows.insert(key.clone(), window);
        }
        let window = self.windows.get_mut(&key).ok_or_else(|| Error::Internal("window vanished".into()))?;
        let ride = Ride {
            pu_location_id: record.features.pu_location_id,
            do_location_id: record.features.do_location_id,
            trip_distance: record.features.trip_distance,
        };
        window.stats.push_ride(&ride, record.prediction).map_err(|e| Error::Internal(e.to_string()))?;
        *window.models.entry(format!("{}/{}", record.model_name, record.model_version)).or_insert(0) += 1;
        window.updated_ms = crate::now_ms();
        if !record.ride_id.is_empty() {
            if let Some(actual) = self.pending_actuals.remove(&record.ride_id) {
                add_quality(window, record.prediction, actual);
            }
            self.rides.insert(record.ride_id.clone(), (key.clone(), record.prediction));
        }
        self.records += 1;
        Ok(Some(key))
    }

    /// Joins an actual duration; returns true when its prediction is known (else it waits).
    pub fn actual(&mut self, ride_id: &str, duration: f64) -> bool {
        match self.rides.get(ride_id) {
            Some((key, prediction)) => {
                let prediction = *prediction;
                if let Some(window) = self.windows.get_mut(key) {
                    add_quality(window, prediction, duration);
                    window.updated_ms = crate::now_ms();
                }
                true
            }
            None => {
                self.pending_actuals.insert(ride_id.to_owned(), duration);
                false
            }
        }
    }

    /// The window a counted ride is in.
    pub fn window_of(&self, ride_id: &str) -> Option<&str> {
        self.rides.get(ride_id).map(|(key, _)| key.as_str())
    }

    /// Window keys, newest first.
    pub fn keys(&self) -> Vec<String> {
        self.windows.keys().rev().cloned().collect()
    }

    /// A window.
    pub fn window(&self, key: &str) -> Option<&Window> {
        self.windows.get(key)
    }

    /// A window, to mark alerts.
    pub fn window_mut(&mut self, key: &str) -> Option<&mut Window> {
        self.windows.get_mut(key)
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

fn add_quality(window: &mut Window, prediction: f64, actual: f64) {
    let error = prediction - actual;
    window.quality.0 += 1;
    window.quality.1 += error * error;
    window.quality.2 += error.abs();
}

/// The window's model that answered most rows (`name/version`).
pub fn main_model(window: &Window) -> Option<&str> {
    window.models.iter().max_by_key(|(_, n)| **n).map(|(m, _)| m.as_str())
}

/// Builds a window's report against `reference` (None: no drift section).
pub fn report(
    window: &Window,
    reference: Option<(&str, &Profile)>,
    options: &lightops_ml::drift::DriftOptions,
) -> Result<pb::WindowReport> {
    let current = window.stats.finish();
    let mut out = pb::WindowReport {
        window: window.key.clone(),
        start_ms: window.start_ms,
        end_ms: window.end_ms,
        rows: current.rows,
        drift_share: options.drift_share,
        models: window.models.keys().cloned().collect(),
        updated_ms: window.updated_ms,
        ..Default::default()
    };
    out.missing = current
        .columns
        .iter()
        .map(|c| pb::MissingShare {
            column: c.name.clone(),
            missing: c.missing,
            share: if current.rows > 0 { c.missing as f64 / current.rows as f64 } else { 0.0 },
        })
        .collect();
    if let Some(prediction) = current.column(lightops_ml::profile::PREDICTION) {
        out.prediction = Some(summary(prediction));
    }
    if window.quality.0 > 0 {
        let n = window.quality.0 as f64;
        out.quality = Some(RegressionMetrics {
            rows: window.quality.0,
            rmse: (window.quality.1 / n).sqrt(),
            mae: window.quality.2 / n,
            r2: f64::NAN,
        });
    }
    if let Some((name, reference)) = reference {
        let drift =
            lightops_ml::drift::compare(reference, &current, options).map_err(|e| Error::Internal(e.to_string()))?;
        out.reference = name.to_owned();
        out.dataset_drift = drift.dataset_drift;
        out.drifted_columns = drift.drifted_columns as u32;
        out.columns = drift
            .columns
            .iter()
            .map(|c| pb::ColumnDrift {
                column: c.column.clone(),
                method: c.method.name().to_owned(),
                score: c.score,
                threshold: c.threshold,
                drifted: c.drifted,
            })
            .collect();
    }
    Ok(out)
}

/// Count, mean, std, min, max and quantiles of a numerical column from its value counts.
fn summary(column: &lightops_ml::profile::ColumnProfile) -> pb::PredictionSummary {
    let Distribution::Numerical(counts) = &column.distribution else {
        return pb::PredictionSummary::default();
    };
    let total = counts.total();
    let quantile = |q: f64| {
        let target = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (value, count) in counts.values.iter().zip(&counts.counts) {
            seen += count;
            if seen >= target {
                return *value;
            }
        }
        f64::NAN
    };
    pb::PredictionSummary {
        count: column.count,
        mean: column.mean.unwrap_or(f64::NAN),
        std: column.std.unwrap_or(f64::NAN),
        min: counts.values.first().copied().unwrap_or(f64::NAN),
        max: counts.values.last().copied().unwrap_or(f64::NAN),
        p50: quantile(0.5),
        p90: quantile(0.9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_utc_hours_days_and_months() {
        let t = Utc.with_ymd_and_hms(2022, 12, 31, 23, 30, 0).single().expect("time").timestamp_millis();
        let (key, start, end) = Granularity::Month.window(t);
        assert_eq!(key, "2022-12");
        assert_eq!(end - start, 31 * 86_400_000);
        assert_eq!(Granularity::Day.window(t).0, "2022-12-31");
        assert_eq!(Granularity::Hour.window(t).0, "2022-12-31T23");
        assert!("week".parse::<Granularity>().is_err());
    }
}
