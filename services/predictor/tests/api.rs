//! The predictor's APIs over real gRPC and HTTP on an ephemeral port: every API gives the model
//! library's prediction for the same ride, the workshop's curl requests work, bad input is
//! refused naming the field, health and readiness follow the model, and every answered ride is in
//! the prediction log.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lightops_api::common::v1::Ride;
use lightops_api::inference as oip;
use lightops_api::predictor::v1 as pb;
use lightops_ml::data::KeyColumn;
use lightops_ml::{DataFile, FeatureSpec, Solver};
use pb::predictor_client::PredictorClient;
use tonic::transport::Channel;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples")
}

/// Trains the sample model and saves it; returns the artifact path and the model.
fn sample_model(dir: &Path) -> (PathBuf, lightops_ml::LinearModel) {
    let file = |name: &str| DataFile { path: samples().join(name), name: name.into() };
    let trained = lightops_ml::train(
        &FeatureSpec::default(),
        &[file("green_sample_2022-01.parquet")],
        &file("green_sample_2022-02.parquet"),
        Solver::Exact,
        &lightops_ml::train::NoProgress,
    )
    .expect("train");
    let path = dir.join("model.json");
    trained.artifact.save(&path).expect("save");
    (path, trained.artifact.model)
}

/// Rides from the March sample and the model library's predictions for them.
fn march_rides(model: &lightops_ml::LinearModel, count: usize) -> (Vec<Ride>, Vec<f64>) {
    let trips = lightops_ml::data::read_trips(&samples().join("green_sample_2022-03.parquet"), &FeatureSpec::default())
        .expect("read");
    let expected = model.predict_trips(&trips);
    let ids = |column: &KeyColumn| match column {
        KeyColumn::Int(values) => values.clone(),
        KeyColumn::Str(_) => panic!("location ids are integers"),
    };
    let (pu, do_) = (ids(&trips.keys[0]), ids(&trips.keys[1]));
    let rides = (0..count.min(trips.len()))
        .map(|i| Ride {
            ride_id: format!("ride_{i}"),
            pu_location_id: pu[i],
            do_location_id: do_[i],
            trip_distance: trips.numeric[0][i],
            event_time_ms: 1_646_092_800_000 + i as i64,
        })
        .collect::<Vec<_>>();
    let expected = expected[..rides.len()].to_vec();
    (rides, expected)
}

struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), lightops_predictor::ServeError>>,
}

impl Server {
    async fn start(model: &str, registry: Option<String>, log_dir: Option<&Path>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let log = log_dir.map(|dir| {
            lightops_predlog::LogConfig::new(lightops_predlog::SinkTarget::Local(dir.join("logs")), dir.join("spill"))
        });
        let config = lightops_predictor::Config {
            model: model.to_owned(),
            registry,
            log,
            max_body_bytes: 64 << 10,
            log_flush_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(lightops_predictor::serve(config, listener, async {
            let _ = stopped.await;
        }));
        Self { url, stop: Some(stop), task }
    }

    async fn channel(&self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(channel) = Channel::from_shared(self.url.clone()).expect("url").connect().await {
                return channel;
            }
            assert!(Instant::now() < deadline, "predictor did not start listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(20), &mut self.task).await.expect("stops in time");
        result.expect("task").expect("served without error");
    }
}

/// The prediction log's lines under `dir/logs`, its segments read in name order (the order they
/// were written).
fn log_lines(dir: &Path) -> Vec<String> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("logs"))
        .expect("logs")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.is_file())
        .collect();
    segments.sort();
    segments
        .iter()
        .flat_map(|segment| {
            std::fs::read_to_string(segment).expect("read").lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

/// A blocking HTTP call on a worker thread: (status, body).
async fn http(url: String, content_type: Option<&'static str>, body: Vec<u8>) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut request = agent.post(&url);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let mut response = request.send(&body[..]).expect("http call");
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap_or_default())
    })
    .await
    .expect("join")
}

async fn http_get(url: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut response = agent.get(&url).call().expect("http call");
        (response.status().as_u16(), response.body_mut().read_to_string().unwrap_or_default())
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_gives_the_model_library_prediction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (artifact, model) = sample_model(dir.path());
    let (rides, expected) = march_rides(&model, 300);
    let server = Server::start(&artifact.display().to_string(), None, Some(dir.path())).await;
    let channel = server.channel().await;
    let mut client = PredictorClient::new(channel.clone());

    // Predict, one by one (the first 50).
    for (ride, want) in rides.iter().zip(&expected).take(50) {
        let answer =
            client.predict(pb::PredictRequest { ride: Some(ride.clone()) }).await.expect("predict").into_inner();
        let prediction = answer.prediction.expect("prediction");
        assert_eq!(prediction.ride_id, ride.ride_id);
        assert_eq!(prediction.duration, *want, "Predict {}", ride.ride_id);
        assert_eq!(answer.model_name, "model");
    }
    // PredictBatch.
    let batch =
        client.predict_batch(pb::PredictBatchRequest { rides: rides.clone() }).await.expect("batch").into_inner();
    let durations: Vec<f64> = batch.predictions.iter().map(|p| p.duration).collect();
    assert_eq!(durations, expected);
    // PredictStream: 30 messages of 10 rides, answers in order.
    let messages: Vec<pb::PredictBatchRequest> =
        rides.chunks(10).map(|chunk| pb::PredictBatchRequest { rides: chunk.to_vec() }).collect();
    let mut answers = client.predict_stream(futures::stream::iter(messages)).await.expect("stream").into_inner();
    let mut streamed = Vec::new();
    while let Some(message) = answers.message().await.expect("stream message") {
        streamed.extend(message.predictions.into_iter().map(|p| (p.ride_id, p.duration)));
    }
    let want: Vec<(String, f64)> = rides.iter().map(|r| r.ride_id.clone()).zip(expected.iter().copied()).collect();
    assert_eq!(streamed, want);

    // Open Inference Protocol v2, typed contents and raw contents.
    let mut inference = oip::grpc_inference_service_client::GrpcInferenceServiceClient::new(channel.clone());
    assert!(inference.server_live(oip::ServerLiveRequest {}).await.expect("live").into_inner().live);
    assert!(inference.server_ready(oip::ServerReadyRequest {}).await.expect("ready").into_inner().ready);
    let ready = inference
        .model_ready(oip::ModelReadyRequest { name: "model".into(), version: String::new() })
        .await
        .expect("model ready")
        .into_inner();
    assert!(ready.ready);
    let metadata = inference
        .model_metadata(oip::ModelMetadataRequest { name: "model".into(), version: String::new() })
        .await
        .expect("metadata")
        .into_inner();
    let inputs: Vec<&str> = metadata.inputs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(&inputs[..3], ["PULocationID", "DOLocationID", "trip_distance"]);
    let n = rides.len() as i64;
    let input = |name: &str, datatype: &str, contents: Option<oip::InferTensorContents>| {
        oip::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: vec![n],
            parameters: Default::default(),
            contents,
        }
    };
    let typed = oip::ModelInferRequest {
        model_name: "model".into(),
        id: "req-1".into(),
        inputs: vec![
            input(
                "PULocationID",
                "INT64",
                Some(oip::InferTensorContents {
                    int64_contents: rides.iter().map(|r| r.pu_location_id).collect(),
                    ..Default::default()
                }),
            ),
            input(
                "DOLocationID",
                "INT64",
                Some(oip::InferTensorContents {
                    int64_contents: rides.iter().map(|r| r.do_location_id).collect(),
                    ..Default::default()
                }),
            ),
            input(
                "trip_distance",
                "FP64",
                Some(oip::InferTensorContents {
                    fp64_contents: rides.iter().map(|r| r.trip_distance).collect(),
                    ..Default::default()
                }),
            ),
        ],
        ..Default::default()
    };
    let answer = inference.model_infer(typed).await.expect("infer").into_inner();
    assert_eq!(answer.id, "req-1");
    let output = &answer.outputs[0];
    assert_eq!(
        (output.name.as_str(), output.datatype.as_str(), output.shape.as_slice()),
        ("duration", "FP64", &[n][..])
    );
    assert_eq!(output.contents.as_ref().expect("typed output").fp64_contents, expected);
    let raw = oip::ModelInferRequest {
        model_name: "model".into(),
        inputs: vec![
            input("PULocationID", "INT32", None),
            input("DOLocationID", "INT64", None),
            input("trip_distance", "FP64", None),
        ],
        raw_input_contents: vec![
            rides.iter().flat_map(|r| (r.pu_location_id as i32).to_le_bytes()).collect(),
            rides.iter().flat_map(|r| r.do_location_id.to_le_bytes()).collect(),
            rides.iter().flat_map(|r| r.trip_distance.to_le_bytes()).collect(),
        ],
        ..Default::default()
    };
    let answer = inference.model_infer(raw).await.expect("raw infer").into_inner();
    let durations: Vec<f64> = answer.raw_output_contents[0]
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    assert_eq!(durations, expected);

    // HTTP, both workshop shapes.
    for (ride, want) in rides.iter().zip(&expected).take(20) {
        let nested = serde_json::json!({"ride_id": ride.ride_id, "ride": {
            "PULocationID": ride.pu_location_id, "DOLocationID": ride.do_location_id, "trip_distance": ride.trip_distance}});
        let (status, body) =
            http(format!("{}/predict", server.url), Some("application/json"), nested.to_string().into_bytes()).await;
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["prediction"]["duration"].as_f64(), Some(*want));
        assert_eq!(body["ride_id"], ride.ride_id.as_str());
        assert!(body.get("model_version").is_some(), "{body}");
        let flat = serde_json::json!({
            "PULocationID": ride.pu_location_id, "DOLocationID": ride.do_location_id, "trip_distance": ride.trip_distance});
        let (status, body) =
            http(format!("{}/predict", server.url), Some("application/json"), flat.to_string().into_bytes()).await;
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["prediction"]["duration"].as_f64(), Some(*want));
        assert!(body.get("ride_id").is_none(), "no ride_id when none was given: {body}");
    }

    // The workshop's exact curl request (serve.py), when curl is installed.
    let url = format!("{}/predict", server.url);
    let curl = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-s", "-X", "POST", "-H", "Content-Type: application/json"])
            .args(["-d", r#"{"PULocationID": 100, "DOLocationID": 102, "trip_distance": 30}"#, &url])
            .output()
    })
    .await
    .expect("join");
    if let Ok(output) = curl {
        let body: serde_json::Value = serde_json::from_slice(&output.stdout).expect("curl answer is JSON");
        let want = lightops_ml::RideScorer::new(&model).expect("scorer").score(&lightops_ml::Ride {
            pu_location_id: 100,
            do_location_id: 102,
            trip_distance: 30.0,
        });
        assert_eq!(body["prediction"]["duration"].as_f64(), Some(want), "{body}");
    }

    let (status, text) = http_get(format!("{}/metrics", server.url)).await;
    assert_eq!(status, 200);
    // Whole lines, named as documented in docs/predictor.md (prefix once).
    let line = |want: &str| text.lines().any(|line| line == want);
    assert!(line("lightops_predictor_predictions_total{api=\"PredictBatch\"} 300"), "{text}");
    assert!(line("lightops_predictor_log_records_total{state=\"dropped\"} 0"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("lightops_predictor_model_loads_total ")), "{text}");
    assert!(line("lightops_predictor_model_refused_total 0"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("lightops_predictor_model_info{") && l.ends_with("} 1")), "{text}");
    assert!(line("lightops_predictor_log_spill_backlog 0"), "{text}");
    // The histograms count every request (duration) and every ride (predicted minutes).
    let value = |prefix: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {text}"));
        line[prefix.len()..].trim().parse().unwrap_or_else(|_| panic!("{line}"))
    };
    let batch_requests = value("lightops_predictor_requests_total{api=\"PredictBatch\"}");
    assert!(batch_requests >= 1.0, "{text}");
    assert_eq!(value("lightops_predictor_request_duration_seconds_count{api=\"PredictBatch\"}"), batch_requests);
    let inf = "lightops_predictor_request_duration_seconds_bucket{le=\"+Inf\",api=\"PredictBatch\"}";
    assert_eq!(value(inf), batch_requests, "{text}");
    let rides: f64 = text
        .lines()
        .filter(|l| l.starts_with("lightops_predictor_predictions_total{"))
        .map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN))
        .sum();
    assert_eq!(value("lightops_predictor_prediction_minutes_count"), rides, "{text}");
    server.stop().await;

    // Every answered ride is in the prediction log: 50 + 300 + 300 + 300 + 300 + 40 + 1.
    let lines = log_lines(dir.path());
    let curl_ran = lines.len() == 1291;
    assert!(lines.len() == 1290 || curl_ran, "{} records", lines.len());
    let first: serde_json::Value = serde_json::from_str(&lines[0]).expect("record");
    assert_eq!(first["schema"], 1);
    assert!(first["features"]["PULocationID"].is_i64(), "{first}");
}

/// A stream's records wait in a buffer of the stream's own while messages keep coming; they must
/// still reach the log while the stream stays open and idle, and in the order answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_records_are_logged_while_it_stays_open_in_the_order_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (artifact, model) = sample_model(dir.path());
    let (rides, _) = march_rides(&model, 200);
    let server = Server::start(&artifact.display().to_string(), None, Some(dir.path())).await;
    let mut client = PredictorClient::new(server.channel().await);
    let (requests, outgoing) = tokio::sync::mpsc::channel(256);
    let mut answers = client
        .predict_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .expect("stream")
        .into_inner();
    let queued = || async {
        let (_, text) = http_get(format!("{}/metrics", server.url)).await;
        text.lines().find_map(|l| {
            l.strip_prefix("lightops_predictor_log_records_total{state=\"queued\"} ")?.parse::<u64>().ok()
        })
    };
    // A burst of one-ride messages, then the stream stays open, idle.
    let mut answered = Vec::new();
    for burst in [&rides[..150], &rides[150..]] {
        for ride in burst {
            requests.send(pb::PredictBatchRequest { rides: vec![ride.clone()] }).await.expect("send");
        }
        for _ in burst {
            let message = answers.message().await.expect("answer").expect("not ended");
            answered.extend(message.predictions.into_iter().map(|p| p.ride_id));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while queued().await != Some(answered.len() as u64) {
            assert!(
                Instant::now() < deadline,
                "{:?} of {} records logged while the stream is open",
                queued().await,
                answered.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(requests);
    assert!(answers.message().await.expect("the end").is_none());
    server.stop().await;

    let logged: Vec<String> = log_lines(dir.path())
        .iter()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("record");
            record["ride_id"].as_str().expect("ride_id").to_owned()
        })
        .collect();
    let sent: Vec<String> = rides.iter().map(|ride| ride.ride_id.clone()).collect();
    assert_eq!(answered, sent, "answered in order");
    assert_eq!(logged, sent, "logged in the order answered");
}

/// Sends raw bytes as a gRPC message (for malformed protobuf).
mod raw {
    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    pub struct RawCodec;

    pub struct Raw;

    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            let bytes = src.copy_to_bytes(src.remaining());
            Ok(Some(bytes.to_vec()))
        }
    }

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (artifact, _) = sample_model(dir.path());
    let server = Server::start(&artifact.display().to_string(), None, Some(dir.path())).await;
    let channel = server.channel().await;
    let mut client = PredictorClient::new(channel.clone());
    let ride = |distance: f64| Ride {
        ride_id: "r".into(),
        pu_location_id: 7,
        do_location_id: 9,
        trip_distance: distance,
        event_time_ms: 0,
    };

    let invalid = |status: tonic::Status, needle: &str| {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(needle), "{:?} should name {needle}", status.message());
    };
    invalid(client.predict(pb::PredictRequest { ride: None }).await.expect_err("no ride"), "ride: is missing");
    invalid(
        client.predict(pb::PredictRequest { ride: Some(ride(f64::NAN)) }).await.expect_err("nan"),
        "ride.trip_distance: must be a finite number",
    );
    invalid(
        client.predict(pb::PredictRequest { ride: Some(ride(-3.0)) }).await.expect_err("negative"),
        "ride.trip_distance: must not be negative",
    );
    invalid(
        client.predict_batch(pb::PredictBatchRequest { rides: vec![] }).await.expect_err("empty"),
        "rides: is empty",
    );
    invalid(
        client
            .predict_batch(pb::PredictBatchRequest { rides: vec![ride(1.0), ride(f64::INFINITY)] })
            .await
            .expect_err("inf"),
        "rides[1].trip_distance",
    );
    // A bad message ends the stream after the answers to the messages before it.
    let messages = vec![
        pb::PredictBatchRequest { rides: vec![ride(1.0)] },
        pb::PredictBatchRequest { rides: vec![ride(2.0), ride(-1.0)] },
    ];
    let mut answers = client.predict_stream(futures::stream::iter(messages)).await.expect("stream").into_inner();
    assert!(answers.message().await.expect("first answer").is_some());
    invalid(answers.message().await.expect_err("second message is bad"), "messages[1].rides[1].trip_distance");
    // A message without rides is named as a whole.
    let empty = vec![pb::PredictBatchRequest { rides: Vec::new() }];
    let mut answers = client.predict_stream(futures::stream::iter(empty)).await.expect("stream").into_inner();
    invalid(answers.message().await.expect_err("an empty message"), "messages[0].rides");
    // Unknown zones are allowed: they contribute nothing.
    let unknown = Ride { pu_location_id: 99_999, do_location_id: -1, ..ride(2.0) };
    client.predict(pb::PredictRequest { ride: Some(unknown) }).await.expect("unknown zones are fine");
    // Malformed protobuf: field 4 (trip_distance, a double) sent with the varint wire type.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/lightops.predictor.v1.Predictor/Predict");
    let garbage = vec![0x0a, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff];
    let status = grpc.unary(tonic::Request::new(garbage), path, raw::RawCodec).await.expect_err("malformed");
    assert_eq!(status.code(), tonic::Code::Internal, "tonic reports undecodable messages as INTERNAL: {status:?}");
    // OIP: wrong shapes, missing inputs, unknown model.
    let mut inference = oip::grpc_inference_service_client::GrpcInferenceServiceClient::new(channel.clone());
    let status = inference
        .model_infer(oip::ModelInferRequest { model_name: "model".into(), ..Default::default() })
        .await
        .expect_err("no inputs");
    invalid(status, "no tensor named \"PULocationID\"");
    let status = inference
        .model_infer(oip::ModelInferRequest { model_name: "other".into(), ..Default::default() })
        .await
        .expect_err("no inputs");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "inputs are checked first: {status:?}");

    // HTTP.
    let url = format!("{}/predict", server.url);
    let json = Some("application/json");
    let cases: Vec<(Option<&'static str>, Vec<u8>, u16, &str)> = vec![
        (json, br#"{"DOLocationID": 1, "trip_distance": 2}"#.to_vec(), 400, "PULocationID"),
        (json, br#"{"PULocationID": "a", "DOLocationID": 1, "trip_distance": 2}"#.to_vec(), 400, "PULocationID"),
        (
            json,
            br#"{"ride": {"PULocationID": 1, "DOLocationID": 1, "trip_distance": -2}}"#.to_vec(),
            400,
            "ride.trip_distance",
        ),
        (json, br#"{"PULocationID": 1, "DOLocationID": 1, "trip_distance": "far"}"#.to_vec(), 400, "trip_distance"),
        (json, b"{not json".to_vec(), 400, "body"),
        (
            Some("text/plain"),
            br#"{"PULocationID": 1, "DOLocationID": 1, "trip_distance": 2}"#.to_vec(),
            400,
            "Content-Type",
        ),
        (None, br#"{"PULocationID": 1, "DOLocationID": 1, "trip_distance": 2}"#.to_vec(), 400, "Content-Type"),
        (json, vec![b' '; 100 << 10], 413, ""),
    ];
    for (content_type, body, want, field) in cases {
        let (status, text) = http(url.clone(), content_type, body).await;
        assert_eq!(status, want, "{text}");
        if !field.is_empty() {
            let answer: serde_json::Value = serde_json::from_str(&text).expect("error body is JSON");
            assert_eq!(answer["field"], field, "{answer}");
        }
    }
    // Still serving after all that.
    client.predict(pb::PredictRequest { ride: Some(ride(1.0)) }).await.expect("still serving");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_a_model_is_loaded() {
    // A models:/ URI whose registry is not up: the server answers, but is not ready.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let registry = format!("http://{}", unused.local_addr().expect("addr"));
    drop(unused);
    let server = Server::start("models:/trip_duration@staging", Some(registry), None).await;
    let channel = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "lightops.predictor.v1.Predictor", "inference.GRPCInferenceService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::NotServing as i32, "{service}");
    }
    let mut client = PredictorClient::new(channel.clone());
    let ride = Ride { ride_id: "r".into(), pu_location_id: 1, do_location_id: 2, trip_distance: 3.0, event_time_ms: 0 };
    let status = client.predict(pb::PredictRequest { ride: Some(ride) }).await.expect_err("no model");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let (code, _) = http_get(format!("{}/readyz", server.url)).await;
    assert_eq!(code, 503);
    let (code, _) = http_get(format!("{}/healthz", server.url)).await;
    assert_eq!(code, 200);
    // Reflection lists the services.
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies =
        reflection.server_reflection_info(futures::stream::iter(vec![request])).await.expect("reflection").into_inner();
    let reply = replies.message().await.expect("reply").expect("one reply");
    let names = format!("{:?}", reply.message_response);
    for name in ["lightops.predictor.v1.Predictor", "inference.GRPCInferenceService", "grpc.health.v1.Health"] {
        assert!(names.contains(name), "{name} missing from {names}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_artifact_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (artifact, _) = sample_model(dir.path());
    let text = std::fs::read_to_string(&artifact).expect("read");
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, text.replacen("\"intercept\": ", "\"intercept\": 1", 1)).expect("write");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = lightops_predictor::Config {
        model: tampered.display().to_string(),
        registry: None,
        log: None,
        max_body_bytes: 1 << 20,
        log_flush_timeout: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(1),
    };
    let error = lightops_predictor::serve(config, listener, std::future::pending()).await.expect_err("corrupt");
    assert!(error.to_string().contains("checksum mismatch"), "{error}");
}
