//! Helpers shared by the CLI's process-level tests: the lightops binary, services started as
//! real processes on ephemeral ports, moto's server, and the sample months as rides.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lightops_api::common::v1::Ride;
use lightops_api::predictor::v1 as predictor;
use lightops_ml::FeatureSpec;
use lightops_ml::data::KeyColumn;
use tonic::transport::Channel;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn sample(month: &str) -> String {
    root().join(format!("samples/green_sample_{month}.parquet")).display().to_string()
}

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `lightops serve registry` on an ephemeral port and returns it with its URL.
pub fn start_registry(home: &Path, extra: &[&str], env: &[(&str, String)]) -> (Process, String) {
    start_service("registry", home, extra, env)
}

/// Starts `lightops serve SERVICE` on an ephemeral port and returns it with its URL (read from
/// the first line the service prints on stderr).
pub fn start_service(service: &str, home: &Path, extra: &[&str], env: &[(&str, String)]) -> (Process, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lightops"));
    command
        .args(["serve", service, "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("LIGHTOPS_HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn registry");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let first = lines.next().expect("a line").expect("utf8");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_owned();
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Process(child), url)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Polls grpc.health.v1 until the overall status is SERVING.
pub fn wait_serving(url: &str) {
    let serving = runtime().block_on(lightops_runtime::wait_serving(url, Duration::from_secs(20)));
    assert!(serving, "service at {url} never became SERVING");
}

pub fn lightops(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lightops")).args(args).env("LIGHTOPS_HOME", home).output().expect("run lightops")
}

pub fn json_of(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// moto's S3/Kinesis server on an ephemeral port, stopped when dropped.
pub fn start_moto() -> Option<(Process, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = match Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            assert!(std::env::var("LIGHTOPS_REQUIRE_MOTO").as_deref() != Ok("1"), "moto_server: {e}");
            eprintln!("moto_server not available ({e}); skipping the S3 variant");
            return None;
        }
    };
    let process = Process(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((process, format!("http://127.0.0.1:{port}")))
}

/// A month's rides (with ride ids `<month>-<row>` and pickup times) and their actual durations.
pub fn rides(month: &str) -> (Vec<Ride>, Vec<f64>) {
    let file = if month == "2020-06" {
        "green_sample_2020-06.csv.gz".to_owned()
    } else {
        format!("green_sample_{month}.parquet")
    };
    let path = root().join("samples").join(file);
    let trips = lightops_ml::data::read_trips(&path, &FeatureSpec::default()).expect("read sample");
    let ids = |column: &KeyColumn| match column {
        KeyColumn::Int(values) => values.clone(),
        KeyColumn::Str(_) => panic!("integer zones"),
    };
    let (pu, do_) = (ids(&trips.keys[0]), ids(&trips.keys[1]));
    let rides = (0..trips.len())
        .map(|i| Ride {
            ride_id: format!("{month}-{i}"),
            pu_location_id: pu[i],
            do_location_id: do_[i],
            trip_distance: trips.numeric[0][i],
            event_time_ms: trips.pickup_us[i] / 1000,
        })
        .collect();
    (rides, trips.duration.clone())
}

pub async fn connect(url: &str) -> Channel {
    Channel::from_shared(url.to_owned()).expect("url").connect().await.expect("connect")
}

pub fn replay(url: &str, rides: &[Ride]) {
    runtime().block_on(async {
        let mut client = predictor::predictor_client::PredictorClient::new(connect(url).await);
        let messages: Vec<predictor::PredictBatchRequest> =
            rides.chunks(200).map(|c| predictor::PredictBatchRequest { rides: c.to_vec() }).collect();
        let mut answers = client.predict_stream(futures::stream::iter(messages)).await.expect("stream").into_inner();
        let mut answered = 0;
        while let Some(message) = answers.message().await.expect("answer") {
            answered += message.predictions.len();
        }
        assert_eq!(answered, rides.len());
    });
}

pub fn signal(process: &Process, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &process.0.id().to_string()]).status().expect("kill");
    assert!(status.success(), "kill -{name}");
}

/// Waits for a process to exit on its own (after SIGTERM).
pub fn wait_exit(mut process: Process) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = process.0.try_wait().expect("try_wait") {
            assert!(status.success(), "exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "process did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn kill(process: Process) {
    let mut process = process;
    let _ = process.0.kill();
    let _ = process.0.wait();
}

pub fn train_and_register(home: &Path, url: &str) -> serde_json::Value {
    json_of(&lightops(
        home,
        &[
            "train",
            "--train",
            &sample("2022-01"),
            "--val",
            &sample("2022-02"),
            "--json",
            "--registry",
            url,
            "--experiment",
            "nyc-taxi-experiment",
            "--register-as",
            "trip_duration",
            "--alias",
            "staging",
        ],
    ))
}
