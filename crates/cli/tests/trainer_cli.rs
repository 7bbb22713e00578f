//! The trainer as users run it: `lightops serve trainer` and `lightops serve registry` as real
//! processes, jobs submitted and watched over gRPC, the promotion policy, failures and
//! cancellation; and `lightops train` run exactly as a Kubernetes Job would run it, read back by
//! the trainer's completion code.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{connect, root, runtime, sample, start_registry, start_service, wait_serving};
use lightops_api::registry::v1 as registry;
use lightops_api::trainer::v1 as pb;
use pb::trainer_client::TrainerClient;
use tonic::transport::Channel;

fn spec(train: &[String], val: &str, alias: &str, min_improvement: f64) -> pb::JobSpec {
    pb::JobSpec {
        train: train.to_vec(),
        val: val.to_owned(),
        experiment: "nyc-taxi-experiment".into(),
        register_as: "trip_duration".into(),
        alias: alias.into(),
        promotion: Some(pb::PromotionPolicy { metric: "rmse".into(), min_improvement }),
        tags: [("reason".to_owned(), "test".to_owned())].into(),
        ..Default::default()
    }
}

/// Submits a job and watches it to its end; returns the final job and the steps seen.
async fn run_job(trainer: &mut TrainerClient<Channel>, spec: pb::JobSpec) -> (pb::Job, Vec<pb::Step>) {
    let job = trainer.submit_job(pb::SubmitJobRequest { spec: Some(spec) }).await.expect("submit").into_inner();
    let steps = watch_steps(trainer, &job.job_id).await;
    let job = trainer.get_job(pb::GetJobRequest { job_id: job.job_id }).await.expect("get").into_inner();
    (job, steps)
}

async fn watch_steps(trainer: &mut TrainerClient<Channel>, job_id: &str) -> Vec<pb::Step> {
    let mut events =
        trainer.watch_job(pb::WatchJobRequest { job_id: job_id.to_owned() }).await.expect("watch").into_inner();
    let mut steps = Vec::new();
    // The stream ends after the terminal event; the timeout catches a hang.
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = events.message().await.expect("event") {
            let step = pb::Step::try_from(event.step).expect("step");
            if steps.last() != Some(&step) {
                steps.push(step);
            }
        }
    })
    .await
    .expect("the watch ended in time");
    steps
}

fn state(job: &pb::Job) -> pb::JobState {
    pb::JobState::try_from(job.state).expect("state")
}

async fn staging_version(registry_url: &str) -> i64 {
    let mut client = registry::registry_client::RegistryClient::new(connect(registry_url).await);
    let uri = "models:/trip_duration@staging".to_owned();
    client.resolve(registry::ResolveRequest { uri }).await.expect("resolve").into_inner().version
}

#[test]
fn jobs_register_versions_and_move_the_alias_only_when_better() {
    let home = tempfile::tempdir().expect("tempdir");
    let (_registry, registry_url) = start_registry(home.path(), &[], &[]);
    wait_serving(&registry_url);
    let (_trainer, trainer_url) = start_service("trainer", home.path(), &["--registry", &registry_url], &[]);
    wait_serving(&trainer_url);
    runtime().block_on(async {
        let mut trainer = TrainerClient::new(connect(&trainer_url).await);
        let january = vec![sample("2022-01")];

        // 1. The first version takes the free alias.
        let (job, steps) = run_job(&mut trainer, spec(&january, &sample("2022-02"), "staging", 0.01)).await;
        assert_eq!(state(&job), pb::JobState::Succeeded, "{}", job.reason);
        for step in [pb::Step::Queued, pb::Step::Reading, pb::Step::Fitting, pb::Step::Evaluating, pb::Step::Uploading]
        {
            assert!(steps.contains(&step), "{step:?} missing from {steps:?}");
        }
        assert_eq!(steps.last(), Some(&pb::Step::Succeeded));
        assert_eq!(job.model_version, 1);
        let promotion = job.promotion.clone().expect("promotion decided");
        assert!(promotion.promoted, "{}", promotion.reason);
        assert_eq!(staging_version(&registry_url).await, 1);

        // The run is in the registry with params, metrics, the job id and the spec's tags.
        let mut tracking = registry::tracking_client::TrackingClient::new(connect(&registry_url).await);
        let run =
            tracking.get_run(registry::GetRunRequest { run_id: job.run_id.clone() }).await.expect("run").into_inner();
        let param = |k: &str| run.params.iter().find(|p| p.key == k).map(|p| p.value.clone());
        let tag = |k: &str| run.tags.iter().find(|t| t.key == k).map(|t| t.value.clone());
        assert_eq!(param("categorical").as_deref(), Some("PULocationID,DOLocationID"));
        let rmse = run.metrics.iter().find(|m| m.key == "rmse").expect("rmse").value;
        assert_eq!(Some(rmse), job.validation.as_ref().map(|v| v.rmse));
        assert_eq!(tag("lightops.job_id").as_deref(), Some(job.job_id.as_str()));
        assert_eq!(tag("reason").as_deref(), Some("test"));
        assert_eq!(tag("lightops.promotion").as_deref(), Some("promoted to staging"));

        // 2. The same model again is not 1% better: version 2 is registered, the alias stays.
        let (job, _) = run_job(&mut trainer, spec(&january, &sample("2022-02"), "staging", 0.01)).await;
        assert_eq!(state(&job), pb::JobState::Succeeded, "{}", job.reason);
        assert_eq!(job.model_version, 2);
        let promotion = job.promotion.clone().expect("promotion decided");
        assert!(!promotion.promoted, "{}", promotion.reason);
        assert_eq!((promotion.candidate, promotion.incumbent, promotion.incumbent_version), (rmse, Some(rmse), 1));
        assert_eq!(staging_version(&registry_url).await, 1, "the alias did not move");
        let run =
            tracking.get_run(registry::GetRunRequest { run_id: job.run_id.clone() }).await.expect("run").into_inner();
        let logged = |k: &str| run.metrics.iter().find(|m| m.key == k).map(|m| m.value);
        assert_eq!((logged("promotion.candidate"), logged("promotion.incumbent")), (Some(rmse), Some(rmse)));

        // 3. A policy that always promotes moves it.
        let (job, _) = run_job(&mut trainer, spec(&january, &sample("2022-02"), "staging", -1.0)).await;
        assert_eq!((job.model_version, staging_version(&registry_url).await), (3, 3));

        // 4. A missing data file fails the job with a reason naming it (and the watch ends).
        let missing = root().join("samples/green_sample_1999-01.parquet").display().to_string();
        let (job, steps) =
            run_job(&mut trainer, spec(std::slice::from_ref(&missing), &sample("2022-02"), "", 0.0)).await;
        assert_eq!(state(&job), pb::JobState::Failed);
        assert!(job.reason.contains("green_sample_1999-01.parquet"), "{}", job.reason);
        assert_eq!(steps.last(), Some(&pb::Step::Failed));

        // 5. Bad specs are refused naming the field.
        let status = trainer
            .submit_job(pb::SubmitJobRequest { spec: Some(spec(&january, "", "", 0.0)) })
            .await
            .expect_err("no val");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("spec.val"), "{}", status.message());
        let status = trainer
            .create_schedule(pb::CreateScheduleRequest {
                cron: "0 3 2 *".into(),
                spec: Some(spec(&january, &sample("2022-02"), "", 0.0)),
            })
            .await
            .expect_err("bad cron");
        assert!(status.message().starts_with("cron:"), "{}", status.message());

        // 6. Schedules: the course's monthly retraining, with months relative to the run date.
        let monthly = pb::CreateScheduleRequest {
            cron: "0 3 2 * *".into(),
            spec: Some(spec(
                &["data/green_tripdata_{month-2}.parquet".into()],
                "data/green_tripdata_{month-1}.parquet",
                "",
                0.0,
            )),
        };
        let schedule = trainer.create_schedule(monthly).await.expect("schedule").into_inner();
        assert!(schedule.next_run_ms > common_now_ms(), "next run is in the future");
        let listed = trainer.list_schedules(pb::ListSchedulesRequest {}).await.expect("list").into_inner();
        assert_eq!(listed.schedules.len(), 1);
        trainer.delete_schedule(pb::DeleteScheduleRequest { schedule_id: schedule.schedule_id }).await.expect("delete");
        let jobs = trainer.list_jobs(pb::ListJobsRequest::default()).await.expect("list jobs").into_inner().jobs;
        assert_eq!(jobs.len(), 4, "newest first");
        assert_eq!(state(&jobs[0]), pb::JobState::Failed);
    });

    // 7. The same from a terminal (what the chart's retraining CronJob runs).
    let submitted = common::json_of(&common::lightops(
        home.path(),
        &[
            "jobs",
            "submit",
            "--trainer",
            &trainer_url,
            "--train",
            &sample("2022-01"),
            "--val",
            &sample("2022-02"),
            "--register-as",
            "trip_duration",
            "--alias",
            "staging",
            "--min-improvement",
            "0.01",
            "--wait",
            "--json",
        ],
    ));
    assert_eq!(submitted["state"], "SUCCEEDED", "{submitted}");
    assert_eq!(submitted["model_version"], 4);
    assert_eq!(submitted["promoted"], false, "same data, same RMSE: not 1% better than version 3");
    let failed = common::lightops(
        home.path(),
        &[
            "jobs",
            "submit",
            "--trainer",
            &trainer_url,
            "--train",
            "nowhere.parquet",
            "--val",
            &sample("2022-02"),
            "--wait",
        ],
    );
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("nowhere.parquet"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
}

fn common_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

#[test]
fn queued_and_running_jobs_can_be_cancelled() {
    let home = tempfile::tempdir().expect("tempdir");
    let (_registry, registry_url) = start_registry(home.path(), &[], &[]);
    wait_serving(&registry_url);
    let (_trainer, trainer_url) =
        start_service("trainer", home.path(), &["--registry", &registry_url, "--concurrency", "1"], &[]);
    wait_serving(&trainer_url);
    // A FIFO as the training file: reading it blocks until someone writes, so the first job is
    // reliably still running when it is cancelled.
    let fifo = home.path().join("slow.parquet");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let fifo_name = fifo.display().to_string();
    runtime().block_on(async {
        let mut trainer = TrainerClient::new(connect(&trainer_url).await);
        let running = trainer
            .submit_job(pb::SubmitJobRequest {
                spec: Some(spec(std::slice::from_ref(&fifo_name), &sample("2022-02"), "", 0.0)),
            })
            .await
            .expect("submit")
            .into_inner();
        let queued = trainer
            .submit_job(pb::SubmitJobRequest { spec: Some(spec(&[sample("2022-01")], &sample("2022-02"), "", 0.0)) })
            .await
            .expect("submit")
            .into_inner();
        // Wait until the first is running (reading the FIFO).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let job =
                trainer.get_job(pb::GetJobRequest { job_id: running.job_id.clone() }).await.expect("get").into_inner();
            if state(&job) == pb::JobState::Running {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the first job never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let job = trainer
            .cancel_job(pb::CancelJobRequest { job_id: queued.job_id.clone() })
            .await
            .expect("cancel")
            .into_inner();
        assert_eq!(state(&job), pb::JobState::Cancelled);
        assert!(job.reason.contains("queued"), "{}", job.reason);
        let job = trainer
            .cancel_job(pb::CancelJobRequest { job_id: running.job_id.clone() })
            .await
            .expect("cancel")
            .into_inner();
        assert_eq!(state(&job), pb::JobState::Cancelled);
        let status =
            trainer.cancel_job(pb::CancelJobRequest { job_id: running.job_id.clone() }).await.expect_err("twice");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let status = trainer.cancel_job(pb::CancelJobRequest { job_id: "nope".into() }).await.expect_err("unknown");
        assert_eq!(status.code(), tonic::Code::NotFound);
    });
    // Release the blocked reader (its result is discarded).
    let _ = std::fs::write(&fifo, b"");
}

#[test]
fn train_run_as_a_kubernetes_job_reports_back() {
    let home = tempfile::tempdir().expect("tempdir");
    let (_registry, registry_url) = start_registry(home.path(), &[], &[]);
    wait_serving(&registry_url);
    let job_id = "k8sjob0001";
    let mut spec = spec(&[sample("2022-01")], &sample("2022-02"), "staging", 0.01);
    // A feature spec travels to the Job in LIGHTOPS_SPEC_JSON: exercise that too.
    spec.feature_spec = Some(lightops_api::common::v1::FeatureSpec {
        categorical: vec!["PULocationID".into(), "DOLocationID".into()],
        numerical: vec!["trip_distance".into()],
        target_min: 1.0,
        target_max: 60.0,
        ..Default::default()
    });
    // Exactly the argv the Kubernetes executor puts in the Job's container.
    let args = lightops_trainer::kube_executor::train_args(job_id, &spec, &registry_url);
    let args: Vec<&str> = args.iter().map(String::as_str).skip_while(|a| *a == "lightops").collect();
    let output = Command::new(env!("CARGO_BIN_EXE_lightops"))
        .args(&args)
        .envs(lightops_trainer::kube_executor::train_env(&spec))
        .env("LIGHTOPS_HOME", home.path())
        .output()
        .expect("run lightops train");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("--json output");
    assert_eq!(printed["model_version"], "1");
    runtime().block_on(async {
        // What the trainer does when the Job succeeds.
        let jobs = Arc::new(lightops_trainer::jobs::JobTable::default());
        let record = pb::Job { job_id: job_id.into(), spec: Some(spec.clone()), ..Default::default() };
        jobs.insert(record);
        lightops_trainer::kube_runner::complete(&jobs, &registry_url, job_id, &spec).await;
        let job = jobs.get(job_id).expect("job");
        assert_eq!(state(&job), pb::JobState::Succeeded, "{}", job.reason);
        assert_eq!(job.run_id, printed["run_id"].as_str().expect("run_id"));
        assert_eq!(job.model_version, 1);
        assert!(job.promotion.expect("decided").promoted);
        assert_eq!(staging_version(&registry_url).await, 1);
        assert_eq!(job.validation.expect("metrics").rmse, printed["rmse"].as_f64().expect("rmse"));
    });
}
