//! `lightops up`: the four services in one process print where they listen, serve, and stop
//! cleanly on Ctrl-C (SIGINT).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Process, wait_serving};

#[test]
fn up_serves_four_services_and_stops_on_ctrl_c() {
    let home = tempfile::tempdir().expect("tempdir");
    let any = "127.0.0.1:0";
    let stderr_path = home.path().join("up.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let child = Command::new(env!("CARGO_BIN_EXE_lightops"))
        .args(["up", "--registry", any, "--trainer", any, "--predictor", any, "--monitor", any])
        .env("LIGHTOPS_HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn lightops up");
    let mut process = Process(child);
    let stdout = process.0.stdout.take().expect("stdout");
    let urls: Vec<String> = BufReader::new(stdout)
        .lines()
        .take(4)
        .map(|line| {
            let line = line.expect("line");
            line.split_whitespace().find(|w| w.starts_with("http://")).expect("a URL per service").to_owned()
        })
        .collect();
    assert_eq!(urls.len(), 4);
    // Registry, trainer and monitor are SERVING; the predictor waits for a staging model, so
    // only its HTTP liveness is checked.
    for url in [&urls[0], &urls[1], &urls[3]] {
        wait_serving(url);
    }
    let health = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("{}/healthz", urls[2])])
        .output();
    if let Ok(output) = health {
        assert_eq!(String::from_utf8_lossy(&output.stdout), "200");
    }
    let status = Command::new("kill").args(["-INT", &process.0.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = process.0.try_wait().expect("try_wait") {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            assert!(status.success(), "lightops up exited with {status}; stderr:\n{stderr}");
            break;
        }
        assert!(Instant::now() < deadline, "lightops up did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
}
