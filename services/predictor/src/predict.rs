//! What every API shares: checking rides, scoring them with one model, and writing one
//! prediction-log record per answered ride.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use lightops_api::common::v1 as common;
use lightops_ml::Ride;
use lightops_predlog::{BufferedLog, PredictionLog, RequestFields, RideFeatures, RideFields};

use crate::error::{Error, Result};
use crate::metrics::{Api, Metrics};
use crate::model::{LoadedModel, ModelSlot, Serving, now_ms};

/// Longest ride_id accepted, in bytes.
pub const MAX_RIDE_ID_BYTES: usize = 256;

/// A checked ride.
#[derive(Debug, Clone, PartialEq)]
pub struct RideIn {
    /// Caller's identifier (may be empty).
    pub ride_id: String,
    /// The model inputs.
    pub ride: Ride,
    /// The ride's own time, ms since the epoch, when given.
    pub event_time_ms: Option<i64>,
}

/// Checks a ride's fields. Errors name the field (without a parent path; callers add it).
pub fn check_ride(ride_id: String, ride: Ride, event_time_ms: Option<i64>) -> Result<RideIn> {
    if ride_id.len() > MAX_RIDE_ID_BYTES {
        return Err(Error::invalid("ride_id", format!("is {} bytes; at most {MAX_RIDE_ID_BYTES}", ride_id.len())));
    }
    if !ride.trip_distance.is_finite() {
        return Err(Error::invalid("trip_distance", format!("must be a finite number, got {}", ride.trip_distance)));
    }
    if ride.trip_distance < 0.0 {
        return Err(Error::invalid("trip_distance", format!("must not be negative, got {}", ride.trip_distance)));
    }
    if let Some(time) = event_time_ms
        && time < 0
    {
        return Err(Error::invalid("event_time_ms", format!("must not be negative, got {time}")));
    }
    Ok(RideIn { ride_id, ride, event_time_ms })
}

/// Checks a protobuf ride (event_time_ms 0 means unknown).
pub fn check_proto_ride(ride: common::Ride) -> Result<RideIn> {
    let event_time = (ride.event_time_ms != 0).then_some(ride.event_time_ms);
    let fields = Ride {
        pu_location_id: ride.pu_location_id,
        do_location_id: ride.do_location_id,
        trip_distance: ride.trip_distance,
    };
    check_ride(ride.ride_id, fields, event_time)
}

/// Scores rides and logs them.
#[derive(Debug, Clone)]
pub struct Predictor {
    /// The model being served.
    pub slot: Arc<ModelSlot>,
    /// Where answered predictions are recorded (None: logging disabled).
    pub log: Option<PredictionLog>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// What `--model` asked for (`models:/trip_duration@staging`, a path, `s3://…`).
    pub requested: Arc<str>,
}

impl Predictor {
    /// The model to answer a whole request with (a reference that outlives the request).
    pub fn model(&self) -> Result<Arc<LoadedModel>> {
        self.slot.current().ok_or_else(Self::not_ready)
    }

    /// The model to answer one request with, borrowed for that request: the prediction paths'
    /// way, see [`Serving`].
    pub fn serving(&self) -> Result<Serving> {
        self.slot.serving().ok_or_else(Self::not_ready)
    }

    fn not_ready() -> Error {
        Error::NotReady("the predictor is still loading its model".into())
    }

    /// Scores checked rides with `model`, logs one record per ride and records metrics.
    pub fn answer(&self, api: Api, model: &LoadedModel, rides: &[RideIn], started: Instant) -> Vec<f64> {
        self.answer_with(api, model, rides, started, None)
    }

    /// Like [`Predictor::answer`]; with a `buffer` (a stream's, see [`BufferedLog`]) the records
    /// go there rather than straight into the log's queue.
    pub fn answer_with(
        &self,
        api: Api,
        model: &LoadedModel,
        rides: &[RideIn],
        started: Instant,
        buffer: Option<&mut BufferedLog>,
    ) -> Vec<f64> {
        let predictions: Vec<f64> = rides.iter().map(|r| model.scorer.score(&r.ride)).collect();
        let answered_at = Instant::now();
        let elapsed = answered_at.saturating_duration_since(started);
        if buffer.is_some() || self.log.is_some() {
            let received_at_ms = wall_clock_ms(started);
            let latency_us = elapsed.as_micros() as u64;
            let request = RequestFields { model: &model.id, received_at_ms, latency_us, answered_at };
            // Borrowed views: serialized by the log without copying the strings first.
            let fields = rides.iter().zip(&predictions).map(|(ride, prediction)| RideFields {
                ride_id: &ride.ride_id,
                event_time_ms: ride.event_time_ms,
                features: RideFeatures {
                    pu_location_id: ride.ride.pu_location_id,
                    do_location_id: ride.ride.do_location_id,
                    trip_distance: ride.ride.trip_distance,
                },
                prediction: *prediction,
            });
            match (buffer, &self.log) {
                (Some(buffer), _) => buffer.log_request(request, fields),
                (None, Some(log)) => log.log_request(request, fields),
                (None, None) => {}
            }
        }
        self.metrics.answered(api, &predictions, elapsed.as_secs_f64());
        predictions
    }

    /// Counts a refused request and passes the error on.
    pub fn refuse(&self, api: Api, error: Error) -> Error {
        self.metrics.refused(api, &error);
        error
    }
}

/// The wall-clock time (ms since the epoch) of a monotonic instant, without reading the wall
/// clock per request (a second clock read per prediction showed in profiles): the offset between
/// the two clocks is re-read once a second, so a step of the system clock is followed within one.
fn wall_clock_ms(at: Instant) -> i64 {
    struct Anchor {
        base: Instant,
        /// Wall-clock ms minus monotonic ms since `base`.
        offset_ms: AtomicI64,
        /// Monotonic ms since `base` when `offset_ms` was last read.
        read_at_ms: AtomicI64,
    }
    fn offset(base: Instant) -> (i64, i64) {
        let mono = Instant::now().saturating_duration_since(base).as_millis() as i64;
        (now_ms() - mono, mono)
    }
    static ANCHOR: LazyLock<Anchor> = LazyLock::new(|| {
        let base = Instant::now();
        let (offset_ms, read_at_ms) = offset(base);
        Anchor { base, offset_ms: AtomicI64::new(offset_ms), read_at_ms: AtomicI64::new(read_at_ms) }
    });
    let anchor = &*ANCHOR;
    let mono = at.saturating_duration_since(anchor.base).as_millis() as i64;
    if mono - anchor.read_at_ms.load(Relaxed) >= 1000 {
        let (offset_ms, read_at_ms) = offset(anchor.base);
        anchor.offset_ms.store(offset_ms, Relaxed);
        anchor.read_at_ms.store(read_at_ms, Relaxed);
    }
    mono + anchor.offset_ms.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ride(trip_distance: f64) -> Ride {
        Ride { pu_location_id: 1, do_location_id: 2, trip_distance }
    }

    #[test]
    fn request_instants_map_to_the_wall_clock() {
        let before = now_ms();
        let at = Instant::now();
        let after = now_ms();
        let wall = wall_clock_ms(at);
        assert!((before - 1..=after + 1).contains(&wall), "{before} <= {wall} <= {after}");
        // An instant from before the anchor was made still maps (saturating at the anchor).
        assert!(wall_clock_ms(at) >= before - 1);
    }

    #[test]
    fn rejects_bad_distances_and_times_naming_the_field() {
        for (distance, needle) in [(f64::NAN, "finite"), (f64::INFINITY, "finite"), (-1.0, "negative")] {
            let error = check_ride(String::new(), ride(distance), None).expect_err("bad distance").to_string();
            assert!(error.starts_with("trip_distance:") && error.contains(needle), "{error}");
        }
        let error = check_ride(String::new(), ride(1.0), Some(-5)).expect_err("bad time").to_string();
        assert!(error.starts_with("event_time_ms:"), "{error}");
        let error = check_ride("x".repeat(300), ride(1.0), None).expect_err("long id").to_string();
        assert!(error.starts_with("ride_id:"), "{error}");
        assert!(check_ride("r1".into(), ride(0.0), Some(0)).is_ok());
    }
}
