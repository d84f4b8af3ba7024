//! `GET /api/v1/plan`: the per-group plan of `shapewise plan --json`.

use super::AppState;
use super::error::ApiError;
use crate::param::{AttentionScale, BaseHparams, BaseShape, Parameterization, PlanRequest, plan};
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/plan", get(get_plan))
}

/// Query parameters, named as the CLI's flags.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanQuery {
    param: String,
    alpha: Option<f64>,
    width: usize,
    depth: usize,
    base_width: Option<usize>,
    base_depth: Option<usize>,
    lr: Option<f64>,
    init_std: Option<f64>,
    eps: Option<f64>,
    weight_decay: Option<f64>,
    d_head: Option<usize>,
    attention_scale: Option<String>,
}

/// Plans the per-group hyperparameters of a target shape.
///
/// What `shapewise plan --json` prints: the multipliers and, for each parameter group, the
/// init, learning rate, weight decay and epsilon a parameterization gives the target shape from
/// base hyperparameters tuned at the base shape.
#[utoipa::path(
    get,
    path = "/api/v1/plan",
    tag = "plan",
    params(super::openapi::PlanParams),
    responses(
        (status = 200, description = "The plan", body = super::openapi::ParamPlan),
        (status = 400, description = "A missing, malformed or unknown parameter", body = super::openapi::ErrorBody),
        (status = 422, description = "Settings the parameterization refuses", body = super::openapi::ErrorBody),
    )
)]
async fn get_plan(
    query: Result<Query<PlanQuery>, QueryRejection>,
) -> Result<Json<crate::param::ParamPlan>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let invalid = |e: crate::param::ParamError| ApiError::Unprocessable(e.to_string());
    let defaults = BaseHparams::default();
    let base = BaseShape::default();
    let plan = plan(&PlanRequest {
        parameterization: q.param.parse::<Parameterization>().map_err(invalid)?,
        alpha: q.alpha,
        width: q.width,
        depth: q.depth,
        d_head: q.d_head.unwrap_or(64),
        base: BaseShape {
            width: q.base_width.unwrap_or(base.width),
            depth: q.base_depth.unwrap_or(base.depth),
        },
        hparams: BaseHparams {
            lr: q.lr.unwrap_or(defaults.lr),
            init_std: q.init_std.unwrap_or(defaults.init_std),
            eps: q.eps.unwrap_or(defaults.eps),
            weight_decay: q.weight_decay.unwrap_or(defaults.weight_decay),
        },
        attention_scale: q
            .attention_scale
            .map(|s| s.parse::<AttentionScale>())
            .transpose()
            .map_err(invalid)?,
    })
    .map_err(invalid)?;
    Ok(Json(plan))
}
