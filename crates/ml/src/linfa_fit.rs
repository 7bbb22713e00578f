//! A second solver: linfa-linear's `LinearRegression` on a dense, full-rank coding.
//!
//! linfa solves a dense QR of `[X, 1]` without pivoting, so it needs the whole design matrix in
//! memory and a full-rank coding: each one-hot group drops its first category (which then gets
//! coefficient 0). It spans the same column space as the full one-hot coding, so its predictions
//! equal the exact solver's whenever the coding is full rank. Use it for small data and as a
//! cross-check; [`crate::solve::fit_exact`] is the default.

use linfa::Dataset;
use linfa::traits::Fit;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};

use crate::data::Trips;
use crate::error::{Error, Result};
use crate::model::{CategoryGroup, LinearModel, category_name, group_sources};
use crate::spec::FeatureSpec;
use crate::stats::{CatValue, Interner, encode_combos};

/// The largest dense design matrix this solver builds, in bytes.
pub const MAX_DENSE_BYTES: usize = 512 << 20;

/// Fits with linfa-linear on a drop-first coding of the rows in `batches`.
pub fn fit_linfa(spec: &FeatureSpec, batches: &[Trips]) -> Result<LinearModel> {
    let sources = group_sources(spec);
    // Category names of every row, per group.
    let mut row_categories: Vec<Vec<String>> = vec![Vec::new(); sources.len()];
    let mut targets = Vec::new();
    for trips in batches {
        let mut interners = vec![Interner::default(); trips.keys.len()];
        let (combos, row_combo) = encode_combos(trips, &mut interners);
        let names: Vec<Vec<String>> = combos
            .iter()
            .map(|key| {
                let values: Vec<&CatValue> = interners.iter().zip(key).map(|(i, c)| i.get(*c)).collect();
                sources.iter().map(|cols| category_name(cols.iter().map(|&c| values[c]))).collect()
            })
            .collect();
        for &combo in &row_combo {
            for (group, name) in names[combo as usize].iter().enumerate() {
                row_categories[group].push(name.clone());
            }
        }
        targets.extend_from_slice(&trips.duration);
    }
    let rows = targets.len();
    if rows == 0 {
        return Err(Error::Fit("no rows to fit".into()));
    }
    let vocab: Vec<Vec<String>> = row_categories
        .iter()
        .map(|names| {
            let mut v = names.clone();
            v.sort();
            v.dedup();
            v
        })
        .collect();
    // Column of each kept category: every group drops its first.
    let mut offsets = Vec::with_capacity(vocab.len());
    let mut columns = 0;
    for names in &vocab {
        offsets.push(columns);
        columns += names.len().saturating_sub(1);
    }
    let numeric_offset = columns;
    columns += spec.numerical.len();
    let bytes = rows.saturating_mul(columns).saturating_mul(8);
    if bytes > MAX_DENSE_BYTES {
        return Err(Error::Fit(format!(
            "the linfa solver needs a dense {rows} × {columns} design matrix ({} MiB, limit {} MiB); use the exact solver",
            bytes >> 20,
            MAX_DENSE_BYTES >> 20
        )));
    }
    let mut x = Array2::<f64>::zeros((rows, columns));
    for (group, names) in row_categories.iter().enumerate() {
        for (row, name) in names.iter().enumerate() {
            let index = vocab[group].binary_search(name).unwrap_or_default();
            if index > 0 {
                x[[row, offsets[group] + index - 1]] = 1.0;
            }
        }
    }
    let mut row = 0;
    for trips in batches {
        for i in 0..trips.len() {
            for (l, values) in trips.numeric.iter().enumerate() {
                x[[row, numeric_offset + l]] = values[i];
            }
            row += 1;
        }
    }
    let dataset = Dataset::new(x, Array1::from(targets));
    let fitted = LinearRegression::new()
        .fit(&dataset)
        .map_err(|e| Error::Fit(format!("linfa-linear: {e} (is the coding rank-deficient?)")))?;
    let params = fitted.params();
    let groups = spec
        .group_names()
        .zip(vocab)
        .enumerate()
        .map(|(group, (name, categories))| {
            let mut coefficients = vec![0.0; categories.len()];
            for (i, c) in coefficients.iter_mut().enumerate().skip(1) {
                *c = params[offsets[group] + i - 1];
            }
            CategoryGroup { name: name.to_owned(), categories, coefficients }
        })
        .collect();
    let numeric = params.slice(ndarray::s![numeric_offset..]).to_vec();
    LinearModel::new(spec.clone(), groups, numeric, fitted.intercept())
}
