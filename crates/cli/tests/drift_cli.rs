//! `lightops drift` on TLC files, per the contract: one JSON object with one entry each for
//! PULocationID, DOLocationID, trip_distance and prediction.

mod common;

use common::{json_of, lightops, sample};

#[test]
fn drift_of_tlc_files_against_the_artifact_reference() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = home.path().join("model");
    let trained = json_of(&lightops(
        home.path(),
        &[
            "train",
            "--train",
            &sample("2022-01"),
            "--val",
            &sample("2022-02"),
            "--out",
            out.to_str().expect("utf8"),
            "--json",
        ],
    ));
    let artifact = trained["artifact"].as_str().expect("artifact");
    let covid = common::root().join("samples/green_sample_2020-06.csv.gz").display().to_string();
    let report = json_of(&lightops(home.path(), &["drift", "--reference", artifact, "--current", &covid, "--json"]));

    // A reader that goes away (`lightops drift … | head -1`) stops it quietly, without a panic.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lightops"))
        .args(["drift", "--reference", artifact, "--current", &covid])
        .env("LIGHTOPS_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn lightops drift");
    drop(child.stdout.take());
    let closed = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert!(!stderr.contains("panicked") && closed.status.code() != Some(101), "{:?}: {stderr}", closed.status);
    for key in ["rows", "dataset_drift", "drift_share", "drifted_columns", "columns"] {
        assert!(report.get(key).is_some(), "{key} missing from {report}");
    }
    let columns: Vec<&str> =
        report["columns"].as_array().expect("columns").iter().map(|c| c["column"].as_str().expect("name")).collect();
    assert_eq!(columns, ["PULocationID", "DOLocationID", "trip_distance", "prediction"]);
    assert_eq!(report["dataset_drift"], true, "{report}");
    assert_eq!(report["drift_share"], 0.5);
    let prediction = &report["columns"][3];
    assert_eq!((prediction["method"].as_str(), prediction["drifted"].as_bool()), (Some("wasserstein"), Some(true)));

    // A method per column, and a clear error for an unknown one.
    let psi = json_of(&lightops(
        home.path(),
        &["drift", "--reference", artifact, "--current", &sample("2022-03"), "--method", "trip_distance=psi", "--json"],
    ));
    assert_eq!(psi["columns"][2]["method"], "psi");
    let bad = lightops(
        home.path(),
        &["drift", "--reference", artifact, "--current", &sample("2022-03"), "--method", "x=nope"],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown method"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
