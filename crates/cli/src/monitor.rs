//! `lightops monitor …`: reports, alerts and actuals from a terminal.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use lightops_api::monitor::v1 as pb;
use pb::monitor_client::MonitorClient;
use tonic::transport::Channel;

use crate::cli::{MonitorArgs, MonitorCommand};

/// Actuals sent per IngestActuals call.
const ACTUALS_PER_CALL: usize = 10_000;

pub fn run(args: MonitorArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let channel = Channel::from_shared(args.monitor.clone())
            .with_context(|| format!("--monitor {}: not a URL", args.monitor))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("--monitor {}: cannot connect (is `lightops serve monitor` running?)", args.monitor))?;
        let mut monitor = MonitorClient::new(channel);
        let status = |s: tonic::Status| anyhow!("{}", s.message());
        match args.command {
            MonitorCommand::Actuals { file } => {
                let actuals = read_actuals(&file)?;
                let mut total = pb::IngestActualsResponse::default();
                for chunk in actuals.chunks(ACTUALS_PER_CALL) {
                    let answer = monitor
                        .ingest_actuals(pb::IngestActualsRequest { actuals: chunk.to_vec() })
                        .await
                        .map_err(status)?
                        .into_inner();
                    total.matched += answer.matched;
                    total.pending += answer.pending;
                    total.rejected += answer.rejected;
                    if total.first_rejection.is_empty() {
                        total.first_rejection = answer.first_rejection;
                    }
                }
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"sent": actuals.len(), "matched": total.matched, "pending": total.pending,
                            "rejected": total.rejected, "first_rejection": total.first_rejection})
                    );
                } else {
                    println!(
                        "{} actuals sent: {} matched, {} waiting for their prediction, {} rejected{}",
                        actuals.len(),
                        total.matched,
                        total.pending,
                        total.rejected,
                        if total.first_rejection.is_empty() { String::new() } else { format!(" ({})", total.first_rejection) }
                    );
                }
            }
            MonitorCommand::Report { window } => {
                let reports = match window {
                    Some(window) => {
                        vec![monitor.get_report(pb::GetReportRequest { window }).await.map_err(status)?.into_inner()]
                    }
                    None => monitor.list_reports(pb::ListReportsRequest { limit: 0 }).await.map_err(status)?.into_inner().reports,
                };
                if args.json {
                    println!("{}", serde_json::to_string(&reports.iter().map(report_json).collect::<Vec<_>>())?);
                } else {
                    for report in &reports {
                        print!("{}", report_text(report));
                    }
                }
            }
            MonitorCommand::Alerts => {
                let mut alerts = monitor.watch_alerts(pb::WatchAlertsRequest { replay: true }).await.map_err(status)?.into_inner();
                // Replayed alerts arrive at once; stop when the stream goes quiet.
                let mut all = Vec::new();
                while let Ok(Ok(Some(alert))) = tokio::time::timeout(Duration::from_millis(300), alerts.message()).await {
                    all.push(alert);
                }
                for alert in &all {
                    if args.json {
                        println!(
                            "{}",
                            serde_json::json!({"alert_id": alert.alert_id, "kind": alert.kind, "window": alert.window,
                                "message": alert.message, "time_ms": alert.time_ms, "retraining_job_id": alert.retraining_job_id})
                        );
                    } else {
                        println!("{}  {:<13}  {}", alert.window, alert.kind, alert.message);
                    }
                }
            }
        }
        Ok(())
    })
}

/// Reads `ride_id,duration` rows from a CSV (header required) or JSON lines.
pub fn read_actuals(path: &Path) -> anyhow::Result<Vec<pb::Actual>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let name = path.display();
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    if path.extension().is_some_and(|e| e == "csv") {
        let Some((_, header)) = lines.next() else { return Ok(out) };
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        let find = |n: &str| columns.iter().position(|c| *c == n);
        let (Some(id), Some(duration)) = (find("ride_id"), find("duration")) else {
            bail!("{name}: the header needs ride_id and duration columns, found {columns:?}");
        };
        for (number, line) in lines {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let value = fields.get(duration).and_then(|d| d.parse::<f64>().ok());
            match (fields.get(id), value) {
                (Some(ride_id), Some(duration)) => out.push(pb::Actual { ride_id: (*ride_id).to_owned(), duration }),
                _ => bail!("{name}:{}: expected ride_id,duration, got {line:?}", number + 1),
            }
        }
    } else {
        for (number, line) in lines {
            let value: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{name}:{}: not JSON", number + 1))?;
            let ride_id = value["ride_id"].as_str();
            let duration = value["duration"].as_f64();
            match (ride_id, duration) {
                (Some(ride_id), Some(duration)) => out.push(pb::Actual { ride_id: ride_id.to_owned(), duration }),
                _ => bail!("{name}:{}: needs a string ride_id and a numeric duration", number + 1),
            }
        }
    }
    Ok(out)
}

fn report_json(report: &pb::WindowReport) -> serde_json::Value {
    serde_json::json!({
        "window": report.window,
        "rows": report.rows,
        "dataset_drift": report.dataset_drift,
        "drift_share": report.drift_share,
        "drifted_columns": report.drifted_columns,
        "reference": report.reference,
        "models": report.models,
        "columns": report.columns.iter().map(|c| serde_json::json!({"column": c.column, "method": c.method,
            "score": c.score, "threshold": c.threshold, "drifted": c.drifted})).collect::<Vec<_>>(),
        "missing": report.missing.iter().map(|m| serde_json::json!({"column": m.column, "share": m.share})).collect::<Vec<_>>(),
        "prediction": report.prediction.as_ref().map(|p| serde_json::json!({"count": p.count, "mean": p.mean,
            "std": p.std, "min": p.min, "max": p.max, "p50": p.p50, "p90": p.p90})),
        "rmse": report.quality.as_ref().map(|q| q.rmse),
        "mae": report.quality.as_ref().map(|q| q.mae),
        "actuals": report.quality.as_ref().map(|q| q.rows),
    })
}

/// A report as a small table.
pub fn report_text(report: &pb::WindowReport) -> String {
    let mut out = format!(
        "window {}: {} rows, dataset drift {} ({} of {} columns; reference {})\n",
        report.window,
        report.rows,
        if report.dataset_drift { "YES" } else { "no" },
        report.drifted_columns,
        report.columns.len(),
        if report.reference.is_empty() { "none" } else { &report.reference }
    );
    for column in &report.columns {
        out.push_str(&format!(
            "  {:<14} {:<14} {:>10.5}  threshold {:<5} {}\n",
            column.column,
            column.method,
            column.score,
            column.threshold,
            if column.drifted { "drifted" } else { "" }
        ));
    }
    if let Some(prediction) = &report.prediction {
        out.push_str(&format!(
            "  prediction     mean {:.3}  std {:.3}  p50 {:.3}  p90 {:.3}\n",
            prediction.mean, prediction.std, prediction.p50, prediction.p90
        ));
    }
    if let Some(quality) = &report.quality {
        out.push_str(&format!(
            "  quality        RMSE {:.4}  MAE {:.4}  ({} actuals)\n",
            quality.rmse, quality.mae, quality.rows
        ));
    }
    out
}
