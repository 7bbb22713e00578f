//! Per-ride prediction for serving: the model compiled into integer-keyed lookup tables, so a
//! prediction is one table lookup per one-hot group, one multiply-add per numerical column and
//! the intercept, with no string formatting or hashing of strings on the request path.
//!
//! [`RideScorer::score`] gives bit-for-bit the same value as [`LinearModel::predict_trips`] for
//! the same ride: the terms are added in the same order (intercept, groups in spec order, then
//! numerical columns).

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::model::LinearModel;

/// The raw fields of one ride, as clients send them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ride {
    /// Pickup zone (TLC `PULocationID`).
    pub pu_location_id: i64,
    /// Dropoff zone (TLC `DOLocationID`).
    pub do_location_id: i64,
    /// Trip distance, miles.
    pub trip_distance: f64,
}

/// A ride field a model may read. Rides carry exactly these three, so a model whose spec names
/// another column cannot be served from rides (see [`RideScorer::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    PuLocationId,
    DoLocationId,
    TripDistance,
}

impl Field {
    fn parse(column: &str) -> Option<Self> {
        match column {
            "PULocationID" => Some(Self::PuLocationId),
            "DOLocationID" => Some(Self::DoLocationId),
            "trip_distance" => Some(Self::TripDistance),
            _ => None,
        }
    }

    fn id(self, ride: &Ride) -> i64 {
        match self {
            Self::PuLocationId => ride.pu_location_id,
            Self::DoLocationId => ride.do_location_id,
            // Not a categorical field; `new` refuses such a spec.
            Self::TripDistance => i64::MIN,
        }
    }
}

/// Largest category id stored in a dense table (TLC zones go to 265); beyond it a hash map.
const DENSE_LIMIT: i64 = 1 << 16;

/// Coefficients of one single-column group, by integer category.
#[derive(Debug, Clone)]
enum IdTable {
    /// `table[id]`, 0.0 for ids never seen in training.
    Dense(Vec<f64>),
    /// Sparse ids (negative or large).
    Map(FxHashMap<i64, f64>),
}

impl IdTable {
    fn get(&self, id: i64) -> f64 {
        match self {
            Self::Dense(table) => usize::try_from(id).ok().and_then(|i| table.get(i)).copied().unwrap_or(0.0),
            Self::Map(map) => map.get(&id).copied().unwrap_or(0.0),
        }
    }
}

/// One one-hot group compiled for rides.
#[derive(Debug, Clone)]
enum Group {
    Single { field: Field, table: IdTable },
    Crossed { fields: Vec<Field>, table: FxHashMap<Vec<i64>, f64> },
}

/// A [`LinearModel`] compiled for scoring single rides.
#[derive(Debug, Clone)]
pub struct RideScorer {
    intercept: f64,
    groups: Vec<Group>,
    numeric: Vec<(Field, f64)>,
}

impl RideScorer {
    /// Compiles a model. Fails when its spec reads a column rides do not carry, or uses a
    /// numeric column as a category; categories that are not integers can never match a ride's
    /// integer zone ids and are left out (they would contribute nothing).
    pub fn new(model: &LinearModel) -> Result<Self> {
        let field = |column: &str| {
            Field::parse(column).ok_or_else(|| {
                Error::Spec(format!(
                    "the model reads column `{column}`, but rides carry only PULocationID, DOLocationID and trip_distance"
                ))
            })
        };
        let categorical = |column: &str| match field(column)? {
            Field::TripDistance => Err(Error::Spec(format!("`{column}` cannot be served as a categorical column"))),
            other => Ok(other),
        };
        let mut groups = Vec::with_capacity(model.groups.len());
        let crossed = model.spec.crossed.iter().map(|c| c.columns.clone());
        let sources: Vec<Vec<String>> = model.spec.categorical.iter().map(|c| vec![c.clone()]).chain(crossed).collect();
        for (group, columns) in model.groups.iter().zip(&sources) {
            let entries = group.categories.iter().zip(&group.coefficients);
            if let [column] = columns.as_slice() {
                let field = categorical(column)?;
                let ids: Vec<(i64, f64)> = entries.filter_map(|(c, w)| Some((c.parse::<i64>().ok()?, *w))).collect();
                let table = if ids.iter().all(|(id, _)| (0..DENSE_LIMIT).contains(id)) {
                    let len = ids.iter().map(|(id, _)| *id as usize + 1).max().unwrap_or(0);
                    let mut table = vec![0.0; len];
                    for (id, weight) in ids {
                        table[id as usize] = weight;
                    }
                    IdTable::Dense(table)
                } else {
                    IdTable::Map(ids.into_iter().collect())
                };
                groups.push(Group::Single { field, table });
            } else {
                let fields = columns.iter().map(|c| categorical(c)).collect::<Result<Vec<_>>>()?;
                let table = entries
                    .filter_map(|(category, weight)| {
                        let ids: Option<Vec<i64>> = category.split('_').map(|part| part.parse().ok()).collect();
                        ids.filter(|ids| ids.len() == fields.len()).map(|ids| (ids, *weight))
                    })
                    .collect();
                groups.push(Group::Crossed { fields, table });
            }
        }
        let numeric = model
            .spec
            .numerical
            .iter()
            .zip(&model.numeric)
            .map(|(column, weight)| match field(column)? {
                Field::TripDistance => Ok((Field::TripDistance, *weight)),
                _ => Err(Error::Spec(format!("`{column}` cannot be served as a numerical column"))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { intercept: model.intercept, groups, numeric })
    }

    /// The predicted duration of one ride, minutes.
    pub fn score(&self, ride: &Ride) -> f64 {
        let mut total = self.intercept;
        for group in &self.groups {
            total += match group {
                Group::Single { field, table } => table.get(field.id(ride)),
                Group::Crossed { fields, table } => {
                    // At most MAX_KEY_COLUMNS fields: a small stack key, no allocation.
                    let mut key = [0i64; crate::spec::MAX_KEY_COLUMNS];
                    for (slot, field) in key.iter_mut().zip(fields) {
                        *slot = field.id(ride);
                    }
                    table.get(&key[..fields.len()]).copied().unwrap_or(0.0)
                }
            };
        }
        for (_, weight) in &self.numeric {
            total += weight * ride.trip_distance;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Trips;
    use crate::model::CategoryGroup;
    use crate::spec::FeatureSpec;

    fn group(name: &str, categories: &[&str], coefficients: &[f64]) -> CategoryGroup {
        CategoryGroup {
            name: name.into(),
            categories: categories.iter().map(|c| c.to_string()).collect(),
            coefficients: coefficients.to_vec(),
        }
    }

    fn trips(rides: &[Ride]) -> Trips {
        use crate::data::KeyColumn;
        Trips {
            source: "rides".into(),
            rows_read: rides.len() as u64,
            rows_missing: 0,
            duration: vec![0.0; rides.len()],
            pickup_us: vec![0; rides.len()],
            keys: vec![
                KeyColumn::Int(rides.iter().map(|r| r.pu_location_id).collect()),
                KeyColumn::Int(rides.iter().map(|r| r.do_location_id).collect()),
            ],
            numeric: vec![rides.iter().map(|r| r.trip_distance).collect()],
        }
    }

    const RIDES: [Ride; 4] = [
        Ride { pu_location_id: 43, do_location_id: 151, trip_distance: 1.7 },
        Ride { pu_location_id: 7, do_location_id: 43, trip_distance: 0.0 },
        Ride { pu_location_id: 999_999, do_location_id: -3, trip_distance: 30.0 },
        Ride { pu_location_id: 151, do_location_id: 7, trip_distance: 12.25 },
    ];

    #[test]
    fn matches_the_model_bit_for_bit() {
        let model = LinearModel::new(
            FeatureSpec::default(),
            vec![
                group("PULocationID", &["151", "43", "7"], &[0.5, -1.25, 2.0]),
                group("DOLocationID", &["151", "43"], &[3.0, 0.125]),
            ],
            vec![2.7],
            11.0,
        )
        .expect("model");
        let scorer = RideScorer::new(&model).expect("scorer");
        let expected = model.predict_trips(&trips(&RIDES));
        let got: Vec<f64> = RIDES.iter().map(|r| scorer.score(r)).collect();
        assert_eq!(got, expected);
        // Unknown zones contribute nothing.
        assert_eq!(scorer.score(&RIDES[2]), 11.0 + 2.7 * 30.0);
    }

    #[test]
    fn crossed_features_match_the_model() {
        let model = LinearModel::new(
            FeatureSpec::pu_do(),
            vec![group("PU_DO", &["151_7", "43_151", "7_43"], &[1.5, -2.0, 0.25])],
            vec![3.1],
            9.0,
        )
        .expect("model");
        let scorer = RideScorer::new(&model).expect("scorer");
        let expected = model.predict_trips(&trips(&RIDES));
        let got: Vec<f64> = RIDES.iter().map(|r| scorer.score(r)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn refuses_columns_rides_do_not_carry() {
        let spec = FeatureSpec { numerical: vec!["fare_amount".into()], ..FeatureSpec::default() };
        let model = LinearModel::new(
            spec,
            vec![group("PULocationID", &[], &[]), group("DOLocationID", &[], &[])],
            vec![1.0],
            0.0,
        )
        .expect("model");
        let error = RideScorer::new(&model).expect_err("fare_amount is not a ride field").to_string();
        assert!(error.contains("fare_amount"), "{error}");
    }
}
