//! `lightops train` as a user runs it: a real process, real files, stdout and exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample(month: &str) -> String {
    root().join(format!("samples/green_sample_{month}.parquet")).display().to_string()
}

fn lightops(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lightops"))
        .args(args)
        .env("LIGHTOPS_HOME", home)
        .env_remove("LIGHTOPS_JSON")
        .output()
        .expect("run lightops")
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("bench/reference/expected_samples.json")).expect("expected");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn json_output_is_one_object_with_the_contract_fields() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = lightops(home.path(), &["train", "--train", &sample("2022-01"), "--val", &sample("2022-02"), "--json"]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(stdout.lines().count(), 1, "exactly one line: {stdout}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    let want = expected();
    for key in ["train_rows", "val_rows", "features"] {
        assert_eq!(summary[key], want[key], "{key}");
    }
    for key in ["train_rmse", "rmse"] {
        let (got, exp) = (summary[key].as_f64().expect("number"), want[key].as_f64().expect("number"));
        assert!(((got - exp) / exp).abs() < 1e-9, "{key}: {got} vs {exp}");
    }
    let artifact = PathBuf::from(summary["artifact"].as_str().expect("artifact path"));
    assert!(artifact.starts_with(home.path().join("models")), "default under LIGHTOPS_HOME: {}", artifact.display());
    let loaded = lightops_ml::Artifact::load(&artifact).expect("artifact loads and verifies");
    assert_eq!(loaded.content_sha256(), summary["sha256"].as_str().expect("sha"));
}

#[test]
fn human_output_summarises_and_out_dir_is_honoured() {
    let home = tempfile::tempdir().expect("tempdir");
    let out_dir = home.path().join("my-model");
    let out = lightops(
        home.path(),
        &[
            "train",
            "--train",
            &sample("2022-01"),
            "--val",
            &sample("2022-02"),
            "--out",
            out_dir.to_str().expect("utf8"),
            "--crossed",
            "PU_DO=PULocationID+DOLocationID",
            "--categorical",
            "",
        ],
    );
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    assert!(stdout.contains("val RMSE"), "{stdout}");
    let text = std::fs::read_to_string(root().join("bench/reference/expected_samples_pu_do.json")).expect("expected");
    let pu_do: serde_json::Value = serde_json::from_str(&text).expect("json");
    let features = format!("features     {} (rank {})", pu_do["features"], pu_do["rank"]);
    assert!(stdout.contains(&features), "PU_DO one-hot + distance, {features}: {stdout}");
    let model = lightops_ml::Artifact::load(&out_dir.join("model.json")).expect("artifact in --out");
    assert_eq!(model.body.feature_spec.crossed[0].name, "PU_DO");
}

#[test]
fn bad_input_exits_non_zero_naming_the_file() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = lightops(home.path(), &["train", "--train", "/no/such/file.parquet", "--val", &sample("2022-02")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: /no/such/file.parquet: No such file"), "{stderr}");

    let corrupt = home.path().join("corrupt.parquet");
    std::fs::write(&corrupt, b"PAR1 garbage").expect("write");
    let out =
        lightops(home.path(), &["train", "--train", corrupt.to_str().expect("utf8"), "--val", &sample("2022-02")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt.parquet: cannot read as parquet"));

    // Nothing listens on this port: the download fails and names the URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}/green_tripdata_2022-01.parquet");
    let out = lightops(home.path(), &["train", "--train", &url, "--val", &sample("2022-02")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("error: --train {url}: cannot download {url}")), "{stderr}");

    let out = lightops(
        home.path(),
        &["train", "--train", &sample("2022-01"), "--val", &sample("2022-02"), "--crossed", "PU_DO"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--crossed \"PU_DO\": expected NAME=COL1+COL2"));
}

#[test]
fn every_train_flag_has_help_and_an_env_var() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = lightops(home.path(), &["train", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf8");
    for env in [
        "LIGHTOPS_TRAIN",
        "LIGHTOPS_VAL",
        "LIGHTOPS_JSON",
        "LIGHTOPS_OUT",
        "LIGHTOPS_SPEC",
        "LIGHTOPS_SOLVER",
        "LIGHTOPS_HOME",
    ] {
        assert!(help.contains(&format!("[env: {env}")), "{env} missing from:\n{help}");
    }
}
