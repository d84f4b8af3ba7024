//! The planner page: a compute budget in, ranked shapes out.

use crate::web::AppState;
use axum::Router;

/// The routes of these pages.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
