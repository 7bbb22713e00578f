//! The ML domain of lightops: NYC TLC trip data, features, the exact least-squares fit, the model
//! artifact and regression metrics.
//!
//! No network, no gRPC, no services: everything here works on local files and memory, so the
//! CLI, the trainer and the predictor share one implementation.
//!
//! - [`data`] reads TLC parquet/CSV files with polars (only the needed columns);
//! - [`spec`] says which columns become features ([`FeatureSpec`], data, not code);
//! - [`stats`] streams rows into grouped sufficient statistics (bounded memory);
//! - [`solve`] turns them into the minimum-norm least-squares model; [`linfa_fit`] is a second,
//!   dense solver for small data;
//! - [`model`] predicts; [`scorer`] is the same model compiled for single rides (serving); [`artifact`] saves and verifies models; [`metrics`] scores them;
//! - [`train`] is the whole pipeline.
//! - [`profile`] keeps per-column value counts (the reference saved with a model, a monitoring
//!   window); [`drift`] compares two profiles as Evidently 0.7 does.

pub mod artifact;
pub mod data;
pub mod drift;
pub mod error;
pub mod linfa_fit;
pub mod metrics;
pub mod model;
pub mod profile;
pub mod scorer;
pub mod solve;
pub mod spec;
pub mod stats;
pub mod train;

pub use artifact::Artifact;
pub use error::{Error, Result};
pub use model::LinearModel;
pub use scorer::{Ride, RideScorer};
pub use spec::FeatureSpec;
pub use train::{DataFile, Progress, Solver, Trained, train};
