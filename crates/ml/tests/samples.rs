//! Tests on the bundled samples (`samples/`): they always run. Expected values were recorded with
//! `bench/reference/exact_ols.py` (numpy `lstsq` on the centred dense matrix) into
//! `bench/reference/expected_samples*.json`.

mod common;

use common::{assert_close, expected, num, sample};
use lightops_ml::data::{KeyColumn, read_trips};
use lightops_ml::metrics::MetricsAccumulator;
use lightops_ml::train::{NoProgress, accumulate};
use lightops_ml::{Artifact, FeatureSpec, Solver, linfa_fit, solve, train};

#[test]
fn exact_fit_on_samples_matches_the_svd_reference() {
    let want = expected("expected_samples.json");
    let spec = FeatureSpec::default();
    let trained = train(&spec, &[sample("2022-01")], &sample("2022-02"), Solver::Exact, &NoProgress).expect("train");
    let info = &trained.artifact.body.training;
    assert_eq!(info.train_rows as f64, num(&want, "/train_rows"));
    assert_eq!(info.val_rows as f64, num(&want, "/val_rows"));
    assert_eq!(trained.artifact.model.feature_count() as f64, num(&want, "/features"));
    // One direction per one-hot group, plus one accidental degeneracy in this sample.
    assert_eq!(info.rank as f64, num(&want, "/rank"));
    assert_close("train rmse", info.train.rmse, num(&want, "/train_rmse"), 1e-9);
    assert_close("train r2", info.train.r2, num(&want, "/train_r2"), 1e-9);
    assert_close("val rmse", trained.validation.rmse, num(&want, "/rmse"), 1e-9);
    assert_close("val mae", trained.validation.mae, num(&want, "/mae"), 1e-9);
    assert_close("val r2", trained.validation.r2, num(&want, "/r2"), 1e-9);
    // Coefficients are as accurate as the problem's conditioning allows (numpy's too).
    assert_close("intercept", trained.artifact.model.intercept, num(&want, "/intercept"), 1e-7);
    let distance = trained.artifact.model.numeric[0];
    assert_close("trip_distance coefficient", distance, num(&want, "/coef_trip_distance"), 1e-7);
    let norm = trained.artifact.body.coefficients.iter().map(|c| c * c).sum::<f64>().sqrt();
    assert_close("minimum coefficient norm", norm, num(&want, "/coef_norm"), 1e-7);

    let val = read_trips(&sample("2022-02").path, &spec).expect("read");
    let predictions = trained.artifact.model.predict_trips(&val);
    for (i, expected) in want["val_predictions_head"].as_array().expect("array").iter().enumerate() {
        assert_close("prediction", predictions[i], expected.as_f64().expect("number"), 1e-7);
    }

    // The other months, including 2020-06, which exists only as gzip CSV.
    for month in ["2022-03", "2022-06", "2020-06"] {
        let file = sample(month);
        let trips = read_trips(&file.path, &spec).expect("read");
        let mut acc = MetricsAccumulator::default();
        acc.add(&trained.artifact.model.predict_trips(&trips), &trips.duration);
        let m = acc.finish();
        let at = format!("/scored/{}", file.name);
        assert_eq!(m.rows as f64, num(&want, &format!("{at}/rows")), "{month} rows");
        assert_close(&format!("{month} rmse"), m.rmse, num(&want, &format!("{at}/rmse")), 1e-9);
        assert_close(&format!("{month} mae"), m.mae, num(&want, &format!("{at}/mae")), 1e-9);
    }
}

#[test]
fn crossed_pu_do_matches_dictvectorizer_and_the_reference() {
    let want = expected("expected_samples_pu_do.json");
    let spec = FeatureSpec::pu_do();
    let trained = train(&spec, &[sample("2022-01")], &sample("2022-02"), Solver::Exact, &NoProgress).expect("train");
    let info = &trained.artifact.body.training;
    assert_eq!(trained.artifact.model.feature_count() as f64, num(&want, "/features"));
    assert_eq!(info.rank as f64, num(&want, "/rank"));
    assert!(trained.artifact.body.features.iter().any(|f| f == "PU_DO=74_75"), "feature names like PU_DO=74_75");
    assert_close("train rmse", info.train.rmse, num(&want, "/train_rmse"), 1e-9);
    assert_close("val rmse", trained.validation.rmse, num(&want, "/rmse"), 1e-6);
    assert_close("intercept", trained.artifact.model.intercept, num(&want, "/intercept"), 1e-6);
}

#[test]
fn linfa_and_exact_solvers_give_the_same_predictions_on_a_full_rank_coding() {
    // One one-hot group plus a numerical column: the drop-first coding is full rank.
    let spec = FeatureSpec { categorical: vec!["PULocationID".into()], ..FeatureSpec::default() };
    let files = [sample("2022-01")];
    let exact = solve::fit_exact(&spec, &accumulate(&spec, &files, &NoProgress).expect("read")).expect("exact");
    assert_eq!(exact.rank, exact.model.feature_count() - 1, "full rank after centring");
    let batches = [read_trips(&files[0].path, &spec).expect("read")];
    let linfa = linfa_fit::fit_linfa(&spec, &batches).expect("linfa");
    // Compare where both models know every category: an unseen category means "no one-hot term",
    // which each parametrisation places differently (drop-first: the dropped category; minimum
    // norm: the balanced intercept).
    let seen: std::collections::HashSet<i64> = match &batches[0].keys[0] {
        KeyColumn::Int(values) => values.iter().copied().collect(),
        KeyColumn::Str(_) => unreachable!("location IDs are integers"),
    };
    for month in ["2022-01", "2022-02", "2020-06"] {
        let trips = read_trips(&sample(month).path, &spec).expect("read");
        let KeyColumn::Int(pickup) = &trips.keys[0] else { unreachable!("integers") };
        let a = exact.model.predict_trips(&trips);
        let b = linfa.predict_trips(&trips);
        let compared: Vec<f64> =
            (0..trips.len()).filter(|&i| seen.contains(&pickup[i])).map(|i| (a[i] - b[i]).abs()).collect();
        assert!(compared.len() > trips.len() * 9 / 10, "{month}: most rows have known categories");
        let worst = compared.iter().copied().fold(0.0, f64::max);
        assert!(worst < 1e-8, "{month}: predictions differ by up to {worst:e} minutes");
    }
    // And through the pipeline: both solvers report the same metrics (validated on known data).
    let by_linfa = train(&spec, &files, &files[0], Solver::Linfa, &NoProgress).expect("linfa train");
    let by_exact = train(&spec, &files, &files[0], Solver::Exact, &NoProgress).expect("exact train");
    assert_close("val rmse", by_linfa.validation.rmse, by_exact.validation.rmse, 1e-10);
    assert_close(
        "train rmse",
        by_linfa.artifact.body.training.train.rmse,
        by_exact.artifact.body.training.train.rmse,
        1e-10,
    );
    assert_eq!(by_linfa.artifact.body.training.solver, "linfa-qr");
}

#[test]
fn statistics_stream_in_bounded_memory_and_merge_exactly() {
    let spec = FeatureSpec::default();
    let once = accumulate(&spec, &[sample("2022-01")], &NoProgress).expect("read");
    let files = vec![sample("2022-01"); 10];
    let ten = accumulate(&spec, &files, &NoProgress).expect("read");
    // Memory follows distinct combinations, not rows: ten passes hold the same number of groups.
    assert_eq!(ten.combos(), once.combos());
    assert_eq!(ten.rows(), 10 * once.rows());
    let a = solve::fit_exact(&spec, &once).expect("fit");
    let b = solve::fit_exact(&spec, &ten).expect("fit");
    assert_eq!(a.rank, b.rank);
    assert_close("train rmse", b.train_rmse, a.train_rmse, 1e-12);
    for ((name_a, wa), (name_b, wb)) in a.model.features().iter().zip(b.model.features()) {
        assert_eq!(name_a, &name_b);
        assert!((wa - wb).abs() < 1e-9 * (1.0 + wa.abs()), "{name_a}: {wa} vs {wb}");
    }
}

#[test]
fn artifact_round_trips_and_refuses_tampering() {
    let trained = train(&FeatureSpec::default(), &[sample("2022-01")], &sample("2022-02"), Solver::Exact, &NoProgress)
        .expect("train");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.json");
    trained.artifact.save(&path).expect("save");
    let loaded = Artifact::load(&path).expect("load");
    assert_eq!(loaded.body, trained.artifact.body);
    assert_eq!(loaded.content_sha256(), trained.artifact.content_sha256());
    let trips = read_trips(&sample("2022-03").path, &FeatureSpec::default()).expect("read");
    assert_eq!(loaded.model.predict_trips(&trips), trained.artifact.model.predict_trips(&trips));

    let text = std::fs::read_to_string(&path).expect("read");
    // Reformatting keeps the content, so the checksum still holds.
    let compact: serde_json::Value = serde_json::from_str(&text).expect("json");
    Artifact::from_bytes(&serde_json::to_vec(&compact).expect("json"), "compact").expect("reformatted loads");

    // A changed coefficient is refused.
    let intercept = format!("\"intercept\": {}", trained.artifact.body.intercept);
    assert!(text.contains(&intercept));
    let tampered = text.replace(&intercept, "\"intercept\": 1.5");
    let err = Artifact::from_bytes(tampered.as_bytes(), "tampered.json").expect_err("tampered");
    assert!(err.to_string().contains("tampered.json: checksum mismatch"), "{err}");

    let newer = text.replace("\"format_version\": 1", "\"format_version\": 7");
    let err = Artifact::from_bytes(newer.as_bytes(), "newer.json").expect_err("newer");
    assert!(err.to_string().contains("format_version 7 is not supported"), "{err}");

    let err = Artifact::from_bytes(b"\x80\x04pickle", "model.pkl").expect_err("not json");
    assert!(err.to_string().starts_with("model artifact model.pkl: not a lightops model artifact"), "{err}");
    let err = Artifact::from_bytes(br#"{"format":"mlflow","format_version":1}"#, "x").expect_err("other format");
    assert!(err.to_string().contains("expected \"lightops.model\""), "{err}");
}
