//! The registry's one error type and its single mapping to gRPC status codes.

use tonic::{Code, Status};

/// Everything a registry call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The name is taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A request field is missing or malformed.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The request conflicts with what is recorded (e.g. rewriting a param).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Stored bytes no longer match their recorded checksum.
    #[error("{0}")]
    DataLoss(String),
    /// The artifact store failed.
    #[error("artifact store: {0}")]
    Storage(#[from] lightops_objstore::artifacts::StoreError),
    /// The store is not open yet.
    #[error("the registry store is not open yet")]
    NotReady,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidArgument`].
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument { field, message: message.into() }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::NotReady => Code::Unavailable,
            Error::DataLoss(_) => Code::DataLoss,
            Error::Storage(lightops_objstore::artifacts::StoreError::NotFound(_)) => Code::NotFound,
            Error::Storage(lightops_objstore::artifacts::StoreError::BadKey(_)) => Code::InvalidArgument,
            Error::Storage(_) => Code::Unavailable,
            Error::Database(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)) => {
                Code::Unavailable
            }
            Error::Database(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %error, "registry call failed");
        }
        Status::new(code, error.to_string())
    }
}
