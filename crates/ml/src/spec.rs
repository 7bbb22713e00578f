//! The feature spec: which columns become features and how. Data, not code: it is saved in every
//! model artifact and logged as run params.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Name of the target column: the ride duration in minutes, derived from the pickup and dropoff
/// times.
pub const TARGET: &str = "duration";

/// How many raw columns may take part in categorical and crossed features together. Each row's
/// categorical part is packed into a fixed-size key while streaming (see `stats`).
pub const MAX_KEY_COLUMNS: usize = 4;

/// Which columns become model features and how, following scikit-learn's `DictVectorizer`:
/// categorical values are one-hot encoded with feature names `column=value` (values as strings,
/// integers without a decimal point), numerical columns are used as they are, and crossed
/// features join several columns' values with `_` (the course's `PU_DO`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// One-hot encoded columns.
    pub categorical: Vec<String>,
    /// Columns used as numbers.
    pub numerical: Vec<String>,
    /// Crossed categorical features.
    #[serde(default)]
    pub crossed: Vec<CrossedFeature>,
    /// Rows are kept when `target_min <= duration <= target_max` (minutes).
    pub target_min: f64,
    /// Upper bound of the duration filter, minutes, inclusive.
    pub target_max: f64,
}

/// A categorical feature whose value is the `_`-joined values of several columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossedFeature {
    /// Feature name, e.g. `PU_DO`.
    pub name: String,
    /// Source columns, in order.
    pub columns: Vec<String>,
}

impl Default for FeatureSpec {
    /// The workshop's model: `PULocationID`, `DOLocationID` one-hot, `trip_distance` numeric,
    /// duration filtered to 1–60 minutes.
    fn default() -> Self {
        Self {
            categorical: vec!["PULocationID".into(), "DOLocationID".into()],
            numerical: vec!["trip_distance".into()],
            crossed: Vec::new(),
            target_min: 1.0,
            target_max: 60.0,
        }
    }
}

impl FeatureSpec {
    /// The course's variant: the crossed `PU_DO` feature plus `trip_distance`.
    pub fn pu_do() -> Self {
        Self {
            categorical: Vec::new(),
            numerical: vec!["trip_distance".into()],
            crossed: vec![CrossedFeature {
                name: "PU_DO".into(),
                columns: vec!["PULocationID".into(), "DOLocationID".into()],
            }],
            target_min: 1.0,
            target_max: 60.0,
        }
    }

    /// Raw columns that make up a row's categorical key: the categorical columns, then crossed
    /// sources not already listed, in first-seen order.
    pub fn key_columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = Vec::new();
        let sources = self.crossed.iter().flat_map(|c| c.columns.iter());
        for column in self.categorical.iter().chain(sources) {
            if !columns.contains(column) {
                columns.push(column.clone());
            }
        }
        columns
    }

    /// Checks that the spec can be used: at least one feature, no duplicates, a sane filter.
    pub fn validate(&self) -> Result<()> {
        if self.categorical.is_empty() && self.numerical.is_empty() && self.crossed.is_empty() {
            return Err(Error::Spec("no features: give categorical, numerical or crossed columns".into()));
        }
        if !(self.target_min.is_finite() && self.target_max.is_finite() && self.target_min <= self.target_max) {
            return Err(Error::Spec(format!(
                "target filter [{}, {}] is not a finite, non-empty range",
                self.target_min, self.target_max
            )));
        }
        let mut names: Vec<&str> = self.group_names().collect();
        names.extend(self.numerical.iter().map(String::as_str));
        let mut seen = std::collections::HashSet::new();
        for name in names {
            if name.is_empty() {
                return Err(Error::Spec("a feature name is empty".into()));
            }
            if !seen.insert(name) {
                return Err(Error::Spec(format!("feature `{name}` is listed twice")));
            }
        }
        for crossed in &self.crossed {
            if crossed.columns.len() < 2 {
                return Err(Error::Spec(format!("crossed feature `{}` needs at least two columns", crossed.name)));
            }
        }
        let key_columns = self.key_columns().len();
        if key_columns > MAX_KEY_COLUMNS {
            return Err(Error::Spec(format!(
                "{key_columns} columns take part in categorical features; at most {MAX_KEY_COLUMNS} are supported"
            )));
        }
        Ok(())
    }

    /// Names of the one-hot groups: categorical columns, then crossed features.
    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.categorical.iter().map(String::as_str).chain(self.crossed.iter().map(|c| c.name.as_str()))
    }

    /// Every raw column the reader must load besides the pickup/dropoff times.
    pub fn raw_columns(&self) -> Vec<String> {
        let mut columns = self.key_columns();
        for column in &self.numerical {
            if !columns.contains(column) {
                columns.push(column.clone());
            }
        }
        columns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_the_workshop_model() {
        let spec = FeatureSpec::default();
        spec.validate().expect("default spec is valid");
        assert_eq!(spec.key_columns(), ["PULocationID", "DOLocationID"]);
        assert_eq!(spec.raw_columns(), ["PULocationID", "DOLocationID", "trip_distance"]);
    }

    #[test]
    fn pu_do_spec_keys_on_both_sources() {
        let spec = FeatureSpec::pu_do();
        spec.validate().expect("pu_do spec is valid");
        assert_eq!(spec.key_columns(), ["PULocationID", "DOLocationID"]);
        assert_eq!(spec.group_names().collect::<Vec<_>>(), ["PU_DO"]);
    }

    #[test]
    fn invalid_specs_say_why() {
        let mut spec = FeatureSpec::default();
        spec.numerical.push("PULocationID".into());
        let err = spec.validate().expect_err("duplicate");
        assert!(err.to_string().contains("`PULocationID` is listed twice"), "{err}");

        let spec = FeatureSpec { target_min: 61.0, ..FeatureSpec::default() };
        assert!(spec.validate().expect_err("range").to_string().contains("[61, 60]"));

        let empty = FeatureSpec { categorical: vec![], numerical: vec![], crossed: vec![], ..FeatureSpec::default() };
        assert!(empty.validate().expect_err("empty").to_string().contains("no features"));
    }
}
