//! The registry as users run it: `lightops serve registry` as a real process, `lightops train
//! --registry …` and `lightops models …` against it; artifacts on local disk and on S3 (moto's
//! server, started and stopped here).

mod common;

use common::{json_of, lightops, runtime, start_moto, start_registry, train_and_register, wait_serving};
use lightops_api::registry::v1 as pb;

#[test]
fn train_registers_versions_and_models_commands_work() {
    let home = tempfile::tempdir().expect("tempdir");
    let (_server, url) = start_registry(home.path(), &[], &[]);
    wait_serving(&url);

    let first = train_and_register(home.path(), &url);
    assert_eq!(first["model_version"], "1");
    let second = train_and_register(home.path(), &url);
    assert_eq!(second["model_version"], "2");
    assert_ne!(first["run_id"], second["run_id"]);

    // The contract: {"run_id":…,"source":…,"version":…}.
    let resolved =
        json_of(&lightops(home.path(), &["models", "resolve", "models:/trip_duration@staging", "--registry", &url]));
    assert_eq!(resolved["version"], "2");
    assert_eq!(resolved["run_id"], second["run_id"]);
    let source = resolved["source"].as_str().expect("source");
    assert!(source.ends_with("/artifacts/model/model.json"), "{source}");
    // The registered file is the artifact lightops wrote, byte for byte.
    let local = std::fs::read(second["artifact"].as_str().expect("artifact")).expect("local artifact");
    assert_eq!(std::fs::read(source).expect("registered artifact"), local);

    json_of(&lightops(
        home.path(),
        &["models", "alias", "trip_duration", "champion", "1", "--json", "--registry", &url],
    ));
    json_of(&lightops(
        home.path(),
        &["models", "promote", "trip_duration", "1", "production", "--json", "--registry", &url],
    ));
    let by_stage =
        json_of(&lightops(home.path(), &["models", "resolve", "models:/trip_duration/Production", "--registry", &url]));
    assert_eq!(by_stage["version"], "1");
    let shown = json_of(&lightops(home.path(), &["models", "show", "trip_duration", "--json", "--registry", &url]));
    assert_eq!(shown["aliases"]["champion"], 1);
    assert_eq!(shown["versions"].as_array().map(Vec::len), Some(2));

    // The run has the feature spec as params and the metrics.
    runtime().block_on(async {
        let channel =
            tonic::transport::Channel::from_shared(url.clone()).expect("url").connect().await.expect("connect");
        let mut tracking = pb::tracking_client::TrackingClient::new(channel);
        let run_id = second["run_id"].as_str().expect("run id").to_owned();
        let run = tracking.get_run(pb::GetRunRequest { run_id }).await.expect("run").into_inner();
        assert_eq!(run.status, pb::RunStatus::Finished as i32);
        let param = |k: &str| run.params.iter().find(|p| p.key == k).map(|p| p.value.clone());
        assert_eq!(param("categorical").as_deref(), Some("PULocationID,DOLocationID"));
        let metric = |k: &str| run.metrics.iter().find(|m| m.key == k).map(|m| m.value);
        assert_eq!(metric("rmse"), second["rmse"].as_f64());
        assert_eq!(metric("train_rows"), Some(14864.0));
    });

    // Runs: search with the filter language, and one run in full.
    let runs = json_of(&lightops(
        home.path(),
        &[
            "runs",
            "list",
            "--filter",
            "metrics.train_rows = 14864 and params.solver = 'exact-ols'",
            "--order-by",
            "attributes.start_time ASC",
            "--json",
            "--registry",
            &url,
        ],
    ));
    let ids: Vec<&str> = runs.as_array().expect("array").iter().map(|r| r["run_id"].as_str().expect("id")).collect();
    assert_eq!(ids, [first["run_id"].as_str().expect("id"), second["run_id"].as_str().expect("id")]);
    let shown = json_of(&lightops(home.path(), &["runs", "show", ids[1], "--json", "--registry", &url]));
    assert_eq!(shown["artifacts"][0]["path"], "model/model.json");
    let bad = lightops(home.path(), &["runs", "list", "--filter", "metrics.rmse ~ 3", "--registry", &url]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("filter: at column 14"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // Errors: unknown model, registry down.
    let missing = lightops(home.path(), &["models", "resolve", "models:/nope@staging", "--registry", &url]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("registered model `nope`")
            || String::from_utf8_lossy(&missing.stderr).contains("alias `staging` of model `nope` not found")
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let down = lightops(home.path(), &["models", "list", "--registry", &format!("http://127.0.0.1:{port}")]);
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("cannot connect"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}

fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "tests"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[test]
fn artifacts_round_trip_through_s3_and_tampering_is_caught() {
    let Some((_moto, endpoint)) = start_moto() else { return };
    let s3 = s3_client(&endpoint);
    runtime().block_on(async { s3.create_bucket().bucket("mlflow-artifacts").send().await.expect("create bucket") });

    let home = tempfile::tempdir().expect("tempdir");
    let aws_env = [
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ];
    let (_server, url) = start_registry(home.path(), &["--artifact-root", "s3://mlflow-artifacts/lightops"], &aws_env);
    wait_serving(&url);
    let trained = train_and_register(home.path(), &url);
    let resolved =
        json_of(&lightops(home.path(), &["models", "resolve", "models:/trip_duration@staging", "--registry", &url]));
    let source = resolved["source"].as_str().expect("source").to_owned();
    let key = source
        .strip_prefix("s3://mlflow-artifacts/")
        .unwrap_or_else(|| panic!("not in the bucket: {source}"))
        .to_owned();
    assert!(key.starts_with("lightops/"), "{key}");

    let local = std::fs::read(trained["artifact"].as_str().expect("artifact")).expect("local artifact");
    runtime().block_on(async {
        let object = s3.get_object().bucket("mlflow-artifacts").key(&key).send().await.expect("object in S3");
        let body = object.body.collect().await.expect("body").into_bytes();
        assert_eq!(body.as_ref(), local.as_slice(), "byte-identical in S3");

        // Through the registry: same bytes, sha256 as recorded.
        let channel =
            tonic::transport::Channel::from_shared(url.clone()).expect("url").connect().await.expect("connect");
        let mut artifacts = pb::artifacts_client::ArtifactsClient::new(channel);
        let run_id = trained["run_id"].as_str().expect("run").to_owned();
        let download = pb::DownloadRequest { run_id: run_id.clone(), path: "model/model.json".into() };
        let mut stream = artifacts.download(download.clone()).await.expect("download").into_inner();
        let mut received = Vec::new();
        while let Some(chunk) = stream.message().await.expect("chunk") {
            received.extend_from_slice(&chunk.data);
        }
        assert_eq!(received, local);
        let listed = artifacts.list(pb::ListArtifactsRequest { run_id }).await.expect("list").into_inner().files;
        {
            use sha2::Digest;
            assert_eq!(listed[0].sha256, hex::encode(sha2::Sha256::digest(&local)));
        }

        // Someone overwrites the object behind the registry's back.
        s3.put_object()
            .bucket("mlflow-artifacts")
            .key(&key)
            .body(b"{\"tampered\":true}".to_vec().into())
            .send()
            .await
            .expect("overwrite");
        let err = artifacts.download(download).await.expect_err("tampered");
        assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    });
}
