//! Studies: the new-study form, the list and one study's page.

use crate::web::AppState;
use axum::Router;

/// The routes of these pages.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
