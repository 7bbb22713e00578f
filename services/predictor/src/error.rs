//! The predictor's one error type, and its one mapping to gRPC statuses and HTTP responses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What can go wrong while answering a request or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or wrong; `field` names it (`ride.trip_distance`,
    /// `rides[3].PULocationID`, `inputs[1].shape`).
    #[error("{field}: {problem}")]
    Invalid {
        /// Path of the offending field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The request body is larger than the configured limit.
    #[error("request body is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Size received (or at least received before giving up).
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// No model is loaded yet (the predictor is not ready).
    #[error("no model is loaded yet: {0}")]
    NotReady(String),
    /// A model name or version that this predictor does not serve.
    #[error("{0}")]
    NotFound(String),
    /// A model could not be fetched or verified.
    #[error("model {uri}: {message}")]
    Model {
        /// Which model.
        uri: String,
        /// What went wrong.
        message: String,
    },
    /// The registry could not be reached or answered with an error.
    #[error("registry: {0}")]
    Registry(String),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An invalid field.
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), problem: problem.into() }
    }

    /// The same error with its field path prefixed (`ride` + `trip_distance` → `ride.trip_distance`,
    /// `rides[3]` + `trip_distance` → `rides[3].trip_distance`).
    pub fn within(self, parent: &str) -> Self {
        match self {
            Self::Invalid { field, problem } => Self::Invalid { field: format!("{parent}.{field}"), problem },
            other => other,
        }
    }

    fn http_status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotReady(_) | Self::Registry(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Model { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Invalid { .. } => Self::invalid_argument(message),
            Error::TooLarge { .. } => Self::resource_exhausted(message),
            Error::NotReady(_) | Error::Registry(_) => Self::unavailable(message),
            Error::NotFound(_) => Self::not_found(message),
            Error::Model { .. } => Self::internal(message),
        }
    }
}

impl IntoResponse for Error {
    /// `{"error": "...", "field": "..."}` with the matching status code.
    fn into_response(self) -> Response {
        let status = self.http_status();
        let field = match &self {
            Self::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let body = serde_json::json!({ "error": self.to_string(), "field": field });
        (status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_fields_map_to_invalid_argument_and_400() {
        let error = Error::invalid("trip_distance", "must be finite").within("ride");
        assert_eq!(error.to_string(), "ride.trip_distance: must be finite");
        assert_eq!(error.http_status(), StatusCode::BAD_REQUEST);
        assert_eq!(tonic::Status::from(error).code(), tonic::Code::InvalidArgument);
        let large = Error::TooLarge { size: 10, limit: 5 };
        assert_eq!(large.http_status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(tonic::Status::from(Error::NotReady("x".into())).code(), tonic::Code::Unavailable);
    }
}
