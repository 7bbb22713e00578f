//! Drift / monitor benchmark (issue 6): `cargo bench -p lightops-ml --bench drift`.
//!
//! Needs the real TLC months (`LIGHTOPS_DATA`, default `../shared/data` beside the checkout) and
//! scores rows with `bench/reference/evidently_real_model.json`, the model lightops trains on
//! 2022-01 → 2022-02, exactly as `bench/reference/evidently_bench.py` does on the Python side.
//!
//! 1. **10 M-row window.** The rows of the twelve 2022 months (read with `read_trips`, scored with
//!    the model) are pushed ride by ride into one monitor window (`WindowStats::push_ride`), cycling
//!    through the months until 10,000,000 rows, then the window is reported against the 2022-01
//!    reference profile (`WindowStats::finish` + `drift::compare`). Reading and scoring are not
//!    timed; the peak RSS is the whole process's (`VmHWM`), reading the twelve months included.
//!    Runs first, so nothing else has raised the peak yet.
//! 2. **Per report, one real month.** 2022-03 against 2022-01, the monitor's way: a fresh window,
//!    one `push_ride` per row, `finish`, `compare` with Evidently's default methods. Median of
//!    `LIGHTOPS_BENCH_RUNS` (default 50) runs, (a) with the reference profile given (as the monitor
//!    has it, saved in the artifact) and (b) also building the reference profile from its rows in
//!    each run (what Evidently does inside every `Report.run`).
//! 3. **Correctness.** The real months 2022-03, 2022-06 and 2020-06 against 2022-01 with default
//!    methods, side by side with Evidently's recorded scores
//!    (`bench/reference/evidently_drift_real.json`).
//!
//! Prints Markdown for docs/benchmarks.md, and `RESULT key=value` lines for
//! `bench/drift_bench.sh`, which runs the Evidently side and prints the ratio.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lightops_ml::data::{KeyColumn, read_trips};
use lightops_ml::drift::{DriftOptions, DriftReport, compare};
use lightops_ml::profile::{DEFAULT_MAX_DISTINCT, Profile, WindowStats};
use lightops_ml::{Artifact, Ride};

const WINDOW_ROWS: usize = 10_000_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn data_dir() -> PathBuf {
    std::env::var_os("LIGHTOPS_DATA").map(PathBuf::from).unwrap_or_else(|| root().join("../shared/data"))
}

/// A field of `/proc/self/status` in KiB (`VmHWM`, `VmRSS`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// The rides of a TLC file and the model's predictions for them.
fn rides(artifact: &Artifact, path: &Path) -> Vec<(Ride, f64)> {
    let trips = read_trips(path, &artifact.model.spec).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let predictions = artifact.model.predict_trips(&trips);
    let (KeyColumn::Int(pickup), KeyColumn::Int(dropoff)) = (&trips.keys[0], &trips.keys[1]) else {
        panic!("{}: location ids are integers", path.display())
    };
    (0..trips.len())
        .map(|i| {
            let ride =
                Ride { pu_location_id: pickup[i], do_location_id: dropoff[i], trip_distance: trips.numeric[0][i] };
            (ride, predictions[i])
        })
        .collect()
}

/// A profile built the monitor's way: one `push_ride` per row.
fn window_of(reference: &Profile, rides: &[(Ride, f64)]) -> WindowStats {
    let mut window = WindowStats::new(reference).expect("window");
    for (ride, prediction) in rides {
        window.push_ride(ride, *prediction).expect("push");
    }
    window
}

/// The reference profile built from its rows, the monitor's way.
fn reference_of(artifact: &Artifact, rides: &[(Ride, f64)]) -> Profile {
    let mut window = WindowStats::for_spec(&artifact.model.spec, DEFAULT_MAX_DISTINCT).expect("window");
    for (ride, prediction) in rides {
        window.push_ride(ride, *prediction).expect("push");
    }
    window.finish()
}

fn report(reference: &Profile, current: &[(Ride, f64)]) -> DriftReport {
    compare(reference, &window_of(reference, current).finish(), &DriftOptions::default()).expect("compare")
}

fn month_file(month: &str) -> PathBuf {
    let dir = data_dir();
    if month == "2020-06" {
        dir.join(format!("green_tripdata_{month}.csv.gz"))
    } else {
        dir.join(format!("green_tripdata_{month}.parquet"))
    }
}

fn main() {
    if !month_file("2022-01").exists() {
        eprintln!("real TLC data not found at {} (set LIGHTOPS_DATA)", data_dir().display());
        std::process::exit(2);
    }
    let runs: usize = std::env::var("LIGHTOPS_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(50).max(1);
    let artifact = Artifact::load(&root().join("bench/reference/evidently_real_model.json")).expect("model");
    let january = rides(&artifact, &month_file("2022-01"));
    let reference = reference_of(&artifact, &january);

    // 1. The 10 M-row window.
    let mut year = Vec::new();
    for month in 1..=12 {
        year.extend(rides(&artifact, &month_file(&format!("2022-{month:02}"))));
    }
    let rss_before = status_kib("VmRSS");
    let start = Instant::now();
    let mut window = WindowStats::new(&reference).expect("window");
    for (ride, prediction) in year.iter().cycle().take(WINDOW_ROWS) {
        window.push_ride(ride, *prediction).expect("push");
    }
    let accumulated = start.elapsed();
    let big = compare(&reference, &window.finish(), &DriftOptions::default()).expect("compare");
    let total = start.elapsed();
    let peak = status_kib("VmHWM");
    assert_eq!(big.rows, WINDOW_ROWS as u64);
    drop(window);

    println!("## 10 M-row window ({} rows of the twelve 2022 months, cycled)\n", year.len());
    println!(
        "| rows | accumulate (push_ride) | report (finish + compare) | total | peak RSS (process) | RSS before the window |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {WINDOW_ROWS} | {:.0} ms | {:.1} ms | {:.0} ms | {:.0} MiB | {:.0} MiB |\n",
        ms(accumulated),
        ms(total - accumulated),
        ms(total),
        mib(peak),
        mib(rss_before)
    );
    println!("| column | method | score | drifted | approximate | bound |");
    println!("|---|---|---:|---|---|---:|");
    for c in &big.columns {
        let bound = c.score_bound.map(|b| format!("{b:.2e}")).unwrap_or_default();
        println!("| {} | {} | {:.6} | {} | {} | {bound} |", c.column, c.method, c.score, c.drifted, c.approximate);
    }
    println!();
    println!("RESULT window_rows={WINDOW_ROWS}");
    println!("RESULT window_accumulate_ms={:.1}", ms(accumulated));
    println!("RESULT window_report_ms={:.2}", ms(total - accumulated));
    println!("RESULT window_total_ms={:.1}", ms(total));
    println!("RESULT window_peak_rss_mib={:.0}", mib(peak));

    // The same window counted exactly (no compaction; untimed, after the peak was read): the
    // compacted scores are within their bounds.
    let mut exact = WindowStats::for_spec(&artifact.model.spec, 2 * WINDOW_ROWS).expect("window");
    for (ride, prediction) in year.iter().cycle().take(WINDOW_ROWS) {
        exact.push_ride(ride, *prediction).expect("push");
    }
    let exact = compare(&reference, &exact.finish(), &DriftOptions::default()).expect("compare");
    for (a, e) in big.columns.iter().zip(&exact.columns) {
        let error = (a.score - e.score).abs();
        let bound = a.score_bound.unwrap_or(0.0);
        assert!(
            !e.approximate && error <= bound * (1.0 + 1e-9) + 1e-15,
            "{}: error {error:e}, bound {bound:e}",
            a.column
        );
        println!("RESULT window_{}_error={error:.2e} bound={bound:.2e}", a.column);
    }
    drop(year);

    // 2. One report on a real month, median of `runs`.
    let march = rides(&artifact, &month_file("2022-03"));
    let _warm = report(&reference, &march);
    let mut given = Vec::with_capacity(runs);
    let mut from_rows = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let out = report(&reference, &march);
        given.push(start.elapsed());
        assert_eq!(out.rows, march.len() as u64);

        let start = Instant::now();
        let built = reference_of(&artifact, &january);
        let out = report(&built, &march);
        from_rows.push(start.elapsed());
        assert_eq!(out.rows, march.len() as u64);
    }
    let (given, from_rows) = (median(given), median(from_rows));
    println!(
        "## One report: 2022-03 ({} rows) against 2022-01 ({} rows), median of {runs}\n",
        march.len(),
        january.len()
    );
    println!("| lightops, reference profile given | lightops, reference built from its rows too |");
    println!("|---:|---:|");
    println!("| {:.2} ms | {:.2} ms |\n", ms(given), ms(from_rows));
    println!("RESULT report_rows={}", march.len());
    println!("RESULT report_reference_rows={}", january.len());
    println!("RESULT report_ms={:.3}", ms(given));
    println!("RESULT report_with_reference_ms={:.3}", ms(from_rows));

    // 3. Correctness against Evidently's recorded scores.
    let recorded: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("bench/reference/evidently_drift_real.json")).expect("recording"),
    )
    .expect("json");
    println!("## Real months against 2022-01, Evidently defaults: Evidently (recorded) vs lightops\n");
    println!("| current | column | method | Evidently | lightops | abs diff | rel diff | drifted (both) |");
    println!("|---|---|---|---:|---:|---:|---:|---|");
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for run in recorded["runs"].as_array().expect("runs") {
        if !run["methods"].as_object().is_some_and(serde_json::Map::is_empty) {
            continue;
        }
        let name = run["current"].as_str().expect("current");
        let month = name.trim_start_matches("green_tripdata_").split('.').next().expect("month");
        let ours = report(&reference, &rides(&artifact, &month_file(month)));
        assert_eq!(ours.rows, run["rows"].as_u64().expect("rows"), "{month}");
        assert_eq!(ours.dataset_drift, run["dataset_drift"].as_bool().expect("dataset_drift"), "{month}");
        for (got, want) in ours.columns.iter().zip(run["columns"].as_array().expect("columns")) {
            let score = want["score"].as_f64().expect("score");
            let drifted = want["drifted"].as_bool().expect("drifted");
            assert_eq!(got.column, want["column"].as_str().expect("column"));
            assert_eq!(got.drifted, drifted, "{month} {}", got.column);
            let abs = (got.score - score).abs();
            let rel = if score == 0.0 { abs } else { abs / score.abs() };
            (max_abs, max_rel) = (max_abs.max(abs), max_rel.max(rel));
            println!(
                "| {month} | {} | {} | {score:.10} | {:.10} | {abs:.1e} | {rel:.1e} | {} |",
                got.column,
                got.method,
                got.score,
                if drifted { "yes" } else { "no" }
            );
        }
    }
    println!("\nmax abs difference {max_abs:.1e}, max rel difference {max_rel:.1e}");
    println!("RESULT max_abs_diff={max_abs:.3e}");
    println!("RESULT max_rel_diff={max_rel:.3e}");
}
