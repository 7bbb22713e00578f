//! The monitor as users run it, with the predictor and the registry as real processes: rides of
//! 2022-03, 2022-06 and 2020-06 replayed through the predictor with their own event times, the
//! monitor's per-month reports and drift alert, actuals joined for RMSE, a malformed record sent
//! to the dead-letter location, and a monitor killed mid-stream that counts every ride once.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Process, connect, json_of, kill, lightops, replay, rides, runtime, sample, start_moto, start_registry,
    start_service, train_and_register, wait_serving,
};
use lightops_api::monitor::v1 as pb;
use pb::monitor_client::MonitorClient;

fn status(url: &str) -> pb::MonitorStatus {
    runtime().block_on(async {
        MonitorClient::new(connect(url).await).get_status(pb::GetStatusRequest {}).await.expect("status").into_inner()
    })
}

/// Waits until the monitor has counted `records`.
fn wait_records(url: &str, records: u64) -> pb::MonitorStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = status(url);
        if status.records >= records {
            return status;
        }
        assert!(Instant::now() < deadline, "monitor counted {} of {records} records", status.records);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn report(url: &str, window: &str) -> pb::WindowReport {
    runtime().block_on(async {
        MonitorClient::new(connect(url).await)
            .get_report(pb::GetReportRequest { window: window.into() })
            .await
            .expect("report")
            .into_inner()
    })
}

/// Every ride_id in the archive, with how often it is there.
fn archived_ride_ids(archive: &Path) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    let mut pending = vec![archive.join("predictions")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("archive dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let bytes = std::fs::read(&path).expect("read");
                for record in lightops_monitor::archive::from_parquet(&bytes).expect("parquet") {
                    *counts.entry(record.ride_id).or_insert(0) += 1;
                }
            }
        }
    }
    counts
}

fn start_monitor(home: &Path, registry: &str, source: &str, env: &[(&str, String)]) -> (Process, String) {
    let archive = home.join("archive").display().to_string();
    let args =
        ["--registry", registry, "--source", source, "--archive", &archive, "--min-rows", "100", "--settle", "500ms"];
    let (process, url) = start_service("monitor", home, &args, env);
    wait_serving(&url);
    (process, url)
}

/// The workshop's months through predictor and monitor; `source` is the log the predictor writes
/// and the monitor reads (a directory or kinesis://STREAM).
fn months_through_the_loop(home: &Path, sink: &str, env: &[(&str, String)]) {
    let (_registry, registry_url) = start_registry(home, &[], env);
    wait_serving(&registry_url);
    let trained = train_and_register(home, &registry_url);
    assert_eq!(trained["model_version"], "1");
    let predictor_args = ["--model", "models:/trip_duration@staging", "--registry", &registry_url, "--log-sink", sink];
    let (_predictor, predictor_url) = start_service("predictor", home, &predictor_args, env);
    wait_serving(&predictor_url);
    let (monitor, monitor_url) = start_monitor(home, &registry_url, sink, env);

    let (march, march_actual) = rides("2022-03");
    let (june, _) = rides("2022-06");
    let (covid, _) = rides("2020-06");
    // March, then half of June; the monitor is killed; the rest of June and 2020-06 arrive while
    // it is down; a new monitor picks up where the archive and the saved position say.
    replay(&predictor_url, &march);
    let half = june.len() / 2;
    replay(&predictor_url, &june[..half]);
    wait_records(&monitor_url, march.len() as u64);
    kill(monitor);
    replay(&predictor_url, &june[half..]);
    replay(&predictor_url, &covid);
    let (_monitor, monitor_url) = start_monitor(home, &registry_url, sink, env);
    let total = (march.len() + june.len() + covid.len()) as u64;
    let status = wait_records(&monitor_url, total);
    std::thread::sleep(Duration::from_secs(1));
    let status_later = self::status(&monitor_url);
    assert_eq!(status_later.records, total, "every ride counted once (status {status:?})");

    // The archive holds each ride_id exactly once.
    let archived = archived_ride_ids(&home.join("archive"));
    assert_eq!(archived.len() as u64, total);
    let repeated: Vec<_> = archived.iter().filter(|(_, n)| **n > 1).take(3).collect();
    assert!(repeated.is_empty(), "archived more than once: {repeated:?}");

    // Actuals for March, from a CSV, joined by ride_id.
    let csv = home.join("march-actuals.csv");
    let mut text = String::from("ride_id,duration\n");
    for (ride, duration) in march.iter().zip(&march_actual) {
        text.push_str(&format!("{},{duration}\n", ride.ride_id));
    }
    std::fs::write(&csv, text).expect("write actuals");
    let sent = json_of(&lightops(
        home,
        &["monitor", "actuals", csv.to_str().expect("utf8"), "--monitor", &monitor_url, "--json"],
    ));
    assert_eq!(sent["matched"], march.len(), "{sent}");

    // Per-month reports against v1's reference (the validation month, 2022-02).
    let march_report = report(&monitor_url, "2022-03");
    // Rides are windowed by their own pickup time: a few in each TLC file are from the month
    // before or after.
    let in_march = march.iter().filter(|r| (1_646_092_800_000..1_648_771_200_000).contains(&r.event_time_ms)).count();
    assert!(in_march > march.len() * 99 / 100);
    assert_eq!(march_report.rows, in_march as u64);
    assert_eq!(march_report.reference, "trip_duration/1");
    assert_eq!(march_report.columns.len(), 4, "{march_report:?}");
    let quality = march_report.quality.expect("RMSE once actuals arrived");
    assert_eq!(quality.rows, in_march as u64);
    assert!(quality.rmse > 5.0 && quality.rmse < 12.0, "RMSE {}", quality.rmse);
    // With the model trained on 2022-01 (reference: its validation month), only 2020-06 drifts,
    // as on the full months; the prediction column drifts with it.
    let drifted = |report: &pb::WindowReport, column: &str| {
        report.columns.iter().find(|c| c.column == column).map(|c| c.drifted).expect("column")
    };
    let june_report = report(&monitor_url, "2022-06");
    let covid_report = report(&monitor_url, "2020-06");
    for report in [&march_report, &june_report] {
        assert!(!report.dataset_drift, "{} does not drift: {:?}", report.window, report.columns);
    }
    assert!(covid_report.dataset_drift && drifted(&covid_report, "prediction"), "{covid_report:?}");
    assert!(covid_report.drifted_columns > march_report.drifted_columns);

    // One alert per drifted window, each once (the restart did not raise them again).
    let deadline = Instant::now() + Duration::from_secs(30);
    let expected: Vec<&pb::WindowReport> =
        [&march_report, &june_report, &covid_report].into_iter().filter(|r| r.dataset_drift).collect();
    let alerts = loop {
        let alerts = runtime().block_on(async {
            let mut stream = MonitorClient::new(connect(&monitor_url).await)
                .watch_alerts(pb::WatchAlertsRequest { replay: true })
                .await
                .expect("alerts")
                .into_inner();
            let mut alerts = Vec::new();
            while let Ok(Ok(Some(alert))) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
                alerts.push(alert);
            }
            alerts
        });
        if alerts.len() >= expected.len() || Instant::now() > deadline {
            break alerts;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut windows: Vec<&str> = alerts.iter().map(|a| a.window.as_str()).collect();
    windows.sort_unstable();
    let mut want: Vec<&str> = expected.iter().map(|r| r.window.as_str()).collect();
    want.sort_unstable();
    assert_eq!(windows, want, "{alerts:?}");
    assert_eq!(windows, ["2020-06"]);

    // `lightops drift` over the archive (what a CronJob runs against S3) agrees with the monitor.
    let artifact = trained["artifact"].as_str().expect("artifact path");
    let archive = home.join("archive").display().to_string();
    let offline = json_of(&lightops(
        home,
        &[
            "drift",
            "--reference",
            artifact,
            "--archive",
            &archive,
            "--from",
            "2020-06-01",
            "--to",
            "2020-06-30",
            "--json",
        ],
    ));
    assert_eq!(offline["rows"], covid_report.rows);
    assert_eq!(offline["dataset_drift"], true);
    for (column, reported) in offline["columns"].as_array().expect("columns").iter().zip(&covid_report.columns) {
        assert_eq!(column["column"], reported.column.as_str());
        assert_eq!(column["score"].as_f64(), Some(reported.score), "{column}");
    }
    assert!(alerts.iter().all(|a| a.kind == "dataset_drift"));
}

#[test]
fn local_log_months_drift_actuals_and_a_killed_monitor() {
    let home = tempfile::tempdir().expect("tempdir");
    let logs = home.path().join("logs");
    months_through_the_loop(home.path(), logs.to_str().expect("utf8"), &[]);
}

#[test]
fn kinesis_months_drift_actuals_and_a_killed_monitor() {
    let Some((_moto, endpoint)) = start_moto() else { return };
    let env = vec![
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ];
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new("test", "test", None, None, "tests"))
        .build();
    let client = aws_sdk_kinesis::Client::from_conf(config);
    runtime().block_on(client.create_stream().stream_name("predictions").shard_count(2).send()).expect("stream");
    let home = tempfile::tempdir().expect("tempdir");
    months_through_the_loop(home.path(), "kinesis://predictions", &env);
}

#[test]
fn malformed_records_go_to_the_dead_letter_location() {
    let home = tempfile::tempdir().expect("tempdir");
    let logs = home.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let good: lightops_predlog::PredictionRecord = lightops_predlog::PredictionRecord {
        schema: 1,
        ride_id: "good-1".into(),
        event_time_ms: Some(1_646_092_800_000),
        received_at_ms: 1_646_092_800_000,
        features: lightops_predlog::RideFeatures { pu_location_id: 43, do_location_id: 151, trip_distance: 1.5 },
        prediction: 9.5,
        model_name: "trip_duration".into(),
        model_version: "1".into(),
        latency_us: 12,
    };
    let mut wrong_schema = serde_json::to_value(&good).expect("json");
    wrong_schema["schema"] = serde_json::json!(99);
    let mut second = good.clone();
    second.ride_id = "good-2".into();
    let segment = format!(
        "{}\n{{not json\n{}\n{}\n",
        serde_json::to_string(&good).expect("json"),
        wrong_schema,
        serde_json::to_string(&second).expect("json")
    );
    std::fs::write(logs.join("predictions-00000000000000000001.jsonl"), segment).expect("segment");
    let archive = home.path().join("archive").display().to_string();
    let args = ["--source", logs.to_str().expect("utf8"), "--archive", &archive];
    let (_monitor, url) = start_service("monitor", home.path(), &args, &[]);
    wait_serving(&url);
    let status = wait_records(&url, 2);
    assert_eq!(status.records, 2, "the good records around the bad ones are counted");
    let dead = home.path().join("archive/dead-letter");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&dead).map(|d| d.count()).unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "two dead letters expected in {}", dead.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    let letters: Vec<String> = std::fs::read_dir(&dead)
        .expect("dead letters")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
        .collect();
    assert!(letters.iter().any(|l| l.contains("not json")), "{letters:?}");
    assert!(letters.iter().any(|l| l.contains("schema")), "{letters:?}");
}

/// An HTTP server answering POSTs with 200: returns its URL and a receiver for the bodies.
fn webhook_server() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        }
    });
    (url, rx)
}

#[test]
fn late_actuals_raise_quality_alerts_posted_to_the_webhook_with_one_retraining_per_cooldown() {
    let home = tempfile::tempdir().expect("tempdir");
    let logs = home.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    // 50 rides in March 2022 and 50 in April, all predicted at 10 minutes.
    let mut segment = String::new();
    for i in 0..100i64 {
        let month_start = if i < 50 { 1_646_092_800_000 } else { 1_648_771_200_000 };
        let record = lightops_predlog::PredictionRecord {
            schema: 1,
            ride_id: format!("r{i}"),
            event_time_ms: Some(month_start + i),
            received_at_ms: 1_646_092_800_000,
            features: lightops_predlog::RideFeatures { pu_location_id: 43, do_location_id: 151, trip_distance: 1.5 },
            prediction: 10.0,
            model_name: "trip_duration".into(),
            model_version: "1".into(),
            latency_us: 12,
        };
        segment.push_str(&serde_json::to_string(&record).expect("json"));
        segment.push('\n');
    }
    std::fs::write(logs.join("predictions-00000000000000000001.jsonl"), segment).expect("segment");
    let (_registry, registry) = start_registry(home.path(), &[], &[]);
    wait_serving(&registry);
    let (_trainer, trainer) = start_service("trainer", home.path(), &["--registry", &registry], &[]);
    wait_serving(&trainer);
    let (hook, posted) = webhook_server();
    let archive = home.path().join("archive").display().to_string();
    let (train, val) = (sample("2022-01"), sample("2022-02"));
    let args = [
        "--source",
        logs.to_str().expect("utf8"),
        "--archive",
        &archive,
        "--min-rows",
        "10",
        "--settle",
        "200ms",
        "--rmse-threshold",
        "5",
        "--webhook",
        &hook,
        "--trainer",
        &trainer,
        "--retrain-train",
        &train,
        "--retrain-val",
        &val,
    ];
    let (_monitor, url) = start_service("monitor", home.path(), &args, &[]);
    wait_serving(&url);
    wait_records(&url, 100);
    // The windows settle without actuals (no RMSE, no reference: no alert); then the actuals
    // arrive: every ride took 20 minutes, RMSE 10 > 5, in both months.
    std::thread::sleep(Duration::from_millis(600));
    let csv = home.path().join("actuals.csv");
    let rows: String = (0..100).map(|i| format!("r{i},20\n")).collect();
    std::fs::write(&csv, format!("ride_id,duration\n{rows}")).expect("csv");
    let sent = json_of(&lightops(
        home.path(),
        &["monitor", "actuals", csv.to_str().expect("utf8"), "--monitor", &url, "--json"],
    ));
    assert_eq!(sent["matched"], 100);
    let mut alerts: Vec<serde_json::Value> = (0..2)
        .map(|_| {
            let body = posted.recv_timeout(Duration::from_secs(20)).expect("an alert POSTed to the webhook");
            serde_json::from_str(&body).expect("JSON body")
        })
        .collect();
    alerts.sort_by_key(|a| a["window"].as_str().unwrap_or_default().to_owned());
    for (alert, window) in alerts.iter().zip(["2022-03", "2022-04"]) {
        assert_eq!((alert["kind"].as_str(), alert["window"].as_str()), (Some("quality"), Some(window)), "{alert}");
        assert_eq!(alert["rows"], 50);
        assert!(alert["message"].as_str().is_some_and(|m| m.contains("RMSE 10.0000 above 5")), "{alert}");
    }
    // One retraining request; the second alert fell within the cooldown.
    let jobs: Vec<&str> =
        alerts.iter().filter_map(|a| a["retraining_job_id"].as_str()).filter(|j| !j.is_empty()).collect();
    assert_eq!(jobs.len(), 1, "{alerts:?}");
    let job = json_of(&lightops(home.path(), &["jobs", "watch", jobs[0], "--trainer", &trainer, "--json"]));
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    let report = report(&url, "2022-03");
    assert_eq!(report.quality.map(|q| (q.rows, q.rmse)), Some((50, 10.0)));
}
