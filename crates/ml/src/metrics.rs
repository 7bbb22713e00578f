//! Regression metrics: RMSE, MAE and R², accumulated in one pass and mergeable.

use serde::{Deserialize, Serialize};

/// Streaming accumulator for regression metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsAccumulator {
    rows: u64,
    sum_sq: f64,
    sum_abs: f64,
    sum_y: f64,
    sum_yy: f64,
}

impl MetricsAccumulator {
    /// Adds predictions and their actual values.
    pub fn add(&mut self, predictions: &[f64], actuals: &[f64]) {
        for (p, y) in predictions.iter().zip(actuals) {
            let err = p - y;
            self.rows += 1;
            self.sum_sq += err * err;
            self.sum_abs += err.abs();
            self.sum_y += y;
            self.sum_yy += y * y;
        }
    }

    /// Adds another accumulator's rows.
    pub fn merge(&mut self, other: &Self) {
        self.rows += other.rows;
        self.sum_sq += other.sum_sq;
        self.sum_abs += other.sum_abs;
        self.sum_y += other.sum_y;
        self.sum_yy += other.sum_yy;
    }

    /// The metrics so far (zeros and NaN R² with no rows).
    pub fn finish(&self) -> RegressionMetrics {
        let n = self.rows as f64;
        let total = self.sum_yy - self.sum_y * self.sum_y / n;
        RegressionMetrics {
            rows: self.rows,
            rmse: (self.sum_sq / n).sqrt(),
            mae: self.sum_abs / n,
            r2: 1.0 - self.sum_sq / total,
        }
    }
}

/// Regression quality over a set of rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Rows scored.
    pub rows: u64,
    /// Root mean squared error, minutes.
    pub rmse: f64,
    /// Mean absolute error, minutes.
    pub mae: f64,
    /// Coefficient of determination.
    pub r2: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_a_known_case() {
        let mut acc = MetricsAccumulator::default();
        acc.add(&[1.0, 2.0], &[2.0, 4.0]);
        let mut other = MetricsAccumulator::default();
        other.add(&[3.0], &[3.0]);
        acc.merge(&other);
        let m = acc.finish();
        assert_eq!(m.rows, 3);
        assert!((m.rmse - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert!((m.mae - 1.0).abs() < 1e-15);
        // mean 3, total sum of squares 2, residual sum 5.
        assert!((m.r2 - (1.0 - 5.0 / 2.0)).abs() < 1e-15);
    }
}
