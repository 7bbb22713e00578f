//! `lightops drift`: data compared with a model's reference profile, offline, with Evidently's
//! statistics. `--json` prints the contract's object (rows, dataset_drift, drift_share,
//! drifted_columns, columns[column, method, score, threshold, drifted]).

use anyhow::{Context, bail};
use lightops_ml::drift::{DriftOptions, DriftReport, Method};
use lightops_ml::profile::{DEFAULT_MAX_DISTINCT, WindowStats};
use lightops_ml::{Artifact, FeatureSpec, Ride};

use crate::cli::{DriftArgs, Global};
use crate::progress::{Bars, DownloadBar};

pub fn run(global: &Global, args: DriftArgs) -> anyhow::Result<()> {
    let artifact = Artifact::load(&args.reference)?;
    let reference = artifact.body.profile.clone().with_context(|| {
        format!(
            "--reference {}: the artifact has no reference profile (retrain it with this lightops)",
            args.reference.display()
        )
    })?;
    let mut options = DriftOptions { drift_share: args.drift_share, ..DriftOptions::default() };
    for (column, method) in &args.methods {
        let Some(method) = Method::ALL.iter().find(|m| m.name() == method) else {
            let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
            bail!("--method {column}={method}: unknown method; expected one of {names:?}");
        };
        options.methods.insert(column.clone(), *method);
    }
    let bars = Bars::new(global.quiet);
    let mut window = WindowStats::for_spec(&FeatureSpec::default(), DEFAULT_MAX_DISTINCT)?;
    match &args.archive {
        Some(archive) => {
            let (from, to) = (args.from.clone().unwrap_or_default(), args.to.clone().unwrap_or_default());
            for date in [&from, &to] {
                if chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err() {
                    bail!("--from/--to {date:?}: expected YYYY-MM-DD");
                }
            }
            let spinner = bars.spinner(&format!("reading the archive {archive} from {from} to {to}"));
            let records = read_archive(archive, &from, &to)?;
            spinner.finish_and_clear();
            if records.is_empty() {
                bail!("--archive {archive}: no predictions between {from} and {to}");
            }
            for record in &records {
                let ride = Ride {
                    pu_location_id: record.features.pu_location_id,
                    do_location_id: record.features.do_location_id,
                    trip_distance: record.features.trip_distance,
                };
                window.push_ride(&ride, record.prediction)?;
            }
        }
        None => {
            let cache = global.home.join("cache").join("downloads");
            let download = DownloadBar::new(&bars);
            let counter = bars.counter(args.current.len() as u64, "scoring current data");
            for location in &args.current {
                let path = lightops_objstore::localize(location, &cache, &download)
                    .with_context(|| format!("--current {location}"))?;
                let trips = lightops_ml::data::read_trips(&path, &artifact.model.spec)
                    .with_context(|| format!("--current {location}"))?;
                let predictions = artifact.model.predict_trips(&trips);
                window.push_trips(&trips, &predictions)?;
                counter.inc(1);
            }
            counter.finish_and_clear();
        }
    }
    let report = lightops_ml::drift::compare(&reference, &window.finish(), &options)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_human(&report);
    }
    Ok(())
}

fn read_archive(archive: &str, from: &str, to: &str) -> anyhow::Result<Vec<lightops_predlog::PredictionRecord>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = lightops_objstore::artifacts::ArtifactStore::open(archive).await?;
        let mut objects = store.list(lightops_monitor::archive::PREFIX).await?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let mut out = Vec::new();
        for object in objects.iter().filter(|o| o.key.ends_with(".parquet")) {
            // predictions/date=YYYY-MM-DD/part-….parquet
            let Some(date) = object.key.split('/').find_map(|part| part.strip_prefix("date=")) else { continue };
            if date < from || date > to {
                continue;
            }
            let bytes = store.get(&object.key).await?;
            out.extend(lightops_monitor::archive::from_parquet(&bytes)?);
        }
        Ok(out)
    })
}

fn print_human(report: &DriftReport) {
    println!(
        "{} rows: dataset drift {} ({} of {} columns drifted; share needed {})",
        report.rows,
        if report.dataset_drift { "YES" } else { "no" },
        report.drifted_columns,
        report.columns.len(),
        report.drift_share
    );
    println!("  {:<14} {:<32} {:>12}  {:>9}  drifted", "column", "method", "score", "threshold");
    for column in &report.columns {
        println!(
            "  {:<14} {:<32} {:>12.6}  {:>9}  {}",
            column.column,
            column.method.display_name(),
            column.score,
            column.threshold,
            if column.drifted { "yes" } else { "no" }
        );
    }
}
