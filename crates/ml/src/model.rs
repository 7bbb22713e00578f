//! The fitted model: one coefficient per feature, plus the intercept, and cheap prediction.
//!
//! Prediction is one coefficient lookup per one-hot group, one multiply-add per numerical column
//! and the intercept. A category never seen in training contributes nothing, as with
//! scikit-learn's `DictVectorizer`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::data::Trips;
use crate::error::{Error, Result};
use crate::spec::FeatureSpec;
use crate::stats::{CatValue, Interner, encode_combos};

/// The coefficients of one one-hot group (a categorical column or a crossed feature).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryGroup {
    /// Group name: the column name, or the crossed feature's name.
    pub name: String,
    /// Category values as strings, sorted.
    pub categories: Vec<String>,
    /// One coefficient per category.
    pub coefficients: Vec<f64>,
}

/// A linear model over a [`FeatureSpec`].
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    /// What the model reads.
    pub spec: FeatureSpec,
    /// One group per categorical column, then one per crossed feature (spec order).
    pub groups: Vec<CategoryGroup>,
    /// One coefficient per numerical column (spec order).
    pub numeric: Vec<f64>,
    /// The intercept.
    pub intercept: f64,
    lookups: Vec<HashMap<String, f64>>,
}

impl LinearModel {
    /// Builds a model and its lookup tables. Groups must follow the spec's group order.
    pub fn new(spec: FeatureSpec, groups: Vec<CategoryGroup>, numeric: Vec<f64>, intercept: f64) -> Result<Self> {
        let expected: Vec<&str> = spec.group_names().collect();
        let found: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        if expected != found {
            return Err(Error::Spec(format!("coefficient groups {found:?} do not match the spec's {expected:?}")));
        }
        if numeric.len() != spec.numerical.len() {
            return Err(Error::Spec(format!(
                "{} numerical coefficients for {} numerical columns",
                numeric.len(),
                spec.numerical.len()
            )));
        }
        for group in &groups {
            if group.categories.len() != group.coefficients.len() {
                return Err(Error::Spec(format!(
                    "group `{}`: categories and coefficients differ in length",
                    group.name
                )));
            }
        }
        let lookups =
            groups.iter().map(|g| g.categories.iter().cloned().zip(g.coefficients.iter().copied()).collect()).collect();
        Ok(Self { spec, groups, numeric, intercept, lookups })
    }

    /// Number of features (one-hot columns plus numerical columns), as `DictVectorizer` counts.
    pub fn feature_count(&self) -> usize {
        self.groups.iter().map(|g| g.categories.len()).sum::<usize>() + self.numeric.len()
    }

    /// Feature names and coefficients in `DictVectorizer` order (names sorted).
    pub fn features(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self
            .groups
            .iter()
            .flat_map(|g| g.categories.iter().zip(&g.coefficients).map(move |(c, w)| (format!("{}={c}", g.name), *w)))
            .chain(self.spec.numerical.iter().cloned().zip(self.numeric.iter().copied()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The coefficient of a category in a group (0 for a category never seen in training).
    pub fn category_coefficient(&self, group: usize, category: &str) -> f64 {
        self.lookups.get(group).and_then(|l| l.get(category)).copied().unwrap_or(0.0)
    }

    /// The categorical part of a prediction (intercept included) for one row's key values,
    /// given in [`FeatureSpec::key_columns`] order.
    pub fn categorical_part(&self, key_values: &[&CatValue]) -> f64 {
        let sources = group_sources(&self.spec);
        let mut total = self.intercept;
        for (group, columns) in sources.iter().enumerate() {
            let category = category_name(columns.iter().map(|&c| key_values[c]));
            total += self.category_coefficient(group, &category);
        }
        total
    }

    /// Predicts every row of a batch.
    pub fn predict_trips(&self, trips: &Trips) -> Vec<f64> {
        let mut interners = vec![Interner::default(); trips.keys.len()];
        let (combos, row_combo) = encode_combos(trips, &mut interners);
        let parts: Vec<f64> = combos
            .iter()
            .map(|key| {
                let values: Vec<&CatValue> = interners.iter().zip(key).map(|(i, code)| i.get(*code)).collect();
                self.categorical_part(&values)
            })
            .collect();
        let mut out: Vec<f64> = row_combo.iter().map(|&c| parts[c as usize]).collect();
        for (coefficient, values) in self.numeric.iter().zip(&trips.numeric) {
            for (prediction, x) in out.iter_mut().zip(values) {
                *prediction += coefficient * x;
            }
        }
        out
    }
}

/// For every one-hot group (spec order), the indices of the key columns its category is made of.
pub fn group_sources(spec: &FeatureSpec) -> Vec<Vec<usize>> {
    let keys = spec.key_columns();
    let position = |name: &String| keys.iter().position(|k| k == name).unwrap_or_default();
    spec.categorical
        .iter()
        .map(|c| vec![position(c)])
        .chain(spec.crossed.iter().map(|x| x.columns.iter().map(position).collect()))
        .collect()
}

/// A category's string: the value, or crossed values joined with `_` (the course's `PU_DO`).
pub fn category_name<'a>(values: impl Iterator<Item = &'a CatValue>) -> String {
    let mut name = String::new();
    for (i, value) in values.enumerate() {
        if i > 0 {
            name.push('_');
        }
        name.push_str(&value.to_string());
    }
    name
}
