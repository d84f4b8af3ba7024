//! The analysis page: fits, savings, LR transfer and width/depth tolerance of a run selection.

use crate::web::AppState;
use axum::Router;

/// The routes of these pages.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
