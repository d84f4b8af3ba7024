//! `GET /queue`: queued and running runs; `GET /workers`: the remote workers.

use super::{Page, PageError, fmt_count, fmt_opt, fmt_time, render, shape};
use crate::store::StoredStatus;
use crate::web::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

struct QueueRow {
    position: String,
    id: i64,
    href: String,
    name: String,
    status: &'static str,
    parameterization: String,
    shape: String,
    tokens: String,
    since: String,
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueueTemplate {
    page: Page,
    rows: Vec<QueueRow>,
    more: i64,
}

pub(super) async fn queue(State(state): State<AppState>) -> Result<Response, PageError> {
    let query = crate::web::runs::parse_run_query(vec![
        ("status".into(), "in:running,queued,interrupted".into()),
        ("sort".into(), "id".into()),
        ("limit".into(), "1000".into()),
    ])?;
    let (mut runs, total) = state.store.runs(&query).await?;
    // Running first (oldest start first), then the queue in order.
    runs.sort_by_key(|r| {
        (
            r.status != StoredStatus::Running,
            r.queue_position.unwrap_or(i64::MAX),
            r.started_at.clone(),
            r.id,
        )
    });
    let rows = runs
        .iter()
        .map(|run| QueueRow {
            position: match run.queue_position {
                Some(ahead) => (ahead + 1).to_string(),
                None => "training".into(),
            },
            id: run.id,
            href: format!("/runs/{}", run.id),
            name: run.name.clone().unwrap_or_default(),
            status: run.status.name(),
            parameterization: run.parameterization.clone(),
            shape: shape(run),
            tokens: fmt_opt(run.tokens.map(|t| t as f64), fmt_count),
            since: match (&run.started_at, run.status) {
                (Some(started), StoredStatus::Running) => format!("started {}", fmt_time(started)),
                _ => format!("created {}", fmt_time(&run.created_at)),
            },
        })
        .collect();
    let template = QueueTemplate {
        page: Page::new("Queue", "queue"),
        rows,
        more: total - runs.len() as i64,
    };
    render(StatusCode::OK, &template)
}

struct WorkerRow {
    name: String,
    host: String,
    device: String,
    /// `live`, `stale` (not seen within the lease) or `left`.
    state: &'static str,
    run: Option<i64>,
    throughput: String,
    seen: String,
    runs_done: i64,
    registered: String,
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersTemplate {
    page: Page,
    rows: Vec<WorkerRow>,
    lease_secs: f64,
    in_process: usize,
}

pub(super) async fn workers_page(State(state): State<AppState>) -> Result<Response, PageError> {
    let lease_secs = state.settings.lease_secs;
    let rows = (state.store.workers().await?.into_iter())
        .map(|w| crate::web::workers::worker_view(w, lease_secs))
        .map(|view| {
            let w = view.worker;
            WorkerRow {
                state: match (view.live, &w.left_at) {
                    (_, Some(_)) => "left",
                    (true, None) => "live",
                    (false, None) => "stale",
                },
                name: w.name,
                host: w.host,
                device: w.device,
                run: w.current_run_id,
                throughput: fmt_opt(w.tokens_per_sec, fmt_count),
                seen: format!(
                    "{} ago",
                    crate::study::human_duration(view.seconds_since_seen)
                ),
                runs_done: w.runs_done,
                registered: fmt_time(&w.registered_at),
            }
        })
        .collect();
    let template = WorkersTemplate {
        page: Page::new("Workers", "workers"),
        rows,
        lease_secs,
        in_process: state.settings.in_process_workers,
    };
    render(StatusCode::OK, &template)
}
