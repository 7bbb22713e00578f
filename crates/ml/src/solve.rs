//! Exact ordinary least squares from grouped sufficient statistics.
//!
//! The answer is the minimum-norm least-squares solution of the *centred* problem (the intercept
//! is not penalised), the one numpy's SVD-based `lstsq` gives on the centred design matrix. The
//! one-hot design with an intercept is rank-deficient (each group's columns sum to the intercept
//! column) and badly conditioned (`trip_distance` reaches 224,481 miles), so:
//!
//! 1. The normal equations `G β = b` of `[X, 1]` are assembled from the per-combination sums.
//! 2. The largest one-hot group `A` is eliminated exactly: its block of `G` is diagonal (its
//!    columns never overlap) with positive counts, so the Schur complement
//!    `S = C − Bᵀ D⁻¹ B` of the remaining columns (other groups, numerical columns, intercept) is
//!    small. For the course's `PU_DO` feature (~7,000 categories) `S` is 2 × 2.
//! 3. `S` is equilibrated (columns scaled to unit sum of squares), then solved with a symmetric eigendecomposition
//!    (rank-revealing): directions with eigenvalues below a relative tolerance are the null
//!    space; the rest give a particular solution through the pseudo-inverse.
//! 4. The null space of the whole system is lifted back (`z_A = −D⁻¹ B z_S`), and the particular
//!    solution is moved within it to the minimum norm over the non-intercept coefficients, in the
//!    original units. Any equilibration therefore leaves the answer unchanged.
//!
//! Matrices are `ndarray`; the symmetric eigendecompositions are `faer`'s (LAPACK-grade
//! accuracy: `linfa-linalg`'s `eigh` was tried first and left residuals of 4e-3 on the
//! equilibrated 2022-01 system, enough to move the training RMSE in the 7th digit). The
//! elimination and the null-space projection are written here because no crate solves this
//! structured problem.

use ndarray::{Array1, Array2, Axis};

use crate::error::{Error, Result};
use crate::model::{CategoryGroup, LinearModel, category_name, group_sources};
use crate::spec::FeatureSpec;
use crate::stats::GroupedStats;

/// Eigenvalues of the equilibrated Schur complement at or below this fraction of the largest are
/// treated as zero. Exact null directions come out near `1e-16` of the largest; the smallest real
/// directions on TLC months are above `1e-9` (see `Fit::smallest_kept` on real data).
pub const RANK_TOLERANCE: f64 = 1e-12;

/// The result of an exact fit.
#[derive(Debug, Clone)]
pub struct Fit {
    /// The model.
    pub model: LinearModel,
    /// Rank of the centred design matrix.
    pub rank: usize,
    /// Rows fitted.
    pub rows: u64,
    /// Training RMSE, computed exactly from the sufficient statistics.
    pub train_rmse: f64,
    /// Training R².
    pub train_r2: f64,
    /// Smallest eigenvalue kept, relative to the largest (how far the rank decision was from the
    /// tolerance).
    pub smallest_kept: f64,
    /// Largest eigenvalue treated as zero, relative to the largest (0 when none).
    pub largest_dropped: f64,
}

/// Column layout of the normal equations: group `A` first, then the small block.
struct Layout {
    /// Index of the eliminated group, if any.
    eliminated: Option<usize>,
    /// Category names per group.
    categories: Vec<Vec<String>>,
    /// Offset of each non-eliminated group in the small block.
    small_offset: Vec<usize>,
    /// Offset of the numerical columns in the small block.
    numeric_offset: usize,
    /// Size of the small block (including the intercept, last).
    small: usize,
}

/// Fits the minimum-norm least-squares model to the statistics.
pub fn fit_exact(spec: &FeatureSpec, stats: &GroupedStats) -> Result<Fit> {
    let rows = stats.rows();
    if rows == 0 {
        return Err(Error::Fit("no rows to fit".into()));
    }
    let k = spec.numerical.len();
    let sources = group_sources(spec);

    // Category of every combination in every group, and each group's sorted vocabulary.
    let mut vocab: Vec<Vec<String>> = vec![Vec::new(); sources.len()];
    let combo_names: Vec<Vec<String>> = stats
        .records()
        .map(|(key, _)| {
            let values = stats.values(key);
            sources.iter().map(|cols| category_name(cols.iter().map(|&c| values[c]))).collect()
        })
        .collect();
    for names in &combo_names {
        for (group, name) in names.iter().enumerate() {
            vocab[group].push(name.clone());
        }
    }
    for names in &mut vocab {
        names.sort();
        names.dedup();
    }
    let combo_index: Vec<Vec<usize>> = combo_names
        .iter()
        .map(|names| names.iter().enumerate().map(|(g, n)| vocab[g].binary_search(n).unwrap_or_default()).collect())
        .collect();

    let eliminated = (0..vocab.len()).max_by_key(|&g| vocab[g].len());
    let mut small_offset = vec![0; vocab.len()];
    let mut small = 0;
    for (group, names) in vocab.iter().enumerate() {
        if Some(group) != eliminated {
            small_offset[group] = small;
            small += names.len();
        }
    }
    let numeric_offset = small;
    small += k + 1;
    let intercept = small - 1;
    let layout = Layout { eliminated, categories: vocab, small_offset, numeric_offset, small };
    let m = eliminated.map_or(0, |g| layout.categories[g].len());

    // Normal equations of [X, 1]: D (diagonal, group A), B (A × small), C (small × small).
    let mut d = Array1::<f64>::zeros(m);
    let mut b_a = Array1::<f64>::zeros(m);
    let mut b_mat = Array2::<f64>::zeros((m, small));
    let mut c_mat = Array2::<f64>::zeros((small, small));
    let mut b_s = Array1::<f64>::zeros(small);
    let mut active: Vec<(usize, f64, f64)> = Vec::new(); // (column, Σ value, Σ value·y)
    for ((_, record), groups) in stats.records().zip(&combo_index) {
        let count = record.count();
        active.clear();
        for (group, &category) in groups.iter().enumerate() {
            if Some(group) != eliminated {
                active.push((layout.small_offset[group] + category, count, record.sum_y()));
            }
        }
        for l in 0..k {
            active.push((numeric_offset + l, record.sum_x(l), record.sum_xy(l)));
        }
        active.push((intercept, count, record.sum_y()));
        for (i, &(col_i, sum_i, sum_iy)) in active.iter().enumerate() {
            b_s[col_i] += sum_iy;
            for &(col_j, sum_j, _) in &active[i..] {
                // Products of one-hot/intercept columns are counts; of one with a numerical
                // column, that column's sum; of two numerical columns, their cross sum.
                let value = match (
                    col_i >= numeric_offset && col_i < intercept,
                    col_j >= numeric_offset && col_j < intercept,
                ) {
                    (true, true) => record.sum_xx(col_i - numeric_offset, col_j - numeric_offset),
                    (true, false) => sum_i,
                    (false, true) => sum_j,
                    (false, false) => count,
                };
                c_mat[[col_i, col_j]] += value;
                if col_i != col_j {
                    c_mat[[col_j, col_i]] += value;
                }
            }
        }
        if let Some(g) = eliminated {
            let a = groups[g];
            d[a] += count;
            b_a[a] += record.sum_y();
            for &(col, sum, _) in &active {
                b_mat[[a, col]] += sum;
            }
        }
    }

    // Schur complement S = C − Bᵀ D⁻¹ B and reduced right-hand side r = b_s − Bᵀ D⁻¹ b_a.
    let inv_sqrt_d = d.mapv(|v| 1.0 / v.sqrt());
    let b_scaled = &b_mat * &inv_sqrt_d.view().insert_axis(Axis(1));
    let s_mat = &c_mat - &b_scaled.t().dot(&b_scaled);
    let r = &b_s - &b_mat.t().dot(&(&b_a / &d));

    // Equilibrate by the columns' own sums of squares (the diagonal of C, never rounding noise:
    // scaling by S's diagonal would blow a numerically-zero row up to unit size), decompose, and
    // split range and null space.
    let scale: Array1<f64> = c_mat.diag().mapv(|v| if v > 0.0 { 1.0 / v.sqrt() } else { 1.0 });
    let s_eq = &s_mat * &scale.view().insert_axis(Axis(1)) * scale.view().insert_axis(Axis(0));
    let (values, vectors) = symmetric_eigen(&s_eq)?;
    let largest = values.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
    if largest <= 0.0 || !largest.is_finite() {
        return Err(Error::Fit("the design matrix is zero or not finite".into()));
    }
    let cutoff = largest * RANK_TOLERANCE;
    let r_eq = &r * &scale;
    let mut beta_s = Array1::<f64>::zeros(small);
    let mut null_small: Vec<Array1<f64>> = Vec::new();
    let (mut smallest_kept, mut largest_dropped) = (f64::INFINITY, 0.0f64);
    for (j, &value) in values.iter().enumerate() {
        let v = vectors.column(j);
        if value > cutoff {
            beta_s.scaled_add(v.dot(&r_eq) / value, &v);
            smallest_kept = smallest_kept.min(value / largest);
        } else {
            null_small.push(&v * &scale);
            largest_dropped = largest_dropped.max(value.abs() / largest);
        }
    }
    beta_s *= &scale;
    let beta_a = (&b_a - &b_mat.dot(&beta_s)) / &d;

    // Null space of the whole system, then the minimum-norm move within it (intercept excluded).
    let mut beta = ndarray::concatenate![Axis(0), beta_a, beta_s];
    let null: Vec<Array1<f64>> =
        null_small.iter().map(|z_s| ndarray::concatenate![Axis(0), -(b_mat.dot(z_s) / &d), z_s.view()]).collect();
    if !null.is_empty() {
        let total = m + small;
        let penalised = |v: &Array1<f64>| v.slice(ndarray::s![..total - 1]).to_owned();
        let z: Vec<Array1<f64>> = null.iter().map(penalised).collect();
        let r_dim = z.len();
        let gram = Array2::from_shape_fn((r_dim, r_dim), |(i, j)| z[i].dot(&z[j]));
        let rhs = Array1::from_shape_fn(r_dim, |i| -z[i].dot(&penalised(&beta)));
        let (g_values, g_vectors) = symmetric_eigen(&gram)?;
        let g_max = g_values.iter().fold(0.0f64, |a, v| a.max(*v));
        for (j, &value) in g_values.iter().enumerate() {
            if value > g_max * 1e-14 {
                let v = g_vectors.column(j);
                let weight = v.dot(&rhs) / value;
                for (i, zi) in null.iter().enumerate() {
                    beta.scaled_add(weight * v[i], zi);
                }
            }
        }
    }

    let rank = small + m - null.len() - 1;
    let model = assemble(spec, &layout, &beta, m)?;
    let (train_rmse, train_r2) = training_error(&model, stats, &combo_index, rows);
    Ok(Fit { model, rank, rows, train_rmse, train_r2, smallest_kept, largest_dropped })
}

fn assemble(spec: &FeatureSpec, layout: &Layout, beta: &Array1<f64>, m: usize) -> Result<LinearModel> {
    let groups = spec
        .group_names()
        .enumerate()
        .map(|(group, name)| {
            let categories = layout.categories[group].clone();
            let start = if Some(group) == layout.eliminated { 0 } else { m + layout.small_offset[group] };
            let coefficients = beta.slice(ndarray::s![start..start + categories.len()]).to_vec();
            CategoryGroup { name: name.to_owned(), categories, coefficients }
        })
        .collect();
    let numeric = beta.slice(ndarray::s![m + layout.numeric_offset..m + layout.small - 1]).to_vec();
    LinearModel::new(spec.clone(), groups, numeric, beta[m + layout.small - 1])
}

/// RMSE and R² over the fitted rows, from each combination's sums: with `a` the combination's
/// categorical part and `w` the numerical coefficients, its residual sum of squares is
/// `Σy² − 2aΣy − 2wᵀΣxy + a²n + 2a·wᵀΣx + wᵀΣxxᵀw`. Summing per combination keeps the
/// cancellation small (each combination's mean is close to its prediction).
fn training_error(model: &LinearModel, stats: &GroupedStats, combo_index: &[Vec<usize>], rows: u64) -> (f64, f64) {
    let w = &model.numeric;
    let k = w.len();
    let (mut rss, mut sum_y, mut sum_yy) = (0.0, 0.0, 0.0);
    for ((_, record), groups) in stats.records().zip(combo_index) {
        let a = model.intercept + groups.iter().enumerate().map(|(g, &c)| model.groups[g].coefficients[c]).sum::<f64>();
        let mut combo = record.sum_yy() - 2.0 * a * record.sum_y() + a * a * record.count();
        for l in 0..k {
            combo += 2.0 * w[l] * (a * record.sum_x(l) - record.sum_xy(l));
            for j in 0..k {
                combo += w[l] * w[j] * record.sum_xx(l, j);
            }
        }
        rss += combo;
        sum_y += record.sum_y();
        sum_yy += record.sum_yy();
    }
    let n = rows as f64;
    let total = sum_yy - sum_y * sum_y / n;
    ((rss.max(0.0) / n).sqrt(), 1.0 - rss / total)
}

/// Eigenvalues and eigenvectors (columns) of a symmetric matrix, with faer.
fn symmetric_eigen(matrix: &Array2<f64>) -> Result<(Vec<f64>, Array2<f64>)> {
    let n = matrix.nrows();
    let mat = faer::Mat::<f64>::from_fn(n, n, |i, j| matrix[[i, j]]);
    let evd = mat
        .self_adjoint_eigen(faer::Side::Lower)
        .map_err(|e| Error::Fit(format!("eigendecomposition did not converge: {e:?}")))?;
    let values = (0..n).map(|j| evd.S()[j]).collect();
    let vectors = Array2::from_shape_fn((n, n), |(i, j)| evd.U()[(i, j)]);
    Ok((values, vectors))
}
