//! The server as an attacker meets it: tokens and roles on every route, sign-in, cross-site
//! and DNS-rebinding requests, content types, unknown paths, and connection limits.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use shapewise::auth::Role;
use shapewise::jobs::Jobs;
use shapewise::store::Store;
use shapewise::web::auth::{Access, POLICY};
use shapewise::web::{AppState, AuthMode, ServeConfig, ServerSettings, router, serve_on};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn temp_db(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("shapewise-security-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("test.db")
}

struct Secured {
    app: axum::Router,
    store: Store,
    reader: String,
    writer: String,
    admin: String,
}

async fn secured(name: &str, settings: ServerSettings) -> Secured {
    let store = Store::open(&temp_db(name)).await.unwrap();
    let token = |role: Role| {
        let store = store.clone();
        async move { store.create_token(role.name(), role).await.unwrap().1 }
    };
    let (reader, writer, admin) = (
        token(Role::Reader).await,
        token(Role::Writer).await,
        token(Role::Admin).await,
    );
    let jobs = Jobs::new(store.clone());
    Secured {
        app: router(AppState::new(store.clone(), jobs, settings)),
        store,
        reader,
        writer,
        admin,
    }
}

fn auth_on() -> ServerSettings {
    ServerSettings {
        auth: true,
        ..ServerSettings::default()
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn send(app: &axum::Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn request(method: &str, uri: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "localhost:8080")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

/// Every `(method, path template)` the router serves, read from the router itself: its debug
/// form lists each route's path and, per method, whether a handler is there.
fn routes_of(app: &axum::Router) -> BTreeSet<(String, String)> {
    let text = format!("{app:?}");
    // `paths: {RouteId(3): "/api/v1/runs", ...}` and `RouteId(3): MethodRouter(MethodRouter {
    // get: ..., head: None, delete: ..., ...})`.
    let mut paths = std::collections::HashMap::new();
    let start = text.find("paths: {").expect("the router lists its paths") + "paths: {".len();
    let mut rest = &text[start..];
    // Entries `RouteId(n): "path"` separated by `, ` until the map closes.
    while let Some(entry) = rest.strip_prefix("RouteId(") {
        let (id, after) = entry.split_once("): \"").unwrap();
        let (path, after) = after.split_once('"').unwrap();
        paths.insert(format!("RouteId({id})"), path.to_string());
        rest = after.strip_prefix(", ").unwrap_or("");
    }
    let mut routes = BTreeSet::new();
    for (id, path) in &paths {
        let marker = format!("{id}: MethodRouter(MethodRouter {{");
        let at = text
            .find(&marker)
            .unwrap_or_else(|| panic!("no method router for {path}"));
        let body = &text[at + marker.len()..];
        let body = &body[..body.find("allow_header").unwrap()];
        for method in ["get", "delete", "patch", "post", "put"] {
            let field = format!("{method}: ");
            let value_at = body.find(&field).unwrap() + field.len();
            if !body[value_at..].starts_with("None") {
                routes.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// A path for a template: id 1, except for tokens (id 999, none), so that exercising the
/// revoke routes does not revoke the test's own tokens.
fn concrete(template: &str) -> String {
    let id = if template.contains("tokens") {
        "999"
    } else {
        "1"
    };
    template.replace("{id}", id)
}

#[tokio::test]
async fn every_route_has_a_policy_and_each_role_gets_exactly_its_routes() {
    let s = secured("roles", auth_on()).await;
    let routes = routes_of(&s.app);
    assert!(routes.len() >= 60, "found only {} routes", routes.len());
    let policies: BTreeSet<(String, String)> = POLICY
        .iter()
        .map(|(m, t, _)| (m.to_string(), t.to_string()))
        .collect();
    let missing: Vec<_> = routes.difference(&policies).collect();
    assert!(
        missing.is_empty(),
        "routes without an access policy: {missing:?}"
    );
    let stale: Vec<_> = policies.difference(&routes).collect();
    assert!(
        stale.is_empty(),
        "policies for routes that do not exist: {stale:?}"
    );

    for (method, template, access) in POLICY {
        let uri = concrete(template);
        let api = template.starts_with("/api/");
        let anonymous = send(&s.app, request(method, &uri, None, "{}")).await;
        match access {
            Access::Public => assert!(
                anonymous.status != StatusCode::UNAUTHORIZED
                    && anonymous.status != StatusCode::FORBIDDEN,
                "{method} {template} is public, got {}",
                anonymous.status
            ),
            Access::Role(_) if api || *method != "GET" => {
                assert_eq!(
                    anonymous.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {template} without a token"
                );
                if api {
                    assert_eq!(anonymous.json()["error"], "unauthorized");
                }
            }
            Access::Role(_) => {
                assert_eq!(anonymous.status, StatusCode::SEE_OTHER, "{template}");
                let location = anonymous.headers[header::LOCATION].to_str().unwrap();
                assert!(location.starts_with("/login?next="), "{location}");
            }
        }
        let wrong = send(&s.app, request(method, &uri, Some("swt_0000"), "{}")).await;
        if *access != Access::Public && (api || *method != "GET") {
            assert_eq!(
                wrong.status,
                StatusCode::UNAUTHORIZED,
                "{method} {template}"
            );
        }
        for (role, token) in [
            (Role::Reader, &s.reader),
            (Role::Writer, &s.writer),
            (Role::Admin, &s.admin),
        ] {
            let reply = send(&s.app, request(method, &uri, Some(token), "{}")).await;
            let allowed = match access {
                Access::Public => true,
                Access::Role(needed) => role >= *needed,
            };
            if allowed {
                assert!(
                    reply.status != StatusCode::UNAUTHORIZED
                        && reply.status != StatusCode::FORBIDDEN,
                    "{role} on {method} {template}: {} {}",
                    reply.status,
                    reply.body
                );
            } else {
                assert_eq!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{role} on {method} {template}: {}",
                    reply.body
                );
            }
        }
    }
    // A reader may plan but not create the confirming sweep.
    let planned = send(
        &s.app,
        request(
            "POST",
            "/api/v1/plan/recommend",
            Some(&s.reader),
            r#"{"selection": {"run_ids": [1]}, "budget_flops": 1e15, "vocab": 256, "context": 128, "create_sweep": true}"#,
        ),
    )
    .await;
    assert_eq!(planned.status, StatusCode::FORBIDDEN, "{}", planned.body);
    // The health check stays open.
    let health = send(&s.app, request("GET", "/healthz", None, "")).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn tokens_are_managed_by_admins_and_revocation_is_immediate() {
    let s = secured("tokens", auth_on()).await;
    let created = send(
        &s.app,
        request(
            "POST",
            "/api/v1/tokens",
            Some(&s.admin),
            r#"{"name": "notebook", "role": "writer"}"#,
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let body = created.json();
    let secret = body["secret"].as_str().unwrap().to_string();
    let id = body["token"]["id"].as_i64().unwrap();
    let me = send(&s.app, request("GET", "/api/v1/whoami", Some(&secret), "")).await;
    assert_eq!(me.json()["name"], "notebook");
    assert_eq!(me.json()["role"], "writer");
    // Listing never shows secrets or hashes.
    let listed = send(&s.app, request("GET", "/api/v1/tokens", Some(&s.admin), "")).await;
    assert!(!listed.body.contains(&secret[4..]) && !listed.body.contains("hash"));
    let bad = send(
        &s.app,
        request(
            "POST",
            "/api/v1/tokens",
            Some(&s.admin),
            r#"{"name": "x", "role": "root"}"#,
        ),
    )
    .await;
    // A role that does not exist is a refused value, named with the ones that do.
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    // A run created with the token records who created it.
    let run = send(
        &s.app,
        request(
            "POST",
            "/api/v1/runs",
            Some(&secret),
            r#"{"parameterization": "completep", "width": 64, "depth": 2, "d_head": 32, "tokens": 1000}"#,
        ),
    )
    .await;
    assert_eq!(run.status, StatusCode::CREATED, "{}", run.body);
    assert_eq!(run.json()["created_by"], "notebook");
    let revoked = send(
        &s.app,
        request(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            Some(&s.admin),
            "",
        ),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let after = send(&s.app, request("GET", "/api/v1/runs", Some(&secret), "")).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    // Secrets are stored only as hashes.
    let tokens = s.store.tokens().await.unwrap();
    assert!(tokens.iter().any(|t| t.revoked_at.is_some()));
}

fn form(uri: &str, body: &str, cookie: Option<&str>, origin: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder()
        .method("POST")
        .uri(uri)
        .header(header::HOST, "localhost:8080")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    if let Some(origin) = origin {
        builder = builder.header(header::ORIGIN, origin);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

fn page(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder()
        .uri(uri)
        .header(header::HOST, "localhost:8080");
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    builder.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn browsers_sign_in_with_a_strict_http_only_cookie_and_forms_check_the_origin() {
    let s = secured("login", auth_on()).await;
    let home = send(&s.app, page("/queue", None)).await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert_eq!(home.headers[header::LOCATION], "/login?next=/queue");
    let login = send(&s.app, page("/login?next=/queue", None)).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("name=\"token\""));

    let wrong = send(
        &s.app,
        form(
            "/login",
            "token=swt_nope&next=/queue",
            None,
            Some("http://localhost:8080"),
        ),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.headers.get(header::SET_COOKIE).is_none());
    let foreign = send(
        &s.app,
        form(
            "/login",
            &format!("token={}", s.writer),
            None,
            Some("http://evil.example"),
        ),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN, "login CSRF");

    let signed = send(
        &s.app,
        form(
            "/login",
            &format!("token={}&next=//evil.example", s.writer),
            None,
            Some("http://localhost:8080"),
        ),
    )
    .await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER);
    assert_eq!(signed.headers[header::LOCATION], "/", "no open redirect");
    let set_cookie = signed.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    assert!(
        !cookie.contains(&s.writer),
        "the cookie is a session, not the token"
    );

    let queue = send(&s.app, page("/queue", Some(&cookie))).await;
    assert_eq!(queue.status, StatusCode::OK);
    assert!(queue.body.contains("Sign out") && queue.body.contains("writer"));
    // Writers do not see the admin page.
    let tokens = send(&s.app, page("/admin/tokens", Some(&cookie))).await;
    assert_eq!(tokens.status, StatusCode::FORBIDDEN);

    let run_form = "param=completep&width=64&depth=2&d_head=32&tokens=1000";
    for origin in [Some("null"), Some("http://evil.example")] {
        let refused = send(&s.app, form("/runs/new", run_form, Some(&cookie), origin)).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "origin {origin:?}");
    }
    // The session also authenticates the API from the same origin, never from another.
    let mut cross = request(
        "POST",
        "/api/v1/runs",
        None,
        r#"{"parameterization": "completep", "width": 64, "depth": 2}"#,
    );
    cross
        .headers_mut()
        .insert(header::COOKIE, cookie.parse().unwrap());
    cross
        .headers_mut()
        .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
    assert_eq!(send(&s.app, cross).await.status, StatusCode::FORBIDDEN);
    let (runs, _) = s.store.runs(&Default::default()).await.unwrap();
    assert!(runs.is_empty(), "nothing was created");

    let out = send(
        &s.app,
        form("/logout", "", Some(&cookie), Some("http://localhost:8080")),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = send(&s.app, page("/queue", Some(&cookie))).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "the session ended");
}

#[tokio::test]
async fn cross_site_writes_foreign_hosts_and_unknown_paths_are_refused() {
    let s = secured(
        "screen",
        ServerSettings {
            loopback_only: true,
            ..ServerSettings::default()
        },
    )
    .await;
    // A cross-site form or `fetch` can only send text/plain, form or multipart bodies.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let mut write = request(
            "POST",
            "/api/v1/runs",
            None,
            r#"{"parameterization": "completep", "width": 64, "depth": 2}"#,
        );
        write
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        write
            .headers_mut()
            .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        let reply = send(&s.app, write).await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
        assert_eq!(reply.json()["error"], "unsupported_media_type");
    }
    let (runs, _) = s.store.runs(&Default::default()).await.unwrap();
    assert!(runs.is_empty());

    // DNS rebinding: a loopback server answers only loopback host names.
    for host in ["evil.example", "evil.example:8080", "127.0.0.1.nip.example"] {
        let mut rebound = request("GET", "/api/v1/runs", None, "");
        rebound
            .headers_mut()
            .insert(header::HOST, host.parse().unwrap());
        assert_eq!(
            send(&s.app, rebound).await.status,
            StatusCode::MISDIRECTED_REQUEST,
            "{host}"
        );
    }
    for host in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080"] {
        let mut local = request("GET", "/api/v1/runs", None, "");
        local
            .headers_mut()
            .insert(header::HOST, host.parse().unwrap());
        assert_eq!(send(&s.app, local).await.status, StatusCode::OK, "{host}");
    }

    let missing = send(&s.app, request("GET", "/api/v1/nothing/here", None, "")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"], "not_found");
    let wrong_method = send(&s.app, request("PUT", "/api/v1/runs", None, "{}")).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.json()["error"], "method_not_allowed");
}

#[test]
fn auth_is_on_by_default_unless_listening_on_loopback() {
    let config = |auth| ServeConfig {
        db: temp_db("modes").with_file_name("x.db"),
        auth,
        ..ServeConfig::default()
    };
    let resolve = |auth, addr: &str| {
        ServerSettings::resolve(&config(auth), addr.parse().unwrap())
            .unwrap()
            .auth
    };
    assert!(!resolve(AuthMode::Auto, "127.0.0.1:8080"));
    assert!(!resolve(AuthMode::Auto, "[::1]:8080"));
    assert!(resolve(AuthMode::Auto, "0.0.0.0:8080"));
    assert!(resolve(AuthMode::On, "127.0.0.1:8080"));
    assert!(!resolve(AuthMode::Off, "0.0.0.0:8080"));
}

fn shapewise(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shapewise"))
        .args(args)
        .env_remove("SHAPEWISE_DB")
        .output()
        .unwrap()
}

#[test]
fn the_token_command_creates_lists_and_revokes() {
    let db = temp_db("cli");
    let db_arg = db.to_str().unwrap();
    let missing = shapewise(&["token", "list", "--db", db_arg]);
    assert_eq!(missing.status.code(), Some(2), "no database yet");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async { Store::open(&db).await.unwrap() });
    let created = shapewise(&[
        "token", "create", "--db", db_arg, "--name", "ci", "--role", "writer",
    ]);
    assert!(created.status.success(), "{created:?}");
    let stdout = String::from_utf8(created.stdout).unwrap();
    let secret = stdout.lines().last().unwrap().trim().to_string();
    assert!(secret.starts_with("swt_") && secret.len() == 68, "{secret}");
    let bad_role = shapewise(&[
        "token", "create", "--db", db_arg, "--name", "x", "--role", "root",
    ]);
    assert_eq!(bad_role.status.code(), Some(2));
    let listed = shapewise(&["token", "list", "--db", db_arg, "--json"]);
    let tokens: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(tokens[0]["name"], "ci");
    assert_eq!(tokens[0]["role"], "writer");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&secret[4..]));
    let id = tokens[0]["id"].as_i64().unwrap().to_string();
    assert!(
        shapewise(&["token", "revoke", "--db", db_arg, &id])
            .status
            .success()
    );
    assert_eq!(
        shapewise(&["token", "revoke", "--db", db_arg, "999"])
            .status
            .code(),
        Some(2)
    );
    let identity = runtime.block_on(async {
        let store = Store::open(&db).await.unwrap();
        store.identify_token(&secret).await.unwrap()
    });
    assert!(identity.is_none(), "revoked");
}

/// Reads from `stream` until the server closes it; returns what it sent.
fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_and_idle_connections_are_closed_and_connections_are_limited() {
    let db = temp_db("timeouts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin = "an-admin-token-of-at-least-32-characters";
    let config = ServeConfig {
        addr,
        db,
        workers: 0,
        auth: AuthMode::On,
        admin_token: Some(admin.into()),
        max_connections: 4,
        header_timeout_secs: 1,
        ..ServeConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve_on(&config, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let result = tokio::task::spawn_blocking(move || {
        let get = |path: &str, token: Option<&str>| -> std::io::Result<String> {
            let mut stream = TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
            // A refused connection may be closed before the request is written: read anyway.
            let _ = write!(
                stream,
                "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}connection: close\r\n\r\n"
            );
            Ok(read_until_closed(&mut stream))
        };
        // Wait until it serves.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !get("/healthz", None).is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let get = |path: &str, token: Option<&str>| get(path, token).unwrap();
        assert!(get("/api/v1/whoami", None).starts_with("HTTP/1.1 401"));
        let me = get("/api/v1/whoami", Some(admin));
        assert!(
            me.starts_with("HTTP/1.1 200") && me.contains("\"admin\""),
            "{me}"
        );

        // A half-sent request line is closed after the header timeout (1 s here).
        let started = Instant::now();
        let mut half = TcpStream::connect(addr).unwrap();
        half.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        half.write_all(b"GET /healthz HT").unwrap();
        read_until_closed(&mut half);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );

        // Idle connections hold slots until they time out; past the limit, 503 at once.
        let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        let busy = get("/healthz", None);
        assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
        std::thread::sleep(Duration::from_millis(1500));
        let healthy = get("/healthz", None);
        assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");
        drop(idle);
    })
    .await;
    let _ = stop.send(());
    let _ = server.await;
    result.unwrap();
}

/// Starts `shapewise serve --auth on` on a free port; returns the child, its port and the
/// lines it logged up to "listening" plus the start-up lines after it.
fn start_server(db: &std::path::Path) -> (std::process::Child, u16, Vec<String>) {
    use std::io::BufRead;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shapewise"))
        .args(["serve", "--auth", "on", "--workers", "0", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(db)
        .env("NO_COLOR", "1")
        .env_remove("SHAPEWISE_ADMIN_TOKEN")
        .env_remove("SHAPEWISE_AUTH")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The server logs to standard output.
    let stderr = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let done = line.contains("training worker(s)");
        lines.push(line);
        if done {
            break;
        }
    }
    (child, port, lines)
}

#[test]
fn the_first_start_with_auth_on_prints_a_one_time_admin_token() {
    let db = temp_db("bootstrap");
    let (mut first, port, lines) = start_server(&db);
    let token = lines
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("swt_")
                .map(|rest| format!("swt_{rest}"))
        })
        .unwrap_or_else(|| panic!("no admin token in the log: {lines:?}"));
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /api/v1/whoami HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let reply = read_until_closed(&mut stream);
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(reply.contains("\"role\":\"admin\""), "{reply}");
    // The next start has an admin already: no new secret is printed.
    let (mut second, _, lines) = start_server(&db);
    second.kill().unwrap();
    second.wait().unwrap();
    assert!(!lines.iter().any(|l| l.contains("swt_")), "{lines:?}");
}
