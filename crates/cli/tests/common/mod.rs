//! Helpers shared by the CLI's process-level tests: the lightops binary, services started as
//! real processes on ephemeral ports, and moto's server.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    let deadline = Instant::now() + Duration::from_secs(20);
    runtime().block_on(async {
        loop {
            if let Ok(channel) = tonic::transport::Channel::from_shared(url.to_owned()).expect("url").connect().await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
                if let Ok(reply) = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await
                    && reply.into_inner().status == serving
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "service at {url} never became SERVING");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
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
