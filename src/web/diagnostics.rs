//! `/api/v1/diagnostics`: coordinate checks and the linearization check, run in the background and stored.

use super::AppState;
use axum::Router;

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
}

/// The OpenAPI description of this resource's routes (merged into the API document).
pub fn api_doc() -> utoipa::openapi::OpenApi {
    utoipa::openapi::OpenApiBuilder::new().build()
}
