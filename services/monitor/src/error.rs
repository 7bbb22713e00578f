//! The monitor's one error type and its single mapping to gRPC status codes.

use tonic::{Code, Status};

/// Everything a monitor call or step can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such window.
    #[error("{0} not found")]
    NotFound(String),
    /// A request field is missing or malformed.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The archive could not be written or read.
    #[error("archive: {0}")]
    Archive(String),
    /// A reference profile could not be found.
    #[error("reference: {0}")]
    Reference(String),
    /// The prediction log could not be read.
    #[error("prediction log: {0}")]
    Source(#[from] lightops_predlog::SourceError),
    /// Local state (positions, actuals, alerts) could not be read or written.
    #[error("state {path}: {message}")]
    State {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A bug or an impossible state.
    #[error("{0}")]
    Internal(String),
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
            Error::Reference(_) | Error::Source(_) => Code::Unavailable,
            Error::Archive(_) | Error::State { .. } | Error::Internal(_) => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}
