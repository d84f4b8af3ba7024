//! `/api/v1/analysis`: LR transfer and width/depth tolerance of stored runs.

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
