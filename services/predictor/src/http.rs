//! The HTTP side of the predictor port: the workshop's `POST /predict`, `/healthz`, `/readyz`
//! and `/metrics`.
//!
//! `POST /predict` accepts both of the workshop's request shapes,
//! `{"PULocationID":100,"DOLocationID":102,"trip_distance":30}` and
//! `{"ride_id":"ride_xyz","ride":{…}}`, and answers
//! `{"prediction":{"duration":…},"ride_id":…,"model_version":…}` (`ride_id` only when given).
//! Bad input gets 400 with `{"error": "...", "field": "..."}`; a body over the limit gets 413.

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::metrics::Api;
use crate::predict::{Predictor, RideIn, check_ride};

/// State of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Scores and logs.
    pub predictor: Predictor,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
}

/// The HTTP routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/predict", post(predict))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[derive(Serialize)]
struct Duration {
    duration: f64,
}

#[derive(Serialize)]
struct Answer<'a> {
    prediction: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    ride_id: Option<&'a str>,
    model_version: &'a str,
}

async fn predict(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let predictor = &state.predictor;
    let answer = async {
        check_content_type(&headers)?;
        let bytes = read_body(&headers, body, state.max_body_bytes).await?;
        let (ride, given_id) = parse_request(&bytes)?;
        let model = predictor.serving()?;
        let rides = [ride];
        let duration = predictor.answer(Api::Http, &model, &rides, started)[0];
        let answer = Answer {
            prediction: Duration { duration },
            ride_id: given_id.then_some(rides[0].ride_id.as_str()),
            model_version: &model.id.version,
        };
        Ok::<_, Error>(axum::Json(answer).into_response())
    };
    match answer.await {
        Ok(response) => response,
        Err(error) => predictor.refuse(Api::Http, error).into_response(),
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<()> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else if content_type.is_empty() {
        Err(Error::invalid("Content-Type", "is missing; send application/json"))
    } else {
        Err(Error::invalid("Content-Type", format!("is {content_type:?}; send application/json")))
    }
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<bytes::Bytes> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(size) = declared.filter(|size| *size > limit) {
        return Err(Error::TooLarge { size, limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let inner = error.into_inner();
        if inner.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            Error::TooLarge { size: limit + 1, limit }
        } else {
            Error::invalid("body", format!("could not be read: {inner}"))
        }
    })
}

/// Parses either request shape; returns the ride and whether a ride_id was given.
fn parse_request(bytes: &[u8]) -> Result<(RideIn, bool)> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| Error::invalid("body", format!("malformed JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(Error::invalid("body", format!("must be a JSON object, got {}", kind(&value))));
    };
    let (ride_id, given) = match object.get("ride_id") {
        None | Some(Value::Null) => (String::new(), false),
        Some(Value::String(id)) => (id.clone(), true),
        Some(other) => return Err(Error::invalid("ride_id", format!("must be a string, got {}", kind(other)))),
    };
    let ride = match object.get("ride") {
        Some(Value::Object(ride)) => parse_ride(ride, ride_id).map_err(|e| e.within("ride"))?,
        Some(other) => return Err(Error::invalid("ride", format!("must be an object, got {}", kind(other)))),
        None => parse_ride(&object, ride_id)?,
    };
    Ok((ride, given))
}

fn parse_ride(object: &Map<String, Value>, ride_id: String) -> Result<RideIn> {
    let ride = lightops_ml::Ride {
        pu_location_id: integer(object, "PULocationID")?,
        do_location_id: integer(object, "DOLocationID")?,
        trip_distance: number(object, "trip_distance")?,
    };
    let event_time_ms = match object.get("event_time_ms") {
        None | Some(Value::Null) => None,
        Some(_) => Some(integer(object, "event_time_ms")?),
    };
    check_ride(ride_id, ride, event_time_ms)
}

fn integer(object: &Map<String, Value>, field: &str) -> Result<i64> {
    match object.get(field) {
        None | Some(Value::Null) => Err(Error::invalid(field, "is missing")),
        Some(Value::Number(n)) => {
            n.as_i64().ok_or_else(|| Error::invalid(field, format!("must be an integer, got {n}")))
        }
        Some(other) => Err(Error::invalid(field, format!("must be an integer, got {}", kind(other)))),
    }
}

fn number(object: &Map<String, Value>, field: &str) -> Result<f64> {
    match object.get(field) {
        None | Some(Value::Null) => Err(Error::invalid(field, "is missing")),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| Error::invalid(field, format!("must be a number, got {n}"))),
        Some(other) => Err(Error::invalid(field, format!("must be a number, got {}", kind(other)))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

async fn ready(State(state): State<HttpState>) -> Response {
    match state.predictor.model() {
        Ok(model) => {
            axum::Json(serde_json::json!({"ready": true, "model": model.id.name, "version": model.id.version}))
                .into_response()
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"ready": false, "error": error.to_string()})),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let text = state.predictor.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(body: &str) -> String {
        parse_request(body.as_bytes()).expect_err(body).to_string()
    }

    #[test]
    fn parses_both_workshop_shapes() {
        let (flat, given) =
            parse_request(br#"{"PULocationID": 100, "DOLocationID": 102, "trip_distance": 30}"#).expect("flat");
        assert!(!given);
        assert_eq!(flat.ride.pu_location_id, 100);
        assert_eq!(flat.ride.trip_distance, 30.0);
        let (nested, given) = parse_request(
            br#"{"ride_id": "ride_xyz", "ride": {"PULocationID": 100, "DOLocationID": 102, "trip_distance": 30}}"#,
        )
        .expect("nested");
        assert!(given);
        assert_eq!(nested.ride_id, "ride_xyz");
        assert_eq!(nested.ride, flat.ride);
    }

    #[test]
    fn errors_name_the_field() {
        assert!(error(r#"{"DOLocationID": 1, "trip_distance": 1}"#).starts_with("PULocationID: is missing"));
        assert!(
            error(r#"{"PULocationID": "1", "DOLocationID": 1, "trip_distance": 1}"#).contains("must be an integer")
        );
        assert!(error(r#"{"PULocationID": 1.5, "DOLocationID": 1, "trip_distance": 1}"#).starts_with("PULocationID:"));
        assert!(
            error(r#"{"ride": {"PULocationID": 1, "DOLocationID": 1, "trip_distance": -2}}"#)
                .starts_with("ride.trip_distance: must not be negative")
        );
        assert!(error(r#"{"ride_id": 7, "ride": {}}"#).starts_with("ride_id: must be a string"));
        assert!(error(r#"{"ride": [1]}"#).starts_with("ride: must be an object"));
        assert!(error(r#"{"PULocationID": 1,"#).starts_with("body: malformed JSON"));
        assert!(error("[1, 2]").starts_with("body: must be a JSON object"));
    }
}
