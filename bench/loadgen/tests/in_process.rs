//! Runs every load-generator mode for about a second against in-process servers: a trivial
//! `Predictor` (duration = trip_distance × 2) over tonic, and the same over axum for `http`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use lightops_api::predictor::v1::predictor_server::{Predictor, PredictorServer};
use lightops_api::predictor::v1::{
    GetModelRequest, PredictBatchRequest, PredictBatchResponse, PredictRequest, PredictResponse, Prediction,
    ServingModel,
};
use lightops_loadgen::{Client, Mode, Options, Report, run};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

/// Answers duration = trip_distance × 2; with `fail_every: n`, every n-th unary call fails.
#[derive(Default)]
struct Doubler {
    fail_every: Option<u64>,
    calls: AtomicU64,
}

fn predict(ride: &lightops_api::common::v1::Ride) -> Prediction {
    Prediction { ride_id: ride.ride_id.clone(), duration: ride.trip_distance * 2.0 }
}

fn batch(request: &PredictBatchRequest) -> PredictBatchResponse {
    PredictBatchResponse {
        predictions: request.rides.iter().map(predict).collect(),
        model_name: "doubler".into(),
        model_version: "1".into(),
    }
}

#[tonic::async_trait]
impl Predictor for Doubler {
    async fn predict(&self, request: Request<PredictRequest>) -> Result<Response<PredictResponse>, Status> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if self.fail_every.is_some_and(|n| call.is_multiple_of(n)) {
            return Err(Status::resource_exhausted("every other call fails"));
        }
        let ride = request.into_inner().ride.ok_or_else(|| Status::invalid_argument("ride is missing"))?;
        Ok(Response::new(PredictResponse {
            prediction: Some(predict(&ride)),
            model_name: "doubler".into(),
            model_version: "1".into(),
        }))
    }

    async fn predict_batch(
        &self,
        request: Request<PredictBatchRequest>,
    ) -> Result<Response<PredictBatchResponse>, Status> {
        Ok(Response::new(batch(request.get_ref())))
    }

    type PredictStreamStream = Pin<Box<dyn Stream<Item = Result<PredictBatchResponse, Status>> + Send>>;

    async fn predict_stream(
        &self,
        request: Request<Streaming<PredictBatchRequest>>,
    ) -> Result<Response<Self::PredictStreamStream>, Status> {
        let answers = request.into_inner().map(|message| message.map(|request| batch(&request)));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn get_model(&self, _request: Request<GetModelRequest>) -> Result<Response<ServingModel>, Status> {
        Ok(Response::new(ServingModel::default()))
    }
}

/// Starts the gRPC server on a free port; it stops when the returned sender is dropped.
async fn grpc_server(predictor: Doubler) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder().add_service(PredictorServer::new(predictor)).serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ),
    );
    (url, stop)
}

fn options(url: String, mode: Mode) -> Options {
    Options {
        url,
        mode,
        client: Client::H2,
        connections: 2,
        concurrency_per_connection: 2,
        batch: 1,
        window: 16,
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(200),
    }
}

fn assert_healthy(report: &Report) {
    eprintln!("{}", report.summary());
    assert!(report.requests > 0, "{report:?}");
    assert!(report.predictions >= report.requests, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(report.p50_ms > 0.0 && report.p50_ms <= report.p99_ms && report.p99_ms <= report.max_ms, "{report:?}");
    assert!((report.seconds - 0.8).abs() < 1e-6, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_stream_workers_drive_a_predictor() {
    let (url, _stop) = grpc_server(Doubler::default()).await;

    for client in [Client::H2, Client::Tonic] {
        let unary = run(&Options { client, ..options(url.clone(), Mode::Unary) }).await.expect("unary run");
        assert_healthy(&unary);
        assert_eq!(unary.predictions, unary.requests);
        assert_eq!(unary.client, Some(client));
    }

    let stream = run(&Options { batch: 10, ..options(url, Mode::Stream) }).await.expect("stream run");
    assert_healthy(&stream);
    assert_eq!(stream.predictions, stream.requests * 10);
    let json = serde_json::to_value(&stream).expect("report as json");
    assert_eq!(json["mode"], "stream");
    assert_eq!(json["client"], "tonic");
    for field in ["connections", "requests", "predictions", "seconds", "rps", "predictions_per_s", "p99_ms", "errors"] {
        assert!(json.get(field).is_some(), "{field} missing from {json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ok_statuses_are_counted_not_fatal() {
    for client in [Client::H2, Client::Tonic] {
        let (url, _stop) = grpc_server(Doubler { fail_every: Some(2), ..Doubler::default() }).await;
        let report = run(&Options { client, ..options(url, Mode::Unary) }).await.expect("unary run");
        assert!(report.requests > 0, "{client}: {report:?}");
        assert!(report.errors > 0, "{client}: {report:?}");
        // Every second call fails: the counts agree to within the calls in flight at the edges.
        assert!(report.errors.abs_diff(report.requests) <= 4, "{client}: {report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_workers_post_the_workshop_json() {
    async fn answer(axum::Json(body): axum::Json<serde_json::Value>) -> axum::Json<serde_json::Value> {
        let distance = body["ride"]["trip_distance"].as_f64().unwrap_or(f64::NAN);
        axum::Json(serde_json::json!({
            "prediction": {"duration": distance * 2.0},
            "ride_id": body["ride_id"],
            "model_version": "1",
        }))
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let app = axum::Router::new().route("/predict", axum::routing::post(answer));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let report = run(&options(url, Mode::Http)).await.expect("http run");
    assert_healthy(&report);
    assert_eq!(report.connections, 4);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_is_counted_not_spun_on() {
    for client in [Client::H2, Client::Tonic] {
        let (url, stop) = grpc_server(Doubler::default()).await;
        // The server shuts down (GOAWAY, then the connections close) in the middle of the
        // measured interval; the calls after it fail until the run ends on time.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(stop);
        });
        let started = std::time::Instant::now();
        let report = run(&Options { client, ..options(url, Mode::Unary) }).await.expect("unary run");
        assert!(report.requests > 0, "{client}: {report:?}");
        assert!(report.errors > 0, "{client}: {report:?}");
        // About 100 errors per worker-second at most: a lost connection is retried every 10 ms.
        assert!(report.errors < 4 * 150, "{client}: {report:?}");
        assert!(started.elapsed() < Duration::from_secs(8), "{client}: took {:?}", started.elapsed());
    }
}
