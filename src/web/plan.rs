//! `GET /api/v1/plan`: the per-group plan of `shapewise plan --json`.

use super::AppState;
use super::error::ApiError;
use crate::param::{AttentionScale, BaseHparams, BaseShape, Parameterization, PlanRequest, plan};
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/plan", get(get_plan))
}

/// Query parameters of the plan, named as the flags of `shapewise plan`; sizes within the
/// bounds of a run config. Unknown parameters are refused.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PlanQuery {
    /// The parameterization.
    #[param(value_type = Parameterization, inline, example = "alpha")]
    param: String,
    /// Alpha, for `param=alpha`.
    #[param(example = 0.75)]
    alpha: Option<f64>,
    /// Target width `N`.
    #[param(example = 1024)]
    width: usize,
    /// Target depth `L`.
    #[param(example = 32)]
    depth: usize,
    /// Base width `N_base`.
    #[param(default = json!(256), example = 256)]
    base_width: Option<usize>,
    /// Base depth `L_base`.
    #[param(default = json!(2), example = 2)]
    base_depth: Option<usize>,
    /// Base learning rate.
    #[param(default = json!(0.00390625), example = 0.01, exclusive_minimum = 0.0)]
    lr: Option<f64>,
    /// Base init standard deviation.
    #[param(default = json!(0.02), example = 0.02, exclusive_minimum = 0.0)]
    init_std: Option<f64>,
    /// Base AdamW epsilon.
    #[param(default = json!(1e-16), example = 1e-8, minimum = 0.0)]
    eps: Option<f64>,
    /// Base weight decay.
    #[param(default = json!(0.0), example = 0.1, minimum = 0.0)]
    weight_decay: Option<f64>,
    /// Head dimension.
    #[param(default = json!(64), example = 64)]
    d_head: Option<usize>,
    /// Attention logit scale; the parameterization's default when absent.
    #[param(value_type = Option<AttentionScale>, inline, example = "d_head")]
    attention_scale: Option<String>,
}

/// Whether every number of a plan is finite (large base hyperparameters scaled by the width
/// and depth rules can overflow).
fn finite(plan: &crate::param::ParamPlan) -> bool {
    let g = &plan.groups;
    let rules = [
        g.embedding,
        g.hidden_weights,
        g.hidden_biases,
        g.block_norms,
        g.final_norm,
        g.unembedding,
    ];
    let multipliers = [
        plan.m_n,
        plan.m_l,
        plan.residual_multiplier,
        plan.logits_multiplier,
        plan.attention_scale,
    ];
    multipliers.iter().all(|x| x.is_finite())
        && rules.iter().all(|r| {
            r.lr.is_finite()
                && r.weight_decay.is_finite()
                && r.eps.is_finite()
                && r.init_std.is_none_or(f64::is_finite)
        })
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
    params(PlanQuery),
    responses(
        (status = 200, description = "The plan", body = crate::param::ParamPlan),
        (status = 400, description = "A missing, malformed or unknown parameter", body = super::error::ErrorBody),
        (status = 422, description = "Settings the parameterization refuses, a size out of range, or a plan whose numbers overflow", body = super::error::ErrorBody),
    )
)]
async fn get_plan(
    query: Result<Query<PlanQuery>, QueryRejection>,
) -> Result<Json<crate::param::ParamPlan>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    for (key, value) in [
        ("width", Some(q.width)),
        ("depth", Some(q.depth)),
        ("base_width", q.base_width),
        ("base_depth", q.base_depth),
        ("d_head", q.d_head),
    ] {
        let range = super::bounds::run_integer(key).expect("a run config integer");
        if let Some(value) = value
            && !(range.min..=range.max).contains(&(value as i64))
        {
            return Err(ApiError::Unprocessable(format!(
                "'{key}' must be an integer from {} to {}, got {value}",
                range.min, range.max
            )));
        }
    }
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
    if !finite(&plan) {
        return Err(ApiError::Unprocessable(
            "the plan overflows: a scaled learning rate, weight decay or epsilon is not a finite \
             number; use smaller base hyperparameters"
                .into(),
        ));
    }
    Ok(Json(plan))
}
