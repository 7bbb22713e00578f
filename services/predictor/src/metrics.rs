//! Prometheus metrics of the predictor, served as text on `GET /metrics`, and the same figures
//! through the OpenTelemetry metrics API when telemetry is exported (OTLP).
//!
//! Request counters and histograms are updated on the request path (pre-resolved per API, and
//! sharded per thread by [`crate::sharded`], so an update takes no lock and, on the runtime's
//! worker threads, touches no cache line that another core writes); the model and prediction-log figures are read
//! from their owners at scrape time by a collector (Prometheus) or by observable instruments
//! (OpenTelemetry).
//!
//! The OpenTelemetry instruments (meter `lightops`) are named so that a collector's Prometheus
//! exporter with namespace `lightops` produces the names of `/metrics`: `predictor.requests`
//! {api} → `lightops_predictor_requests_total`, `predictor.request.duration` (s),
//! `predictor.request.errors` {api, reason}, `predictor.predictions` {api},
//! `predictor.prediction` (min), `predictor.model.loads`, `predictor.model.refused`,
//! `predictor.model.info` {name, version, sha256}, `predictor.log.records` {state},
//! `predictor.log.sink_errors`, `predictor.log.queue_depth`, `predictor.log.spill_backlog`.

use std::sync::{Arc, Weak};

use lightops_predlog::PredictionLog;
use lightops_runtime::telemetry;
use lightops_runtime::telemetry::opentelemetry::KeyValue;
use lightops_runtime::telemetry::opentelemetry::metrics::{Counter as OtelCounter, Histogram as OtelHistogram};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::model::ModelSlot;
use crate::sharded::{ShardedCounter, ShardedHistogram};

/// Which API answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `Predictor/Predict`.
    Predict,
    /// `Predictor/PredictBatch`.
    PredictBatch,
    /// `Predictor/PredictStream` (per message).
    PredictStream,
    /// Open Inference Protocol `ModelInfer`.
    ModelInfer,
    /// HTTP `POST /predict`.
    Http,
}

impl Api {
    const ALL: [Api; 5] = [Api::Predict, Api::PredictBatch, Api::PredictStream, Api::ModelInfer, Api::Http];

    fn label(self) -> &'static str {
        match self {
            Self::Predict => "Predict",
            Self::PredictBatch => "PredictBatch",
            Self::PredictStream => "PredictStream",
            Self::ModelInfer => "ModelInfer",
            Self::Http => "http_predict",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApiLabel {
    api: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabel {
    api: &'static str,
    reason: &'static str,
}

/// Metrics of one API, resolved once.
#[derive(Debug, Clone)]
struct ApiMetrics {
    requests: ShardedCounter,
    predictions: ShardedCounter,
    duration: ShardedHistogram,
    /// The `api` attribute of the OpenTelemetry instruments.
    attributes: [KeyValue; 1],
}

/// Request-path OpenTelemetry instruments; the scrape-time figures are observable instruments
/// registered with them.
#[derive(Debug)]
struct OtelMetrics {
    requests: OtelCounter<u64>,
    predictions: OtelCounter<u64>,
    duration: OtelHistogram<f64>,
    errors: OtelCounter<u64>,
    values: OtelHistogram<f64>,
}

/// All predictor metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    apis: Vec<(Api, ApiMetrics)>,
    errors: Family<ErrorLabel, Counter>,
    values: ShardedHistogram,
    /// `None` unless telemetry is exported.
    otel: Option<OtelMetrics>,
}

/// Latency buckets from 25 µs to ~1.6 s, seconds.
fn duration_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(25e-6, 2.0, 17)
}

/// Predicted durations in minutes: 1–60 is the trained range.
const VALUE_BUCKETS: [f64; 11] = [1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0];

impl Metrics {
    /// Registers every metric; `slot` and `log` are read at scrape time.
    pub fn new(slot: Arc<ModelSlot>, log: Option<PredictionLog>) -> Self {
        let mut registry = Registry::with_prefix("lightops_predictor");
        let requests = Family::<ApiLabel, ShardedCounter>::default();
        let predictions = Family::<ApiLabel, ShardedCounter>::default();
        let duration =
            Family::<ApiLabel, ShardedHistogram>::new_with_constructor(|| ShardedHistogram::new(duration_buckets()));
        let errors = Family::<ErrorLabel, Counter>::default();
        let values = ShardedHistogram::new(VALUE_BUCKETS);
        let otel = telemetry::exporting().then(|| OtelMetrics::new(&slot, log.as_ref()));
        registry.register("requests", "Prediction requests answered, by API", requests.clone());
        registry.register("predictions", "Rides predicted, by API", predictions.clone());
        registry.register("request_duration_seconds", "Time to answer a prediction request", duration.clone());
        registry.register("request_errors", "Prediction requests refused, by API and reason", errors.clone());
        registry.register("prediction_minutes", "Predicted ride durations", values.clone());
        registry.register_collector(Box::new(ScrapeTime { slot, log }));
        let apis = Api::ALL
            .iter()
            .map(|&api| {
                let label = ApiLabel { api: api.label() };
                let metrics = ApiMetrics {
                    requests: requests.get_or_create(&label).clone(),
                    predictions: predictions.get_or_create(&label).clone(),
                    duration: duration.get_or_create(&label).clone(),
                    attributes: [KeyValue::new("api", api.label())],
                };
                (api, metrics)
            })
            .collect();
        Self { registry, apis, errors, values, otel }
    }

    fn api(&self, api: Api) -> Option<&ApiMetrics> {
        self.apis.iter().find(|(a, _)| *a == api).map(|(_, m)| m)
    }

    /// Records an answered request of `rides` predictions.
    pub fn answered(&self, api: Api, predictions: &[f64], seconds: f64) {
        if let Some(metrics) = self.api(api) {
            metrics.requests.inc();
            metrics.predictions.inc_by(predictions.len() as u64);
            metrics.duration.observe(seconds);
            if let Some(otel) = &self.otel {
                otel.requests.add(1, &metrics.attributes);
                otel.predictions.add(predictions.len() as u64, &metrics.attributes);
                otel.duration.record(seconds, &metrics.attributes);
            }
        }
        self.values.observe_all(predictions);
        if let Some(otel) = &self.otel {
            for value in predictions {
                otel.values.record(*value, &[]);
            }
        }
    }

    /// Records a refused request.
    pub fn refused(&self, api: Api, error: &crate::Error) {
        let reason = match error {
            crate::Error::Invalid { .. } => "invalid",
            crate::Error::TooLarge { .. } => "too_large",
            crate::Error::NotReady(_) => "not_ready",
            crate::Error::NotFound(_) => "not_found",
            crate::Error::Model { .. } | crate::Error::Registry(_) => "internal",
        };
        self.errors.get_or_create(&ErrorLabel { api: api.label(), reason }).inc();
        if let Some(otel) = &self.otel {
            otel.errors.add(1, &[KeyValue::new("api", api.label()), KeyValue::new("reason", reason)]);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "encoding metrics");
        }
        out
    }
}

impl OtelMetrics {
    /// Creates the instruments on the global meter provider; the observable ones read `slot`
    /// (while the predictor lives) and `log` at each export.
    fn new(slot: &Arc<ModelSlot>, log: Option<&PredictionLog>) -> Self {
        let meter = telemetry::meter();
        let weak_slot = || -> Weak<ModelSlot> { Arc::downgrade(slot) };
        let loads = weak_slot();
        meter
            .u64_observable_counter("predictor.model.loads")
            .with_description("Models put in service")
            .with_callback(move |counter| {
                if let Some(slot) = loads.upgrade() {
                    counter.observe(slot.swaps(), &[]);
                }
            })
            .build();
        let refused = weak_slot();
        meter
            .u64_observable_counter("predictor.model.refused")
            .with_description("Candidate models refused (fetch failed, checksum mismatch, unservable)")
            .with_callback(move |counter| {
                if let Some(slot) = refused.upgrade() {
                    counter.observe(slot.refused(), &[]);
                }
            })
            .build();
        let serving = weak_slot();
        meter
            .u64_observable_gauge("predictor.model.info")
            .with_description("The model serving now (value 1)")
            .with_callback(move |gauge| {
                if let Some(model) = serving.upgrade().and_then(|slot| slot.current()) {
                    let attributes = [
                        KeyValue::new("name", model.id.name.clone()),
                        KeyValue::new("version", model.id.version.clone()),
                        KeyValue::new("sha256", model.sha256.clone()),
                    ];
                    gauge.observe(1, &attributes);
                }
            })
            .build();
        if let Some(log) = log {
            let records = log.clone();
            meter
                .u64_observable_counter("predictor.log.records")
                .with_unit("{record}")
                .with_description("Prediction-log records by state (dropped stays 0)")
                .with_callback(move |counter| {
                    let counters = records.counters();
                    for (state, value) in [
                        ("queued", counters.queued),
                        ("sent", counters.sent),
                        ("spilled", counters.spilled),
                        ("dropped", counters.dropped),
                    ] {
                        counter.observe(value, &[KeyValue::new("state", state)]);
                    }
                })
                .build();
            let errors = log.clone();
            meter
                .u64_observable_counter("predictor.log.sink_errors")
                .with_description("Failed attempts to write to the log sink")
                .with_callback(move |counter| counter.observe(errors.counters().sink_errors, &[]))
                .build();
            let depth = log.clone();
            meter
                .u64_observable_gauge("predictor.log.queue_depth")
                .with_unit("{record}")
                .with_description("Records waiting in memory")
                .with_callback(move |gauge| gauge.observe(depth.counters().queue_depth, &[]))
                .build();
            let backlog = log.clone();
            meter
                .u64_observable_gauge("predictor.log.spill_backlog")
                .with_unit("{record}")
                .with_description("Records in the disk spill buffer not yet sent")
                .with_callback(move |gauge| gauge.observe(backlog.counters().spill_backlog, &[]))
                .build();
        }
        Self {
            requests: meter
                .u64_counter("predictor.requests")
                .with_unit("{request}")
                .with_description("Prediction requests answered, by API")
                .build(),
            predictions: meter
                .u64_counter("predictor.predictions")
                .with_unit("{prediction}")
                .with_description("Rides predicted, by API")
                .build(),
            duration: meter
                .f64_histogram("predictor.request.duration")
                .with_unit("s")
                .with_description("Time to answer a prediction request")
                .with_boundaries(duration_buckets().collect())
                .build(),
            errors: meter
                .u64_counter("predictor.request.errors")
                .with_unit("{request}")
                .with_description("Prediction requests refused, by API and reason")
                .build(),
            values: meter
                .f64_histogram("predictor.prediction")
                .with_unit("min")
                .with_description("Predicted ride durations")
                .with_boundaries(VALUE_BUCKETS.to_vec())
                .build(),
        }
    }
}

/// Figures owned elsewhere, read on each scrape.
#[derive(Debug)]
struct ScrapeTime {
    slot: Arc<ModelSlot>,
    log: Option<PredictionLog>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelLabels {
    name: String,
    version: String,
    sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let swaps = ConstCounter::new(self.slot.swaps());
        swaps.encode(encoder.encode_descriptor(
            "model_loads",
            "Models put in service",
            None,
            swaps.metric_type(),
        )?)?;
        let refused = ConstCounter::new(self.slot.refused());
        refused.encode(encoder.encode_descriptor(
            "model_refused",
            "Candidate models refused (fetch failed, checksum mismatch, unservable)",
            None,
            refused.metric_type(),
        )?)?;
        if let Some(model) = self.slot.current() {
            let info = ConstGauge::new(1i64);
            let mut family =
                encoder.encode_descriptor("model_info", "The model serving now (value 1)", None, info.metric_type())?;
            let labels = ModelLabels {
                name: model.id.name.clone(),
                version: model.id.version.clone(),
                sha256: model.sha256.clone(),
            };
            info.encode(family.encode_family(&labels)?)?;
        }
        if let Some(log) = &self.log {
            let counters = log.counters();
            let records = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "log_records",
                "Prediction-log records by state (dropped stays 0)",
                None,
                records.metric_type(),
            )?;
            for (state, value) in [
                ("queued", counters.queued),
                ("sent", counters.sent),
                ("spilled", counters.spilled),
                ("dropped", counters.dropped),
            ] {
                ConstCounter::new(value).encode(family.encode_family(&StateLabel { state })?)?;
            }
            let errors = ConstCounter::new(counters.sink_errors);
            errors.encode(encoder.encode_descriptor(
                "log_sink_errors",
                "Failed attempts to write to the log sink",
                None,
                errors.metric_type(),
            )?)?;
            let depth = ConstGauge::new(counters.queue_depth as i64);
            depth.encode(encoder.encode_descriptor(
                "log_queue_depth",
                "Records waiting in memory",
                None,
                depth.metric_type(),
            )?)?;
            let backlog = ConstGauge::new(counters.spill_backlog as i64);
            backlog.encode(encoder.encode_descriptor(
                "log_spill_backlog",
                "Records in the disk spill buffer not yet sent",
                None,
                backlog.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
