//! `/api/v1/tokens` (admins): create, list and revoke API tokens; `/api/v1/whoami`.

use super::AppState;
use super::body::json_body;
use super::error::ApiError;
use crate::auth::{Identity, Role, TokenRecord};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/whoami", get(whoami))
}

/// Who the request comes from: the token's name and role (`anonymous`, an admin, when
/// authentication is off).
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    tag = "tokens",
    responses((status = 200, description = "The caller", body = Identity))
)]
async fn whoami() -> Json<Identity> {
    Json(super::auth::current().unwrap_or_else(Identity::anonymous))
}

/// Lists every token (never their secrets), revoked ones included.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    responses((status = 200, description = "Every token, oldest first", body = Vec<TokenRecord>))
)]
async fn list_tokens(State(state): State<AppState>) -> Result<Json<Vec<TokenRecord>>, ApiError> {
    Ok(Json(state.store.tokens().await?))
}

/// Creates a token: `{"name", "role": "reader" | "writer" | "admin"}`. The response holds the
/// secret, which is shown this once and stored only as a hash.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body(content = NewToken, content_type = "application/json"),
    responses(
        (status = 201, description = "The token and its secret", body = CreatedToken),
        (status = 400, description = "Malformed body or unknown field", body = super::error::ErrorBody),
        (status = 422, description = "A name that is empty, too long or has control characters", body = super::error::ErrorBody),
    )
)]
async fn create_token(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let NewToken { name, role } = json_body(body)?;
    crate::auth::check_token_name(&name).map_err(ApiError::Unprocessable)?;
    let (token, secret) = state.store.create_token(&name, role).await?;
    tracing::info!("token {} ({}) created", token.name, token.role);
    Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })).into_response())
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "notebook-alice", "role": "writer"}))]
pub(crate) struct NewToken {
    /// 1 to 100 characters, no control characters, not only spaces; shown as the creator of
    /// the runs it makes.
    #[schema(
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    role: Role,
}

/// A created token with its secret (shown once; send it as `Authorization: Bearer <secret>`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedToken {
    token: TokenRecord,
    secret: String,
}

/// Revokes a token: it authenticates nothing from now on and its browser sessions end. The
/// token making the request cannot revoke itself (409), so an admin cannot lock itself out.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = i64, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 400, description = "The id is not an integer", body = super::error::ErrorBody),
        (status = 404, description = "No such token", body = super::error::ErrorBody),
        (status = 409, description = "The token making the request", body = super::error::ErrorBody),
    )
)]
async fn revoke_token(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) =
        path.map_err(|_| ApiError::BadRequest("the token id must be an integer".into()))?;
    if super::auth::current().is_some_and(|caller| caller.token_id == Some(id)) {
        return Err(ApiError::Conflict(
            "a token cannot revoke itself: use another admin token".into(),
        ));
    }
    if state.store.revoke_token(id).await? {
        tracing::info!("token {id} revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("token {id} not found")))
    }
}
