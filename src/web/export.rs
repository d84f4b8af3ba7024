//! CSV exports for pandas: `GET /api/v1/runs.csv` (same filters as the runs list) and
//! `GET /api/v1/runs/{id}/metrics.csv`.

use super::AppState;
use super::error::ApiError;
use super::runs::parse_run_query;
use crate::store::RunRecord;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runs.csv", get(runs_csv))
        .route("/api/v1/runs/{id}/metrics.csv", get(metrics_csv))
}

/// Quotes a CSV field when it holds a separator, quote or line break (RFC 4180).
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn opt<T: ToString>(value: &Option<T>) -> String {
    value.as_ref().map(ToString::to_string).unwrap_or_default()
}

const RUN_HEADER: &str = "id,name,source,status,parameterization,alpha,width,depth,d_head,context,vocab,lr,init_std,eps,weight_decay,batch,tokens,seed,dataset,sweep_id,tags,created_at,finished_at,final_train_loss,final_val_loss,params_non_embedding,flops,flops_dense,flops_unembedding,flops_attention,tokens_per_sec";

fn run_line(r: &RunRecord) -> String {
    let cells = [
        r.id.to_string(),
        field(&opt(&r.name)),
        format!("{:?}", r.source).to_lowercase(),
        r.status.name().to_string(),
        field(&r.parameterization),
        opt(&r.alpha),
        opt(&r.width),
        opt(&r.depth),
        opt(&r.d_head),
        opt(&r.context),
        opt(&r.vocab),
        opt(&r.lr),
        opt(&r.init_std),
        opt(&r.eps),
        opt(&r.weight_decay),
        opt(&r.batch),
        opt(&r.tokens),
        opt(&r.seed),
        field(&opt(&r.dataset)),
        opt(&r.sweep_id),
        field(&r.tags.join(";")),
        r.created_at.clone(),
        opt(&r.finished_at),
        opt(&r.final_train_loss),
        opt(&r.final_val_loss),
        opt(&r.params_non_embedding),
        opt(&r.flops),
        opt(&r.flops_dense),
        opt(&r.flops_unembedding),
        opt(&r.flops_attention),
        opt(&r.tokens_per_sec),
    ];
    cells.join(",")
}

fn csv_response(body: String, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// Exports runs as CSV, with the filters of the runs listing.
///
/// One row per run, the columns of the runs listing (tags joined with `;`). Filters, sorting and
/// paging are those of `GET /api/v1/runs`.
#[utoipa::path(
    get,
    path = "/api/v1/runs.csv",
    tag = "export",
    params(super::runs::RunFilters),
    responses(
        (status = 200, description = "`runs.csv`, one row per run", body = String, content_type = "text/csv"),
        (status = 400, description = "Unknown filter, bad value or bad paging", body = super::error::ErrorBody),
    )
)]
async fn runs_csv(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let query = parse_run_query(params)?;
    let (runs, _) = state.store.runs(&query).await?;
    let mut body = String::from(RUN_HEADER);
    body.push('\n');
    for run in &runs {
        body.push_str(&run_line(run));
        body.push('\n');
    }
    Ok(csv_response(body, "runs.csv"))
}

/// Exports the metric series of a run as CSV.
///
/// Columns: `run_id,step,tokens,flops,train_loss,val_loss,lr,wall_secs`.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/metrics.csv",
    tag = "export",
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 200, description = "`run-{id}-metrics.csv`, one row per step", body = String, content_type = "text/csv"),
        (status = 400, description = "The id is not an integer", body = super::error::ErrorBody),
        (status = 404, description = "No such run", body = super::error::ErrorBody),
    )
)]
async fn metrics_csv(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) =
        path.map_err(|_| ApiError::BadRequest("the run id must be an integer".into()))?;
    let points = state.store.metrics(id).await?;
    let mut body = String::from("run_id,step,tokens,flops,train_loss,val_loss,lr,wall_secs\n");
    for p in &points {
        body.push_str(&format!(
            "{id},{},{},{},{},{},{},{}\n",
            p.step,
            p.tokens,
            p.flops,
            opt(&p.train_loss),
            opt(&p.val_loss),
            opt(&p.lr),
            opt(&p.wall_secs)
        ));
    }
    Ok(csv_response(body, &format!("run-{id}-metrics.csv")))
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
