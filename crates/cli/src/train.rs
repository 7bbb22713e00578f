//! `lightops train`: the training pipeline on local or downloaded TLC files.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::ProgressBar;
use lightops_ml::spec::CrossedFeature;
use lightops_ml::{DataFile, FeatureSpec, Solver};
use serde::Serialize;

use crate::cli::{Global, SolverArg, TrainArgs};
use crate::progress::{Bars, DownloadBar};

/// What `--json` prints (the `lightops train` contract, plus extra fields).
#[derive(Debug, Serialize)]
struct Summary {
    train_rows: u64,
    val_rows: u64,
    features: usize,
    train_rmse: f64,
    rmse: f64,
    mae: f64,
    r2: f64,
    train_r2: f64,
    rank: usize,
    solver: &'static str,
    artifact: String,
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registered_artifact: Option<String>,
    /// Wall time of the whole command, then of its steps.
    seconds: f64,
    read_seconds: f64,
    fit_seconds: f64,
    validate_seconds: f64,
}

pub fn run(global: &Global, args: TrainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let spec = feature_spec(&args)?;
    let bars = Bars::new(global.quiet);
    let cache = global.home.join("cache").join("downloads");
    let download = DownloadBar::new(&bars);
    let localize = |flag: &str, location: &String| -> anyhow::Result<DataFile> {
        let path =
            lightops_objstore::localize(location, &cache, &download).with_context(|| format!("{flag} {location}"))?;
        Ok(DataFile { path, name: location.clone() })
    };
    let train_files = args.train.iter().map(|t| localize("--train", t)).collect::<anyhow::Result<Vec<_>>>()?;
    let val_file = localize("--val", &args.val)?;

    let solver = match args.solver {
        SolverArg::Exact => Solver::Exact,
        SolverArg::Linfa => Solver::Linfa,
    };
    let observer = TrainBars::new(&bars, train_files.len() as u64);
    let trained = lightops_ml::train(&spec, &train_files, &val_file, solver, &observer)?;
    observer.done();

    let sha = trained.artifact.content_sha256();
    let out_dir = match &args.out {
        Some(dir) => dir.clone(),
        None => default_out_dir(global, &trained.artifact.body.training.trained_at, &sha),
    };
    let artifact_path = out_dir.join("model.json");
    trained.artifact.save(&artifact_path)?;

    let info = &trained.artifact.body.training;
    let logged = match &args.registry {
        Some(url) => Some(log_to_registry(url, &args, &trained, &bars)?),
        None => None,
    };
    let summary = Summary {
        train_rows: info.train_rows,
        val_rows: info.val_rows,
        features: trained.artifact.model.feature_count(),
        train_rmse: info.train.rmse,
        rmse: trained.validation.rmse,
        mae: trained.validation.mae,
        r2: trained.validation.r2,
        train_r2: info.train.r2,
        rank: info.rank,
        solver: solver.name(),
        artifact: artifact_path.display().to_string(),
        sha256: sha,
        run_id: logged.as_ref().map(|l| l.run_id.clone()),
        model_version: logged.as_ref().and_then(|l| l.model_version).map(|v| v.to_string()),
        registered_artifact: logged.as_ref().map(|l| l.artifact_uri.clone()),
        seconds: started.elapsed().as_secs_f64(),
        read_seconds: trained.timings.read.as_secs_f64(),
        fit_seconds: trained.timings.fit.as_secs_f64(),
        validate_seconds: trained.timings.validate.as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_human(&summary);
    }
    Ok(())
}

/// Logs the run (params, metrics, model file) to the registry and registers a version if asked.
fn log_to_registry(
    url: &str,
    args: &TrainArgs,
    trained: &lightops_ml::Trained,
    bars: &Bars,
) -> anyhow::Result<lightops_client::Logged> {
    let spinner = bars.spinner("logging to the registry");
    let mut run = lightops_client::TrainingRun::from_trained(trained, &args.experiment);
    run.register_as = args.register_as.clone();
    run.alias = args.alias.clone();
    run.tags = args.tags.iter().map(|t| (t.0.clone(), t.1.clone())).collect();
    if let Some(job_id) = &args.job_id {
        run.tags.push((lightops_client::JOB_ID_TAG.to_owned(), job_id.clone()));
    }
    let logged = crate::registry_client::with_registry(url, async |registry| {
        Ok(lightops_client::log_training(registry, run).await?)
    });
    spinner.finish_and_clear();
    logged
}

fn print_human(s: &Summary) {
    println!("trained {} on {} rows, validated on {} rows", s.solver, s.train_rows, s.val_rows);
    println!("  features     {} (rank {})", s.features, s.rank);
    println!("  train RMSE   {:.5}   R² {:.4}", s.train_rmse, s.train_r2);
    println!("  val RMSE     {:.5}   MAE {:.5}   R² {:.4}", s.rmse, s.mae, s.r2);
    println!("  artifact     {}", s.artifact);
    println!("  sha256       {}", s.sha256);
    if let Some(run_id) = &s.run_id {
        println!("  run          {run_id}");
    }
    if let Some(version) = &s.model_version {
        println!("  registered   version {version}");
    }
    println!(
        "  took         {:.2} s (read {:.2}, fit {:.2}, validate {:.2})",
        s.seconds, s.read_seconds, s.fit_seconds, s.validate_seconds
    );
}

fn default_out_dir(global: &Global, trained_at: &str, sha: &str) -> PathBuf {
    let stamp: String = trained_at.chars().filter(char::is_ascii_digit).collect();
    global.home.join("models").join(format!("{stamp}-{}", &sha[..12]))
}

fn feature_spec(args: &TrainArgs) -> anyhow::Result<FeatureSpec> {
    if let Some(text) = &args.spec_json {
        let spec: FeatureSpec = serde_json::from_str(text).context("--spec-json: not a feature spec")?;
        spec.validate()?;
        return Ok(spec);
    }
    if let Some(path) = &args.spec {
        let text = std::fs::read_to_string(path).with_context(|| format!("--spec {}", path.display()))?;
        let spec: FeatureSpec =
            serde_json::from_str(&text).with_context(|| format!("--spec {}: not a feature spec", path.display()))?;
        spec.validate()?;
        return Ok(spec);
    }
    let mut spec = FeatureSpec {
        categorical: args.categorical.iter().filter(|c| !c.is_empty()).cloned().collect(),
        numerical: args.numerical.iter().filter(|c| !c.is_empty()).cloned().collect(),
        ..FeatureSpec::default()
    };
    for crossed in &args.crossed {
        let Some((name, columns)) = crossed.split_once('=') else {
            bail!("--crossed {crossed:?}: expected NAME=COL1+COL2, e.g. PU_DO=PULocationID+DOLocationID");
        };
        spec.crossed.push(CrossedFeature {
            name: name.trim().to_owned(),
            columns: columns.split('+').map(|c| c.trim().to_owned()).collect(),
        });
    }
    spec.validate()?;
    Ok(spec)
}

/// Progress of the training pipeline as bars.
struct TrainBars<'a> {
    bars: &'a Bars,
    files: ProgressBar,
    stage: std::sync::Mutex<Option<ProgressBar>>,
}

impl<'a> TrainBars<'a> {
    fn new(bars: &'a Bars, files: u64) -> Self {
        Self { bars, files: bars.counter(files, "reading"), stage: std::sync::Mutex::new(None) }
    }

    fn set_stage(&self, message: &str) {
        if let Ok(mut stage) = self.stage.lock() {
            if let Some(bar) = stage.take() {
                bar.finish_and_clear();
            }
            *stage = Some(self.bars.spinner(message));
        }
    }

    fn done(&self) {
        self.files.finish_and_clear();
        if let Ok(mut stage) = self.stage.lock()
            && let Some(bar) = stage.take()
        {
            bar.finish_and_clear();
        }
    }
}

impl lightops_ml::Progress for TrainBars<'_> {
    fn train_file_done(&self, file: &DataFile, rows_kept: u64) {
        self.files.set_message(format!("{} ({rows_kept} rows)", file.name));
        self.files.inc(1);
    }
    fn fitting(&self) {
        self.files.finish_and_clear();
        self.set_stage("fitting (exact least squares)");
    }
    fn validating(&self) {
        self.set_stage("validating");
    }
}
