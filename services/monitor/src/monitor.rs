//! The monitor's engine: consume the prediction log, archive and count each ride once, join
//! actuals, build reports, raise alerts and ask for retraining.
//!
//! Restart safety: the archive is written before a batch is counted, and the stream position is
//! saved after; a restarted monitor rebuilds its windows from the archive and resumes from the
//! saved position, so a batch read twice is recognised by its ride_ids (and its archive object,
//! named after the batch's stream ids, is the same object).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lightops_api::monitor::v1 as pb;
use lightops_api::trainer::v1 as trainer;
use lightops_objstore::artifacts::ArtifactStore;
use lightops_predlog::{LogSource, Position, PredictionRecord, SourceTarget};
use tokio::sync::{Mutex, broadcast, watch};

use crate::error::{Error, Result};
use crate::references::References;
use crate::state::{MonitorState, main_model, report};
use crate::{Config, now_ms};

/// Retraining on alerts.
#[derive(Debug, Clone)]
pub struct Retraining {
    /// Trainer URL.
    pub trainer_url: String,
    /// What to submit (data URIs may use `{month-N}`; the trainer expands them).
    pub spec: trainer::JobSpec,
    /// At most one request per cooldown.
    pub cooldown: Duration,
}

/// The shared engine.
#[derive(Debug)]
pub struct Monitor {
    config: Config,
    /// Windows and rides.
    pub state: Mutex<MonitorState>,
    references: References,
    archive: ArtifactStore,
    alerts: Mutex<Vec<pb::Alert>>,
    alert_tx: broadcast::Sender<pb::Alert>,
    last_retraining: Mutex<Option<Instant>>,
    /// Records archived.
    pub archived: AtomicU64,
    /// Unreadable records sent to the dead-letter location.
    pub dead_letters: AtomicU64,
    position: Mutex<Position>,
    /// Windows to judge again (actuals arrived for them after they settled).
    rejudge: Mutex<BTreeSet<String>>,
}

fn state_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::State { path: path.display().to_string(), message: e.to_string() }
}

/// Writes a file atomically (temporary file, then rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| state_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| state_error(path, e))
}

/// Reads a JSON-lines file of `T` (missing file: empty), skipping a torn last line.
fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(state_error(path, e)),
    };
    Ok(text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect())
}

fn append_lines(path: &Path, lines: &[String]) -> Result<()> {
    use std::io::Write;
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| state_error(path, e))?;
    let mut text = lines.join("\n");
    text.push('\n');
    file.write_all(text.as_bytes()).map_err(|e| state_error(path, e))?;
    file.sync_data().map_err(|e| state_error(path, e))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ActualLine {
    ride_id: String,
    duration: f64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct AlertLine {
    alert_id: String,
    kind: String,
    window: String,
    message: String,
    time_ms: i64,
    retraining_job_id: String,
}

impl Monitor {
    /// Opens the archive, rebuilds the windows from it, replays saved actuals and alerts.
    pub async fn open(config: Config, references: References) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&config.state_dir).map_err(|e| state_error(&config.state_dir, e))?;
        let archive = ArtifactStore::open(&config.archive).await.map_err(|e| Error::Archive(e.to_string()))?;
        let mut state = MonitorState::new(config.granularity);
        let archived = crate::archive::read_all(&archive).await?;
        for record in &archived {
            state.apply(record)?;
        }
        let actuals: Vec<ActualLine> = read_lines(&config.state_dir.join("actuals.jsonl"))?;
        for actual in &actuals {
            state.actual(&actual.ride_id, actual.duration);
        }
        let alert_lines: Vec<AlertLine> = read_lines(&config.state_dir.join("alerts.jsonl"))?;
        let mut alerts = Vec::new();
        for line in alert_lines {
            if let Some(window) = state.window_mut(&line.window) {
                window.alerted.insert(line.kind.clone());
            }
            alerts.push(pb::Alert {
                alert_id: line.alert_id,
                kind: line.kind,
                window: line.window,
                message: line.message,
                time_ms: line.time_ms,
                report: None,
                retraining_job_id: line.retraining_job_id,
            });
        }
        let position_path = config.state_dir.join("position.json");
        let position: Position = match std::fs::read_to_string(&position_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| state_error(&position_path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Position::default(),
            Err(e) => return Err(state_error(&position_path, e)),
        };
        tracing::info!(
            archived = archived.len(),
            actuals = actuals.len(),
            windows = state.len(),
            "monitor state rebuilt from the archive"
        );
        let (alert_tx, _) = broadcast::channel(256);
        Ok(Arc::new(Self {
            archived: AtomicU64::new(archived.len() as u64),
            config,
            state: Mutex::new(state),
            references,
            archive,
            alerts: Mutex::new(alerts),
            alert_tx,
            last_retraining: Mutex::new(None),
            dead_letters: AtomicU64::new(0),
            position: Mutex::new(position),
            rejudge: Mutex::new(BTreeSet::new()),
        }))
    }

    /// The saved stream position.
    pub async fn position(&self) -> Position {
        self.position.lock().await.clone()
    }

    /// Archives and counts one batch of records; returns the windows it touched.
    pub async fn ingest(&self, records: &[PredictionRecord], first: &str, last: &str) -> Result<BTreeSet<String>> {
        // Fresh records only: not counted before, and not twice within the batch.
        let fresh: Vec<PredictionRecord> = {
            let state = self.state.lock().await;
            let mut in_batch = std::collections::HashSet::new();
            records
                .iter()
                .filter(|r| !state.is_duplicate(r) && (r.ride_id.is_empty() || in_batch.insert(r.ride_id.as_str())))
                .cloned()
                .collect()
        };
        if !fresh.is_empty() {
            crate::archive::write(&self.archive, &fresh, first, last).await?;
            self.archived.fetch_add(fresh.len() as u64, Ordering::Relaxed);
        }
        let mut touched = BTreeSet::new();
        let mut state = self.state.lock().await;
        state.duplicates += (records.len() - fresh.len()) as u64;
        for record in &fresh {
            if let Some(key) = state.apply(record)? {
                touched.insert(key);
            }
        }
        Ok(touched)
    }

    /// Saves the stream position (after the batch it follows was ingested).
    pub async fn save_position(&self, position: Position) -> Result<()> {
        let path = self.config.state_dir.join("position.json");
        let text = serde_json::to_vec(&position).map_err(|e| state_error(&path, e))?;
        write_atomic(&path, &text)?;
        *self.position.lock().await = position;
        Ok(())
    }

    /// Stores unreadable records under the archive's dead-letter prefix.
    pub async fn dead_letters(&self, letters: Vec<lightops_predlog::DeadLetter>) -> Result<()> {
        for letter in &letters {
            crate::archive::dead_letter(&self.archive, letter).await?;
            self.dead_letters.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Joins actual durations; answers the IngestActuals counts.
    pub async fn actuals(&self, actuals: Vec<pb::Actual>) -> Result<pb::IngestActualsResponse> {
        let mut answer = pb::IngestActualsResponse::default();
        let mut accepted = Vec::new();
        for (i, actual) in actuals.into_iter().enumerate() {
            let problem = if actual.ride_id.is_empty() {
                Some(format!("actuals[{i}].ride_id: is empty"))
            } else if !actual.duration.is_finite() || actual.duration < 0.0 {
                Some(format!("actuals[{i}].duration: must be a finite, non-negative number of minutes"))
            } else {
                None
            };
            match problem {
                Some(reason) => {
                    answer.rejected += 1;
                    if answer.first_rejection.is_empty() {
                        answer.first_rejection = reason;
                    }
                }
                None => accepted.push(actual),
            }
        }
        let lines: Vec<String> = accepted
            .iter()
            .map(|a| serde_json::json!({"ride_id": a.ride_id, "duration": a.duration}).to_string())
            .collect();
        if !lines.is_empty() {
            append_lines(&self.config.state_dir.join("actuals.jsonl"), &lines)?;
        }
        let mut state = self.state.lock().await;
        let mut touched = BTreeSet::new();
        for actual in accepted {
            if state.actual(&actual.ride_id, actual.duration) {
                answer.matched += 1;
                if let Some(key) = state.window_of(&actual.ride_id) {
                    touched.insert(key.to_owned());
                }
            } else {
                answer.pending += 1;
            }
        }
        drop(state);
        // Their RMSE changed: judge them again (the quality alert).
        self.rejudge.lock().await.extend(touched);
        Ok(answer)
    }

    /// A window's report (`""`: the newest window).
    pub async fn report(&self, key: &str) -> Result<pb::WindowReport> {
        let (window, model) = {
            let state = self.state.lock().await;
            let key = if key.is_empty() { state.keys().first().cloned().unwrap_or_default() } else { key.to_owned() };
            let window = state.window(&key).cloned().ok_or_else(|| Error::NotFound(format!("window {key:?}")))?;
            let model = main_model(&window).map(str::to_owned);
            (window, model)
        };
        let reference = match self.references.for_model(model.as_deref()).await {
            Ok(reference) => reference,
            Err(error) => {
                tracing::warn!(window = %window.key, %error, "no reference profile; reporting without drift");
                None
            }
        };
        report(&window, reference.as_ref().map(|(n, p)| (n.as_str(), p.as_ref())), &self.config.drift)
    }

    /// Reports, newest window first.
    pub async fn reports(&self, limit: usize) -> Result<Vec<pb::WindowReport>> {
        let keys: Vec<String> = self.state.lock().await.keys().into_iter().take(limit).collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.report(&key).await?);
        }
        Ok(out)
    }

    /// Alerts so far and a receiver for new ones.
    pub async fn subscribe(&self) -> (Vec<pb::Alert>, broadcast::Receiver<pb::Alert>) {
        let alerts = self.alerts.lock().await;
        (alerts.clone(), self.alert_tx.subscribe())
    }

    /// Counts for GetStatus.
    pub async fn status(&self) -> pb::MonitorStatus {
        let state = self.state.lock().await;
        pb::MonitorStatus {
            records: state.records,
            duplicates: state.duplicates,
            archived: self.archived.load(Ordering::Relaxed),
            windows: state.len() as u64,
            alerts: self.alerts.lock().await.len() as u64,
            position: serde_json::to_string(&*self.position.lock().await).unwrap_or_default(),
        }
    }

    /// Evaluates settled windows (no new rows for the settle time, enough rows) and raises the
    /// alerts they call for, once per window and kind.
    pub async fn evaluate(&self, windows: &BTreeSet<String>) -> Result<()> {
        for key in windows {
            let (rows, updated, alerted) = {
                let state = self.state.lock().await;
                let Some(window) = state.window(key) else { continue };
                (window.stats.rows(), window.updated_ms, window.alerted.clone())
            };
            if rows < self.config.min_rows || now_ms() - updated < self.config.settle.as_millis() as i64 {
                continue;
            }
            let report = self.report(key).await?;
            lightops_runtime::telemetry::record_window(lightops_runtime::telemetry::WindowFigures {
                start: std::time::UNIX_EPOCH + Duration::from_millis(report.start_ms.max(0) as u64),
                rows: report.rows,
                dataset_drift: report.dataset_drift,
                columns: report
                    .columns
                    .iter()
                    .map(|c| lightops_runtime::telemetry::ColumnDrift {
                        column: c.column.clone(),
                        method: c.method.clone(),
                        score: c.score,
                        drifted: c.drifted,
                    })
                    .collect(),
                rmse: report.quality.as_ref().map(|q| q.rmse),
                mae: report.quality.as_ref().map(|q| q.mae),
            });
            let mut raise = Vec::new();
            if report.dataset_drift && !alerted.contains("dataset_drift") {
                let drifted: Vec<&str> =
                    report.columns.iter().filter(|c| c.drifted).map(|c| c.column.as_str()).collect();
                raise.push((
                    "dataset_drift",
                    format!(
                        "window {key}: dataset drift ({} of {} columns drifted: {}) against {}",
                        report.drifted_columns,
                        report.columns.len(),
                        drifted.join(", "),
                        report.reference
                    ),
                ));
            }
            if let (Some(limit), Some(quality)) = (self.config.rmse_threshold, &report.quality)
                && quality.rmse > limit
                && !alerted.contains("quality")
            {
                raise.push(("quality", format!("window {key}: RMSE {:.4} above {limit}", quality.rmse)));
            }
            for (kind, message) in raise {
                self.raise(kind, key, message, report.clone()).await?;
            }
        }
        Ok(())
    }

    async fn raise(&self, kind: &str, key: &str, message: String, report: pb::WindowReport) -> Result<()> {
        if let Some(window) = self.state.lock().await.window_mut(key) {
            window.alerted.insert(kind.to_owned());
        }
        let retraining_job_id = self.maybe_retrain(key).await;
        let alert = pb::Alert {
            alert_id: uuid::Uuid::new_v4().simple().to_string(),
            kind: kind.to_owned(),
            window: key.to_owned(),
            message: message.clone(),
            time_ms: now_ms(),
            report: Some(report),
            retraining_job_id,
        };
        tracing::warn!(kind, window = key, retraining_job_id = %alert.retraining_job_id, "{message}");
        let line = serde_json::to_string(&AlertLine {
            alert_id: alert.alert_id.clone(),
            kind: alert.kind.clone(),
            window: alert.window.clone(),
            message: alert.message.clone(),
            time_ms: alert.time_ms,
            retraining_job_id: alert.retraining_job_id.clone(),
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        append_lines(&self.config.state_dir.join("alerts.jsonl"), &[line])?;
        if let Some(url) = &self.config.webhook {
            post_webhook(url.clone(), &alert).await;
        }
        self.alerts.lock().await.push(alert.clone());
        let _ = self.alert_tx.send(alert);
        Ok(())
    }

    /// Submits a retraining job unless one was submitted within the cooldown; returns its id.
    async fn maybe_retrain(&self, key: &str) -> String {
        let Some(retraining) = &self.config.retraining else { return String::new() };
        let mut last = self.last_retraining.lock().await;
        if last.is_some_and(|at| at.elapsed() < retraining.cooldown) {
            tracing::info!(window = key, "retraining skipped: within the cooldown of the last request");
            return String::new();
        }
        let mut spec = retraining.spec.clone();
        spec.tags.insert("lightops.reason".into(), format!("drift alert on window {key}"));
        let submitted = async {
            let channel = tonic::transport::Channel::from_shared(retraining.trainer_url.clone())
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let mut client =
                trainer::trainer_client::TrainerClient::new(lightops_runtime::telemetry::grpc::traced(channel));
            client
                .submit_job(trainer::SubmitJobRequest { spec: Some(spec) })
                .await
                .map(|r| r.into_inner().job_id)
                .map_err(|s| s.message().to_owned())
        }
        .await;
        match submitted {
            Ok(job_id) => {
                *last = Some(Instant::now());
                tracing::info!(window = key, job_id = %job_id, "retraining requested");
                job_id
            }
            Err(error) => {
                tracing::error!(window = key, %error, "retraining request failed");
                String::new()
            }
        }
    }

    /// Consumes the prediction log until `stop` fires.
    pub async fn consume(self: Arc<Self>, target: SourceTarget, mut stop: watch::Receiver<bool>) {
        let mut source = loop {
            match LogSource::open(target.clone(), self.position().await).await {
                Ok(source) => break source,
                Err(error) => {
                    tracing::warn!(%error, "prediction log not available yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        };
        // Windows rebuilt from the archive may not have been judged before a restart.
        let mut pending: BTreeSet<String> = self.state.lock().await.keys().into_iter().collect();
        let mut failures = 0u32;
        loop {
            if *stop.borrow() {
                return;
            }
            let next = tokio::select! {
                next = source.next_batch(self.config.batch_records, Duration::from_millis(250)) => next,
                _ = stop.changed() => return,
            };
            let letters = source.take_dead_letters();
            if !letters.is_empty()
                && let Err(error) = self.dead_letters(letters).await
            {
                tracing::error!(%error, "writing dead letters");
            }
            // Judge windows only while caught up with the log: a window still being filled (the
            // consumer lagging behind a burst) must not be judged on its first rows.
            let caught_up = matches!(next, Ok(None));
            match next {
                Ok(Some(batch)) => {
                    // Never skip a batch: retry until it is archived and counted.
                    loop {
                        match self.ingest(&batch.records, &batch.first, &batch.last).await {
                            Ok(touched) => {
                                pending.extend(touched);
                                break;
                            }
                            Err(error) => {
                                tracing::error!(%error, "ingesting a batch; retrying");
                                tokio::select! {
                                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                    _ = stop.changed() => return,
                                }
                            }
                        }
                    }
                    if let Err(error) = self.save_position(batch.position).await {
                        tracing::error!(%error, "saving the stream position");
                    }
                    failures = 0;
                }
                Ok(None) => {}
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, failures, "reading the prediction log");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))).await;
                }
            }
            pending.extend(std::mem::take(&mut *self.rejudge.lock().await));
            if caught_up && !pending.is_empty() {
                let windows = pending.clone();
                match self.evaluate(&windows).await {
                    Ok(()) => {
                        // Keep windows that are not settled yet.
                        let state = self.state.lock().await;
                        pending.retain(|key| {
                            state.window(key).is_some_and(|w| {
                                w.stats.rows() < self.config.min_rows
                                    || now_ms() - w.updated_ms < self.config.settle.as_millis() as i64
                            }) && !state.window(key).is_some_and(|w| w.alerted.contains("dataset_drift"))
                        });
                    }
                    Err(error) => tracing::warn!(%error, "evaluating windows"),
                }
            }
        }
    }
}

/// POSTs the alert as JSON (documented in docs/monitor.md); failures are logged, not retried.
async fn post_webhook(url: String, alert: &pb::Alert) {
    let body = serde_json::json!({
        "alert_id": alert.alert_id,
        "kind": alert.kind,
        "window": alert.window,
        "message": alert.message,
        "time_ms": alert.time_ms,
        "retraining_job_id": alert.retraining_job_id,
        "dataset_drift": alert.report.as_ref().map(|r| r.dataset_drift),
        "drifted_columns": alert.report.as_ref().map(|r| r.columns.iter().filter(|c| c.drifted).map(|c| c.column.clone()).collect::<Vec<_>>()),
        "rows": alert.report.as_ref().map(|r| r.rows),
    })
    .to_string();
    let outcome = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
        agent.post(&url).header("content-type", "application/json").send(body.as_bytes()).map(|_| ())
    })
    .await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "alert webhook failed"),
        Err(error) => tracing::error!(%error, "alert webhook task failed"),
    }
}

/// Where the monitor keeps its state by default.
pub fn default_state_dir(home: &Path) -> PathBuf {
    home.join("monitor")
}
