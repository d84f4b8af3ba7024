//! Diagnostics pages: coordinate checks and linearization checks.

use crate::web::AppState;
use axum::Router;

/// The routes of these pages.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
