//! Streamed sufficient statistics for least squares, grouped by categorical combination.
//!
//! Every row's categorical part (the values of [`FeatureSpec::key_columns`]) is a *combination*;
//! rows with the same combination share their one-hot features, so the Gram matrix, `Xᵀy` and the
//! residual sum of squares of any linear model can be rebuilt exactly from per-combination sums:
//! the row count, `Σy`, `Σy²`, `Σx`, `Σxy` and `Σxxᵀ` of the numerical columns. A month of green
//! taxi data has ~7,000 combinations for ~60,000 rows, so memory depends on the number of distinct
//! combinations, not on the number of rows: tens of millions of rows stream through a few MB.
//! Statistics of separate chunks merge exactly, so files are read in parallel.
//!
//! This is hand-written because no crate does "grouped moments keyed by interned categories";
//! the hashing is `rustc-hash`'s.

use rustc_hash::FxHashMap;

use crate::data::{KeyColumn, Trips};
use crate::spec::{FeatureSpec, MAX_KEY_COLUMNS};

/// A categorical value as read: integers print without a decimal point, like pandas'
/// `astype(str)` of an int64 column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CatValue {
    /// An integer category, e.g. a location ID.
    Int(i64),
    /// A string category.
    Str(String),
}

impl std::fmt::Display for CatValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Str(v) => f.write_str(v),
        }
    }
}

/// Dense codes for the distinct values of one key column.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    values: Vec<CatValue>,
    ints: FxHashMap<i64, u32>,
    strs: FxHashMap<String, u32>,
}

impl Interner {
    /// The code of an integer value, assigning the next one if it is new.
    #[inline]
    pub fn int(&mut self, value: i64) -> u32 {
        let next = self.values.len() as u32;
        *self.ints.entry(value).or_insert_with(|| {
            self.values.push(CatValue::Int(value));
            next
        })
    }

    /// The code of a string value, assigning the next one if it is new.
    pub fn str(&mut self, value: &str) -> u32 {
        if let Some(&code) = self.strs.get(value) {
            return code;
        }
        let code = self.values.len() as u32;
        self.values.push(CatValue::Str(value.to_owned()));
        self.strs.insert(value.to_owned(), code);
        code
    }

    /// The code of any value.
    pub fn value(&mut self, value: &CatValue) -> u32 {
        match value {
            CatValue::Int(v) => self.int(*v),
            CatValue::Str(v) => self.str(v),
        }
    }

    /// The value behind a code.
    pub fn get(&self, code: u32) -> &CatValue {
        &self.values[code as usize]
    }
}

/// A row's categorical combination: one code per key column, unused slots zero.
pub type ComboKey = [u32; MAX_KEY_COLUMNS];

/// Codes every row of a batch to its combination. Returns the distinct combinations (first-seen
/// order) and, per row, the index of its combination.
pub fn encode_combos(trips: &Trips, interners: &mut [Interner]) -> (Vec<ComboKey>, Vec<u32>) {
    let rows = trips.len();
    let mut index: FxHashMap<ComboKey, u32> = FxHashMap::default();
    let mut combos = Vec::new();
    let mut row_combo = Vec::with_capacity(rows);
    for row in 0..rows {
        let key = row_key(trips, interners, row);
        let next = combos.len() as u32;
        let combo = *index.entry(key).or_insert_with(|| {
            combos.push(key);
            next
        });
        row_combo.push(combo);
    }
    (combos, row_combo)
}

#[inline]
fn row_key(trips: &Trips, interners: &mut [Interner], row: usize) -> ComboKey {
    let mut key = [0u32; MAX_KEY_COLUMNS];
    for ((slot, column), interner) in key.iter_mut().zip(&trips.keys).zip(interners.iter_mut()) {
        *slot = match column {
            KeyColumn::Int(values) => interner.int(values[row]),
            KeyColumn::Str(values) => interner.str(&values[row]),
        };
    }
    key
}

/// Sufficient statistics of a set of rows, grouped by categorical combination.
///
/// Per combination, a flat record of `1 + 2 + k + k + k(k+1)/2` sums for `k` numerical columns:
/// count, `Σy`, `Σy²`, `Σx_l`, `Σx_l·y`, then the upper triangle of `Σx_l·x_m`.
#[derive(Debug, Clone)]
pub struct GroupedStats {
    numeric: usize,
    interners: Vec<Interner>,
    index: FxHashMap<ComboKey, u32>,
    keys: Vec<ComboKey>,
    sums: Vec<f64>,
    /// Rows read before filtering, over every file merged in.
    pub rows_read: u64,
    /// Rows dropped for a missing value, over every file merged in.
    pub rows_missing: u64,
}

impl GroupedStats {
    /// Empty statistics for a feature spec.
    pub fn new(spec: &FeatureSpec) -> Self {
        Self {
            numeric: spec.numerical.len(),
            interners: vec![Interner::default(); spec.key_columns().len()],
            index: FxHashMap::default(),
            keys: Vec::new(),
            sums: Vec::new(),
            rows_read: 0,
            rows_missing: 0,
        }
    }

    fn stride(&self) -> usize {
        let k = self.numeric;
        3 + 2 * k + k * (k + 1) / 2
    }

    /// Number of numerical columns.
    pub fn numeric_columns(&self) -> usize {
        self.numeric
    }

    /// Number of distinct combinations seen.
    pub fn combos(&self) -> usize {
        self.keys.len()
    }

    /// Number of rows accumulated.
    pub fn rows(&self) -> u64 {
        self.records().map(|(_, r)| r.count() as u64).sum()
    }

    /// The interner of each key column.
    pub fn interners(&self) -> &[Interner] {
        &self.interners
    }

    fn slot(&mut self, key: ComboKey) -> usize {
        let stride = self.stride();
        let next = self.keys.len() as u32;
        let combo = *self.index.entry(key).or_insert_with(|| {
            self.keys.push(key);
            self.sums.resize(self.sums.len() + stride, 0.0);
            next
        });
        combo as usize * stride
    }

    /// Adds every row of a batch.
    pub fn add(&mut self, trips: &Trips) {
        self.rows_read += trips.rows_read;
        self.rows_missing += trips.rows_missing;
        let k = self.numeric;
        for row in 0..trips.len() {
            let key = row_key(trips, &mut self.interners, row);
            let at = self.slot(key);
            let y = trips.duration[row];
            let record = &mut self.sums[at..at + 3 + 2 * k + k * (k + 1) / 2];
            record[0] += 1.0;
            record[1] += y;
            record[2] += y * y;
            let mut upper = 3 + 2 * k;
            for l in 0..k {
                let x = trips.numeric[l][row];
                record[3 + l] += x;
                record[3 + k + l] += x * y;
                for m in l..k {
                    record[upper] += x * trips.numeric[m][row];
                    upper += 1;
                }
            }
        }
    }

    /// Adds another set of statistics (for example from another file), translating its codes.
    pub fn merge(&mut self, other: GroupedStats) {
        self.rows_read += other.rows_read;
        self.rows_missing += other.rows_missing;
        let stride = self.stride();
        for (combo, key) in other.keys.iter().enumerate() {
            let mut mine = [0u32; MAX_KEY_COLUMNS];
            for (column, (slot, code)) in mine.iter_mut().zip(key).enumerate().take(self.interners.len()) {
                *slot = self.interners[column].value(other.interners[column].get(*code));
            }
            let at = self.slot(mine);
            let theirs = &other.sums[combo * stride..(combo + 1) * stride];
            for (sum, add) in self.sums[at..at + stride].iter_mut().zip(theirs) {
                *sum += add;
            }
        }
    }

    /// Every combination with its sums.
    pub fn records(&self) -> impl Iterator<Item = (&ComboKey, ComboRecord<'_>)> {
        let stride = self.stride();
        let k = self.numeric;
        self.keys.iter().zip(self.sums.chunks_exact(stride)).map(move |(key, sums)| (key, ComboRecord { k, sums }))
    }

    /// The raw values of a combination's key columns.
    pub fn values(&self, key: &ComboKey) -> Vec<&CatValue> {
        self.interners.iter().zip(key).map(|(interner, code)| interner.get(*code)).collect()
    }
}

/// The sums of one combination.
#[derive(Debug, Clone, Copy)]
pub struct ComboRecord<'a> {
    k: usize,
    sums: &'a [f64],
}

impl ComboRecord<'_> {
    /// Number of rows.
    pub fn count(&self) -> f64 {
        self.sums[0]
    }
    /// `Σy`.
    pub fn sum_y(&self) -> f64 {
        self.sums[1]
    }
    /// `Σy²`.
    pub fn sum_yy(&self) -> f64 {
        self.sums[2]
    }
    /// `Σx_l`.
    pub fn sum_x(&self, l: usize) -> f64 {
        self.sums[3 + l]
    }
    /// `Σx_l·y`.
    pub fn sum_xy(&self, l: usize) -> f64 {
        self.sums[3 + self.k + l]
    }
    /// `Σx_l·x_m`.
    pub fn sum_xx(&self, l: usize, m: usize) -> f64 {
        let (l, m) = if l <= m { (l, m) } else { (m, l) };
        self.sums[3 + 2 * self.k + upper_index(self.k, l, m)]
    }
}

/// Index of `(l, m)`, `l <= m`, in a row-major upper triangle of a `k × k` matrix.
fn upper_index(k: usize, l: usize, m: usize) -> usize {
    l * k - l * (l + 1) / 2 + m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_triangle_indexing_is_row_major() {
        let k = 3;
        let order: Vec<usize> = (0..k).flat_map(|l| (l..k).map(move |m| upper_index(k, l, m))).collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5]);
    }
}
