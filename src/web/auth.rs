//! The request guards: who a request comes from, what each route allows, and the checks that
//! keep other web sites and other host names out.
//!
//! Two layers, in this order:
//!
//! 1. [`screen`], on every request: a server listening only on loopback answers only `Host`
//!    headers that name loopback (so a DNS-rebound name cannot reach it).
//! 2. [`guard`], on every route: the route's [`Access`] from [`POLICY`]; the caller from an
//!    `Authorization: Bearer` token or the session cookie; 401 without a valid one, 403 for a
//!    role below the route's. A cookie-authenticated write must come from this server's own
//!    pages (`Origin` equal to the host, never `null`). API writes (`POST` under `/api/`) with
//!    a body must be `Content-Type: application/json`, which no cross-site form or simple
//!    request can send without a CORS preflight (never granted), and a browser's API write
//!    naming another origin is refused. A route missing from [`POLICY`] is refused (fail
//!    closed), and a test walks the router to make sure none is.
//!
//! With authentication off every caller is [`Identity::anonymous`] (an admin), and both layers'
//! other checks still apply.

use super::AppState;
use super::error::{ErrorBody, ErrorKind};
use crate::auth::{Identity, Role};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "shapewise_session";

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not: health check, sign-in, static files, the API description.
    Public,
    /// Any signed-in role.
    Role(Role),
}

const READ: Access = Access::Role(Role::Reader);
const WRITE: Access = Access::Role(Role::Writer);
const ADMIN: Access = Access::Role(Role::Admin);

/// Every route's access, by method and path template. Computations that only read stored runs
/// (fits, analyses, the planner, estimates) are reads even though they are `POST`s; the planner
/// checks for a writer itself when asked to create the confirming sweep.
pub const POLICY: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Access::Public),
    ("GET", "/static/style.css", Access::Public),
    ("GET", "/static/app.js", Access::Public),
    ("GET", "/login", Access::Public),
    ("POST", "/login", Access::Public),
    ("POST", "/logout", Access::Public),
    ("GET", "/api/v1/openapi.json", Access::Public),
    ("GET", "/api/docs", Access::Public),
    // Runs.
    ("GET", "/api/v1/runs", READ),
    ("POST", "/api/v1/runs", WRITE),
    ("GET", "/api/v1/runs/{id}", READ),
    ("DELETE", "/api/v1/runs/{id}", ADMIN),
    ("POST", "/api/v1/runs/{id}/cancel", WRITE),
    ("POST", "/api/v1/runs/{id}/tags", WRITE),
    ("GET", "/api/v1/runs/{id}/metrics", READ),
    ("POST", "/api/v1/runs/{id}/metrics", WRITE),
    ("GET", "/api/v1/runs/{id}/events", READ),
    ("POST", "/api/v1/runs/estimate", READ),
    ("POST", "/api/v1/runs/import", WRITE),
    ("POST", "/api/v1/runs/import.csv", WRITE),
    ("GET", "/api/v1/runs.csv", READ),
    ("GET", "/api/v1/runs/{id}/metrics.csv", READ),
    // Sweeps, studies, diagnostics.
    ("POST", "/api/v1/sweeps", WRITE),
    ("GET", "/api/v1/sweeps/{id}", READ),
    ("POST", "/api/v1/studies", WRITE),
    ("GET", "/api/v1/studies", READ),
    ("GET", "/api/v1/studies/{id}", READ),
    ("POST", "/api/v1/diagnostics", WRITE),
    ("GET", "/api/v1/diagnostics", READ),
    ("GET", "/api/v1/diagnostics/{id}", READ),
    // Plans, fits, analyses.
    ("GET", "/api/v1/plan", READ),
    ("POST", "/api/v1/plan/recommend", READ),
    ("POST", "/api/v1/fits/chinchilla", READ),
    ("POST", "/api/v1/fits/compute", READ),
    ("POST", "/api/v1/analysis/savings", READ),
    ("POST", "/api/v1/analysis/transfer", READ),
    ("POST", "/api/v1/analysis/shape-tolerance", READ),
    // Remote workers.
    ("GET", "/api/v1/workers", READ),
    ("POST", "/api/v1/workers", WRITE),
    ("DELETE", "/api/v1/workers/{id}", WRITE),
    ("POST", "/api/v1/workers/{id}/claim", WRITE),
    ("POST", "/api/v1/workers/{id}/heartbeat", WRITE),
    ("POST", "/api/v1/workers/{id}/finish", WRITE),
    // Tokens.
    ("GET", "/api/v1/whoami", READ),
    ("GET", "/api/v1/tokens", ADMIN),
    ("POST", "/api/v1/tokens", ADMIN),
    ("DELETE", "/api/v1/tokens/{id}", ADMIN),
    // The MLflow tracking API.
    ("POST", "/api/2.0/mlflow/experiments/create", WRITE),
    ("GET", "/api/2.0/mlflow/experiments/get", READ),
    ("GET", "/api/2.0/mlflow/experiments/get-by-name", READ),
    ("POST", "/api/2.0/mlflow/experiments/search", READ),
    ("POST", "/api/2.0/mlflow/runs/create", WRITE),
    ("POST", "/api/2.0/mlflow/runs/update", WRITE),
    ("GET", "/api/2.0/mlflow/runs/get", READ),
    ("POST", "/api/2.0/mlflow/runs/search", READ),
    ("POST", "/api/2.0/mlflow/runs/log-batch", WRITE),
    ("POST", "/api/2.0/mlflow/runs/log-metric", WRITE),
    ("POST", "/api/2.0/mlflow/runs/log-parameter", WRITE),
    ("POST", "/api/2.0/mlflow/runs/set-tag", WRITE),
    ("GET", "/api/2.0/mlflow/metrics/get-history", READ),
    // Pages.
    ("GET", "/", READ),
    ("GET", "/runs/new", READ),
    ("POST", "/runs/new", WRITE),
    ("GET", "/runs/{id}", READ),
    ("GET", "/runs/{id}/chart.svg", READ),
    ("POST", "/runs/{id}/cancel", WRITE),
    ("GET", "/compare", READ),
    ("GET", "/queue", READ),
    ("GET", "/workers", READ),
    ("GET", "/sweeps", READ),
    ("GET", "/sweeps/new", READ),
    ("POST", "/sweeps/new", WRITE),
    ("GET", "/sweeps/{id}", READ),
    ("GET", "/analysis", READ),
    ("GET", "/planner", READ),
    ("POST", "/planner/sweep", WRITE),
    ("POST", "/planner/extend", WRITE),
    ("GET", "/diagnostics", READ),
    ("POST", "/diagnostics", WRITE),
    ("GET", "/diagnostics/{id}", READ),
    ("GET", "/studies", READ),
    ("POST", "/studies", WRITE),
    ("GET", "/studies/preview", READ),
    ("GET", "/studies/{id}", READ),
    ("GET", "/admin/tokens", ADMIN),
    ("POST", "/admin/tokens", ADMIN),
    ("POST", "/admin/tokens/{id}/revoke", ADMIN),
];

/// The access of `method` on `template`; `HEAD` is `GET`'s.
pub fn access(method: &Method, template: &str) -> Option<Access> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    POLICY
        .iter()
        .find(|(m, t, _)| *m == method && *t == template)
        .map(|(_, _, a)| *a)
}

tokio::task_local! {
    static CALLER: Identity;
}

/// The identity of the request being handled (`None` outside a guarded route).
pub fn current() -> Option<Identity> {
    CALLER.try_with(Identity::clone).ok()
}

/// The name of the signed-in caller, recorded as the creator of what it creates (`None` when
/// authentication is off).
pub fn creator() -> Option<String> {
    current().filter(|c| c.token_id.is_some()).map(|c| c.name)
}

/// Refuses the current caller unless it has at least `role` (for handlers whose access depends
/// on the body, such as the planner's `create_sweep`).
pub fn require(role: Role) -> Result<(), super::ApiError> {
    match current() {
        Some(caller) if caller.role >= role => Ok(()),
        _ => Err(super::ApiError::Forbidden(format!(
            "this needs the {role} role"
        ))),
    }
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

fn json_error(status: StatusCode, kind: ErrorKind, detail: &str) -> Response {
    ErrorBody::response(status, kind, detail)
}

/// Whether `host` (a `Host` header value, with or without a port) names this machine's
/// loopback interface: `localhost`, a name under `.localhost`, `127.0.0.0/8` or `[::1]`.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, port)) if port.is_empty() || port.starts_with(':') => inside,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a `Content-Type` value is one an API write may carry: `application/json`, or
/// `text/csv` for CSV imports (any parameters). Neither is a type a cross-site form or a CORS
/// "simple request" can send.
fn is_api_body_type(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.eq_ignore_ascii_case("text/csv")
        })
}

/// The first layer: host names and API write content types (see the module docs).
pub async fn screen(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.settings.loopback_only {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| request.uri().authority().map(|a| a.to_string()));
        if host.as_deref().is_some_and(|h| !is_loopback_host(h)) {
            return json_error(
                StatusCode::MISDIRECTED_REQUEST,
                ErrorKind::Misdirected,
                "this server listens on loopback and answers only requests addressed to localhost, 127.0.0.1 or [::1]",
            );
        }
    }
    next.run(request).await
}

/// Whether a request carries a body (a `Content-Length` above 0, or a chunked one).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim() != "0")
}

/// Cross-site defences for API writes, whoever the caller: a body must be JSON or CSV (which no
/// cross-site form or simple request can send without a CORS preflight, never granted), and a
/// browser request naming another origin is refused even without a body. The refusal, if any.
fn refuse_api_write(headers: &HeaderMap) -> Option<Response> {
    if has_body(headers) && !is_api_body_type(headers.get(header::CONTENT_TYPE)) {
        return Some(json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::UnsupportedMediaType,
            "API writes must be sent with 'Content-Type: application/json' (or 'text/csv' to \
             POST /api/v1/runs/import.csv)",
        ));
    }
    let browser = headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site");
    if browser && !same_origin(headers) {
        return Some(json_error(
            StatusCode::FORBIDDEN,
            ErrorKind::Forbidden,
            "API writes from another site's pages are refused",
        ));
    }
    None
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a state-changing browser request comes from this server's own pages: `Origin`
/// names the request's host (never `null`); without `Origin`, `Sec-Fetch-Site` must not say
/// another site.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"cross-site" || site.as_bytes() == b"same-site")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    let origin_host = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .trim_end_matches('/');
    origin != "null" && !origin_host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

enum Credential<'a> {
    Bearer(&'a str),
    Session(&'a str),
    Malformed,
    None,
}

fn credential(headers: &HeaderMap) -> Credential<'_> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return match value.to_str().ok().and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        }) {
            Some(token) => Credential::Bearer(token),
            None => Credential::Malformed,
        };
    }
    match cookie(headers, SESSION_COOKIE) {
        Some(session) => Credential::Session(session),
        None => Credential::None,
    }
}

/// The second layer: the route's access against the caller (see the module docs).
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let path = request.uri().path().to_string();
    let api = is_api(&path);
    let method = request.method().clone();
    let Some(access) = access(&method, &template) else {
        let allowed: Vec<&str> = POLICY
            .iter()
            .filter(|(_, t, _)| *t == template)
            .map(|(m, _, _)| *m)
            .collect();
        if !allowed.is_empty() {
            let mut response = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorKind::MethodNotAllowed,
                &format!(
                    "{method} is not allowed on {template}: use {}",
                    allowed.join(", ")
                ),
            );
            if let Ok(allow) = HeaderValue::from_str(&allowed.join(", ")) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            return response;
        }
        tracing::error!("route {method} {template} has no access policy: refused");
        return json_error(
            StatusCode::FORBIDDEN,
            ErrorKind::Forbidden,
            "this route has no access policy",
        );
    };
    let unsafe_method = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let identity = if !state.settings.auth {
        Identity::anonymous()
    } else {
        let found = match credential(request.headers()) {
            Credential::Bearer(token) => state.store.identify_token(token).await,
            Credential::Session(session) => {
                if unsafe_method && !same_origin(request.headers()) {
                    return refuse(
                        api,
                        StatusCode::FORBIDDEN,
                        "this request must come from shapewise's own pages",
                    );
                }
                state.store.identify_session(session).await
            }
            Credential::Malformed | Credential::None => Ok(None),
        };
        match found {
            Ok(Some(identity)) => identity,
            Ok(None) if access == Access::Public => return next.run(request).await,
            Ok(None) => {
                if !api && method == Method::GET {
                    return Redirect::to(&format!("/login?next={}", encode_next(request.uri())))
                        .into_response();
                }
                let mut response = refuse(
                    api,
                    StatusCode::UNAUTHORIZED,
                    "sign in: send 'Authorization: Bearer <token>' (shapewise token create)",
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
            Err(e) => {
                tracing::error!("looking up a credential failed: {e}");
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorKind::Unavailable,
                    "the server could not check the credential; try again",
                );
            }
        }
    };
    if api
        && unsafe_method
        && let Some(refused) = refuse_api_write(request.headers())
    {
        return refused;
    }
    if let Access::Role(needed) = access
        && identity.role < needed
    {
        return refuse(
            api,
            StatusCode::FORBIDDEN,
            &format!(
                "{} has the {} role; this needs {needed}",
                identity.name, identity.role
            ),
        );
    }
    CALLER.scope(identity, next.run(request)).await
}

/// A refusal: JSON under `/api/`, an HTML error page elsewhere.
fn refuse(api: bool, status: StatusCode, detail: &str) -> Response {
    if api {
        let kind = match status {
            StatusCode::UNAUTHORIZED => ErrorKind::Unauthorized,
            _ => ErrorKind::Forbidden,
        };
        json_error(status, kind, detail)
    } else {
        super::pages::error_page(status, detail)
    }
}

/// The path and query to come back to after signing in, percent-encoded for a query value.
fn encode_next(uri: &axum::http::Uri) -> String {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = String::new();
    for byte in target.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A sign-in's `next`: a path on this server (`/...`, not `//host` or `/\host`), else `/`.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/",
    }
}

/// `/api/...` paths that match no route: a JSON 404 (pages get the HTML one).
pub async fn not_found(request: Request) -> Response {
    let path = request.uri().path();
    if is_api(path) {
        json_error(
            StatusCode::NOT_FOUND,
            ErrorKind::NotFound,
            "no such API endpoint; see /api/v1/openapi.json",
        )
    } else {
        super::pages::error_page(StatusCode::NOT_FOUND, "there is no such page")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]:8080",
            "[::1]",
            "app.localhost:80",
            "LOCALHOST.",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.1",
            "[::2]:80",
            "[::1]x",
            "localhost:80x",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn origins_and_next() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(same_origin(&headers(&[
            ("host", "a:1"),
            ("origin", "http://a:1")
        ])));
        assert!(same_origin(&headers(&[("host", "a:1")])));
        assert!(!same_origin(&headers(&[
            ("host", "a:1"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "a:1"),
            ("origin", "http://b:1")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "a:1"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert_eq!(safe_next(Some("/runs/3?x=1")), "/runs/3?x=1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn api_body_content_types() {
        assert!(is_api_body_type(Some(&HeaderValue::from_static(
            "application/json"
        ))));
        assert!(is_api_body_type(Some(&HeaderValue::from_static(
            "text/csv"
        ))));
        assert!(is_api_body_type(Some(&HeaderValue::from_static(
            "Application/JSON; charset=utf-8"
        ))));
        assert!(!is_api_body_type(Some(&HeaderValue::from_static(
            "text/plain"
        ))));
        assert!(!is_api_body_type(None));
    }
}
