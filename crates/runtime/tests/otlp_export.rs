//! Telemetry export end to end, against a tiny in-process OTLP/gRPC collector: a call from a
//! client with the injection layer to a server with the extraction layer arrives as a client
//! span and a server span of one trace, with the service's resource and the rpc.* attributes;
//! the rpc durations and the monitor's and trainer's instruments arrive as metrics.
//!
//! One test per file: the subscriber and the OTel providers are process-wide.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lightops_runtime::telemetry::{self, ColumnDrift, Sampling, TelemetryConfig, WindowFigures, grpc};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument as _;

/// What the collector received.
#[derive(Debug, Default, Clone)]
struct Collector {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().expect("traces").push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().expect("metrics").push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

/// A span with the `service.name` of the resource it came with.
#[derive(Debug, Clone)]
struct Received {
    service_name: Option<String>,
    service_version: Option<String>,
    span: Span,
}

impl Collector {
    fn spans(&self) -> Vec<Received> {
        let traces = self.traces.lock().expect("traces");
        let mut out = Vec::new();
        for request in traces.iter() {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        out.push(Received {
                            service_name: string_attribute(resource, "service.name"),
                            service_version: string_attribute(resource, "service.version"),
                            span: span.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// The data points' attribute sets of the metric `name`, across every export.
    fn metric_points(&self, name: &str) -> Vec<Vec<KeyValue>> {
        let metrics = self.metrics.lock().expect("metrics");
        let mut out = Vec::new();
        for request in metrics.iter() {
            for resource_metrics in &request.resource_metrics {
                for scope in &resource_metrics.scope_metrics {
                    for found in scope.metrics.iter().filter(|m| m.name == name) {
                        match &found.data {
                            Some(metric::Data::Histogram(h)) => {
                                out.extend(h.data_points.iter().map(|p| p.attributes.clone()))
                            }
                            Some(metric::Data::Gauge(g)) => {
                                out.extend(g.data_points.iter().map(|p| p.attributes.clone()))
                            }
                            Some(metric::Data::Sum(s)) => {
                                out.extend(s.data_points.iter().map(|p| p.attributes.clone()))
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        out
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        any_value::Value::StringValue(value) => Some(value.clone()),
        _ => None,
    }
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        any_value::Value::IntValue(value) => Some(*value),
        _ => None,
    }
}

fn has(attributes: &[KeyValue], key: &str, value: &str) -> bool {
    attributes.iter().any(|kv| {
        kv.key == key && kv.value == Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) })
    })
}

async fn start_collector(collector: Collector) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the collector");
    let address = listener.local_addr().expect("collector address");
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .add_service(MetricsServiceServer::new(collector))
        .serve_with_incoming(lightops_runtime::incoming_nodelay(listener));
    tokio::spawn(server);
    address
}

/// A health service behind the server layer.
async fn start_traced_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the server");
    let address = listener.local_addr().expect("server address");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = tonic::transport::Server::builder()
        .layer(grpc::ServerLayer::new())
        .add_service(health)
        .serve_with_incoming(lightops_runtime::incoming_nodelay(listener));
    tokio::spawn(server);
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_call_reaches_the_collector_as_one_trace() {
    let collector = Collector::default();
    let collector_address = start_collector(collector.clone()).await;
    let guard = telemetry::init_with(TelemetryConfig {
        service_name: "lightops-telemetry-test".into(),
        service_version: "9.9.9".into(),
        log_filter: "warn".into(),
        trace_filter: "info".into(),
        otlp_endpoint: Some(format!("http://{collector_address}").parse().expect("endpoint")),
        sampling: Sampling::ParentBasedAlwaysOn,
        metric_interval: None,
        warnings: Vec::new(),
    });
    assert!(guard.is_exporting());

    let server_address = start_traced_server().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{server_address}"))
        .expect("server URL")
        .connect()
        .await
        .expect("connect to the server");
    let mut client = HealthClient::new(grpc::traced(channel));
    let caller = tracing::info_span!("test.caller");
    let (ok, missing) = async {
        let ok = client.check(HealthCheckRequest { service: String::new() }).await;
        let missing = client.check(HealthCheckRequest { service: "no.such.Service".into() }).await;
        (ok, missing)
    }
    .instrument(caller.clone())
    .await;
    drop(caller);
    assert!(ok.is_ok(), "{ok:?}");
    assert_eq!(missing.expect_err("unknown service").code(), tonic::Code::NotFound);

    telemetry::record_window(WindowFigures {
        start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_646_092_800),
        rows: 1200,
        dataset_drift: true,
        columns: vec![ColumnDrift {
            column: "trip_distance".into(),
            method: "wasserstein".into(),
            score: 0.31,
            drifted: true,
        }],
        rmse: Some(6.2),
        mae: None,
    });
    telemetry::record_training_job("SUCCEEDED", Duration::from_secs(42));

    // Flush until the two calls' four spans and the metrics are in (the batch processor may be
    // between exports); no sleeps beyond the poll interval.
    let deadline = Instant::now() + Duration::from_secs(20);
    let check_name = "grpc.health.v1.Health/Check";
    loop {
        tokio::task::block_in_place(|| guard.flush()).expect("flush");
        let rpc_spans = collector.spans().into_iter().filter(|r| r.span.name == check_name).count();
        let metrics_in = !collector.metric_points("trainer.job.duration").is_empty();
        if rpc_spans >= 4 && metrics_in {
            break;
        }
        assert!(Instant::now() < deadline, "the collector received {rpc_spans} call spans, metrics: {metrics_in}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let spans = collector.spans();
    let caller = spans.iter().find(|r| r.span.name == "test.caller").expect("the caller's span");
    let of_kind = |kind: SpanKind| -> Vec<&Received> {
        spans.iter().filter(|r| r.span.name == check_name && r.span.kind == kind as i32).collect()
    };
    let (clients, servers) = (of_kind(SpanKind::Client), of_kind(SpanKind::Server));
    assert_eq!((clients.len(), servers.len()), (2, 2), "{spans:#?}");
    for received in spans.iter().filter(|r| r.span.name == check_name) {
        assert_eq!(received.service_name.as_deref(), Some("lightops-telemetry-test"));
        assert_eq!(received.service_version.as_deref(), Some("9.9.9"));
        let attributes = &received.span.attributes;
        assert!(has(attributes, "rpc.system", "grpc"), "{attributes:?}");
        assert!(has(attributes, "rpc.service", "grpc.health.v1.Health"), "{attributes:?}");
        assert!(has(attributes, "rpc.method", "Check"), "{attributes:?}");
        assert_eq!(received.span.trace_id, caller.span.trace_id, "one trace from the caller down");
    }
    for client in &clients {
        let server = servers
            .iter()
            .find(|s| s.span.parent_span_id == client.span.span_id)
            .expect("a server span whose parent is the client span");
        assert_eq!(client.span.parent_span_id, caller.span.span_id);
        let code = int_attribute(&client.span.attributes, "rpc.grpc.status_code");
        assert_eq!(code, int_attribute(&server.span.attributes, "rpc.grpc.status_code"));
        assert!(matches!(code, Some(0) | Some(5)), "status code {code:?}");
        let client_failed = client.span.status.as_ref().is_some_and(|s| s.code == 2);
        let server_failed = server.span.status.as_ref().is_some_and(|s| s.code == 2);
        assert_eq!(client_failed, code == Some(5), "a client span fails on NOT_FOUND");
        assert!(!server_failed, "NOT_FOUND is not a server fault");
    }

    for name in ["rpc.server.duration", "rpc.client.duration"] {
        let points = collector.metric_points(name);
        for code in [0, 5] {
            assert!(
                points.iter().any(|p| has(p, "rpc.system", "grpc")
                    && has(p, "rpc.service", "grpc.health.v1.Health")
                    && has(p, "rpc.method", "Check")
                    && int_attribute(p, "rpc.grpc.status_code") == Some(code)),
                "{name} with status {code}: {points:?}"
            );
        }
    }
    let drift = collector.metric_points("monitor.drift.score");
    assert!(drift.iter().any(|p| has(p, "column", "trip_distance") && has(p, "method", "wasserstein")), "{drift:?}");
    assert!(!collector.metric_points("monitor.window.rmse").is_empty());
    let jobs = collector.metric_points("trainer.job.duration");
    assert!(jobs.iter().any(|p| has(p, "state", "succeeded")), "{jobs:?}");
    tokio::task::block_in_place(|| drop(guard));
}
