//! `lightops demo`: the workshop's story end to end, against the four services running in this
//! process: train and register, serve, replay three months, monitor them, react to drift.
//!
//! By default it runs offline on the samples built into the binary (written to
//! `$LIGHTOPS_HOME/demo/data` on first use); `--data DIR` uses full TLC months from DIR.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lightops_api::common::v1::Ride;
use lightops_api::monitor::v1 as monitor;
use lightops_api::predictor::v1 as predictor;
use lightops_api::trainer::v1 as trainer;
use lightops_ml::FeatureSpec;
use lightops_ml::data::KeyColumn;
use tonic::transport::Channel;

use crate::cli::{DemoArgs, Global};
use crate::progress::Bars;
use crate::stack::{Ports, RetrainOn, Stack};

/// The samples, built in so the demo runs from anywhere, offline.
const SAMPLES: [(&str, &[u8]); 5] = [
    ("green_sample_2022-01.parquet", include_bytes!("../../../samples/green_sample_2022-01.parquet")),
    ("green_sample_2022-02.parquet", include_bytes!("../../../samples/green_sample_2022-02.parquet")),
    ("green_sample_2022-03.parquet", include_bytes!("../../../samples/green_sample_2022-03.parquet")),
    ("green_sample_2022-06.parquet", include_bytes!("../../../samples/green_sample_2022-06.parquet")),
    ("green_sample_2020-06.csv.gz", include_bytes!("../../../samples/green_sample_2020-06.csv.gz")),
];

/// The months the workshop monitored.
const MONTHS: [&str; 3] = ["2022-03", "2022-06", "2020-06"];

/// Data files for a month: the built-in sample or the full TLC file in `--data`.
struct Data {
    dir: PathBuf,
    full: bool,
}

impl Data {
    fn file(&self, month: &str) -> String {
        let ext = if month == "2020-06" { "csv.gz" } else { "parquet" };
        let prefix = if self.full { "green_tripdata" } else { "green_sample" };
        self.dir.join(format!("{prefix}_{month}.{ext}")).display().to_string()
    }
}

/// One month's line of the summary.
struct MonthResult {
    month: String,
    rows: u64,
    drift: bool,
    drifted: Vec<String>,
    rmse: Option<f64>,
    models: Vec<String>,
}

pub fn run(global: &Global, args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let home = args.home.clone().unwrap_or_else(|| global.home.join("demo"));
    if home.exists() {
        // A fresh story each time: the registry, log and archive of the last demo go.
        std::fs::remove_dir_all(&home).with_context(|| format!("clearing {}", home.display()))?;
    }
    let data = match &args.data {
        Some(dir) => Data { dir: dir.clone(), full: true },
        None => {
            let dir = home.join("data");
            std::fs::create_dir_all(&dir)?;
            for (name, bytes) in SAMPLES {
                std::fs::write(dir.join(name), bytes)
                    .with_context(|| format!("writing {}", dir.join(name).display()))?;
            }
            Data { dir, full: false }
        }
    };
    for month in ["2022-01", "2022-02"].iter().chain(&MONTHS) {
        let file = data.file(month);
        if !Path::new(&file).exists() {
            bail!(
                "--data {}: {file} is missing (the demo needs 2022-01, 2022-02, 2022-03, 2022-06 and 2020-06)",
                data.dir.display()
            );
        }
    }
    let bars = Bars::new(global.quiet);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;
        let ports = Ports { registry: any, trainer: any, predictor: any, monitor: any };
        let retrain = RetrainOn { train: vec![data.file("2022-02"), data.file("2022-03")], val: data.file("2022-06") };
        let stack = Stack::start(&home, ports, Some(retrain.clone())).await?;
        let story = story(&stack, &data, &retrain, &bars).await;
        let stopped = stack.stop().await;
        let results = story?;
        stopped?;
        println!();
        println!("## Summary");
        println!();
        println!("| month | rows | dataset drift | drifted columns | RMSE | served by |");
        println!("|---|---:|---|---|---:|---|");
        for r in &results {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                r.month,
                r.rows,
                if r.drift { "**yes**" } else { "no" },
                if r.drifted.is_empty() { "-".to_owned() } else { r.drifted.join(", ") },
                r.rmse.map_or("-".into(), |v| format!("{v:.4}")),
                r.models.join(", ")
            );
        }
        println!();
        println!(
            "demo finished in {:.1} s ({} data; state in {})",
            started.elapsed().as_secs_f64(),
            if data.full { "full TLC months" } else { "built-in samples" },
            home.display()
        );
        Ok(())
    })
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Channel::from_shared(url.to_owned())?.connect().await {
            Ok(channel) => return Ok(channel),
            Err(error) if Instant::now() > deadline => {
                return Err(error).with_context(|| format!("connecting to {url}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn step(number: u32, title: &str) {
    println!();
    println!("## {number}. {title}");
    println!();
}

/// Submits a job and follows it, printing its steps; returns the final job.
async fn run_job(
    trainer: &mut trainer::trainer_client::TrainerClient<Channel>,
    job_id: &str,
    bars: &Bars,
) -> anyhow::Result<trainer::Job> {
    let spinner = bars.spinner("training");
    let mut events = trainer.watch_job(trainer::WatchJobRequest { job_id: job_id.to_owned() }).await?.into_inner();
    while let Some(event) = events.message().await? {
        let name = trainer::Step::try_from(event.step).map_or("?", |s| s.as_str_name()).trim_start_matches("STEP_");
        spinner.set_message(format!("{name}: {}", event.message));
        spinner.suspend(|| println!("   {:<11} {}", name.to_lowercase(), event.message));
    }
    spinner.finish_and_clear();
    Ok(trainer.get_job(trainer::GetJobRequest { job_id: job_id.to_owned() }).await?.into_inner())
}

fn rides(file: &str, month: &str) -> anyhow::Result<(Vec<Ride>, Vec<f64>)> {
    let trips = lightops_ml::data::read_trips(Path::new(file), &FeatureSpec::default())?;
    let ids = |column: &KeyColumn| match column {
        KeyColumn::Int(values) => Ok(values.clone()),
        KeyColumn::Str(_) => bail!("{file}: location ids are not integers"),
    };
    let (pu, do_) = (ids(&trips.keys[0])?, ids(&trips.keys[1])?);
    let rides = (0..trips.len())
        .map(|i| Ride {
            ride_id: format!("{month}-{i}"),
            pu_location_id: pu[i],
            do_location_id: do_[i],
            trip_distance: trips.numeric[0][i],
            event_time_ms: trips.pickup_us[i] / 1000,
        })
        .collect();
    Ok((rides, trips.duration.clone()))
}

async fn wait_for_version(
    client: &mut predictor::predictor_client::PredictorClient<Channel>,
    version: i64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(serving) = client.get_model(predictor::GetModelRequest {}).await
            && serving.into_inner().model.is_some_and(|m| m.version == version.to_string())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the predictor did not switch to version {version} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn story(stack: &Stack, data: &Data, retrain: &RetrainOn, bars: &Bars) -> anyhow::Result<Vec<MonthResult>> {
    println!("# lightops demo: the workshop, end to end");
    println!();
    println!("registry  {}   (experiment tracking + model registry, SQLite)", stack.registry);
    println!("trainer   {}   (training jobs, promotion policy)", stack.trainer);
    println!("predictor {}   (gRPC + HTTP, follows models:/trip_duration@staging)", stack.predictor);
    println!("monitor   {}   (drift and quality per month, alerts, retraining)", stack.monitor);
    let mut trainer_client = trainer::trainer_client::TrainerClient::new(connect(&stack.trainer).await?);
    let mut predictor_client = predictor::predictor_client::PredictorClient::new(connect(&stack.predictor).await?);
    let mut monitor_client = monitor::monitor_client::MonitorClient::new(connect(&stack.monitor).await?);

    step(1, "Train on 2022-01, validate on 2022-02, register trip_duration v1 as staging");
    let spec = trainer::JobSpec {
        train: vec![data.file("2022-01")],
        val: data.file("2022-02"),
        experiment: "nyc-taxi-experiment".into(),
        register_as: "trip_duration".into(),
        alias: "staging".into(),
        promotion: Some(trainer::PromotionPolicy { metric: "rmse".into(), min_improvement: 0.01 }),
        ..Default::default()
    };
    let job = trainer_client.submit_job(trainer::SubmitJobRequest { spec: Some(spec) }).await?.into_inner();
    let job = run_job(&mut trainer_client, &job.job_id, bars).await?;
    if job.state != trainer::JobState::Succeeded as i32 {
        bail!("training failed: {}", job.reason);
    }
    let rmse = job.validation.as_ref().map_or(f64::NAN, |v| v.rmse);
    println!();
    println!("run {} in experiment nyc-taxi-experiment: validation RMSE {rmse:.4}", job.run_id);
    println!(
        "registered trip_duration version {}; staging: {}",
        job.model_version,
        job.promotion.map(|p| p.reason).unwrap_or_default()
    );

    step(2, "Serve it: the predictor follows models:/trip_duration@staging");
    wait_for_version(&mut predictor_client, job.model_version).await?;
    let serving = predictor_client.get_model(predictor::GetModelRequest {}).await?.into_inner();
    let model = serving.model.unwrap_or_default();
    println!(
        "predictor serves {} version {} (sha256 {}…)",
        model.name,
        model.version,
        &model.sha256[..12.min(model.sha256.len())]
    );
    let probe = Ride {
        ride_id: "ride_xyz".into(),
        pu_location_id: 100,
        do_location_id: 102,
        trip_distance: 30.0,
        event_time_ms: 0,
    };
    let answer = predictor_client.predict(predictor::PredictRequest { ride: Some(probe) }).await?.into_inner();
    println!(
        "the workshop's ride (PULocationID 100 → DOLocationID 102, 30 miles): {:.2} minutes",
        answer.prediction.map_or(f64::NAN, |p| p.duration)
    );

    step(3, "Replay 2022-03, 2022-06 and 2020-06 through PredictStream, then send the actual durations");
    let mut expected = 0u64;
    for month in MONTHS {
        let (rides, actual) = rides(&data.file(month), month)?;
        let bar = bars.counter(rides.len() as u64, &format!("replaying {month}"));
        let messages: Vec<predictor::PredictBatchRequest> =
            rides.chunks(500).map(|c| predictor::PredictBatchRequest { rides: c.to_vec() }).collect();
        let started = Instant::now();
        let mut answers = predictor_client.predict_stream(futures::stream::iter(messages)).await?.into_inner();
        let mut answered = 0u64;
        while let Some(message) = answers.message().await? {
            answered += message.predictions.len() as u64;
            bar.set_position(answered);
        }
        bar.finish_and_clear();
        let actuals: Vec<monitor::Actual> = rides
            .iter()
            .zip(&actual)
            .map(|(r, d)| monitor::Actual { ride_id: r.ride_id.clone(), duration: *d })
            .collect();
        let mut sent = monitor::IngestActualsResponse::default();
        for chunk in actuals.chunks(10_000) {
            let answer = monitor_client
                .ingest_actuals(monitor::IngestActualsRequest { actuals: chunk.to_vec() })
                .await?
                .into_inner();
            sent.matched += answer.matched;
            sent.pending += answer.pending;
        }
        expected += answered;
        println!(
            "{month}: {answered} rides predicted in {:.2} s ({:.0}/s); {} actual durations sent",
            started.elapsed().as_secs_f64(),
            answered as f64 / started.elapsed().as_secs_f64().max(1e-9),
            actuals.len()
        );
    }

    step(4, "The monitor's report for each month (drift against v1's reference: its validation month)");
    let deadline = Instant::now() + Duration::from_secs(60);
    let spinner = bars.spinner("waiting for the monitor to consume the prediction log");
    loop {
        let status = monitor_client.get_status(monitor::GetStatusRequest {}).await?.into_inner();
        if status.records >= expected {
            break;
        }
        if Instant::now() > deadline {
            bail!("the monitor counted {} of {expected} records within 60 s", status.records);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    spinner.finish_and_clear();
    let mut results = Vec::new();
    for month in MONTHS {
        let report = monitor_client.get_report(monitor::GetReportRequest { window: month.into() }).await?.into_inner();
        print!("{}", crate::monitor::report_text(&report));
        results.push(MonthResult {
            month: month.to_owned(),
            rows: report.rows,
            drift: report.dataset_drift,
            drifted: report.columns.iter().filter(|c| c.drifted).map(|c| c.column.clone()).collect(),
            rmse: report.quality.as_ref().map(|q| q.rmse),
            models: report.models.clone(),
        });
    }

    step(5, "Alerts: drift raises an alert, and the monitor asks the trainer to retrain");
    println!(
        "retraining spec: train on {}, validate on {}, take `staging` only if RMSE is ≥1% better",
        retrain.train.iter().map(|t| short(t)).collect::<Vec<_>>().join(" + "),
        short(&retrain.val)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let spinner = bars.spinner("waiting for the monitor's verdicts");
    let drifted: Vec<&MonthResult> = results.iter().filter(|r| r.drift).collect();
    let alerts = loop {
        let mut stream = monitor_client.watch_alerts(monitor::WatchAlertsRequest { replay: true }).await?.into_inner();
        let mut alerts = Vec::new();
        while let Ok(Ok(Some(alert))) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
            alerts.push(alert);
        }
        if alerts.len() >= drifted.len() || Instant::now() > deadline {
            break alerts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    spinner.finish_and_clear();
    if alerts.is_empty() {
        println!("no alert: no month drifted");
    }
    let mut retraining_job = None;
    for alert in &alerts {
        println!("ALERT {} {}: {}", alert.kind, alert.window, alert.message);
        if !alert.retraining_job_id.is_empty() {
            println!("      retraining job {} submitted to the trainer", alert.retraining_job_id);
            retraining_job.get_or_insert(alert.retraining_job_id.clone());
        }
    }

    if let Some(job_id) = retraining_job {
        step(6, "The retraining job, and the promotion policy's decision");
        let job = run_job(&mut trainer_client, &job_id, bars).await?;
        if job.state != trainer::JobState::Succeeded as i32 {
            println!("retraining failed: {}", job.reason);
        } else {
            let promotion = job.promotion.clone().unwrap_or_default();
            println!();
            println!(
                "trip_duration version {}: validation RMSE {:.4} vs version {}'s {:.4} → {}",
                job.model_version,
                promotion.candidate,
                promotion.incumbent_version,
                promotion.incumbent.unwrap_or(f64::NAN),
                if promotion.promoted { "promoted to staging" } else { "not promoted; staging stays" }
            );
            println!("({})", promotion.reason);
            let follow = if promotion.promoted { job.model_version } else { promotion.incumbent_version.max(1) };
            wait_for_version(&mut predictor_client, follow).await?;
            let verb = if promotion.promoted { "now serves" } else { "still serves" };
            println!("the predictor {verb} version {follow}");
        }
    }
    Ok(results)
}

fn short(path: &str) -> String {
    Path::new(path).file_name().map_or(path.to_owned(), |n| n.to_string_lossy().into_owned())
}
