//! The browser pages, through the router without a socket: every page renders, the new-run form
//! creates runs or explains why not, charts are SVG, and the comparison shows what differs.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use shapewise::jobs::Jobs;
use shapewise::param::Parameterization;
use shapewise::store::{MetricPoint, NewRun, Store, StoredStatus};
use shapewise::web::{AppState, ServerSettings, router};
use std::path::PathBuf;
use tower::ServiceExt;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shapewise-pages-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("test.db")
}

struct Reply {
    status: StatusCode,
    content_type: String,
    location: String,
    cache_control: String,
    body: String,
}

async fn send(app: &axum::Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (content_type, location, cache_control) = (
        header(header::CONTENT_TYPE),
        header(header::LOCATION),
        header(header::CACHE_CONTROL),
    );
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        content_type,
        location,
        cache_control,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get(app: &axum::Router, uri: &str) -> Reply {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post_form(app: &axum::Router, uri: &str, form: &str) -> Reply {
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_string()))
        .unwrap();
    send(app, request).await
}

/// A router over a fresh store holding two runs (no workers: they stay queued): run 1 is
/// CompleteP 64x2 with a few metric points, run 2 muP 128x2 with none.
async fn app_with_runs(name: &str) -> (axum::Router, Store) {
    let store = Store::open(&temp_db(name)).await.unwrap();
    let first = NewRun {
        name: Some("small".into()),
        tags: vec!["sweep-a".into()],
        config: super::tiny_run(Parameterization::CompleteP),
        sweep_id: None,
        created_by: None,
    };
    let second = NewRun {
        name: Some("wide".into()),
        tags: vec![],
        config: shapewise::train::RunConfig {
            width: 128,
            ..super::tiny_run(Parameterization::Mup)
        },
        sweep_id: None,
        created_by: None,
    };
    assert_eq!(store.create_run(&first).await.unwrap(), 1);
    assert_eq!(store.create_run(&second).await.unwrap(), 2);
    let points: Vec<MetricPoint> = (1..=40)
        .map(|step| MetricPoint {
            step,
            tokens: step * 256,
            flops: step as f64 * 3.0e8,
            train_loss: Some(4.2 / (step as f64).powf(0.2)),
            val_loss: (step % 10 == 0).then(|| 4.3 / (step as f64).powf(0.2)),
            lr: Some(0.01),
            wall_secs: Some(step as f64 * 0.05),
        })
        .collect();
    store.append_metrics(1, &points).await.unwrap();
    let jobs = Jobs::new(store.clone());
    (
        router(AppState::new(
            store.clone(),
            jobs,
            ServerSettings::default(),
        )),
        store,
    )
}

/// Checks a 200 HTML page for each of `expected` (write `&` in attributes as `&amp;`).
fn assert_html(reply: &Reply, expected: &[&str]) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        reply.content_type.starts_with("text/html"),
        "{}",
        reply.content_type
    );
    // askama writes `&` as `&#38;`.
    let body = reply.body.replace("&#38;", "&amp;");
    for text in expected {
        assert!(body.contains(text), "missing {text:?} in:\n{}", reply.body);
    }
}

#[tokio::test]
async fn every_page_renders_with_its_elements() {
    let (app, _) = app_with_runs("render").await;

    let index = get(&app, "/").await;
    assert_html(
        &index,
        &[
            "<nav aria-label=\"Main\">",
            "href=\"/runs/new\"",
            "href=\"/queue\"",
            "<label for=\"f-parameterization\">",
            "<label for=\"f-status\">",
            "<label for=\"f-width\">",
            "<label for=\"f-depth\">",
            "<label for=\"f-tag\">",
            "<a href=\"/runs/1\">#1</a>",
            "<a href=\"/runs/2\">#2</a>",
            // The list shows each run's tags.
            "<a class=\"tag\" href=\"/?tag=sweep-a\">sweep-a</a>",
            "small",
            "completep",
            "64 × 2",
            "queued (position 1)",
            "queued (position 2)",
            "name=\"ids\" value=\"1\"",
            "Compare selected",
            "action=\"/compare\"",
            "aria-sort=\"descending\"",
            "href=\"/?sort=final_val_loss\"",
            "/static/style.css?v=",
            "/static/app.js?v=",
        ],
    );

    // Filters use the API's query syntax; empty form fields mean "any".
    let wide = get(
        &app,
        "/?parameterization=&status=queued&width=128&depth=&tag=",
    )
    .await;
    assert_html(&wide, &["<a href=\"/runs/2\">#2</a>"]);
    assert!(!wide.body.contains("<a href=\"/runs/1\">"));
    let tagged = get(&app, "/?tag=sweep-a").await;
    assert_html(&tagged, &["<a href=\"/runs/1\">#1</a>"]);
    assert!(!tagged.body.contains("<a href=\"/runs/2\">"));
    let sorted = get(&app, "/?sort=-final_val_loss&width=in:64,128").await;
    assert_html(
        &sorted,
        &[
            "<a href=\"/runs/1\">#1</a>",
            "<a href=\"/runs/2\">#2</a>",
            // The column link keeps the filter and flips the order.
            "href=\"/?width=in:64,128&amp;sort=final_val_loss\"",
        ],
    );
    let nothing = get(&app, "/?width=999").await;
    assert_html(&nothing, &["No runs match these filters"]);
    let paged = get(&app, "/?limit=1").await;
    assert_html(&paged, &["1–1 of 2", "href=\"/?limit=1&amp;offset=1\""]);
    let bad = get(&app, "/?widht=1").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("unknown filter &#39;widht&#39;") || bad.body.contains("widht"));

    let run = get(&app, "/runs/1").await;
    assert_html(
        &run,
        &[
            "<h1>Run #1 small</h1>",
            "id=\"run-status\"",
            "queued (position 1)",
            "action=\"/runs/1/cancel\"",
            "Cancel run",
            "<svg role=\"img\"",
            "data-src=\"/runs/1/chart.svg?x=flops&amp;scale=log\"",
            "href=\"/runs/1?x=tokens&amp;scale=log\"",
            "href=\"/runs/1?x=flops&amp;scale=linear\"",
            // The plan: six groups and the multipliers.
            "<code>embedding</code>",
            "<code>hidden_weights</code>",
            "<code>hidden_biases</code>",
            "<code>block_norms</code>",
            "<code>final_norm</code>",
            "<code>unembedding</code>",
            "residual branch multiplier",
            "logits multiplier",
            "attention scale",
            // The flattened config.
            "<code>d_head</code>",
            "<code>data.vocab</code>",
            "sweep-a",
        ],
    );
    let linear = get(&app, "/runs/1?x=tokens&scale=linear").await;
    assert_html(
        &linear,
        &[
            "href=\"/runs/1?x=tokens&amp;scale=linear\" aria-current=\"true\"",
            "training tokens",
        ],
    );
    let missing = get(&app, "/runs/999").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.content_type.starts_with("text/html"));
    assert!(missing.body.contains("run 999 not found"));

    let form = get(&app, "/runs/new").await;
    assert_html(
        &form,
        &[
            "<form class=\"new-run\" method=\"post\" action=\"/runs/new\">",
            "<select id=\"parameterization\" name=\"parameterization\">",
            "<option value=\"completep\" selected>",
            "<label for=\"width\">",
            "name=\"width\" type=\"number\" step=\"1\" value=\"128\"",
            "<label for=\"lr\">",
            "<label for=\"tokens_per_param\">",
            "<label for=\"data_vocab\">",
            "<label for=\"tags\">",
            "Queue run",
        ],
    );

    let queue = get(&app, "/queue").await;
    assert_html(
        &queue,
        &[
            "<a href=\"/runs/1\">#1</a>",
            "<a href=\"/runs/2\">#2</a>",
            "<input type=\"hidden\" name=\"next\" value=\"queue\">",
        ],
    );
    assert!(queue.body.find("#1</a>") < queue.body.find("#2</a>"));

    let css = get(&app, "/static/style.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.content_type, "text/css; charset=utf-8");
    assert!(css.cache_control.contains("max-age"));
    assert!(css.body.contains(":focus-visible"));
    let js = get(&app, "/static/app.js").await;
    assert_eq!(js.content_type, "text/javascript; charset=utf-8");
    assert!(js.body.contains("EventSource"));
}

#[tokio::test]
async fn the_chart_endpoint_returns_svg() {
    let (app, _) = app_with_runs("chart").await;
    for uri in [
        "/runs/1/chart.svg",
        "/runs/1/chart.svg?x=step&scale=linear",
        "/runs/1/chart.svg?x=wall&scale=log",
        "/runs/1/chart.svg?x=nonsense",
    ] {
        let chart = get(&app, uri).await;
        assert_eq!(chart.status, StatusCode::OK, "{uri}");
        assert_eq!(chart.content_type, "image/svg+xml");
        assert_eq!(chart.cache_control, "no-store");
        assert!(chart.body.starts_with("<svg"), "{uri}");
        assert!(chart.body.contains("train loss") && chart.body.contains("val loss"));
    }
    let empty = get(&app, "/runs/2/chart.svg").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.contains("<svg") && empty.body.contains("no data yet"));
    assert_eq!(
        get(&app, "/runs/999/chart.svg").await.status,
        StatusCode::NOT_FOUND
    );
}

const VALID_FORM: &str = "parameterization=completep&alpha=&width=64&depth=2&d_head=32\
    &context=16&batch=4&lr=0.01&init_std=0.02&tokens=640&tokens_per_param=20&seed=3\
    &base_width=64&base_depth=2&weight_decay=0&eps=1e-16&data_vocab=32&data_seed=0\
    &name=from+the+form&tags=ui%2C+first";

#[tokio::test]
async fn the_new_run_form_creates_runs_or_says_why_not() {
    let (app, store) = app_with_runs("form").await;
    let created = post_form(&app, "/runs/new", VALID_FORM).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert_eq!(created.location, "/runs/3");
    let run = store.run(3).await.unwrap();
    assert_eq!(run.status, StoredStatus::Queued);
    assert_eq!(run.name.as_deref(), Some("from the form"));
    assert_eq!(run.width, Some(64));
    assert_eq!(run.seed, Some(3));
    assert_eq!(run.tokens, Some(640));
    assert_eq!(run.vocab, Some(32));
    assert_eq!(run.tags, vec!["first".to_string(), "ui".to_string()]);

    let invalid = post_form(
        &app,
        "/runs/new",
        &VALID_FORM.replace("width=64", "width=100"),
    )
    .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(invalid.content_type.starts_with("text/html"));
    assert!(invalid.body.contains("role=\"alert\""));
    assert!(
        invalid.body.contains("not a multiple of d_head"),
        "{}",
        invalid.body
    );
    // The form comes back with what was typed, the culprit fields marked.
    assert!(
        invalid
            .body
            .contains("value=\"100\" aria-describedby=\"width-hint\" aria-invalid=\"true\"")
    );
    assert!(invalid.body.contains("value=\"from the form\""));
    assert!(invalid.body.contains("value=\"ui, first\""));

    let not_a_number =
        post_form(&app, "/runs/new", &VALID_FORM.replace("lr=0.01", "lr=fast")).await;
    assert_eq!(not_a_number.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(not_a_number.body.contains("lr must be a number"));
    let alpha = post_form(
        &app,
        "/runs/new",
        &VALID_FORM.replace("parameterization=completep", "parameterization=alpha"),
    )
    .await;
    assert_eq!(alpha.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(alpha.body.contains("alpha"));
    let (_, total) = store.runs(&Default::default()).await.unwrap();
    assert_eq!(total, 3, "refused forms create nothing");

    // Another site's page cannot submit the form.
    let request = Request::post("/runs/new")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(VALID_FORM))
        .unwrap();
    assert_eq!(send(&app, request).await.status, StatusCode::FORBIDDEN);
    let request = Request::post("/runs/new")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::from(VALID_FORM))
        .unwrap();
    assert_eq!(send(&app, request).await.status, StatusCode::FORBIDDEN);
    let request = Request::post("/runs/new")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::ORIGIN, "http://127.0.0.1:8080")
        .body(Body::from(VALID_FORM))
        .unwrap();
    assert_eq!(send(&app, request).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn cancel_buttons_cancel_and_redirect() {
    let (app, store) = app_with_runs("cancel").await;
    let back = post_form(&app, "/runs/2/cancel", "").await;
    assert_eq!(back.status, StatusCode::SEE_OTHER);
    assert_eq!(back.location, "/runs/2");
    assert_eq!(store.run(2).await.unwrap().status, StoredStatus::Cancelled);
    let to_queue = post_form(&app, "/runs/1/cancel", "next=queue").await;
    assert_eq!(to_queue.location, "/queue");
    let page = get(&app, "/runs/1").await;
    assert_html(&page, &["cancelled"]);
    assert!(
        !page.body.contains("Cancel run"),
        "no cancel button on ended runs"
    );
    assert!(get(&app, "/queue").await.body.contains("Nothing is queued"));
    assert_eq!(
        post_form(&app, "/runs/999/cancel", "").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn compare_shows_only_what_differs_unless_asked() {
    let (app, _) = app_with_runs("compare").await;
    let compare = get(&app, "/compare?ids=1,2").await;
    assert_html(
        &compare,
        &[
            "<a href=\"/runs/1\">#1 small</a>",
            "<a href=\"/runs/2\">#2 wide</a>",
            "<code>width</code>",
            "<code>parameterization</code>",
            "<svg role=\"img\"",
            "#1 small",
            // The legend names each run by parameterization, shape and learning rate.
            "#1 completep 64×2 lr 0.01 small",
            "#2 mup 128×2 lr 0.01 wide",
            "Show all keys",
            "href=\"/compare?ids=1,2&amp;all=1&amp;x=flops&amp;scale=log\"",
        ],
    );
    for same in [
        "<code>lr</code>",
        "<code>depth</code>",
        "<code>d_head</code>",
    ] {
        assert!(!compare.body.contains(same), "{same} is equal in both runs");
    }
    let all = get(&app, "/compare?ids=1,2&all=1").await;
    assert_html(
        &all,
        &[
            "<code>lr</code>",
            "<code>depth</code>",
            "<code>width</code>",
            "Show only differences",
        ],
    );
    // The checkbox form's `ids=1&ids=2` works too.
    let repeated = get(&app, "/compare?ids=1&ids=2&x=tokens&scale=linear").await;
    assert_html(&repeated, &["<code>width</code>", "training tokens"]);
    let none = get(&app, "/compare").await;
    assert_html(&none, &["No runs selected"]);
    assert_eq!(
        get(&app, "/compare?ids=1,x").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&app, "/compare?ids=1,999").await.status,
        StatusCode::NOT_FOUND
    );
}

const SWEEP_FORM: &str = "name=lr+scan&parameterizations=mup&parameterizations=completep\
    &widths=64&depths=1%2C+2&lrs=0.003%2C0.01%2C+0.03&seeds=&d_head=32&context=32&batch=8\
    &tokens=2560&tokens_per_param=20&base_width=64&base_depth=1&data_vocab=64&data_seed=0\
    &tags=ui-sweep";

#[tokio::test]
async fn the_sweep_form_creates_sweeps_and_their_pages_show_progress() {
    use shapewise::store::{Comparison, Condition, FilterValue, RunQuery};
    use shapewise::train::{RunStatus, RunSummary};

    let (app, store) = app_with_runs("sweep-form").await;
    let form = get(&app, "/sweeps/new").await;
    assert_html(
        &form,
        &[
            "action=\"/sweeps/new\"",
            "name=\"parameterizations\" value=\"sp\"",
            "name=\"parameterizations\" value=\"depth-mup\"",
            "<label for=\"widths\">",
            "<label for=\"lrs\">",
            "<label for=\"d_head\">",
            "<label for=\"base_width\">",
            "<label for=\"data_vocab\">",
            "id=\"grid-count\"",
            "3 runs",
            "Queue sweep",
            "href=\"/sweeps\" aria-current=\"page\"",
            "href=\"/api/docs\"",
        ],
    );

    // A bad grid point: the form comes back with the values typed and the reason.
    let invalid = post_form(
        &app,
        "/sweeps/new",
        &SWEEP_FORM.replace("widths=64", "widths=100"),
    )
    .await;
    assert_eq!(
        invalid.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        invalid.body
    );
    assert!(invalid.content_type.starts_with("text/html"));
    assert!(invalid.body.contains("role=\"alert\""));
    assert!(invalid.body.contains("d_head"), "{}", invalid.body);
    assert!(
        invalid.body.contains("not a multiple of d_head"),
        "{}",
        invalid.body
    );
    assert!(
        invalid
            .body
            .contains("value=\"100\" aria-describedby=\"widths-hint\" aria-invalid=\"true\"")
    );
    assert!(invalid.body.contains("value=\"lr scan\""));
    assert!(invalid.body.contains("value=\"completep\" checked"));
    assert!(!invalid.body.contains("value=\"sp\" checked"));
    let no_param = post_form(
        &app,
        "/sweeps/new",
        &SWEEP_FORM.replace("parameterizations=mup&parameterizations=completep&", ""),
    )
    .await;
    assert_eq!(no_param.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        no_param
            .body
            .contains("&#39;parameterizations&#39; must be a non-empty list"),
        "{}",
        no_param.body
    );
    let bad_lr = post_form(&app, "/sweeps/new", &SWEEP_FORM.replace("0.003", "fast")).await;
    assert_eq!(bad_lr.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_lr.body.contains("lrs must be numbers"));
    let too_many = post_form(
        &app,
        "/sweeps/new",
        &SWEEP_FORM.replace(
            "seeds=",
            &format!(
                "seeds={}",
                (0..100)
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join("%2C")
            ),
        ),
    )
    .await;
    assert_eq!(too_many.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(too_many.body.contains("at most 1000 per sweep"));
    let (_, total) = store.runs(&RunQuery::default()).await.unwrap();
    assert_eq!(total, 2, "refused forms create nothing");
    let request = Request::post("/sweeps/new")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(SWEEP_FORM))
        .unwrap();
    assert_eq!(send(&app, request).await.status, StatusCode::FORBIDDEN);

    let created = post_form(&app, "/sweeps/new", SWEEP_FORM).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert_eq!(created.location, "/sweeps/1");
    let query = RunQuery {
        conditions: vec![Condition {
            column: "sweep_id",
            comparison: Comparison::Eq,
            values: vec![FilterValue::Int(1)],
        }],
        sort: "id",
        descending: false,
        ..RunQuery::default()
    };
    let (runs, total) = store.runs(&query).await.unwrap();
    assert_eq!(total, 12, "2 parameterizations x 2 depths x 3 lrs");
    assert!(runs.iter().all(|r| r.status == StoredStatus::Queued
        && r.width == Some(64)
        && r.tokens == Some(2560)
        && r.vocab == Some(64)
        && r.seed == Some(0)
        && r.tags == vec!["ui-sweep".to_string()]));
    assert_eq!(store.sweep(1).await.unwrap().name, "lr scan");

    let page = get(&app, "/sweeps/1").await;
    assert_html(
        &page,
        &[
            "<h1>Sweep #1 lr scan</h1>",
            "data-final=\"false\"",
            "<progress id=\"sweep-progress-bar\" max=\"12\" value=\"0\">",
            "0 of 12 runs finished",
            "<span class=\"status status-queued\">queued</span> 12",
            "<svg role=\"img\"",
            "no finished runs yet",
            "<a href=\"/runs/3\">#3</a>",
            "<a href=\"/runs/14\">#14</a>",
            "mup, completep",
            "0.003, 0.01, 0.03",
        ],
    );

    // Two runs end: the chart draws their line, the progress counts them.
    // (The two runs outside the sweep leave the queue first.)
    for id in [1, 2] {
        store.request_cancel(id).await.unwrap();
    }
    for loss in [3.5, 3.2] {
        let job = store.claim_job().await.unwrap().unwrap();
        let summary = RunSummary {
            status: RunStatus::Succeeded,
            final_train_loss: loss,
            final_val_loss: Some(loss),
            steps: 10,
            tokens: 2560,
            flops: 1e9,
            flops_breakdown: Default::default(),
            params_non_embedding: 1000,
            tokens_per_sec: 1.0,
            wall_secs: 1.0,
            entropy_floor: None,
        };
        store.finish_job(&job, Ok(&summary)).await.unwrap();
    }
    let page = get(&app, "/sweeps/1").await;
    assert_html(
        &page,
        &[
            "<progress id=\"sweep-progress-bar\" max=\"12\" value=\"2\">",
            "2 of 12 runs finished (16%)",
            "<span class=\"status status-succeeded\">succeeded</span> 2",
            "aria-label=\"Final validation loss versus learning rate",
            "mup, depth 1",
            "best learning rate",
            "3.2000",
        ],
    );
    assert!(!page.body.contains("no finished runs yet"));

    let list = get(&app, "/sweeps").await;
    assert_html(
        &list,
        &[
            "<a href=\"/sweeps/1\">#1 lr scan</a>",
            "2 parameterizations × 1 width × 2 depths × 3 LRs × 1 seed",
            "<progress max=\"12\" value=\"2\"",
            "2 / 12 finished",
            "href=\"/sweeps/new\"",
        ],
    );
    let missing = get(&app, "/sweeps/99").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.content_type.starts_with("text/html"));
    let not_an_id = get(&app, "/sweeps/abc").await;
    assert_eq!(not_an_id.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_sweeps_list_says_when_there_are_none() {
    let (app, _) = app_with_runs("sweeps-empty").await;
    let list = get(&app, "/sweeps").await;
    assert_html(&list, &["No sweeps yet", "href=\"/sweeps/new\""]);
}

#[tokio::test]
async fn a_fresh_server_points_to_the_studies_first() {
    let (app, _) = super::api::router_app("pages-fresh-home").await;
    let index = get(&app, "/").await;
    assert_html(
        &index,
        &[
            "Nothing has been trained yet",
            "<a href=\"/studies\">study</a>",
        ],
    );
}
