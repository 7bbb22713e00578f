//! Trace context across gRPC calls, after the OpenTelemetry RPC semantic conventions.
//!
//! - [`ServerLayer`] (for `tonic::transport::Server::builder().layer(…)`): extracts the caller's
//!   W3C `traceparent` from the request metadata and runs each call in a server span named
//!   `package.Service/Method` with `rpc.system`, `rpc.service`, `rpc.method` and
//!   `rpc.grpc.status_code`; records `rpc.server.duration` (ms).
//! - [`ClientLayer`] / [`traced`]: a client span of the same shape around each outgoing call,
//!   whose context is injected into the request as `traceparent`; records `rpc.client.duration`.
//!
//! A call ends when its status is known: a trailers-only response (the usual error), the
//! trailers at the end of the response body, or the body dropped early (CANCELLED). Requests
//! that are not gRPC (the predictor's HTTP routes share its port) pass through untouched.
//!
//! Without telemetry export ([`super::exporting`] false when the layer is built) the layers
//! record no metric, and their spans are plain `tracing` spans: disabled, and so nearly free,
//! unless `LIGHTOPS_LOG` enables `info` for this module.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A gRPC channel whose calls carry the current trace context.
pub type TracedChannel = TracedClient<tonic::transport::Channel>;

/// Wraps a channel so that every call through it is traced and carries the trace context.
pub fn traced(channel: tonic::transport::Channel) -> TracedChannel {
    TracedClient::new(channel)
}

/// Boundaries of `rpc.*.duration`, milliseconds: 100 µs to 10 s.
const DURATION_BOUNDARIES_MS: [f64; 16] =
    [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];

/// gRPC status codes this module needs by name.
const CANCELLED: i64 = 1;
const UNKNOWN: i64 = 2;
const UNIMPLEMENTED: i64 = 12;
const UNAVAILABLE: i64 = 14;

fn duration_histogram(name: &'static str, description: &'static str) -> Option<Histogram<f64>> {
    super::exporting().then(|| {
        super::meter()
            .f64_histogram(name)
            .with_unit("ms")
            .with_description(description)
            .with_boundaries(DURATION_BOUNDARIES_MS.to_vec())
            .build()
    })
}

/// Which end of the call a span describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

impl Side {
    /// Span status by the RPC conventions: a client call failed on any non-OK status; a server
    /// call only on the codes that mean the server failed.
    fn is_error(self, code: i64) -> bool {
        match self {
            Self::Client => code != 0,
            Self::Server => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
        }
    }
}

/// `package.Service` and `Method` of a request path `/package.Service/Method`.
fn rpc_of(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some((service, method))
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i64> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// One call in flight: its span and, when metrics are exported, its duration.
#[derive(Debug)]
struct Call {
    side: Side,
    span: tracing::Span,
    started: Instant,
    /// The histogram, service and method, when metrics are recorded.
    metric: Option<(Histogram<f64>, String, String)>,
    finished: bool,
}

impl Call {
    fn start(side: Side, span: tracing::Span, service: &str, method: &str, duration: Option<&Histogram<f64>>) -> Self {
        let metric = duration.map(|histogram| (histogram.clone(), service.to_owned(), method.to_owned()));
        Self { side, span, started: Instant::now(), metric, finished: false }
    }

    fn finish(&mut self, code: i64) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.span.record("rpc.grpc.status_code", code);
        if self.side.is_error(code) {
            self.span.record("otel.status_code", "error");
        }
        if let Some((histogram, service, method)) = self.metric.take() {
            // An unknown method is the caller's choice: keep it out of the metric's attributes.
            let (service, method) = if code == UNIMPLEMENTED && self.side == Side::Server {
                ("_OTHER".to_owned(), "_OTHER".to_owned())
            } else {
                (service, method)
            };
            let attributes = [
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service),
                KeyValue::new("rpc.method", method),
                KeyValue::new("rpc.grpc.status_code", code),
            ];
            histogram.record(self.started.elapsed().as_secs_f64() * 1000.0, &attributes);
        }
    }

    /// Ends the call at the response headers when they carry the status (trailers-only
    /// response), else hands it to the body, which ends it at the trailers.
    fn respond<B>(mut self, response: http::Response<B>) -> http::Response<TracedBody<B>> {
        match grpc_status(response.headers()) {
            Some(code) => {
                self.finish(code);
                response.map(TracedBody::untraced)
            }
            None => response.map(|inner| TracedBody { inner, call: Some(self) }),
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Dropped before the status arrived: the response was abandoned.
        self.finish(CANCELLED);
    }
}

/// A response body that ends its call's span when the gRPC status goes by.
#[derive(Debug)]
pub struct TracedBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> TracedBody<B> {
    fn untraced(inner: B) -> Self {
        Self { inner, call: None }
    }
}

impl<B> Body for TracedBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.call.is_some() {
            let code = match &polled {
                Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|t| grpc_status(t).unwrap_or(UNKNOWN)),
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => Some(UNKNOWN),
                Poll::Pending => None,
            };
            if let Some(code) = code
                && let Some(mut call) = this.call.take()
            {
                call.finish(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Traces the gRPC calls a server answers; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct ServerLayer {
    duration: Option<Histogram<f64>>,
}

impl ServerLayer {
    /// The layer; records `rpc.server.duration` when telemetry is exported (build it after
    /// [`super::init`]).
    pub fn new() -> Self {
        Self { duration: duration_histogram("rpc.server.duration", "Duration of inbound gRPC calls") }
    }
}

impl<S> tower_layer::Layer<S> for ServerLayer {
    type Service = TracedServer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TracedServer { inner, duration: self.duration.clone() }
    }
}

/// The service [`ServerLayer`] makes.
#[derive(Debug, Clone)]
pub struct TracedServer<S> {
    inner: S,
    duration: Option<Histogram<f64>>,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for TracedServer<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let rpc = is_grpc(request.headers()).then(|| rpc_of(request.uri().path())).flatten();
        let Some((service, method)) = rpc else {
            let answer = self.inner.call(request);
            return Box::pin(async move { answer.await.map(|r| r.map(TracedBody::untraced)) });
        };
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
        );
        if !span.is_disabled() {
            let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
            // Fails only when no OpenTelemetry layer is installed: then there is nothing to join.
            let _ = span.set_parent(parent);
        }
        let mut call = Call::start(Side::Server, span.clone(), service, method, self.duration.as_ref());
        let answer = span.in_scope(|| self.inner.call(request)).instrument(span);
        Box::pin(async move {
            match answer.await {
                Ok(response) => Ok(call.respond(response)),
                Err(error) => {
                    call.finish(UNKNOWN);
                    Err(error)
                }
            }
        })
    }
}

/// Traces the calls made through a client service and injects their context; see the
/// [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct ClientLayer {
    duration: Option<Histogram<f64>>,
}

impl ClientLayer {
    /// The layer; records `rpc.client.duration` when telemetry is exported (build it after
    /// [`super::init`]).
    pub fn new() -> Self {
        Self { duration: duration_histogram("rpc.client.duration", "Duration of outbound gRPC calls") }
    }
}

impl<S> tower_layer::Layer<S> for ClientLayer {
    type Service = TracedClient<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TracedClient { inner, duration: self.duration.clone() }
    }
}

/// The service [`ClientLayer`] makes; [`TracedChannel`] for a tonic channel.
#[derive(Debug, Clone)]
pub struct TracedClient<S> {
    inner: S,
    duration: Option<Histogram<f64>>,
}

impl<S> TracedClient<S> {
    /// Wraps `inner` (as [`ClientLayer::new`] would).
    pub fn new(inner: S) -> Self {
        tower_layer::Layer::layer(&ClientLayer::new(), inner)
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for TracedClient<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let Some((service, method)) = rpc_of(request.uri().path()) else {
            let answer = self.inner.call(request);
            return Box::pin(async move { answer.await.map(|r| r.map(TracedBody::untraced)) });
        };
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
        );
        let mut call = Call::start(Side::Client, span.clone(), service, method, self.duration.as_ref());
        if !span.is_disabled() {
            let context = span.context();
            TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(request.headers_mut()));
        }
        let answer = span.in_scope(|| self.inner.call(request));
        Box::pin(async move {
            match answer.await {
                Ok(response) => Ok(call.respond(response)),
                Err(error) => {
                    call.finish(UNAVAILABLE);
                    Err(error)
                }
            }
        })
    }
}

/// Reads propagation fields from request metadata.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes propagation fields into request metadata.
struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_service_and_the_method() {
        assert_eq!(rpc_of("/lightops.registry.v1.Registry/Watch"), Some(("lightops.registry.v1.Registry", "Watch")));
        assert_eq!(rpc_of("/predict"), None);
        assert_eq!(rpc_of("/a/b/c"), None);
        assert_eq!(rpc_of("//Method"), None);
        assert_eq!(rpc_of("metrics"), None);
    }

    #[test]
    fn server_spans_fail_only_on_server_faults() {
        assert!(!Side::Server.is_error(5), "NOT_FOUND is the caller's problem");
        assert!(Side::Server.is_error(13));
        assert!(Side::Client.is_error(5));
        assert!(!Side::Client.is_error(0));
    }

    #[test]
    fn only_grpc_content_is_traced() {
        let mut headers = http::HeaderMap::new();
        assert!(!is_grpc(&headers));
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc+proto"));
        assert!(is_grpc(&headers));
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(grpc_status(&headers), Some(5));
    }
}
