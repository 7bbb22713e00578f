//! The trainer's one error type and its single mapping to gRPC status codes.

use tonic::{Code, Status};

/// Everything a trainer call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such job or schedule.
    #[error("{0} not found")]
    NotFound(String),
    /// A request field is missing or malformed.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The request field (`spec.val`, `cron`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request does not fit the job's state (e.g. cancelling a finished job).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The in-process queue is full.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The Kubernetes executor is not configured on this trainer.
    #[error("{0}")]
    Unavailable(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), message: message.into() }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::NotFound(_) => Code::NotFound,
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Unavailable(_) => Code::Unavailable,
        };
        Status::new(code, error.to_string())
    }
}
