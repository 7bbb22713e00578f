//! The predictor service (work in progress).
