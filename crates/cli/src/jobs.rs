//! `lightops jobs …`: training jobs on a trainer, from a terminal or a CronJob.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use lightops_api::trainer::v1 as pb;
use pb::trainer_client::TrainerClient;
use serde_json::json;
use tonic::transport::Channel;

use crate::cli::{ExecutorArg, JobsArgs, JobsCommand};

pub fn run(args: JobsArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let channel = Channel::from_shared(args.trainer.clone())
            .with_context(|| format!("--trainer {}: not a URL", args.trainer))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| {
                format!("--trainer {}: cannot connect (is `lightops serve trainer` running?)", args.trainer)
            })?;
        let mut trainer = TrainerClient::new(channel);
        let status = |s: tonic::Status| anyhow!("{}", s.message());
        match args.command {
            JobsCommand::Submit {
                train,
                val,
                experiment,
                register_as,
                alias,
                min_improvement,
                executor,
                tags,
                wait,
            } => {
                let spec = pb::JobSpec {
                    train,
                    val,
                    experiment,
                    register_as: register_as.unwrap_or_default(),
                    alias: alias.unwrap_or_default(),
                    promotion: Some(pb::PromotionPolicy { metric: "rmse".into(), min_improvement }),
                    executor: match executor {
                        None => pb::Executor::Unspecified,
                        Some(ExecutorArg::InProcess) => pb::Executor::InProcess,
                        Some(ExecutorArg::Kubernetes) => pb::Executor::Kubernetes,
                    } as i32,
                    tags: tags.into_iter().collect(),
                    ..Default::default()
                };
                let job =
                    trainer.submit_job(pb::SubmitJobRequest { spec: Some(spec) }).await.map_err(status)?.into_inner();
                if !args.json {
                    eprintln!("submitted job {}", job.job_id);
                }
                if !wait {
                    print_job(&job, args.json);
                    return Ok(());
                }
                let job = follow(&mut trainer, &job.job_id, args.json).await?;
                print_job(&job, args.json);
                if job.state != pb::JobState::Succeeded as i32 {
                    bail!("job {} ended {}: {}", job.job_id, state_name(job.state), job.reason);
                }
            }
            JobsCommand::List { limit } => {
                let jobs =
                    trainer.list_jobs(pb::ListJobsRequest { state: 0, limit }).await.map_err(status)?.into_inner().jobs;
                if args.json {
                    println!("{}", serde_json::to_string(&jobs.iter().map(job_json).collect::<Vec<_>>())?);
                } else {
                    println!("{:<32}  {:<9}  {:>7}  {:>9}  reason", "job", "state", "version", "rmse");
                    for job in &jobs {
                        let rmse = job.validation.as_ref().map_or("-".into(), |v| format!("{:.5}", v.rmse));
                        println!(
                            "{:<32}  {:<9}  {:>7}  {:>9}  {}",
                            job.job_id,
                            state_name(job.state),
                            job.model_version,
                            rmse,
                            job.reason
                        );
                    }
                }
            }
            JobsCommand::Watch { job_id } => {
                let job = follow(&mut trainer, &job_id, args.json).await?;
                print_job(&job, args.json);
            }
            JobsCommand::Cancel { job_id } => {
                let job = trainer.cancel_job(pb::CancelJobRequest { job_id }).await.map_err(status)?.into_inner();
                print_job(&job, args.json);
            }
        }
        Ok(())
    })
}

/// Prints the job's events (to stderr) until it ends; returns the final job.
async fn follow(trainer: &mut TrainerClient<Channel>, job_id: &str, json: bool) -> anyhow::Result<pb::Job> {
    let mut events = trainer
        .watch_job(pb::WatchJobRequest { job_id: job_id.to_owned() })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    while let Some(event) = events.message().await.map_err(|s| anyhow!("{}", s.message()))? {
        if !json {
            let step = pb::Step::try_from(event.step).map_or("?", |s| s.as_str_name());
            eprintln!("  {:<16} {}", step.trim_start_matches("STEP_"), event.message);
        }
    }
    Ok(trainer
        .get_job(pb::GetJobRequest { job_id: job_id.to_owned() })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner())
}

fn state_name(state: i32) -> &'static str {
    pb::JobState::try_from(state).map_or("?", |s| s.as_str_name().trim_start_matches("JOB_STATE_"))
}

fn job_json(job: &pb::Job) -> serde_json::Value {
    json!({
        "job_id": job.job_id,
        "state": state_name(job.state),
        "reason": job.reason,
        "run_id": job.run_id,
        "model_version": job.model_version,
        "rmse": job.validation.as_ref().map(|v| v.rmse),
        "promoted": job.promotion.as_ref().map(|p| p.promoted),
        "promotion": job.promotion.as_ref().map(|p| p.reason.clone()),
        "kubernetes_job": job.kubernetes_job,
    })
}

fn print_job(job: &pb::Job, json: bool) {
    if json {
        println!("{}", job_json(job));
        return;
    }
    println!("job {}  {}", job.job_id, state_name(job.state));
    if !job.reason.is_empty() && job.state != pb::JobState::Succeeded as i32 {
        println!("  reason     {}", job.reason);
    }
    if !job.run_id.is_empty() {
        println!("  run        {}", job.run_id);
    }
    if job.model_version > 0 {
        println!("  version    {}", job.model_version);
    }
    if let Some(validation) = &job.validation {
        println!("  val RMSE   {:.5}", validation.rmse);
    }
    if let Some(promotion) = &job.promotion {
        println!("  promotion  {}", promotion.reason);
    }
}
