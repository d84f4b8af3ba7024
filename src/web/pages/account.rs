//! Signing in and out (`/login`, `/logout`) and the admins' token page (`/admin/tokens`).
//!
//! Signing in trades an API token for a session cookie: `HttpOnly` (no script reads it),
//! `SameSite=Strict` (no other site's page sends it) and valid for
//! [`crate::auth::SESSION_SECONDS`]. Every form here checks that it was posted from this
//! server's own pages.

use super::{Page, PageError, fmt_time, render};
use crate::auth::{Role, SESSION_SECONDS};
use crate::web::AppState;
use crate::web::auth::{SESSION_COOKIE, cookie, safe_next, same_origin};
use askama::Template;
use axum::Router;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

/// The routes of this module.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login_submit))
        .route("/logout", post(logout))
        .route("/admin/tokens", get(tokens_page).post(create_token))
        .route("/admin/tokens/{id}/revoke", post(revoke_token))
}

fn check_origin(headers: &HeaderMap) -> Result<(), PageError> {
    if same_origin(headers) {
        Ok(())
    } else {
        Err(PageError::new(
            StatusCode::FORBIDDEN,
            "this form must be submitted from shapewise's own pages",
        ))
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginTemplate {
    page: Page,
    auth: bool,
    next: String,
    error: String,
}

#[derive(Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

async fn login_form(
    State(state): State<AppState>,
    query: Result<Query<NextQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let next = query.ok().and_then(|Query(q)| q.next);
    let template = LoginTemplate {
        page: Page::new("Sign in", ""),
        auth: state.settings.auth,
        next: safe_next(next.as_deref()).to_string(),
        error: String::new(),
    };
    render(StatusCode::OK, &template)
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, PageError> {
    check_origin(&headers)?;
    let Form(form) = form
        .map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "the sign-in form needs a token"))?;
    let next = safe_next(form.next.as_deref()).to_string();
    if !state.settings.auth {
        return Ok(Redirect::to(&next).into_response());
    }
    let identity = state.store.identify_token(form.token.trim()).await?;
    let Some(token_id) = identity.and_then(|i| i.token_id) else {
        let template = LoginTemplate {
            page: Page::new("Sign in", ""),
            auth: true,
            next,
            error: "That token is not valid (or was revoked).".into(),
        };
        return render(StatusCode::UNAUTHORIZED, &template);
    };
    let session = state.store.create_session(token_id).await?;
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}"
    );
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| {
            PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not set the cookie",
            )
        })?,
    );
    Ok(response)
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, PageError> {
    check_origin(&headers)?;
    if let Some(session) = cookie(&headers, SESSION_COOKIE) {
        state.store.end_session(session).await?;
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "shapewise_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(response)
}

struct TokenRow {
    id: i64,
    name: String,
    role: &'static str,
    created: String,
    revoked: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensTemplate {
    page: Page,
    tokens: Vec<TokenRow>,
    created: String,
    created_name: String,
    error: String,
}

async fn tokens_template(
    state: &AppState,
    created: (String, String),
    error: String,
) -> Result<TokensTemplate, PageError> {
    let tokens = state
        .store
        .tokens()
        .await?
        .into_iter()
        .map(|t| TokenRow {
            id: t.id,
            name: t.name,
            role: t.role.name(),
            created: fmt_time(&t.created_at),
            revoked: t.revoked_at.as_deref().map(fmt_time).unwrap_or_default(),
        })
        .collect();
    Ok(TokensTemplate {
        page: Page::new("API tokens", "tokens"),
        tokens,
        created_name: created.0,
        created: created.1,
        error,
    })
}

async fn tokens_page(State(state): State<AppState>) -> Result<Response, PageError> {
    let template = tokens_template(&state, Default::default(), String::new()).await?;
    render(StatusCode::OK, &template)
}

#[derive(Deserialize)]
pub(super) struct NewTokenForm {
    name: String,
    role: String,
}

async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<NewTokenForm>, FormRejection>,
) -> Result<Response, PageError> {
    check_origin(&headers)?;
    let Form(form) = form
        .map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "the form needs a name and a role"))?;
    let checked = crate::auth::check_token_name(&form.name).and_then(|()| {
        Role::parse(&form.role).ok_or_else(|| "choose reader, writer or admin".to_string())
    });
    let (status, template) = match checked {
        Ok(role) => {
            let (token, secret) = state.store.create_token(form.name.trim(), role).await?;
            tracing::info!("token {} ({}) created", token.name, token.role);
            let template = tokens_template(&state, (token.name, secret), String::new()).await?;
            (StatusCode::CREATED, template)
        }
        Err(message) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            tokens_template(&state, Default::default(), message).await?,
        ),
    };
    let mut response = render(status, &template)?;
    // The page holds a secret: keep it out of caches and the back-forward history.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn revoke_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, PageError> {
    check_origin(&headers)?;
    let Ok(Path(id)) = path else {
        return Err(PageError::not_found("there is no such token"));
    };
    if !state.store.revoke_token(id).await? {
        return Err(PageError::not_found("there is no such token"));
    }
    tracing::info!("token {id} revoked");
    Ok(Redirect::to("/admin/tokens").into_response())
}
