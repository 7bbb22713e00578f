//! Every drift test and special function against Evidently 0.7 / scipy 1.17, on synthetic columns
//! that cross their branches. Expected values were recorded by
//! `bench/reference/evidently_stattest_cases.py` into `bench/reference/evidently_stattest_cases.json`.

mod common;

use common::expected;
use lightops_ml::drift::{Method, column_drift, special};
use lightops_ml::profile::{ColumnData, ColumnProfile, DEFAULT_MAX_DISTINCT, Profile};
use serde_json::Value;

/// Relative tolerance for scores and p-values.
const TOLERANCE: f64 = 1e-9;

fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
    if actual == expected {
        return true;
    }
    // Below ~1e-300 scipy and lightops may round to 0 or to a subnormal differently.
    if actual.abs() < 1e-290 && expected.abs() < 1e-290 {
        return true;
    }
    ((actual - expected) / expected).abs() <= tolerance
}

fn f(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn normal_cdf_matches_scipy_ndtr() {
    let want = expected("evidently_stattest_cases.json");
    for row in want["special"]["ndtr"].as_array().expect("ndtr") {
        let (x, p) = (f(&row[0]), f(&row[1]));
        let got = special::ndtr(x);
        assert!(close(got, p, 1e-14), "ndtr({x}) = {got:e}, scipy {p:e}");
    }
}

#[test]
fn chi_square_survival_matches_scipy_chdtrc() {
    let want = expected("evidently_stattest_cases.json");
    for row in want["special"]["chdtrc"].as_array().expect("chdtrc") {
        let (df, x, p) = (row[0].as_u64().expect("df"), f(&row[1]), f(&row[2]));
        let got = special::chi2_sf(df, x);
        assert!(close(got, p, 1e-11), "chdtrc({df}, {x}) = {got:e}, scipy {p:e}");
    }
}

#[test]
fn kolmogorov_distributions_match_scipy() {
    let want = expected("evidently_stattest_cases.json");
    for row in want["special"]["smirnov"].as_array().expect("smirnov") {
        let (n, x, p) = (row[0].as_u64().expect("n"), f(&row[1]), f(&row[2]));
        let got = special::smirnov_sf(n, x);
        assert!(close(got, p, TOLERANCE), "smirnov({n}, {x}) = {got:e}, scipy {p:e}");
    }
    let mut worst = (0.0f64, 0u64, 0.0f64);
    for row in want["special"]["kstwo_sf"].as_array().expect("kstwo_sf") {
        let (n, d, p) = (row[0].as_u64().expect("n"), f(&row[1]), f(&row[2]));
        let got = special::kstwo_sf(n, d);
        assert!(close(got, p, TOLERANCE), "kstwo.sf({d}, {n}) = {got:e}, scipy {p:e}");
        if p > 0.0 {
            let r = ((got - p) / p).abs();
            if r > worst.0 {
                worst = (r, n, d);
            }
        }
    }
    eprintln!("kstwo.sf: worst relative difference {:e} at n={}, d={}", worst.0, worst.1, worst.2);
}

fn column(name: &str, kind: &str, counts: &Value) -> ColumnProfile {
    let values = counts["values"].as_array().expect("values");
    let repeats: Vec<usize> =
        counts["counts"].as_array().expect("counts").iter().map(|c| c.as_u64().expect("count") as usize).collect();
    let profile = match kind {
        "numerical" => {
            let data: Vec<f64> = values.iter().zip(&repeats).flat_map(|(v, &n)| std::iter::repeat_n(f(v), n)).collect();
            Profile::from_columns(&[(name, ColumnData::Num(&data))], DEFAULT_MAX_DISTINCT)
        }
        _ if values.iter().all(Value::is_i64) => {
            let data: Vec<i64> = values
                .iter()
                .zip(&repeats)
                .flat_map(|(v, &n)| std::iter::repeat_n(v.as_i64().expect("int"), n))
                .collect();
            Profile::from_columns(&[(name, ColumnData::Int(&data))], DEFAULT_MAX_DISTINCT)
        }
        _ => {
            let data: Vec<String> = values
                .iter()
                .zip(&repeats)
                .flat_map(|(v, &n)| std::iter::repeat_n(v.as_str().expect("string").to_owned(), n))
                .collect();
            Profile::from_columns(&[(name, ColumnData::Str(&data))], DEFAULT_MAX_DISTINCT)
        }
    };
    profile.expect("profile").columns.remove(0)
}

#[test]
fn every_test_matches_evidently_on_synthetic_columns() {
    let want = expected("evidently_stattest_cases.json");
    let mut checked = 0;
    for case in want["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let kind = case["kind"].as_str().expect("kind");
        let reference = column(name, kind, &case["reference"]);
        let current = column(name, kind, &case["current"]);
        for result in case["results"].as_array().expect("results") {
            let method: Method = result["method"].as_str().expect("method").parse().expect("known method");
            let explicit = result["explicit"].as_bool().expect("explicit");
            let got = column_drift(&reference, &current, explicit.then_some(method), None).expect("drift");
            let what = format!("{name}: {method} ({})", if explicit { "chosen" } else { "default" });
            assert_eq!(got.method, method, "{what}: method");
            assert_eq!(got.threshold, f(&result["threshold"]), "{what}: threshold");
            let score = f(&result["score"]);
            if score.is_nan() {
                assert!(got.score.is_nan(), "{what}: score {} but Evidently has NaN", got.score);
            } else {
                assert!(close(got.score, score, TOLERANCE), "{what}: score {:e}, Evidently {score:e}", got.score);
            }
            assert_eq!(got.drifted, result["drifted"].as_bool().expect("drifted"), "{what}: drifted");
            if method == Method::Ks {
                let d = f(&case["ks_statistic"]);
                let got_d = got.statistic.expect("statistic");
                assert!(close(got_d, d, 1e-12), "{what}: D {got_d}, scipy {d}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 100, "only {checked} results checked");
}
