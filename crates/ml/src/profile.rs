//! Reference profiles: the per-column value counts drift is computed from.
//!
//! A [`Profile`] is saved with a model at training time (the reference) and built again, record by
//! record, for every monitoring window (the current data) with [`WindowStats`]. Both sides use the
//! same representation, so drift ([`crate::drift`]) needs neither the training data nor the raw
//! window: it works on counts alone.
//!
//! - A **categorical** column keeps its exact value counts ([`Category`] → count).
//! - A **numerical** column keeps its exact value counts (sorted distinct values and their counts)
//!   while it has at most `max_distinct` distinct values ([`DEFAULT_MAX_DISTINCT`] = 100,000; a
//!   month of green taxi data has ~4,000 distinct distances and ~40,000 distinct predictions).
//!   Beyond that it is *compacted*: adjacent values are merged into buckets that keep their exact
//!   count, mean, smallest and largest value, at most `max_distinct / 2` buckets after each
//!   compaction, merging first the neighbours that add least to `Σ count × (max − min)`. Moving every
//!   value of a bucket to the bucket's mean moves the distribution by at most
//!   `Σ count × (max − min) / 2 / total` in Wasserstein-1 distance
//!   ([`NumericCounts::wasserstein_bound`]); the drift report carries that bound.
//! - Every column also keeps its row count, missing count, and for numerical columns the mean and
//!   the population standard deviation (`ddof = 0`, as `np.std`, which Evidently uses to normalise
//!   the Wasserstein distance).
//!
//! Accumulating is a hash-map increment per record (amortised O(1)); compaction, when it happens,
//! costs O(k log k) for the k entries held, once per `max_distinct / 2` new distinct values.

use std::cmp::Ordering;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::data::{KeyColumn, Trips};
use crate::error::{Error, Result};
use crate::scorer::Ride;
use crate::spec::FeatureSpec;

/// `format` of a serialised [`Profile`].
pub const PROFILE_FORMAT: &str = "lightops.profile";

/// Version of the profile format this build reads and writes.
pub const PROFILE_FORMAT_VERSION: u32 = 1;

/// Distinct values a numerical column keeps exactly before it is compacted.
pub const DEFAULT_MAX_DISTINCT: usize = 100_000;

/// The smallest `max_distinct` accepted (a compaction keeps `max_distinct / 2` buckets).
pub const MIN_MAX_DISTINCT: usize = 64;

/// Name of the column holding the model's prediction in profiles built by [`Profile::from_trips`].
pub const PREDICTION: &str = "prediction";

/// A categorical value. Integers (location ids) and strings stay distinct; integers sort
/// numerically, strings by code point, integers before strings. Serialised as a bare JSON number
/// or string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Category {
    /// An integer category, e.g. a location id.
    Int(i64),
    /// A string category.
    Str(String),
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Str(v) => f.write_str(v),
        }
    }
}

/// How a column is compared: Evidently's column types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Values are labels (`PULocationID`).
    Categorical,
    /// Values are numbers (`trip_distance`, `prediction`).
    Numerical,
}

impl ColumnKind {
    /// `categorical` or `numerical`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Categorical => "categorical",
            Self::Numerical => "numerical",
        }
    }
}

/// Exact value counts of a categorical column, sorted by category.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CategoricalCounts {
    /// Distinct categories, ascending.
    pub categories: Vec<Category>,
    /// Rows per category, same order.
    pub counts: Vec<u64>,
}

/// Value counts of a numerical column: exact (distinct values) or compacted (bucket means).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NumericCounts {
    /// Ascending. Exact: the distinct values. Compacted: each bucket's mean.
    pub values: Vec<f64>,
    /// Rows per value (bucket), same order.
    pub counts: Vec<u64>,
    /// Empty while exact. Compacted: the smallest and largest value merged into each entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<[f64; 2]>,
}

impl NumericCounts {
    /// True when `values` are the exact distinct values.
    pub fn is_exact(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Total count.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Upper bound of the Wasserstein-1 distance between these counts and the exact distribution
    /// they summarise: `Σ count × (max − min) / 2 / total` (0 when exact). A bucket's values lie
    /// in `[min, max]` and are represented by their mean, and no distribution on `[min, max]` is
    /// farther than `(max − min) / 2` on average from its mean.
    pub fn wasserstein_bound(&self) -> f64 {
        let total = self.total();
        if self.ranges.is_empty() || total == 0 {
            return 0.0;
        }
        let moved: f64 = self.ranges.iter().zip(&self.counts).map(|(r, &c)| c as f64 * (r[1] - r[0])).sum();
        moved / 2.0 / total as f64
    }
}

/// The distribution of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Distribution {
    /// Exact value counts of a categorical column.
    Categorical(CategoricalCounts),
    /// Value counts of a numerical column.
    Numerical(NumericCounts),
}

impl Distribution {
    /// The column kind.
    pub fn kind(&self) -> ColumnKind {
        match self {
            Self::Categorical(_) => ColumnKind::Categorical,
            Self::Numerical(_) => ColumnKind::Numerical,
        }
    }

    /// Number of distinct values (buckets, once compacted).
    pub fn distinct(&self) -> usize {
        match self {
            Self::Categorical(c) => c.categories.len(),
            Self::Numerical(n) => n.values.len(),
        }
    }
}

/// The profile of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    /// Column name.
    pub name: String,
    /// Rows with a value (missing and non-finite values are not counted here).
    pub count: u64,
    /// Rows without a value (or with NaN / ±inf in a numerical column).
    pub missing: u64,
    /// Mean of the values (numerical columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// Population standard deviation (`ddof = 0`, like `np.std`) of the values (numerical columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// The value counts.
    #[serde(flatten)]
    pub distribution: Distribution,
}

impl ColumnProfile {
    /// The column kind.
    pub fn kind(&self) -> ColumnKind {
        self.distribution.kind()
    }
}

/// Per-column value counts of a data set: the reference saved with a model, or a monitoring
/// window. Serialised as JSON (`format`/`format_version` first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Always [`PROFILE_FORMAT`].
    pub format: String,
    /// [`PROFILE_FORMAT_VERSION`].
    pub format_version: u32,
    /// Rows profiled.
    pub rows: u64,
    /// Distinct values a numerical column kept exactly before compaction.
    pub max_distinct: usize,
    /// One entry per column, in order.
    pub columns: Vec<ColumnProfile>,
}

/// The values of one column, for [`Profile::from_columns`].
#[derive(Debug, Clone, Copy)]
pub enum ColumnData<'a> {
    /// Integer categories.
    Int(&'a [i64]),
    /// String categories.
    Str(&'a [String]),
    /// Numbers (NaN and ±inf count as missing).
    Num(&'a [f64]),
}

impl ColumnData<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Int(v) => v.len(),
            Self::Str(v) => v.len(),
            Self::Num(v) => v.len(),
        }
    }
}

impl Profile {
    /// Profiles columns given as slices (all of the same length). Integer and string columns are
    /// categorical, float columns numerical.
    pub fn from_columns(columns: &[(&str, ColumnData<'_>)], max_distinct: usize) -> Result<Self> {
        let rows = columns.first().map_or(0, |(_, data)| data.len());
        let mut accumulators = Vec::with_capacity(columns.len());
        for (name, data) in columns {
            if data.len() != rows {
                return Err(Error::Drift(format!(
                    "column `{name}` has {} values, the first column has {rows}",
                    data.len()
                )));
            }
            let mut acc = match data {
                ColumnData::Num(_) => ColumnAccumulator::numerical(name, max_distinct)?,
                _ => ColumnAccumulator::categorical(name),
            };
            match data {
                ColumnData::Int(values) => values.iter().for_each(|&v| acc.push_int(v)),
                ColumnData::Str(values) => values.iter().for_each(|v| acc.push_str(v)),
                ColumnData::Num(values) => values.iter().for_each(|&v| acc.push_number(v)),
            }
            accumulators.push(acc);
        }
        let mut window = WindowStats { columns: accumulators, rows: rows as u64, max_distinct, ride_fields: None };
        window.ride_fields = window.ride_field_map();
        Ok(window.finish())
    }

    /// The profile a model is saved with: the spec's key columns (categorical), its numerical
    /// columns, and [`PREDICTION`] (the model's prediction for each row, numerical), in that order.
    pub fn from_trips(spec: &FeatureSpec, trips: &Trips, predictions: &[f64], max_distinct: usize) -> Result<Self> {
        let mut window = WindowStats::for_spec(spec, max_distinct)?;
        window.push_trips(trips, predictions)?;
        Ok(window.finish())
    }

    /// Parses a profile from JSON, refusing other formats and versions.
    pub fn from_json(text: &str) -> Result<Self> {
        let profile: Self = serde_json::from_str(text).map_err(|e| Error::Drift(format!("profile: {e}")))?;
        profile.validate()?;
        Ok(profile)
    }

    /// The profile as JSON.
    pub fn to_json(&self) -> String {
        // A profile holds only strings, integers and finite floats (or null for NaN), which
        // serde_json always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks the format, the version and that every column's counts are consistent.
    pub fn validate(&self) -> Result<()> {
        if self.format != PROFILE_FORMAT {
            return Err(Error::Drift(format!("profile: format is {:?}, expected {PROFILE_FORMAT:?}", self.format)));
        }
        if self.format_version != PROFILE_FORMAT_VERSION {
            return Err(Error::Drift(format!(
                "profile: format version {} is not supported (this build reads version {PROFILE_FORMAT_VERSION})",
                self.format_version
            )));
        }
        for column in &self.columns {
            let bad = |what: &str| Err(Error::Drift(format!("profile column `{}`: {what}", column.name)));
            let (len, counts_len, total) = match &column.distribution {
                Distribution::Categorical(c) => {
                    if c.categories.windows(2).any(|w| w[0] >= w[1]) {
                        return bad("categories are not sorted and distinct");
                    }
                    (c.categories.len(), c.counts.len(), c.counts.iter().sum::<u64>())
                }
                Distribution::Numerical(n) => {
                    if n.values.iter().any(|v| !v.is_finite()) {
                        return bad("a value is not finite");
                    }
                    if n.values.windows(2).any(|w| w[0] > w[1] || (n.is_exact() && w[0] == w[1])) {
                        return bad("values are not sorted");
                    }
                    if !n.ranges.is_empty() && n.ranges.len() != n.values.len() {
                        return bad("ranges and values differ in length");
                    }
                    (n.values.len(), n.counts.len(), n.total())
                }
            };
            if len != counts_len {
                return bad("values and counts differ in length");
            }
            if total != column.count {
                return bad("counts do not add up to the column's count");
            }
        }
        Ok(())
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Running first and second moments (Welford / Chan), used for a compacted column's mean and std.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Moments {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn push(&mut self, x: f64, count: u64) {
        let n = self.n + count;
        let delta = x - self.mean;
        let weight = count as f64 / n as f64;
        self.mean += delta * weight;
        self.m2 += delta * delta * self.n as f64 * weight;
        self.n = n;
    }

    fn merge(&mut self, other: &Moments) {
        if other.n == 0 {
            return;
        }
        let n = self.n + other.n;
        let delta = other.mean - self.mean;
        let weight = other.n as f64 / n as f64;
        self.mean += delta * weight;
        self.m2 += other.m2 + delta * delta * self.n as f64 * weight;
        self.n = n;
    }
}

/// A compacted entry of a numerical column.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    mean: f64,
    count: u64,
    min: f64,
    max: f64,
}

impl Bucket {
    fn single(value: f64, count: u64) -> Self {
        Self { mean: value, count, min: value, max: value }
    }

    fn absorb(&mut self, other: &Bucket) {
        let count = self.count + other.count;
        self.mean += (other.mean - self.mean) * (other.count as f64 / count as f64);
        self.count = count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    fn cost(&self) -> f64 {
        self.count as f64 * (self.max - self.min)
    }
}

/// What an accumulator holds.
#[derive(Debug, Clone)]
enum Values {
    Categorical(FxHashMap<Category, u64>),
    Numerical {
        /// Exact counts keyed by the value's bits (`-0.0` is stored as `0.0`).
        exact: FxHashMap<u64, u64>,
        /// Buckets from earlier compactions, sorted by mean.
        buckets: Vec<Bucket>,
        moments: Moments,
        max_distinct: usize,
    },
}

/// Accumulates one column of a window, record by record, in bounded memory.
#[derive(Debug, Clone)]
pub struct ColumnAccumulator {
    name: String,
    count: u64,
    missing: u64,
    values: Values,
}

impl ColumnAccumulator {
    /// An empty categorical column.
    pub fn categorical(name: &str) -> Self {
        Self { name: name.to_owned(), count: 0, missing: 0, values: Values::Categorical(FxHashMap::default()) }
    }

    /// An empty numerical column keeping up to `max_distinct` distinct values exactly.
    pub fn numerical(name: &str, max_distinct: usize) -> Result<Self> {
        if max_distinct < MIN_MAX_DISTINCT {
            return Err(Error::Drift(format!(
                "column `{name}`: max_distinct must be at least {MIN_MAX_DISTINCT}, not {max_distinct}"
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            count: 0,
            missing: 0,
            values: Values::Numerical {
                exact: FxHashMap::default(),
                buckets: Vec::new(),
                moments: Moments::default(),
                max_distinct,
            },
        })
    }

    /// The column name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The column kind.
    pub fn kind(&self) -> ColumnKind {
        match self.values {
            Values::Categorical(_) => ColumnKind::Categorical,
            Values::Numerical { .. } => ColumnKind::Numerical,
        }
    }

    /// Rows with a value so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Counts a missing value.
    pub fn push_missing(&mut self) {
        self.missing += 1;
    }

    /// Counts a category (in a numerical column, a category counts as missing).
    pub fn push_category(&mut self, value: &Category) {
        match &mut self.values {
            Values::Categorical(map) => {
                if let Some(count) = map.get_mut(value) {
                    *count += 1;
                } else {
                    map.insert(value.clone(), 1);
                }
                self.count += 1;
            }
            Values::Numerical { .. } => self.missing += 1,
        }
    }

    /// Counts an integer category. In a numerical column the integer is counted as a number.
    pub fn push_int(&mut self, value: i64) {
        match &mut self.values {
            Values::Categorical(map) => {
                *map.entry(Category::Int(value)).or_insert(0) += 1;
                self.count += 1;
            }
            Values::Numerical { .. } => self.push_number(value as f64),
        }
    }

    /// Counts a string category (in a numerical column, a string counts as missing).
    pub fn push_str(&mut self, value: &str) {
        match &mut self.values {
            Values::Categorical(map) => {
                let key = Category::Str(value.to_owned());
                *map.entry(key).or_insert(0) += 1;
                self.count += 1;
            }
            Values::Numerical { .. } => self.missing += 1,
        }
    }

    /// Counts a number; NaN and ±inf count as missing (Evidently drops them). In a categorical
    /// column an integral number counts as an integer category, any other as missing.
    pub fn push_number(&mut self, value: f64) {
        if !value.is_finite() {
            self.missing += 1;
            return;
        }
        match &mut self.values {
            Values::Categorical(_) => {
                if value.fract() == 0.0 && value.abs() < 9.0e15 {
                    self.push_int(value as i64);
                } else {
                    self.missing += 1;
                }
            }
            Values::Numerical { exact, buckets, moments, max_distinct } => {
                let value = if value == 0.0 { 0.0 } else { value };
                moments.push(value, 1);
                self.count += 1;
                // Once compacted, a value inside a bucket's range joins that bucket: the range,
                // hence the bound, stays as it is, and a stream of values seen before (a busy
                // window) no longer refills the exact map and compacts again every
                // `max_distinct / 2` rows.
                if absorb_into_bucket(buckets, value) {
                    return;
                }
                *exact.entry(value.to_bits()).or_insert(0) += 1;
                if exact.len() + buckets.len() > *max_distinct {
                    compact(exact, buckets, *max_distinct / 2);
                }
            }
        }
    }

    /// Adds another accumulator of the same column (same name and kind).
    pub fn merge(&mut self, other: &ColumnAccumulator) -> Result<()> {
        if self.name != other.name || self.kind() != other.kind() {
            return Err(Error::Drift(format!(
                "cannot merge column `{}` ({}) into `{}` ({})",
                other.name,
                other.kind().name(),
                self.name,
                self.kind().name()
            )));
        }
        self.count += other.count;
        self.missing += other.missing;
        match (&mut self.values, &other.values) {
            (Values::Categorical(map), Values::Categorical(theirs)) => {
                for (category, count) in theirs {
                    *map.entry(category.clone()).or_insert(0) += count;
                }
            }
            (
                Values::Numerical { exact, buckets, moments, max_distinct },
                Values::Numerical { exact: their_exact, buckets: their_buckets, moments: their_moments, .. },
            ) => {
                for (bits, count) in their_exact {
                    *exact.entry(*bits).or_insert(0) += count;
                }
                if !their_buckets.is_empty() {
                    buckets.extend_from_slice(their_buckets);
                    buckets.sort_by(|a, b| a.mean.total_cmp(&b.mean));
                }
                moments.merge(their_moments);
                if exact.len() + buckets.len() > *max_distinct {
                    compact(exact, buckets, *max_distinct / 2);
                }
            }
            _ => unreachable!("kinds were checked above"),
        }
        Ok(())
    }

    /// The column's profile so far.
    pub fn finish(&self) -> ColumnProfile {
        let (distribution, mean, std) = match &self.values {
            Values::Categorical(map) => {
                let mut pairs: Vec<(&Category, u64)> = map.iter().map(|(k, &v)| (k, v)).collect();
                pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let counts = CategoricalCounts {
                    categories: pairs.iter().map(|(k, _)| (*k).clone()).collect(),
                    counts: pairs.iter().map(|(_, v)| *v).collect(),
                };
                (Distribution::Categorical(counts), None, None)
            }
            Values::Numerical { exact, buckets, moments, .. } => {
                let mut entries: Vec<Bucket> =
                    exact.iter().map(|(&bits, &c)| Bucket::single(f64::from_bits(bits), c)).collect();
                entries.sort_unstable_by(|a, b| a.mean.total_cmp(&b.mean));
                let counts = if buckets.is_empty() {
                    NumericCounts {
                        values: entries.iter().map(|e| e.mean).collect(),
                        counts: entries.iter().map(|e| e.count).collect(),
                        ranges: Vec::new(),
                    }
                } else {
                    let merged = merge_sorted(buckets, &entries);
                    NumericCounts {
                        values: merged.iter().map(|e| e.mean).collect(),
                        counts: merged.iter().map(|e| e.count).collect(),
                        ranges: merged.iter().map(|e| [e.min, e.max]).collect(),
                    }
                };
                let (mean, std) = if self.count == 0 {
                    (None, None)
                } else if counts.is_exact() {
                    let (mean, std) = mean_std(&counts.values, &counts.counts);
                    (Some(mean), Some(std))
                } else {
                    (Some(moments.mean), Some((moments.m2 / moments.n as f64).max(0.0).sqrt()))
                };
                (Distribution::Numerical(counts), mean, std)
            }
        };
        ColumnProfile { name: self.name.clone(), count: self.count, missing: self.missing, mean, std, distribution }
    }
}

/// Mean and population standard deviation of weighted values, in two passes (as numpy does).
pub(crate) fn mean_std(values: &[f64], counts: &[u64]) -> (f64, f64) {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let sum: f64 = values.iter().zip(counts).map(|(v, &c)| v * c as f64).sum();
    let mean = sum / n as f64;
    let squares: f64 = values.iter().zip(counts).map(|(v, &c)| (v - mean) * (v - mean) * c as f64).sum();
    (mean, (squares / n as f64).sqrt())
}

/// Adds `value` to a bucket whose `[min, max]` holds it, if there is one; keeps the buckets sorted
/// by mean. Buckets made by compaction have disjoint ranges, so the search finds the one holding
/// `value`; after a merge of windows ranges may overlap, and a value the search misses is then
/// counted exactly (the bound holds either way: a bucket's values stay within its range).
fn absorb_into_bucket(buckets: &mut [Bucket], value: f64) -> bool {
    let i = buckets.partition_point(|b| b.max < value);
    let Some(bucket) = buckets.get_mut(i) else { return false };
    if bucket.min > value {
        return false;
    }
    bucket.absorb(&Bucket::single(value, 1));
    let mut i = i;
    while i > 0 && buckets[i - 1].mean.total_cmp(&buckets[i].mean) == Ordering::Greater {
        buckets.swap(i - 1, i);
        i -= 1;
    }
    while i + 1 < buckets.len() && buckets[i].mean.total_cmp(&buckets[i + 1].mean) == Ordering::Greater {
        buckets.swap(i, i + 1);
        i += 1;
    }
    true
}

/// Merges two lists sorted by mean.
fn merge_sorted(a: &[Bucket], b: &[Bucket]) -> Vec<Bucket> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = j >= b.len() || (i < a.len() && a[i].mean.total_cmp(&b[j].mean) != Ordering::Greater);
        if take_a {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out
}

/// Folds the exact counts into the buckets and merges adjacent entries until at most `target`
/// remain, always merging the adjacent pair whose merge adds the least to
/// `Σ count × (max − min)` (the numerator of [`NumericCounts::wasserstein_bound`]).
fn compact(exact: &mut FxHashMap<u64, u64>, buckets: &mut Vec<Bucket>, target: usize) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let mut singles: Vec<Bucket> = exact.drain().map(|(bits, c)| Bucket::single(f64::from_bits(bits), c)).collect();
    singles.sort_unstable_by(|a, b| a.mean.total_cmp(&b.mean));
    let mut entries = merge_sorted(buckets, &singles);
    let target = target.max(1);
    let n = entries.len();
    if n <= target {
        *buckets = entries;
        return;
    }
    const NONE: usize = usize::MAX;
    let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| if i > 0 { i - 1 } else { NONE }).collect();
    let mut alive = vec![true; n];
    let mut version = vec![0u32; n];
    let added = |a: &Bucket, b: &Bucket| {
        let mut merged = *a;
        merged.absorb(b);
        merged.cost() - a.cost() - b.cost()
    };
    // (cost added, left index, left version, right version); f64 ordered by its bits (costs are ≥ 0).
    let mut heap: BinaryHeap<Reverse<(u64, usize, u32, u32)>> =
        (0..n - 1).map(|i| Reverse((added(&entries[i], &entries[i + 1]).max(0.0).to_bits(), i, 0, 0))).collect();
    let mut remaining = n;
    while remaining > target {
        let Some(Reverse((_, left, left_version, right_version))) = heap.pop() else { break };
        let right = next[left];
        if !alive[left] || right == NONE || version[left] != left_version || version[right] != right_version {
            continue;
        }
        let absorbed = entries[right];
        entries[left].absorb(&absorbed);
        alive[right] = false;
        next[left] = next[right];
        if next[right] != NONE {
            prev[next[right]] = left;
        }
        version[left] += 1;
        remaining -= 1;
        if prev[left] != NONE {
            let p = prev[left];
            heap.push(Reverse((added(&entries[p], &entries[left]).max(0.0).to_bits(), p, version[p], version[left])));
        }
        if next[left] != NONE {
            let q = next[left];
            heap.push(Reverse((
                added(&entries[left], &entries[q]).max(0.0).to_bits(),
                left,
                version[left],
                version[q],
            )));
        }
    }
    *buckets = entries.into_iter().zip(alive).filter_map(|(e, keep)| keep.then_some(e)).collect();
}

/// Which ride field feeds a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RideField {
    PuLocationId,
    DoLocationId,
    TripDistance,
    Prediction,
}

/// The statistics of one monitoring window (or of a reference data set while it is built): one
/// [`ColumnAccumulator`] per column of the reference profile.
#[derive(Debug, Clone)]
pub struct WindowStats {
    columns: Vec<ColumnAccumulator>,
    rows: u64,
    max_distinct: usize,
    ride_fields: Option<Vec<RideField>>,
}

impl WindowStats {
    /// An empty window with the columns (names and kinds) of `reference`.
    pub fn new(reference: &Profile) -> Result<Self> {
        let columns = reference
            .columns
            .iter()
            .map(|c| match c.kind() {
                ColumnKind::Categorical => Ok(ColumnAccumulator::categorical(&c.name)),
                ColumnKind::Numerical => ColumnAccumulator::numerical(&c.name, reference.max_distinct),
            })
            .collect::<Result<Vec<_>>>()?;
        Self::with_columns(columns, reference.max_distinct)
    }

    /// An empty window for a model's columns: the spec's key columns (categorical), its numerical
    /// columns, then [`PREDICTION`].
    pub fn for_spec(spec: &FeatureSpec, max_distinct: usize) -> Result<Self> {
        let mut columns: Vec<ColumnAccumulator> =
            spec.key_columns().iter().map(|name| ColumnAccumulator::categorical(name)).collect();
        for name in spec.numerical.iter().map(String::as_str).chain([PREDICTION]) {
            columns.push(ColumnAccumulator::numerical(name, max_distinct)?);
        }
        Self::with_columns(columns, max_distinct)
    }

    /// An empty window with the given columns.
    pub fn with_columns(columns: Vec<ColumnAccumulator>, max_distinct: usize) -> Result<Self> {
        for (i, column) in columns.iter().enumerate() {
            if columns[..i].iter().any(|c| c.name == column.name) {
                return Err(Error::Drift(format!("column `{}` is listed twice", column.name)));
            }
        }
        let mut window = Self { columns, rows: 0, max_distinct, ride_fields: None };
        window.ride_fields = window.ride_field_map();
        Ok(window)
    }

    fn ride_field_map(&self) -> Option<Vec<RideField>> {
        self.columns
            .iter()
            .map(|c| match (c.name.as_str(), c.kind()) {
                ("PULocationID", ColumnKind::Categorical) => Some(RideField::PuLocationId),
                ("DOLocationID", ColumnKind::Categorical) => Some(RideField::DoLocationId),
                ("trip_distance", ColumnKind::Numerical) => Some(RideField::TripDistance),
                (PREDICTION, ColumnKind::Numerical) => Some(RideField::Prediction),
                _ => None,
            })
            .collect()
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The column accumulators, in order.
    pub fn columns(&self) -> &[ColumnAccumulator] {
        &self.columns
    }

    /// The accumulator of one column, to push values column by column. Call [`Self::add_rows`]
    /// once per row pushed this way.
    pub fn column_mut(&mut self, name: &str) -> Option<&mut ColumnAccumulator> {
        self.columns.iter_mut().find(|c| c.name == name)
    }

    /// Counts `rows` rows whose values were pushed through [`Self::column_mut`].
    pub fn add_rows(&mut self, rows: u64) {
        self.rows += rows;
    }

    /// Adds one served ride and its prediction (columns PULocationID, DOLocationID,
    /// trip_distance and prediction, as the workshop's model has them).
    pub fn push_ride(&mut self, ride: &Ride, prediction: f64) -> Result<()> {
        let Some(fields) = &self.ride_fields else {
            let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::Drift(format!(
                "rides carry PULocationID, DOLocationID, trip_distance and a prediction; this window has columns {}",
                names.join(", ")
            )));
        };
        for (column, field) in self.columns.iter_mut().zip(fields) {
            match field {
                RideField::PuLocationId => column.push_int(ride.pu_location_id),
                RideField::DoLocationId => column.push_int(ride.do_location_id),
                RideField::TripDistance => column.push_number(ride.trip_distance),
                RideField::Prediction => column.push_number(prediction),
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Adds a batch of trips and their predictions. Columns are matched by name: key columns of
    /// the trips, their numerical columns, and [`PREDICTION`].
    pub fn push_trips(&mut self, trips: &Trips, predictions: &[f64]) -> Result<()> {
        if predictions.len() != trips.len() {
            return Err(Error::Drift(format!(
                "{} predictions for {} trips from {}",
                predictions.len(),
                trips.len(),
                trips.source.display()
            )));
        }
        // Trips carry their key columns in `key_columns()` order of the spec they were read with,
        // and numerical columns in spec order; a window built by `for_spec` has the same order.
        let keys = trips.keys.len();
        let numeric = trips.numeric.len();
        if self.columns.len() != keys + numeric + 1 {
            return Err(Error::Drift(format!(
                "the window has {} columns; the trips have {keys} key and {numeric} numerical columns plus the prediction",
                self.columns.len()
            )));
        }
        for (column, key) in self.columns.iter_mut().zip(&trips.keys) {
            match key {
                KeyColumn::Int(values) => values.iter().for_each(|&v| column.push_int(v)),
                KeyColumn::Str(values) => values.iter().for_each(|v| column.push_str(v)),
            }
        }
        for (column, values) in self.columns[keys..].iter_mut().zip(trips.numeric.iter().map(Vec::as_slice)) {
            values.iter().for_each(|&v| column.push_number(v));
        }
        if let Some(column) = self.columns.last_mut() {
            predictions.iter().for_each(|&v| column.push_number(v));
        }
        self.rows += trips.len() as u64;
        Ok(())
    }

    /// Adds another window with the same columns.
    pub fn merge(&mut self, other: &WindowStats) -> Result<()> {
        if self.columns.len() != other.columns.len() {
            return Err(Error::Drift(format!(
                "cannot merge a window of {} columns into one of {}",
                other.columns.len(),
                self.columns.len()
            )));
        }
        for (mine, theirs) in self.columns.iter_mut().zip(&other.columns) {
            mine.merge(theirs)?;
        }
        self.rows += other.rows;
        Ok(())
    }

    /// The window's profile.
    pub fn finish(&self) -> Profile {
        Profile {
            format: PROFILE_FORMAT.to_owned(),
            format_version: PROFILE_FORMAT_VERSION,
            rows: self.rows,
            max_distinct: self.max_distinct,
            columns: self.columns.iter().map(ColumnAccumulator::finish).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_counts_and_moments() {
        let profile = Profile::from_columns(
            &[("PULocationID", ColumnData::Int(&[3, 1, 3, 2])), ("d", ColumnData::Num(&[1.0, 2.0, 2.0, f64::NAN]))],
            DEFAULT_MAX_DISTINCT,
        )
        .expect("profile");
        assert_eq!(profile.rows, 4);
        let pu = &profile.columns[0];
        assert_eq!(
            pu.distribution,
            Distribution::Categorical(CategoricalCounts {
                categories: vec![Category::Int(1), Category::Int(2), Category::Int(3)],
                counts: vec![1, 1, 2]
            })
        );
        let d = &profile.columns[1];
        assert_eq!((d.count, d.missing), (3, 1));
        assert_eq!(d.mean, Some(5.0 / 3.0));
        let Distribution::Numerical(n) = &d.distribution else { panic!("numerical") };
        assert_eq!((n.values.as_slice(), n.counts.as_slice()), ([1.0, 2.0].as_slice(), [1, 2].as_slice()));
        let json = profile.to_json();
        assert_eq!(Profile::from_json(&json).expect("parse"), profile);
    }

    #[test]
    fn compaction_keeps_counts_moments_and_bounds_the_distance() {
        let values: Vec<f64> = (0..10_000).map(|i| (i as f64 * 0.37).sin() * 100.0 + i as f64 * 0.01).collect();
        let profile = Profile::from_columns(&[("x", ColumnData::Num(&values))], 256).expect("profile");
        let column = &profile.columns[0];
        let Distribution::Numerical(n) = &column.distribution else { panic!("numerical") };
        assert!(!n.is_exact());
        assert!(n.values.len() <= 256, "{} entries", n.values.len());
        assert_eq!(n.total(), 10_000);
        let (mean, std) = mean_std(&values, &vec![1; values.len()]);
        assert!((column.mean.expect("mean") - mean).abs() < 1e-9);
        assert!((column.std.expect("std") - std).abs() < 1e-9);
        // The exact Wasserstein distance between the data and its compacted form is within the bound.
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let exact = NumericCounts { values: sorted, counts: vec![1; 10_000], ranges: Vec::new() };
        let compacted = NumericCounts { ranges: Vec::new(), ..n.clone() };
        let distance = crate::drift::wasserstein(&exact, &compacted);
        assert!(distance <= n.wasserstein_bound() * (1.0 + 1e-12), "{distance} > {}", n.wasserstein_bound());
        assert!(n.wasserstein_bound() > 0.0);
    }

    #[test]
    fn values_seen_before_join_their_bucket_without_compacting_again() {
        let values: Vec<f64> = (0..10_000).map(|i| (i as f64 * 0.37).sin() * 100.0 + i as f64 * 0.01).collect();
        let mut column = ColumnAccumulator::numerical("x", 256).expect("column");
        for &v in &values {
            column.push_number(v);
        }
        let Distribution::Numerical(once) = column.finish().distribution else { panic!("numerical") };
        for _ in 0..5 {
            for &v in &values {
                column.push_number(v);
            }
        }
        let profile = column.finish();
        let Distribution::Numerical(six) = &profile.distribution else { panic!("numerical") };
        // Every repeated value joined the bucket (or exact entry) that already held it: the
        // same ranges, six times the counts, the same means up to rounding.
        assert_eq!(six.ranges, once.ranges);
        assert_eq!(six.counts, once.counts.iter().map(|c| c * 6).collect::<Vec<_>>());
        for (a, b) in six.values.iter().zip(&once.values) {
            assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "{a} vs {b}");
        }
        assert!(six.values.windows(2).all(|w| w[0] <= w[1]), "sorted");
        let (mean, _) = mean_std(&values, &vec![1; values.len()]);
        assert!((profile.mean.expect("mean") - mean).abs() < 1e-9);
    }

    #[test]
    fn windows_merge_like_one_window() {
        let spec = FeatureSpec::default();
        let mut a = WindowStats::for_spec(&spec, 64).expect("window");
        let mut b = a.clone();
        let mut whole = a.clone();
        for i in 0..500 {
            let ride = Ride { pu_location_id: i % 7, do_location_id: i % 11, trip_distance: (i % 97) as f64 * 0.1 };
            let half = if i % 2 == 0 { &mut a } else { &mut b };
            half.push_ride(&ride, i as f64).expect("push");
            whole.push_ride(&ride, i as f64).expect("push");
        }
        a.merge(&b).expect("merge");
        let (merged, single) = (a.finish(), whole.finish());
        assert_eq!(merged.rows, 500);
        for (m, s) in merged.columns.iter().zip(&single.columns) {
            assert_eq!(m.count, s.count);
            if let (Distribution::Categorical(x), Distribution::Categorical(y)) = (&m.distribution, &s.distribution) {
                assert_eq!(x, y);
            }
        }
    }
}
