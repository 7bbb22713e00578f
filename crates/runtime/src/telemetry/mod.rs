//! Logs, traces and metrics of a lightops process.
//!
//! [`init`] installs the `tracing` subscriber every lightops command uses: human-readable logs on
//! stderr filtered by `LIGHTOPS_LOG` (default `warn`), and, only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, OpenTelemetry export over OTLP/gRPC: `tracing` spans become OTel spans (batch
//! exporter) and the OTel metrics API (meter [`METER_NAME`]) is read by a periodic reader. The
//! returned [`Guard`] flushes and stops the exporters when dropped.
//!
//! Without an endpoint nothing is exported and nothing extra runs: the OTel API stays the no-op
//! global, the gRPC layers of [`grpc`] record no metric and their spans are ordinary `tracing`
//! spans, enabled only when `LIGHTOPS_LOG` asks for them.
//!
//! - [`grpc`]: server and client layers that carry W3C trace context across gRPC calls, with
//!   spans and `rpc.*.duration` metrics after the OpenTelemetry RPC semantic conventions;
//! - [`record_window`], [`record_training_job`]: the monitor's and the trainer's figures.

pub mod grpc;
mod instruments;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use instruments::{ColumnDrift, WindowFigures, meter, record_training_job, record_window};
/// The OpenTelemetry API, for services that add instruments of their own (through [`meter`]).
pub use opentelemetry;

/// The meter every lightops instrument belongs to.
pub const METER_NAME: &str = "lightops";

/// Log filter when `LIGHTOPS_LOG` is unset or invalid.
pub const DEFAULT_LOG_FILTER: &str = "warn";

/// Which `tracing` spans become OpenTelemetry spans when `LIGHTOPS_TRACE` is unset.
pub const DEFAULT_TRACE_FILTER: &str = "info";

/// How long dropping the [`Guard`] waits for each provider to flush.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// True once [`init_with`] has installed exporters: instruments are worth recording.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports telemetry (an OTLP endpoint was configured and the exporters
/// started).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Acquire)
}

/// What [`init_with`] sets up. [`TelemetryConfig::from_env`] reads it from the environment.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name` of the resource (`OTEL_SERVICE_NAME`, else `lightops-<service>`).
    pub service_name: String,
    /// `service.version` of the resource (the crate version; `OTEL_RESOURCE_ATTRIBUTES` may
    /// override it).
    pub service_version: String,
    /// `tracing` directives for the stderr log (`LIGHTOPS_LOG`, default `warn`).
    pub log_filter: String,
    /// `tracing` directives selecting the spans and events exported as OTel spans
    /// (`LIGHTOPS_TRACE`, default `info`).
    pub trace_filter: String,
    /// The OTLP/gRPC collector (`OTEL_EXPORTER_OTLP_ENDPOINT`); `None`: export nothing.
    pub otlp_endpoint: Option<http::Uri>,
    /// Trace sampling (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
    pub sampling: Sampling,
    /// How often metrics are exported; `None`: `OTEL_METRIC_EXPORT_INTERVAL` or 60 s.
    pub metric_interval: Option<Duration>,
    /// Problems found while reading the configuration, logged once logging works.
    pub warnings: Vec<String>,
}

impl TelemetryConfig {
    /// The configuration of `lightops-<service>` (`service`: `registry`, `predictor`, `cli`…)
    /// from the environment: `LIGHTOPS_LOG`, `LIGHTOPS_TRACE`, `OTEL_SDK_DISABLED`,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`,
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub fn from_env(service: &str) -> Self {
        let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut warnings = Vec::new();
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let otlp_endpoint = match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(_) if disabled => None,
            Some(text) => match parse_endpoint(&text) {
                Ok(uri) => Some(uri),
                Err(message) => {
                    warnings.push(format!("OTEL_EXPORTER_OTLP_ENDPOINT {text:?}: {message}; exporting nothing"));
                    None
                }
            },
            None => None,
        };
        if let Some(protocol) = var("OTEL_EXPORTER_OTLP_PROTOCOL")
            && otlp_endpoint.is_some()
            && protocol != "grpc"
        {
            warnings.push(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL {protocol:?} is not supported; exporting with grpc (point the endpoint at the collector's gRPC port, 4317)"
            ));
        }
        let sampling = match var("OTEL_TRACES_SAMPLER") {
            None => Sampling::default(),
            Some(name) => match Sampling::parse(&name, var("OTEL_TRACES_SAMPLER_ARG").as_deref()) {
                Ok(sampling) => sampling,
                Err(message) => {
                    warnings.push(format!("{message}; sampling with parentbased_always_on"));
                    Sampling::default()
                }
            },
        };
        Self {
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| format!("lightops-{service}")),
            service_version: env!("CARGO_PKG_VERSION").to_owned(),
            log_filter: var("LIGHTOPS_LOG").unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned()),
            trace_filter: var("LIGHTOPS_TRACE").unwrap_or_else(|| DEFAULT_TRACE_FILTER.to_owned()),
            otlp_endpoint,
            sampling,
            metric_interval: None,
            warnings,
        }
    }
}

/// This machine's name, if it can be read.
fn host_name() -> Option<String> {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_kernel = || std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_env.or_else(from_kernel).map(|name| name.trim().to_owned()).filter(|name| !name.is_empty())
}

/// An OTLP/gRPC endpoint: `http://host:port` (TLS is not built in).
fn parse_endpoint(text: &str) -> Result<http::Uri, String> {
    let uri = http::Uri::from_str(text).map_err(|e| e.to_string())?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(uri),
        Some("https") => Err("https is not supported (no TLS in this build); use a plain http:// endpoint".into()),
        _ => Err("expected http://host:port".into()),
    }
}

/// Trace sampling, as `OTEL_TRACES_SAMPLER` names it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Sampling {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio` with this ratio.
    Ratio(f64),
    /// `parentbased_always_on` (the default): follow the caller's decision, sample new traces.
    #[default]
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`: follow the caller's decision, sample this share of new traces.
    ParentBasedRatio(f64),
}

impl Sampling {
    /// Reads `OTEL_TRACES_SAMPLER`'s `name` and `OTEL_TRACES_SAMPLER_ARG`'s `arg` (the ratio of
    /// the ratio samplers, 1.0 when absent).
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || match arg {
            None => Ok(1.0),
            Some(text) => match text.parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
                _ => Err(format!("OTEL_TRACES_SAMPLER_ARG {text:?} is not a ratio between 0 and 1")),
            },
        };
        match name {
            "always_on" => Ok(Self::AlwaysOn),
            "always_off" => Ok(Self::AlwaysOff),
            "traceidratio" => Ok(Self::Ratio(ratio()?)),
            "parentbased_always_on" => Ok(Self::ParentBasedAlwaysOn),
            "parentbased_always_off" => Ok(Self::ParentBasedAlwaysOff),
            "parentbased_traceidratio" => Ok(Self::ParentBasedRatio(ratio()?)),
            other => Err(format!("OTEL_TRACES_SAMPLER {other:?} is not supported")),
        }
    }

    fn sampler(self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedRatio(ratio) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
        }
    }
}

/// Keeps the exporters running; dropping it flushes what is pending (at most 5 s per signal)
/// and stops them. Hold it for the life of `main`.
#[must_use = "dropping the guard stops telemetry export"]
#[derive(Debug, Default)]
pub struct Guard {
    export: Option<Export>,
}

#[derive(Debug)]
struct Export {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    /// Drives the exporters' gRPC channel, independent of (and outliving) the application's
    /// runtimes.
    runtime: Option<tokio::runtime::Runtime>,
}

/// Telemetry could not be flushed.
#[derive(Debug, thiserror::Error)]
#[error("flushing {signal}: {message}")]
pub struct FlushError {
    /// `traces` or `metrics`.
    pub signal: &'static str,
    /// Why.
    pub message: String,
}

impl Guard {
    /// Whether spans and metrics are exported.
    pub fn is_exporting(&self) -> bool {
        self.export.is_some()
    }

    /// Exports the finished spans and the current metrics now (blocking; call it from a
    /// blocking thread when inside an async runtime).
    pub fn flush(&self) -> Result<(), FlushError> {
        let Some(export) = &self.export else { return Ok(()) };
        export.tracer_provider.force_flush().map_err(|e| FlushError { signal: "traces", message: e.to_string() })?;
        export.meter_provider.force_flush().map_err(|e| FlushError { signal: "metrics", message: e.to_string() })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(mut export) = self.export.take() else { return };
        EXPORTING.store(false, Ordering::Release);
        if let Err(error) = export.tracer_provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(%error, "stopping the trace exporter");
        }
        if let Err(error) = export.meter_provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(%error, "stopping the metric exporter");
        }
        if let Some(runtime) = export.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Sets up logging and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, trace and metric export for
/// `lightops-<service>` (see [`TelemetryConfig::from_env`]).
pub fn init(service: &str) -> Guard {
    init_with(TelemetryConfig::from_env(service))
}

/// Sets up logging and export as `config` says. Installs the global `tracing` subscriber and the
/// global OTel providers; a second call logs a warning and leaves the first subscriber in place.
pub fn init_with(config: TelemetryConfig) -> Guard {
    let log_filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colours only on a terminal: not in files, pipes or `kubectl logs`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).with_filter(log_filter);
    let mut warnings = config.warnings.clone();
    let export = match &config.otlp_endpoint {
        Some(endpoint) => match start_export(&config, endpoint) {
            Ok(export) => Some(export),
            Err(message) => {
                warnings.push(format!("cannot export telemetry to {endpoint}: {message}"));
                None
            }
        },
        None => None,
    };
    let traces = export.as_ref().map(|export| {
        let trace_filter =
            EnvFilter::try_new(&config.trace_filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_TRACE_FILTER));
        tracing_opentelemetry::layer()
            .with_tracer(export.tracer_provider.tracer("lightops"))
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(trace_filter)
    });
    let installed = tracing_subscriber::registry().with(logs).with(traces).try_init();
    if let Err(error) = installed {
        tracing::warn!(%error, "logging was already set up");
    }
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let Some(export) = export else { return Guard::default() };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(export.tracer_provider.clone());
    opentelemetry::global::set_meter_provider(export.meter_provider.clone());
    EXPORTING.store(true, Ordering::Release);
    tracing::info!(
        endpoint = %config.otlp_endpoint.as_ref().map(ToString::to_string).unwrap_or_default(),
        service = %config.service_name,
        "exporting traces and metrics over OTLP"
    );
    Guard { export: Some(export) }
}

fn start_export(config: &TelemetryConfig, endpoint: &http::Uri) -> Result<Export, String> {
    // The tonic channels of the exporters spawn their connection tasks on the runtime they are
    // built in; the export threads of the SDK then only poll futures. A runtime of our own keeps
    // export working before the application's runtime starts and after it stops.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("lightops-otlp")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the export runtime: {e}"))?;
    let _entered = runtime.enter();
    let mut defaults = vec![KeyValue::new("service.version", config.service_version.clone())];
    // Tells replicas apart (a Prometheus exporter would merge their series otherwise); in
    // Kubernetes the host name is the pod's name.
    if let Some(host) = host_name() {
        defaults.push(KeyValue::new("service.instance.id", host));
    }
    let resource = Resource::builder_empty()
        .with_attributes(defaults)
        .with_detectors(&[Box::new(TelemetryResourceDetector), Box::new(EnvResourceDetector::new())])
        .with_service_name(config.service_name.clone())
        .build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.to_string())
        .build()
        .map_err(|e| e.to_string())?;
    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_sampler(config.sampling.sampler())
        .with_batch_exporter(spans)
        .build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.to_string())
        .build()
        .map_err(|e| e.to_string())?;
    let mut reader = PeriodicReader::builder(metrics);
    if let Some(interval) = config.metric_interval {
        reader = reader.with_interval(interval);
    }
    let meter_provider = SdkMeterProvider::builder().with_resource(resource).with_reader(reader.build()).build();
    drop(_entered);
    Ok(Export { tracer_provider, meter_provider, runtime: Some(runtime) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_are_read_as_the_spec_names_them() {
        assert_eq!(Sampling::parse("parentbased_always_on", None), Ok(Sampling::ParentBasedAlwaysOn));
        assert_eq!(Sampling::parse("parentbased_traceidratio", Some("0.25")), Ok(Sampling::ParentBasedRatio(0.25)));
        assert_eq!(Sampling::parse("traceidratio", None), Ok(Sampling::Ratio(1.0)));
        assert_eq!(Sampling::parse("always_off", Some("ignored")), Ok(Sampling::AlwaysOff));
        assert!(Sampling::parse("parentbased_traceidratio", Some("1.5")).is_err());
        assert!(Sampling::parse("jaeger_remote", None).is_err());
    }

    #[test]
    fn endpoints_are_plain_http_with_a_host() {
        let uri = parse_endpoint("http://otel-collector.observability:4317").expect("valid endpoint");
        assert_eq!(uri.port_u16(), Some(4317));
        assert!(parse_endpoint("https://collector:4317").is_err());
        assert!(parse_endpoint("collector:4317").is_err());
        assert!(parse_endpoint("not a uri").is_err());
    }
}
