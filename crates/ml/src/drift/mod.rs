//! Data drift between a reference [`Profile`] and a current one, reproducing Evidently 0.7's
//! `DataDriftPreset` with its default settings, from value counts alone.
//!
//! What Evidently does, and therefore what this module does (file references are to
//! `evidently==0.7.23`; docs/drift.md has the details):
//!
//! - the test of a column is picked by [`default_method`] from its kind, the reference size and
//!   the number of distinct values in reference ∪ current (`stattests/registry.py`,
//!   `_get_default_stattest`); any column's test can be overridden ([`DriftOptions::methods`]);
//! - distances drift when `score >= threshold` (Wasserstein 0.1, Jensen–Shannon 0.1, PSI 0.1);
//!   p-values drift when `p < threshold` (chi-square, Z: 0.05) — except KS, which drifts when
//!   `p <= threshold` (`ks_stattest.py`);
//! - the data set drifts when `drifted / columns >= drift_share` (0.5; `data_drift.py`,
//!   `get_dataset_drift`).
//!
//! The special functions (normal CDF, chi-square survival, Kolmogorov–Smirnov distributions) are
//! ports of scipy's, in [`special`].

pub mod special;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::profile::{
    CategoricalCounts, ColumnKind, ColumnProfile, Distribution, NumericCounts, Profile, WindowStats, mean_std,
};

/// Evidently's default `drift_share`: the data set drifts when at least this share of columns do.
pub const DEFAULT_DRIFT_SHARE: f64 = 0.5;

/// Reference sizes above this take the "large data" tests (Wasserstein, Jensen–Shannon).
pub const LARGE_REFERENCE: u64 = 1000;

/// A drift test, named as Evidently registers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Method {
    /// Wasserstein-1 distance divided by the reference's standard deviation (`wasserstein`).
    #[serde(rename = "wasserstein")]
    Wasserstein,
    /// Jensen–Shannon distance, natural log (`jensenshannon`).
    #[serde(rename = "jensenshannon")]
    JensenShannon,
    /// Population stability index (`psi`).
    #[serde(rename = "psi")]
    Psi,
    /// Two-sample Kolmogorov–Smirnov p-value (`ks`).
    #[serde(rename = "ks")]
    Ks,
    /// Pearson chi-square p-value against the reference proportions (`chisquare`).
    #[serde(rename = "chisquare")]
    ChiSquare,
    /// Two-proportion Z-test p-value (`z`).
    #[serde(rename = "z")]
    Z,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 6] =
        [Method::Wasserstein, Method::JensenShannon, Method::Psi, Method::Ks, Method::ChiSquare, Method::Z];

    /// Evidently's registered name (`wasserstein`, `jensenshannon`, `psi`, `ks`, `chisquare`, `z`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Wasserstein => "wasserstein",
            Self::JensenShannon => "jensenshannon",
            Self::Psi => "psi",
            Self::Ks => "ks",
            Self::ChiSquare => "chisquare",
            Self::Z => "z",
        }
    }

    /// Evidently's display name (`Wasserstein distance (normed)`, …).
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Wasserstein => "Wasserstein distance (normed)",
            Self::JensenShannon => "Jensen-Shannon distance",
            Self::Psi => "PSI",
            Self::Ks => "K-S p_value",
            Self::ChiSquare => "chi-square p_value",
            Self::Z => "Z-test p_value",
        }
    }

    /// The threshold Evidently uses when none is given.
    pub fn default_threshold(self) -> f64 {
        match self {
            Self::Wasserstein | Self::JensenShannon | Self::Psi => 0.1,
            Self::Ks | Self::ChiSquare | Self::Z => 0.05,
        }
    }

    /// True for distances (drift when large), false for p-values (drift when small).
    pub fn is_distance(self) -> bool {
        matches!(self, Self::Wasserstein | Self::JensenShannon | Self::Psi)
    }

    /// Whether Evidently lets this method be *chosen* for a column of this kind (its
    /// `allowed_feature_types`). The default choice may still apply chi-square and the Z-test to a
    /// numerical column with few values.
    pub fn allowed_for(self, kind: ColumnKind) -> bool {
        match self {
            Self::Wasserstein | Self::Ks => kind == ColumnKind::Numerical,
            Self::JensenShannon | Self::Psi => true,
            Self::ChiSquare | Self::Z => kind == ColumnKind::Categorical,
        }
    }

    /// Evidently's decision: distances drift when `score >= threshold`, chi-square and Z when
    /// `p < threshold`, KS when `p <= threshold`. A NaN score never drifts.
    pub fn drifted(self, score: f64, threshold: f64) -> bool {
        match self {
            Self::Wasserstein | Self::JensenShannon | Self::Psi => score >= threshold,
            Self::Ks => score <= threshold,
            Self::ChiSquare | Self::Z => score < threshold,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
            Error::Drift(format!("unknown drift method {s:?} (known: {})", names.join(", ")))
        })
    }
}

/// Evidently's default test (`_get_default_stattest`): with a reference of at most 1,000 values,
/// numerical columns take KS (chi-square when they have 3–5 distinct values, the Z-test when 1–2)
/// and categorical columns chi-square (Z-test when 1–2 distinct values); with a larger reference,
/// numerical columns take the normed Wasserstein distance (Jensen–Shannon when at most 5 distinct
/// values) and categorical columns Jensen–Shannon. `n_unique` counts the distinct values of
/// reference and current together; `reference_size` the reference's non-missing values.
pub fn default_method(kind: ColumnKind, reference_size: u64, n_unique: usize) -> Method {
    let small = reference_size <= LARGE_REFERENCE;
    match (kind, small) {
        (ColumnKind::Numerical, true) if n_unique <= 2 => Method::Z,
        (ColumnKind::Numerical, true) if n_unique <= 5 => Method::ChiSquare,
        (ColumnKind::Numerical, true) => Method::Ks,
        (ColumnKind::Categorical, true) if n_unique <= 2 => Method::Z,
        (ColumnKind::Categorical, true) => Method::ChiSquare,
        (ColumnKind::Numerical, false) if n_unique <= 5 => Method::JensenShannon,
        (ColumnKind::Numerical, false) => Method::Wasserstein,
        (ColumnKind::Categorical, false) => Method::JensenShannon,
    }
}

/// Settings of a drift comparison. The default is Evidently's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftOptions {
    /// The data set drifts when at least this share of columns drift (0.5).
    pub drift_share: f64,
    /// Per-column method overrides (Evidently's `per_column_method`).
    #[serde(default)]
    pub methods: BTreeMap<String, Method>,
    /// Per-column threshold overrides (Evidently's `per_column_threshold`).
    #[serde(default)]
    pub thresholds: BTreeMap<String, f64>,
}

impl Default for DriftOptions {
    fn default() -> Self {
        Self { drift_share: DEFAULT_DRIFT_SHARE, methods: BTreeMap::new(), thresholds: BTreeMap::new() }
    }
}

/// The drift of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    /// Column name.
    pub column: String,
    /// The test applied.
    pub method: Method,
    /// Its score: a distance, or a p-value. `null` in JSON when NaN (Evidently's NaN p-values).
    #[serde(deserialize_with = "nan_from_null")]
    pub score: f64,
    /// The threshold the score was compared with.
    pub threshold: f64,
    /// Evidently's decision (see [`Method::drifted`]).
    pub drifted: bool,
    /// The test statistic behind a p-value: KS `D`, chi-square `χ²`, Z-test `z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// True when a side was compacted (more distinct values than the profile keeps exactly), so
    /// the score is computed from bucket means.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approximate: bool,
    /// For an approximate Wasserstein score: the exact score is within `score ± score_bound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_bound: Option<f64>,
}

/// Reads a number, or `null` as NaN (serde_json writes NaN as `null`).
fn nan_from_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// Drift of a current data set against a reference, column by column (the `lightops drift
/// --json` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Rows in the current data.
    pub rows: u64,
    /// True when `share_of_drifted_columns >= drift_share`.
    pub dataset_drift: bool,
    /// The configured share (0.5 by default).
    pub drift_share: f64,
    /// Columns that drifted.
    pub drifted_columns: usize,
    /// `drifted_columns / columns`.
    pub share_of_drifted_columns: f64,
    /// One entry per reference column, in the reference's order.
    pub columns: Vec<ColumnDrift>,
}

/// Compares every column of `reference` with the same-named column of `current`.
pub fn compare(reference: &Profile, current: &Profile, options: &DriftOptions) -> Result<DriftReport> {
    for name in options.methods.keys().chain(options.thresholds.keys()) {
        if reference.column(name).is_none() {
            return Err(Error::Drift(format!("an option names column `{name}`, which the reference does not have")));
        }
    }
    if reference.columns.is_empty() {
        return Err(Error::Drift("the reference profile has no columns".into()));
    }
    let mut columns = Vec::with_capacity(reference.columns.len());
    for reference_column in &reference.columns {
        let name = &reference_column.name;
        let current_column = current
            .column(name)
            .ok_or_else(|| Error::Drift(format!("column `{name}` is missing from the current data")))?;
        let method = options.methods.get(name).copied();
        let threshold = options.thresholds.get(name).copied();
        columns.push(column_drift(reference_column, current_column, method, threshold)?);
    }
    let drifted_columns = columns.iter().filter(|c| c.drifted).count();
    let share_of_drifted_columns = drifted_columns as f64 / columns.len() as f64;
    Ok(DriftReport {
        rows: current.rows,
        dataset_drift: share_of_drifted_columns >= options.drift_share,
        drift_share: options.drift_share,
        drifted_columns,
        share_of_drifted_columns,
        columns,
    })
}

/// [`compare`] with a monitoring window as the current data.
pub fn compare_window(reference: &Profile, window: &WindowStats, options: &DriftOptions) -> Result<DriftReport> {
    compare(reference, &window.finish(), options)
}

/// The drift of one column: `method` (Evidently's default choice when `None`) at `threshold`
/// (the method's default when `None`). Both sides must have the same kind and at least one value.
pub fn column_drift(
    reference: &ColumnProfile,
    current: &ColumnProfile,
    method: Option<Method>,
    threshold: Option<f64>,
) -> Result<ColumnDrift> {
    let name = &reference.name;
    let kind = reference.kind();
    if current.kind() != kind {
        return Err(Error::Drift(format!(
            "column `{name}` is {} in the reference but {} in the current data",
            kind.name(),
            current.kind().name()
        )));
    }
    if reference.count == 0 {
        return Err(Error::Drift(format!("column `{name}` is empty in the reference data")));
    }
    if current.count == 0 {
        return Err(Error::Drift(format!("column `{name}` is empty in the current data")));
    }
    if let Some(method) = method
        && !method.allowed_for(kind)
    {
        return Err(Error::Drift(format!("method {method} does not apply to the {} column `{name}`", kind.name())));
    }
    let pair = Pair::new(reference, current);
    let method = method.unwrap_or_else(|| default_method(kind, reference.count, pair.n_unique()));
    let threshold = threshold.unwrap_or_else(|| method.default_threshold());
    let (score, statistic) = match method {
        Method::Wasserstein => (pair.wasserstein_normed(reference.std)?, None),
        Method::JensenShannon => (pair.jensen_shannon(), None),
        Method::Psi => (pair.psi(), None),
        Method::Ks => {
            let (d, p) = pair.ks()?;
            (p, Some(d))
        }
        Method::ChiSquare => {
            let (stat, p) = pair.chi_square();
            (p, Some(stat))
        }
        Method::Z => {
            let (z, p) = pair.z_test();
            (p, z)
        }
    };
    let approximate = !pair.exact();
    let score_bound = match (&pair.values, method, approximate) {
        (Values::Numerical { reference: r, current: c, .. }, Method::Wasserstein, true) => {
            Some((r.wasserstein_bound() + c.wasserstein_bound()) / wasserstein_norm(reference.std))
        }
        _ => None,
    };
    Ok(ColumnDrift {
        column: name.clone(),
        method,
        score,
        threshold,
        drifted: method.drifted(score, threshold),
        statistic,
        approximate,
        score_bound,
    })
}

/// Evidently's normaliser: `max(np.std(reference), 0.001)`.
fn wasserstein_norm(std: Option<f64>) -> f64 {
    std.unwrap_or(f64::NAN).max(0.001)
}

/// Reference and current counts aligned on the union of their values, in ascending order.
struct Aligned {
    /// `(reference count, current count)` per distinct value.
    counts: Vec<(u64, u64)>,
    /// The values, for numerical columns.
    values: Vec<f64>,
}

enum Values<'a> {
    Categorical,
    Numerical { reference: &'a NumericCounts, current: &'a NumericCounts },
}

/// A reference column and a current column of the same kind, aligned.
struct Pair<'a> {
    values: Values<'a>,
    aligned: Aligned,
    n_ref: u64,
    n_cur: u64,
    /// Distinct values of the reference alone.
    ref_distinct: usize,
}

impl<'a> Pair<'a> {
    fn new(reference: &'a ColumnProfile, current: &'a ColumnProfile) -> Self {
        let (values, aligned, ref_distinct) = match (&reference.distribution, &current.distribution) {
            (Distribution::Categorical(r), Distribution::Categorical(c)) => {
                (Values::Categorical, align_categorical(r, c), r.categories.len())
            }
            (Distribution::Numerical(r), Distribution::Numerical(c)) => {
                (Values::Numerical { reference: r, current: c }, align_numeric(r, c), r.values.len())
            }
            _ => unreachable!("kinds are checked by the caller"),
        };
        Self { values, aligned, n_ref: reference.count, n_cur: current.count, ref_distinct }
    }

    fn exact(&self) -> bool {
        match &self.values {
            Values::Categorical => true,
            Values::Numerical { reference, current } => reference.is_exact() && current.is_exact(),
        }
    }

    fn n_unique(&self) -> usize {
        self.aligned.counts.len()
    }

    fn numeric(&self, method: Method) -> Result<(&'a NumericCounts, &'a NumericCounts)> {
        match self.values {
            Values::Numerical { reference, current } => Ok((reference, current)),
            Values::Categorical => Err(Error::Drift(format!("method {method} needs a numerical column"))),
        }
    }

    /// `stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)`.
    fn wasserstein_normed(&self, reference_std: Option<f64>) -> Result<f64> {
        self.numeric(Method::Wasserstein)?;
        let std = match reference_std {
            Some(std) => std,
            None => match self.values {
                Values::Numerical { reference, .. } => mean_std(&reference.values, &reference.counts).1,
                Values::Categorical => f64::NAN,
            },
        };
        Ok(wasserstein_aligned(&self.aligned, self.n_ref, self.n_cur) / wasserstein_norm(Some(std)))
    }

    /// Evidently's `get_binned_data`: for a numerical column with more than 20 distinct reference
    /// values, the share of each side in the `np.histogram_bin_edges(ref ∪ cur, "sturges")` bins;
    /// otherwise the share of each value of reference ∪ current.
    fn binned(&self) -> (Vec<f64>, Vec<f64>) {
        let (n_ref, n_cur) = (self.n_ref as f64, self.n_cur as f64);
        let numeric = matches!(self.values, Values::Numerical { .. });
        if numeric && self.ref_distinct > 20 {
            let edges = sturges_edges(&self.aligned.values, self.n_ref + self.n_cur);
            let bins = edges.len() - 1;
            let mut reference = vec![0u64; bins];
            let mut current = vec![0u64; bins];
            for (&value, &(r, c)) in self.aligned.values.iter().zip(&self.aligned.counts) {
                if let Some(bin) = histogram_bin(&edges, value) {
                    reference[bin] += r;
                    current[bin] += c;
                }
            }
            let share = |counts: Vec<u64>, n: f64| counts.into_iter().map(|c| c as f64 / n).collect();
            (share(reference, n_ref), share(current, n_cur))
        } else {
            self.aligned.counts.iter().map(|&(r, c)| (r as f64 / n_ref, c as f64 / n_cur)).unzip()
        }
    }

    /// `scipy.spatial.distance.jensenshannon(ref%, cur%)` (natural log) of the binned shares.
    fn jensen_shannon(&self) -> f64 {
        let (p, q) = self.binned();
        jensen_shannon(&p, &q)
    }

    /// `Σ (ref% − cur%) · ln(ref% / cur%)` of the binned shares, zeros replaced as Evidently does.
    fn psi(&self) -> f64 {
        let (mut p, mut q) = self.binned();
        fill_zeroes(&mut p);
        fill_zeroes(&mut q);
        p.iter().zip(&q).map(|(r, c)| (r - c) * (r / c).ln()).sum()
    }

    /// `scipy.stats.ks_2samp(ref, cur)`: (statistic, p-value).
    fn ks(&self) -> Result<(f64, f64)> {
        self.numeric(Method::Ks)?;
        let d = ks_statistic(&self.aligned, self.n_ref, self.n_cur);
        let (d, p, _) = special::ks_2samp_pvalue(self.n_ref, self.n_cur, d);
        Ok((d, p))
    }

    /// `scipy.stats.chisquare(cur_counts, ref_counts · n_cur / n_ref)`: (statistic, p-value).
    fn chi_square(&self) -> (f64, f64) {
        let k_norm = self.n_cur as f64 / self.n_ref as f64;
        let statistic: f64 = self
            .aligned
            .counts
            .iter()
            .map(|&(r, c)| {
                let expected = r as f64 * k_norm;
                let observed = c as f64;
                (observed - expected) * (observed - expected) / expected
            })
            .sum();
        let df = self.aligned.counts.len().saturating_sub(1) as u64;
        (statistic, special::chi2_sf(df, statistic))
    }

    /// Evidently's two-proportion Z-test of "the smallest value" against "any other": (z, p).
    fn z_test(&self) -> (Option<f64>, f64) {
        let ref_unique = self.aligned.counts.iter().filter(|(r, _)| *r > 0).count();
        let cur_unique = self.aligned.counts.iter().filter(|(_, c)| *c > 0).count();
        if ref_unique == 1 && cur_unique == 1 && self.aligned.counts.len() == 1 {
            return (None, 1.0);
        }
        let (first_ref, first_cur) = self.aligned.counts.first().copied().unwrap_or((0, 0));
        let (n1, n2) = (self.n_ref as f64, self.n_cur as f64);
        let p1 = (self.n_ref - first_ref) as f64 / n1;
        let p2 = (self.n_cur - first_cur) as f64 / n2;
        let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
        let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
        (Some(z), 2.0 * (1.0 - special::ndtr(z.abs())))
    }
}

fn align_categorical(reference: &CategoricalCounts, current: &CategoricalCounts) -> Aligned {
    let (a, b) = (&reference.categories, &current.categories);
    let mut counts = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let order = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                counts.push((reference.counts[i], 0));
                i += 1;
            }
            Ordering::Greater => {
                counts.push((0, current.counts[j]));
                j += 1;
            }
            Ordering::Equal => {
                counts.push((reference.counts[i], current.counts[j]));
                i += 1;
                j += 1;
            }
        }
    }
    Aligned { counts, values: Vec::new() }
}

fn align_numeric(reference: &NumericCounts, current: &NumericCounts) -> Aligned {
    let (a, b) = (&reference.values, &current.values);
    let mut counts = Vec::with_capacity(a.len().max(b.len()));
    let mut values = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let value = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        let (mut r, mut c) = (0, 0);
        while i < a.len() && a[i] == value {
            r += reference.counts[i];
            i += 1;
        }
        while j < b.len() && b[j] == value {
            c += current.counts[j];
            j += 1;
        }
        values.push(value);
        counts.push((r, c));
    }
    Aligned { counts, values }
}

/// `scipy.stats.wasserstein_distance` of two aligned samples: `Σ |F_ref − F_cur| · Δx`.
fn wasserstein_aligned(aligned: &Aligned, n_ref: u64, n_cur: u64) -> f64 {
    let (mut cum_ref, mut cum_cur) = (0u64, 0u64);
    let mut total = 0.0;
    for (i, &(r, c)) in aligned.counts.iter().enumerate() {
        let Some(&next) = aligned.values.get(i + 1) else { break };
        cum_ref += r;
        cum_cur += c;
        let gap = cum_ref as f64 / n_ref as f64 - cum_cur as f64 / n_cur as f64;
        total += gap.abs() * (next - aligned.values[i]);
    }
    total
}

/// The Wasserstein-1 distance between two numerical distributions given as value counts
/// (`scipy.stats.wasserstein_distance` of the samples they count), not normalised.
pub fn wasserstein(a: &NumericCounts, b: &NumericCounts) -> f64 {
    let aligned = align_numeric(a, b);
    wasserstein_aligned(&aligned, a.total(), b.total())
}

/// `ks_2samp`'s statistic: the largest gap between the two empirical CDFs.
fn ks_statistic(aligned: &Aligned, n_ref: u64, n_cur: u64) -> f64 {
    let (mut cum_ref, mut cum_cur) = (0u64, 0u64);
    let (mut max, mut min) = (f64::NEG_INFINITY, f64::INFINITY);
    for &(r, c) in &aligned.counts {
        cum_ref += r;
        cum_cur += c;
        let gap = cum_ref as f64 / n_ref as f64 - cum_cur as f64 / n_cur as f64;
        max = max.max(gap);
        min = min.min(gap);
    }
    let min_s = (-min).clamp(0.0, 1.0);
    if min_s > max { min_s } else { max }
}

/// `np.histogram_bin_edges(data, bins="sturges")` for sorted distinct `values` of `n` samples:
/// `ceil(ptp / (ptp / (log2(n) + 1)))` equal bins over `[min, max]`, edges from `np.linspace`.
fn sturges_edges(values: &[f64], n: u64) -> Vec<f64> {
    let (mut first, mut last) = (values.first().copied().unwrap_or(0.0), values.last().copied().unwrap_or(1.0));
    let ptp = last - first;
    if first == last {
        first -= 0.5;
        last += 0.5;
    }
    let width = ptp / ((n as f64).log2() + 1.0);
    let bins = if width != 0.0 { ((last - first) / width).ceil() as usize } else { 1 };
    let bins = bins.max(1);
    let div = bins as f64;
    let step = (last - first) / div;
    let mut edges: Vec<f64> = if step == 0.0 {
        (0..=bins).map(|i| i as f64 / div * (last - first) + first).collect()
    } else {
        (0..=bins).map(|i| i as f64 * step + first).collect()
    };
    if let Some(end) = edges.last_mut() {
        *end = last;
    }
    edges
}

/// The bin of `value` as `np.histogram` with explicit edges counts it: `[e_i, e_{i+1})`, the
/// last bin closed; `None` outside the edges.
fn histogram_bin(edges: &[f64], value: f64) -> Option<usize> {
    let bins = edges.len() - 1;
    let last = edges[bins];
    if value > last || value < edges[0] {
        return None;
    }
    // Edges ≤ value among the first `bins` edges.
    let below = edges[..bins].partition_point(|&e| e <= value);
    below.checked_sub(1)
}

/// `scipy.spatial.distance.jensenshannon(p, q)` with the natural logarithm.
fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let (sum_p, sum_q): (f64, f64) = (p.iter().sum(), q.iter().sum());
    let rel_entr = |x: f64, y: f64| -> f64 {
        if x > 0.0 && y > 0.0 {
            x * (x / y).ln()
        } else if x == 0.0 && y >= 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    };
    let (mut left, mut right) = (0.0, 0.0);
    for (&pi, &qi) in p.iter().zip(q) {
        let (pi, qi) = (pi / sum_p, qi / sum_q);
        let m = (pi + qi) / 2.0;
        left += rel_entr(pi, m);
        right += rel_entr(qi, m);
    }
    ((left + right) / 2.0).sqrt()
}

/// Evidently's `feel_zeroes`: zero shares become `min(nonzero) / 1e6` when the smallest nonzero
/// share is at most 1e-4, else 1e-4.
fn fill_zeroes(shares: &mut [f64]) {
    let smallest = shares.iter().copied().filter(|&s| s != 0.0).fold(f64::INFINITY, f64::min);
    if smallest == f64::INFINITY {
        return;
    }
    let fill = if smallest <= 0.0001 { smallest / 1e6 } else { 0.0001 };
    shares.iter_mut().filter(|s| **s == 0.0).for_each(|s| *s = fill);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_methods_follow_evidently() {
        use ColumnKind::{Categorical, Numerical};
        assert_eq!(default_method(Numerical, 1000, 6), Method::Ks);
        assert_eq!(default_method(Numerical, 1000, 5), Method::ChiSquare);
        assert_eq!(default_method(Numerical, 1000, 2), Method::Z);
        assert_eq!(default_method(Categorical, 1000, 3), Method::ChiSquare);
        assert_eq!(default_method(Categorical, 1000, 2), Method::Z);
        assert_eq!(default_method(Numerical, 1001, 6), Method::Wasserstein);
        assert_eq!(default_method(Numerical, 1001, 5), Method::JensenShannon);
        assert_eq!(default_method(Categorical, 1001, 2), Method::JensenShannon);
    }

    #[test]
    fn reports_serialise_as_the_cli_contract_says() {
        let column = ColumnDrift {
            column: "trip_distance".into(),
            method: Method::Wasserstein,
            score: 0.0125,
            threshold: 0.1,
            drifted: false,
            statistic: None,
            approximate: false,
            score_bound: None,
        };
        let report = DriftReport {
            rows: 10,
            dataset_drift: false,
            drift_share: 0.5,
            drifted_columns: 0,
            share_of_drifted_columns: 0.0,
            columns: vec![column.clone(), ColumnDrift { score: f64::NAN, method: Method::Ks, ..column }],
        };
        let json = serde_json::to_string(&report).expect("json");
        assert!(
            json.starts_with(r#"{"rows":10,"dataset_drift":false,"drift_share":0.5,"drifted_columns":0,"#),
            "{json}"
        );
        assert!(json.contains(
            r#"{"column":"trip_distance","method":"wasserstein","score":0.0125,"threshold":0.1,"drifted":false}"#
        ));
        assert!(json.contains(r#""method":"ks","score":null"#));
        let back: DriftReport = serde_json::from_str(&json).expect("parse");
        assert!(back.columns[1].score.is_nan());
    }

    #[test]
    fn sturges_edges_match_numpy() {
        // np.histogram_bin_edges(np.arange(100.0), bins="sturges") has 8 bins.
        let values: Vec<f64> = (0..100).map(f64::from).collect();
        let edges = sturges_edges(&values, 100);
        assert_eq!(edges.len(), 9);
        assert_eq!(edges[0], 0.0);
        assert_eq!(edges[8], 99.0);
        assert_eq!(histogram_bin(&edges, 99.0), Some(7));
        assert_eq!(histogram_bin(&edges, 0.0), Some(0));
    }
}
