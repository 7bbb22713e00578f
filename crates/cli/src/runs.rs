//! `lightops runs …`: tracked runs from a terminal. Tables for people, `--json` for scripts.

use anyhow::anyhow;
use lightops_api::registry::v1 as pb;
use serde_json::json;

use crate::cli::{RunsArgs, RunsCommand};
use crate::registry_client::with_registry;

const STATUSES: [&str; 6] = ["UNSPECIFIED", "RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

pub fn run(args: RunsArgs) -> anyhow::Result<()> {
    let registry_url = args.registry.clone();
    with_registry(&registry_url, async |client| {
        let status = |s: tonic::Status| anyhow!("{}", s.message());
        match args.command {
            RunsCommand::List { experiment, filter, order_by, limit } => {
                let by_name = pb::GetExperimentRequest { by: Some(pb::get_experiment_request::By::Name(experiment)) };
                let experiment = client.tracking.get_experiment(by_name).await.map_err(status)?.into_inner();
                let request = pb::SearchRunsRequest {
                    experiment_ids: vec![experiment.experiment_id],
                    filter,
                    order_by,
                    page_size: limit,
                    page_token: String::new(),
                };
                let runs = client.tracking.search_runs(request).await.map_err(status)?.into_inner().runs;
                if args.json {
                    println!("{}", serde_json::to_string(&runs.iter().map(run_json).collect::<Vec<_>>())?);
                } else {
                    println!("{:<32}  {:<9}  {:>9}  name", "run", "status", "rmse");
                    for run in &runs {
                        let rmse = run
                            .metrics
                            .iter()
                            .find(|m| m.key == "rmse")
                            .map_or("-".to_owned(), |m| format!("{:.5}", m.value));
                        println!("{:<32}  {:<9}  {:>9}  {}", run.run_id, status_name(run.status), rmse, run.run_name);
                    }
                }
            }
            RunsCommand::Show { run_id } => {
                let run = client
                    .tracking
                    .get_run(pb::GetRunRequest { run_id: run_id.clone() })
                    .await
                    .map_err(status)?
                    .into_inner();
                let files = client
                    .artifacts
                    .list(pb::ListArtifactsRequest { run_id })
                    .await
                    .map_err(status)?
                    .into_inner()
                    .files;
                if args.json {
                    let mut out = run_json(&run);
                    out["artifacts"] = files
                        .iter()
                        .map(|f| json!({"path": f.path, "size": f.size, "sha256": f.sha256, "uri": f.uri}))
                        .collect();
                    println!("{}", serde_json::to_string(&out)?);
                } else {
                    println!(
                        "run {} ({}) in experiment {}: {}",
                        run.run_id,
                        run.run_name,
                        run.experiment_id,
                        status_name(run.status)
                    );
                    for p in &run.params {
                        println!("  param   {:<14} {}", p.key, p.value);
                    }
                    for m in &run.metrics {
                        println!("  metric  {:<14} {}", m.key, m.value);
                    }
                    for t in &run.tags {
                        println!("  tag     {:<14} {}", t.key, t.value);
                    }
                    for f in &files {
                        println!("  file    {:<14} {} bytes, sha256 {}", f.path, f.size, f.sha256);
                    }
                }
            }
        }
        Ok(())
    })
}

fn status_name(status: i32) -> &'static str {
    usize::try_from(status).ok().and_then(|i| STATUSES.get(i).copied()).unwrap_or("?")
}

fn run_json(run: &pb::Run) -> serde_json::Value {
    json!({
        "run_id": run.run_id,
        "experiment_id": run.experiment_id,
        "run_name": run.run_name,
        "status": status_name(run.status),
        "start_time_ms": run.start_time_ms,
        "end_time_ms": run.end_time_ms,
        "artifact_uri": run.artifact_uri,
        "params": run.params.iter().map(|p| (p.key.clone(), p.value.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "metrics": run.metrics.iter().map(|m| (m.key.clone(), m.value)).collect::<std::collections::BTreeMap<_, _>>(),
        "tags": run.tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect::<std::collections::BTreeMap<_, _>>(),
    })
}
