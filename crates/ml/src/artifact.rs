//! The model artifact: a versioned, documented, non-executable JSON document.
//!
//! ```text
//! {
//!   "format": "lightops.model",
//!   "format_version": 1,
//!   "sha256": "<hex sha256 of the compact JSON serialisation of `model`>",
//!   "model": {
//!     "feature_spec": { "categorical": [...], "numerical": [...], "crossed": [...],
//!                       "target_min": 1.0, "target_max": 60.0 },
//!     "features": ["DOLocationID=1", ..., "trip_distance"],      // DictVectorizer order
//!     "coefficients": [...],                                     // one per feature
//!     "intercept": 22.09,
//!     "training": { rows, metrics, rank, solver, sources, trained_at, lightops_version }
//!   }
//! }
//! ```
//!
//! Only data: reading an artifact never runs code. Loading checks the format name, refuses a
//! `format_version` this build does not know, and recomputes the checksum over the `model`
//! object (floats round-trip exactly, so re-serialising reproduces the written bytes);
//! formatting changes (indentation) keep it valid, any change of content does not.
//! docs/model-artifact.md describes every field.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::metrics::RegressionMetrics;
use crate::model::{CategoryGroup, LinearModel};
use crate::spec::FeatureSpec;

/// The `format` field of every artifact.
pub const FORMAT: &str = "lightops.model";
/// The artifact format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What was trained on and how well it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    /// Rows fitted (after the duration filter).
    pub train_rows: u64,
    /// Rows validated on (after the duration filter).
    pub val_rows: u64,
    /// Training RMSE and R² (exact, from the sufficient statistics; `mae` is not computed and is
    /// absent).
    pub train: TrainMetrics,
    /// Validation metrics.
    pub validation: RegressionMetrics,
    /// Rank of the centred design matrix.
    pub rank: usize,
    /// Solver that produced the coefficients (`exact-ols` or `linfa-qr`).
    pub solver: String,
    /// Training files, as given.
    pub train_sources: Vec<String>,
    /// Validation file, as given.
    pub val_source: String,
    /// When training finished, RFC 3339, UTC.
    pub trained_at: String,
    /// The lightops version that trained the model.
    pub lightops_version: String,
}

/// Training-set metrics that come from the sufficient statistics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainMetrics {
    /// Root mean squared error, minutes.
    pub rmse: f64,
    /// Coefficient of determination.
    pub r2: f64,
}

/// The `model` object of an artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBody {
    /// What the model reads.
    pub feature_spec: FeatureSpec,
    /// Feature names, sorted as `DictVectorizer` sorts them.
    pub features: Vec<String>,
    /// One coefficient per feature.
    pub coefficients: Vec<f64>,
    /// The intercept.
    pub intercept: f64,
    /// Training metadata.
    pub training: TrainingInfo,
    /// Reference profile of the validation data and its predictions, for drift monitoring
    /// (absent in artifacts from before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<crate::profile::Profile>,
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: &'static str,
    format_version: u32,
    sha256: String,
    model: &'a ModelBody,
}

#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    format_version: Option<u32>,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    sha256: String,
    model: ModelBody,
}

/// A loaded or freshly trained model with its metadata.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The serialisable content.
    pub body: ModelBody,
    /// The model, ready to predict.
    pub model: LinearModel,
}

impl Artifact {
    /// Wraps a trained model and its metadata.
    pub fn new(model: LinearModel, training: TrainingInfo) -> Self {
        let (features, coefficients) = model.features().into_iter().unzip();
        let body = ModelBody {
            feature_spec: model.spec.clone(),
            features,
            coefficients,
            intercept: model.intercept,
            training,
            profile: None,
        };
        Self { body, model }
    }

    /// The checksum recorded in the artifact: sha256 of the compact JSON of the `model` object.
    pub fn content_sha256(&self) -> String {
        content_sha256(&self.body)
    }

    /// The artifact as bytes (pretty-printed JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        let envelope = EnvelopeOut {
            format: FORMAT,
            format_version: FORMAT_VERSION,
            sha256: self.content_sha256(),
            model: &self.body,
        };
        let mut bytes = serde_json::to_vec_pretty(&envelope).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses and verifies an artifact. `origin` names it in error messages.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let bad = |message: String| Error::Artifact { path: origin.to_owned(), message };
        let header: Header =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a lightops model artifact: {e}")))?;
        if header.format.as_deref() != Some(FORMAT) {
            return Err(bad(format!("format is {:?}, expected {FORMAT:?}", header.format.unwrap_or_default())));
        }
        match header.format_version {
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(bad(format!(
                    "format_version {other} is not supported by lightops {} (it reads version {FORMAT_VERSION})",
                    env!("CARGO_PKG_VERSION")
                )));
            }
            None => return Err(bad("format_version is missing".into())),
        }
        let envelope: EnvelopeIn = serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid content: {e}")))?;
        let actual = content_sha256(&envelope.model);
        if actual != envelope.sha256 {
            return Err(bad(format!(
                "checksum mismatch: recorded sha256 {}, content hashes to {actual}; the file is corrupt or was edited",
                envelope.sha256
            )));
        }
        let model = model_from_body(&envelope.model).map_err(|e| bad(e.to_string()))?;
        Ok(Self { body: envelope.model, model })
    }

    /// Writes the artifact to a file, atomically (temporary file, then rename).
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, self.to_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads and verifies an artifact file.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }
}

fn content_sha256(body: &ModelBody) -> String {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// Rebuilds the per-group coefficient tables from the flat, sorted feature list.
fn model_from_body(body: &ModelBody) -> Result<LinearModel> {
    let spec = &body.feature_spec;
    spec.validate()?;
    if body.features.len() != body.coefficients.len() {
        return Err(Error::Spec(format!(
            "{} features but {} coefficients",
            body.features.len(),
            body.coefficients.len()
        )));
    }
    let mut groups: Vec<CategoryGroup> = spec
        .group_names()
        .map(|name| CategoryGroup { name: name.to_owned(), categories: Vec::new(), coefficients: Vec::new() })
        .collect();
    let mut numeric = vec![None; spec.numerical.len()];
    for (feature, &coefficient) in body.features.iter().zip(&body.coefficients) {
        if !coefficient.is_finite() {
            return Err(Error::Spec(format!("coefficient of `{feature}` is not finite")));
        }
        if let Some(position) = spec.numerical.iter().position(|n| n == feature) {
            numeric[position] = Some(coefficient);
            continue;
        }
        let group = feature
            .split_once('=')
            .and_then(|(name, category)| groups.iter_mut().find(|g| g.name == name).map(|g| (g, category)));
        let Some((group, category)) = group else {
            return Err(Error::Spec(format!("feature `{feature}` is not in the feature spec")));
        };
        group.categories.push(category.to_owned());
        group.coefficients.push(coefficient);
    }
    let numeric = numeric
        .into_iter()
        .zip(&spec.numerical)
        .map(|(c, name)| c.ok_or_else(|| Error::Spec(format!("numerical feature `{name}` has no coefficient"))))
        .collect::<Result<Vec<_>>>()?;
    LinearModel::new(spec.clone(), groups, numeric, body.intercept)
}
