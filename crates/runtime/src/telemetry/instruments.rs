//! Instruments of the services that keep no metrics registry of their own: the monitor's window
//! figures and the trainer's job durations. Each call is a no-op unless telemetry is exported.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter, ObservableGauge};

/// The `lightops` meter of the global provider (a no-op one until [`super::init`] exports).
pub fn meter() -> Meter {
    opentelemetry::global::meter(super::METER_NAME)
}

/// Drift of one column in a monitor window.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDrift {
    /// The column (`PULocationID`, `trip_distance`…).
    pub column: String,
    /// The statistic (`wasserstein`, `psi`…).
    pub method: String,
    /// Its value.
    pub score: f64,
    /// Whether it crossed its threshold.
    pub drifted: bool,
}

/// What the monitor knows of a window, as reported by `monitor.*` gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowFigures {
    /// Start of the window; the gauges show the newest window recorded.
    pub start: SystemTime,
    /// Rides in the window.
    pub rows: u64,
    /// Whether enough columns drifted to call the dataset drifted.
    pub dataset_drift: bool,
    /// Per-column drift against the reference (empty without a reference profile).
    pub columns: Vec<ColumnDrift>,
    /// RMSE of the predictions that have an actual, minutes.
    pub rmse: Option<f64>,
    /// MAE of the predictions that have an actual, minutes.
    pub mae: Option<f64>,
}

static LATEST_WINDOW: Mutex<Option<WindowFigures>> = Mutex::new(None);
static WINDOW_GAUGES: OnceLock<Vec<ObservableGauge<f64>>> = OnceLock::new();

/// Publishes a window's figures: the `monitor.*` gauges report the newest window recorded (an
/// older window evaluated late does not replace it; the same window evaluated again does).
///
/// Gauges, all of the newest window: `monitor.window.start` (s since the epoch),
/// `monitor.window.rows`, `monitor.window.rmse` and `monitor.window.mae` (min, once actuals
/// arrived), `monitor.dataset.drift` (0/1), `monitor.dataset.drifted_columns`,
/// `monitor.drift.score` {column, method} and `monitor.column.drifted` {column} (0/1).
pub fn record_window(figures: WindowFigures) {
    if !super::exporting() {
        return;
    }
    WINDOW_GAUGES.get_or_init(window_gauges);
    let mut latest = LATEST_WINDOW.lock().unwrap_or_else(PoisonError::into_inner);
    if latest.as_ref().is_none_or(|current| current.start <= figures.start) {
        *latest = Some(figures);
    }
}

/// Reads the newest window, if any, for a gauge callback.
fn with_latest(observe: impl Fn(&WindowFigures)) {
    let latest = LATEST_WINDOW.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(figures) = latest.as_ref() {
        observe(figures);
    }
}

fn window_gauges() -> Vec<ObservableGauge<f64>> {
    let meter = meter();
    let gauge = |name: &'static str, unit: &'static str, description: &'static str| {
        let builder = meter.f64_observable_gauge(name).with_description(description);
        if unit.is_empty() { builder } else { builder.with_unit(unit) }
    };
    vec![
        gauge("monitor.window.start", "s", "Start of the newest window, seconds since the Unix epoch")
            .with_callback(|gauge| {
                with_latest(|w| {
                    let start = w.start.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                    gauge.observe(start.as_secs_f64(), &[]);
                })
            })
            .build(),
        gauge("monitor.window.rows", "{ride}", "Rides in the newest window")
            .with_callback(|gauge| with_latest(|w| gauge.observe(w.rows as f64, &[])))
            .build(),
        gauge("monitor.window.rmse", "min", "RMSE of the newest window's predictions that have an actual")
            .with_callback(|gauge| with_latest(|w| w.rmse.into_iter().for_each(|v| gauge.observe(v, &[]))))
            .build(),
        gauge("monitor.window.mae", "min", "MAE of the newest window's predictions that have an actual")
            .with_callback(|gauge| with_latest(|w| w.mae.into_iter().for_each(|v| gauge.observe(v, &[]))))
            .build(),
        gauge("monitor.dataset.drift", "", "1 when the newest window's dataset drifted from the reference")
            .with_callback(|gauge| with_latest(|w| gauge.observe(f64::from(u8::from(w.dataset_drift)), &[])))
            .build(),
        gauge("monitor.dataset.drifted_columns", "{column}", "Columns of the newest window that drifted")
            .with_callback(|gauge| {
                with_latest(|w| gauge.observe(w.columns.iter().filter(|c| c.drifted).count() as f64, &[]))
            })
            .build(),
        gauge("monitor.drift.score", "", "Drift statistic of each column of the newest window")
            .with_callback(|gauge| {
                with_latest(|w| {
                    for column in &w.columns {
                        let attributes = [
                            KeyValue::new("column", column.column.clone()),
                            KeyValue::new("method", column.method.clone()),
                        ];
                        gauge.observe(column.score, &attributes);
                    }
                })
            })
            .build(),
        gauge("monitor.column.drifted", "", "1 for each column of the newest window that drifted")
            .with_callback(|gauge| {
                with_latest(|w| {
                    for column in &w.columns {
                        let attributes = [KeyValue::new("column", column.column.clone())];
                        gauge.observe(f64::from(u8::from(column.drifted)), &attributes);
                    }
                })
            })
            .build(),
    ]
}

static JOB_DURATION: OnceLock<Histogram<f64>> = OnceLock::new();

/// Records a finished training job: `trainer.job.duration` (s) with `state` (`succeeded`,
/// `failed`, `cancelled`; counts by state are the histogram's counts).
pub fn record_training_job(state: &str, duration: Duration) {
    if !super::exporting() {
        return;
    }
    let histogram = JOB_DURATION.get_or_init(|| {
        meter()
            .f64_histogram("trainer.job.duration")
            .with_unit("s")
            .with_description("Duration of finished training jobs, from start to end")
            .with_boundaries(vec![1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0])
            .build()
    });
    histogram.record(duration.as_secs_f64(), &[KeyValue::new("state", state.to_ascii_lowercase())]);
}
