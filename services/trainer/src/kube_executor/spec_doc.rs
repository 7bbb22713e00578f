//! The job spec as JSON, for the `lightops.io/job-spec` annotation.
//!
//! Prost types do not implement serde, so this module mirrors `lightops.trainer.v1.JobSpec` with
//! plain serde structs. The JSON uses the proto field names (snake_case) and the enum value names
//! (`EXECUTOR_KUBERNETES`), so `kubectl describe job` shows a readable spec. Every field is
//! optional on the way in: an annotation written by an older trainer still decodes, with proto3
//! defaults for the fields it did not know.

use std::collections::BTreeMap;

use lightops_api::common::v1::{CrossedFeature, FeatureSpec};
use lightops_api::trainer::v1::{Executor, JobSpec, PromotionPolicy};
use serde::{Deserialize, Serialize};

use super::{Error, Result};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct JobSpecDoc {
    train: Vec<String>,
    val: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    feature_spec: Option<FeatureSpecDoc>,
    experiment: String,
    register_as: String,
    alias: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    promotion: Option<PromotionDoc>,
    executor: String,
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct FeatureSpecDoc {
    categorical: Vec<String>,
    numerical: Vec<String>,
    crossed: Vec<CrossedDoc>,
    target: String,
    target_min: f64,
    target_max: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct CrossedDoc {
    name: String,
    columns: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct PromotionDoc {
    metric: String,
    min_improvement: f64,
}

/// Encodes a job spec as the JSON stored in the `lightops.io/job-spec` annotation.
///
/// Tags are written in key order, so the same spec always gives the same text.
pub fn spec_to_json(spec: &JobSpec) -> String {
    let doc = JobSpecDoc {
        train: spec.train.clone(),
        val: spec.val.clone(),
        feature_spec: spec.feature_spec.as_ref().map(|features| FeatureSpecDoc {
            categorical: features.categorical.clone(),
            numerical: features.numerical.clone(),
            crossed: features
                .crossed
                .iter()
                .map(|crossed| CrossedDoc { name: crossed.name.clone(), columns: crossed.columns.clone() })
                .collect(),
            target: features.target.clone(),
            target_min: features.target_min,
            target_max: features.target_max,
        }),
        experiment: spec.experiment.clone(),
        register_as: spec.register_as.clone(),
        alias: spec.alias.clone(),
        promotion: spec.promotion.as_ref().map(|promotion| PromotionDoc {
            metric: promotion.metric.clone(),
            min_improvement: promotion.min_improvement,
        }),
        executor: spec.executor().as_str_name().to_owned(),
        tags: spec.tags.iter().map(|(key, value)| (key.clone(), value.clone())).collect(),
    };
    // Strings, vectors, maps and finite or non-finite floats (written as null) always serialize.
    serde_json::to_string(&doc).unwrap_or_default()
}

/// Decodes the JSON written by [`spec_to_json`].
pub fn spec_from_json(json: &str) -> Result<JobSpec> {
    let doc: JobSpecDoc = serde_json::from_str(json).map_err(Error::SpecJson)?;
    let executor = if doc.executor.is_empty() {
        Executor::Unspecified
    } else {
        Executor::from_str_name(&doc.executor).ok_or_else(|| Error::UnknownExecutor(doc.executor.clone()))?
    };
    Ok(JobSpec {
        train: doc.train,
        val: doc.val,
        feature_spec: doc.feature_spec.map(|features| FeatureSpec {
            categorical: features.categorical,
            numerical: features.numerical,
            crossed: features
                .crossed
                .into_iter()
                .map(|crossed| CrossedFeature { name: crossed.name, columns: crossed.columns })
                .collect(),
            target: features.target,
            target_min: features.target_min,
            target_max: features.target_max,
        }),
        experiment: doc.experiment,
        register_as: doc.register_as,
        alias: doc.alias,
        promotion: doc
            .promotion
            .map(|promotion| PromotionPolicy { metric: promotion.metric, min_improvement: promotion.min_improvement }),
        executor: executor as i32,
        tags: doc.tags.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_spec() -> JobSpec {
        JobSpec {
            train: vec!["s3://data/2023-01.parquet".into(), "s3://data/2023-02.parquet".into()],
            val: "s3://data/2023-03.parquet".into(),
            feature_spec: Some(FeatureSpec {
                categorical: vec![],
                numerical: vec!["trip_distance".into()],
                crossed: vec![CrossedFeature {
                    name: "PU_DO".into(),
                    columns: vec!["PULocationID".into(), "DOLocationID".into()],
                }],
                target: "duration".into(),
                target_min: 1.0,
                target_max: 60.0,
            }),
            experiment: "nyc-taxi".into(),
            register_as: "duration".into(),
            alias: "champion".into(),
            promotion: Some(PromotionPolicy { metric: "mae".into(), min_improvement: 0.01 }),
            executor: Executor::Kubernetes as i32,
            tags: [("reason".to_owned(), "drift".to_owned()), ("by".to_owned(), "monitor".to_owned())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn round_trips_every_field() -> Result<()> {
        let spec = full_spec();
        assert_eq!(spec_from_json(&spec_to_json(&spec))?, spec);
        assert_eq!(spec_from_json(&spec_to_json(&JobSpec::default()))?, JobSpec::default());
        Ok(())
    }

    #[test]
    fn writes_readable_names() {
        let json = spec_to_json(&full_spec());
        assert!(json.contains(r#""executor":"EXECUTOR_KUBERNETES""#), "{json}");
        assert!(json.contains(r#""tags":{"by":"monitor","reason":"drift"}"#), "{json}");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(spec_from_json("{"), Err(Error::SpecJson(_))));
        assert!(matches!(
            spec_from_json(r#"{"executor":"EXECUTOR_MOON"}"#),
            Err(Error::UnknownExecutor(name)) if name == "EXECUTOR_MOON"
        ));
        // Unknown fields and missing fields are fine: a newer or older trainer wrote it.
        assert!(spec_from_json(r#"{"train":["a"],"future_field":1}"#).is_ok());
    }
}
