//! The API's one error type: every failure becomes `{"error": kind, "detail": message}` with a
//! status code. User input only ever causes 4xx; internal details are logged, not returned.

use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad JSON, bad query parameter, unknown field.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed but invalid: a config the trainer would refuse.
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    NotFound(String),
    /// The caller's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request contradicts the current state.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Something on our side; the detail is logged.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            ApiError::BadRequest(_) => ErrorKind::BadRequest,
            ApiError::Unprocessable(_) => ErrorKind::Invalid,
            ApiError::NotFound(_) => ErrorKind::NotFound,
            ApiError::Forbidden(_) => ErrorKind::Forbidden,
            ApiError::Conflict(_) => ErrorKind::Conflict,
            ApiError::PayloadTooLarge(_) => ErrorKind::PayloadTooLarge,
            ApiError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// Every error response: a machine-readable kind and a message that says what to change.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "not_found", "detail": "run 42 not found"}))]
pub struct ErrorBody {
    pub error: ErrorKind,
    /// What went wrong, and usually what to change.
    pub detail: String,
}

impl ErrorBody {
    /// The response of an error of `kind` with `status`.
    pub fn response(status: StatusCode, error: ErrorKind, detail: impl Into<String>) -> Response {
        let body = ErrorBody {
            error,
            detail: detail.into(),
        };
        (status, Json(body)).into_response()
    }
}

/// The kind of an error, one per status: `bad_request` (400: malformed JSON, unknown field or
/// parameter), `invalid` (422: well-formed but refused, e.g. a config the trainer would reject),
/// `not_found` (404), `payload_too_large` (413), `unauthorized` (401: no valid token),
/// `forbidden` (403: the token's role may not), `method_not_allowed` (405), `conflict` (409),
/// `unsupported_media_type` (415: an API write without `Content-Type: application/json`),
/// `misdirected` (421: a loopback server addressed by another host name), `timeout` (408),
/// `unavailable` (503) and `internal` (500: details are logged, not returned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    BadRequest,
    Invalid,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Forbidden,
    Conflict,
    MethodNotAllowed,
    UnsupportedMediaType,
    Misdirected,
    Timeout,
    Unavailable,
    Internal,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!("internal error: {detail}");
        }
        ErrorBody::response(self.status_code(), self.kind(), self.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) | StoreError::SweepNotFound(_) => {
                ApiError::NotFound(e.to_string())
            }
            StoreError::Invalid(m) => ApiError::Unprocessable(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
