//! `/api/v1/plan/recommend`: the planner over fitted runs.

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
