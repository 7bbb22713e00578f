//! Prometheus metrics of the predictor, served as text on `GET /metrics`.
//!
//! Request counters and histograms are updated on the request path (pre-resolved per API, so an
//! update is an atomic add or one short lock); the model and prediction-log figures are read
//! from their owners at scrape time by a collector.

use std::sync::Arc;

use lightops_predlog::PredictionLog;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::model::ModelSlot;

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
    requests: Counter,
    predictions: Counter,
    duration: Histogram,
}

/// All predictor metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    apis: Vec<(Api, ApiMetrics)>,
    errors: Family<ErrorLabel, Counter>,
    values: Histogram,
}

impl Metrics {
    /// Registers every metric; `slot` and `log` are read at scrape time.
    pub fn new(slot: Arc<ModelSlot>, log: Option<PredictionLog>) -> Self {
        let mut registry = Registry::with_prefix("lightops_predictor");
        let requests = Family::<ApiLabel, Counter>::default();
        let predictions = Family::<ApiLabel, Counter>::default();
        // Latency buckets from 25 µs to ~1.6 s.
        let duration = Family::<ApiLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(25e-6, 2.0, 17))
        });
        let errors = Family::<ErrorLabel, Counter>::default();
        // Predicted durations in minutes: 1–60 is the trained range.
        let values = Histogram::new([1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0]);
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
                };
                (api, metrics)
            })
            .collect();
        Self { registry, apis, errors, values }
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
        }
        for value in predictions {
            self.values.observe(*value);
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
            "lightops_predictor_model_loads",
            "Models put in service",
            None,
            swaps.metric_type(),
        )?)?;
        let refused = ConstCounter::new(self.slot.refused());
        refused.encode(encoder.encode_descriptor(
            "lightops_predictor_model_refused",
            "Candidate models refused (fetch failed, checksum mismatch, unservable)",
            None,
            refused.metric_type(),
        )?)?;
        if let Some(model) = self.slot.current() {
            let info = ConstGauge::new(1i64);
            let mut family = encoder.encode_descriptor(
                "lightops_predictor_model_info",
                "The model serving now (value 1)",
                None,
                info.metric_type(),
            )?;
            let labels =
                ModelLabels { name: model.name.clone(), version: model.version.clone(), sha256: model.sha256.clone() };
            info.encode(family.encode_family(&labels)?)?;
        }
        if let Some(log) = &self.log {
            let counters = log.counters();
            let records = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "lightops_predictor_log_records",
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
                "lightops_predictor_log_sink_errors",
                "Failed attempts to write to the log sink",
                None,
                errors.metric_type(),
            )?)?;
            let depth = ConstGauge::new(counters.queue_depth as i64);
            depth.encode(encoder.encode_descriptor(
                "lightops_predictor_log_queue_depth",
                "Records waiting in memory",
                None,
                depth.metric_type(),
            )?)?;
            let backlog = ConstGauge::new(counters.spill_backlog as i64);
            backlog.encode(encoder.encode_descriptor(
                "lightops_predictor_log_spill_backlog",
                "Records in the disk spill buffer not yet sent",
                None,
                backlog.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
