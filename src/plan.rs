//! The planner: from a compute budget to ranked concrete shapes and token counts, with a
//! predicted loss per parameterization (section 6 of the CompleteP spec).
//!
//! # What the data identify
//!
//! The compute-optimal study trains every shape at one tokens-per-parameter ratio `r` (about
//! 20, Hoffmann et al. 2022), so its runs trace a single line through the `(N, D)` plane: they
//! identify the loss against compute `L_p(C) = E + A C^-b` of each parameterization `p` and, at
//! a matched compute, the loss of one shape against another, but not a full Chinchilla surface
//! `L(N, D)`. The planner therefore never trades parameters against tokens: every shape it
//! proposes trains at (about) the ratio `r` of the runs it was fitted on, and uses the whole
//! budget.
//!
//! # Candidate shapes
//!
//! For each depth `L = 1..=max_depth` the width `N` (a multiple of `d_head`) is the one whose
//! run at ratio `r` costs the budget: with `P(N, L)` the non-embedding parameters and
//! `f(N, L) = 6 P + 6 N V + 12 L N T` the training FLOPs per token of [`crate::flops`], a run
//! of `D = r P` tokens costs `C(N, L) = r P(N, L) f(N, L)`, which grows with `N`. Of the two
//! multiples of `d_head` that bracket the budget (`C <= budget < C` of the next), the one with
//! the smaller `|ln(C / budget)|` is kept, provided it lies within `[min_width, max_width]`; a
//! depth whose narrowest width (`N = d_head`) already costs more than the budget ends the list
//! (deeper models cost more still). The token count is then `D = floor(budget / f(N, L))`:
//! the shape uses the whole budget (to within one token's FLOPs) and trains at close to `r`
//! tokens per parameter, the closer the wider the model.
//!
//! Shapes over a memory limit are dropped; see [`memory_bytes`] for the estimate.
//!
//! # Predicted loss and ranking
//!
//! The predicted loss of shape `(N, L)` under `p` is `L_p(budget) (1 + s_p(N:L))`, with
//! `s_p(N:L) = curvature (ln(N:L) - log_ratio_optimum)^2` the relative excess loss of a shape
//! away from the optimal width-to-depth ratio ([`ShapePenalty`], pooled over compute scales by
//! the tolerance analysis of [`crate::fit::shape`]). `L_p` is then the loss of the optimal shape
//! at each compute: the caller fits it to the runs' losses divided by their shapes' `1 + s_p`.
//! The interval of a shape's loss applies the same factor to the percentile interval of
//! `L_p(budget)` over the bootstrap curves; the penalty's own uncertainty is not propagated.
//! Shapes are ranked by predicted loss, ties by closeness of `ln(N:L)` to the optimum.
//!
//! Without a penalty every shape predicts the same loss `L_p(budget)` (the fit cannot tell shapes
//! of one compute apart); they are then ranked by closeness of `N:L` to
//! [`FALLBACK_WIDTH_DEPTH_RATIO`], and the output says so ([`ParameterizationPlan::penalty`] is
//! `None`).
//!
//! # Compute at matched loss
//!
//! For the best shape of each parameterization `p`, with predicted loss `l`, every other fitted
//! parameterization `q` needs `C_q(l) = (A_q / (l - E_q))^(1 / b_q)` FLOPs at its own optimal
//! shape (no shape penalty, [`PowerLaw::compute_for_loss`]); the planner reports it with the
//! ratio `C_q(l) / budget` and a bootstrap interval pairing resample `i` of `p` with resample
//! `i` of `q`.

use crate::fit::shape::ShapePenalty;
use crate::fit::{Interval, PowerLaw};
use crate::flops::{FlopBreakdown, params_non_embedding};
use serde::{Deserialize, Serialize};

/// Tokens per non-embedding parameter when neither the runs nor the user give one: the
/// Chinchilla-optimal ratio of Hoffmann et al. 2022, also the CompleteP paper's.
pub const DEFAULT_TOKENS_PER_PARAM: f64 = 20.0;

/// The width-to-depth ratio `N:L` shapes are ranked towards when no shape penalty is fitted:
/// the best shape of the CompleteP paper's 1.5B compute-optimal study, `N = 1984`, `L = 32`
/// (Dey et al. 2025), inside the flat range of about 20 to 200 that Kaplan et al. 2020 (figure 5)
/// report for GPT-style models.
pub const FALLBACK_WIDTH_DEPTH_RATIO: f64 = 62.0;

/// Deepest model a plan considers when no `max_depth` is given: past the paper's deepest
/// compute-optimal shape (`L = 179`).
pub const DEFAULT_MAX_DEPTH: usize = 256;

/// Deepest model a plan may consider at all.
pub const MAX_DEPTH: usize = 10_000;

/// Widest model a plan may propose (`2^20`): keeps parameter counts exact in `u64`.
pub const MAX_WIDTH: usize = 1 << 20;

/// Largest budget accepted, in FLOPs: far beyond any training run (about 1e26 today).
pub const MAX_BUDGET_FLOPS: f64 = 1e35;

/// Sequences per micro-batch of the memory estimate when none is given (the trainer's default).
pub const DEFAULT_BATCH: usize = 16;

/// Bytes of training state per parameter: fp32 weights, gradients and AdamW's two moments.
pub const BYTES_PER_PARAM: f64 = 16.0;

/// Bytes in a GiB.
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Why a plan was refused. Every variant is a problem with the request, and says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A number out of its range (not finite, not positive, too large).
    #[error("{name} must be {requirement}, got {value}")]
    Invalid {
        /// The setting, in the words of the API.
        name: &'static str,
        /// Its range, e.g. "a positive finite number".
        requirement: String,
        /// The value given.
        value: f64,
    },
    /// Settings that contradict each other (e.g. `min_width > max_width`).
    #[error("{0}")]
    Inconsistent(String),
    /// No shape satisfies the budget and the limits; the message says which limit bites.
    #[error("no shape fits: {0}")]
    NoShapes(String),
}

fn invalid(name: &'static str, requirement: impl Into<String>, value: f64) -> PlanError {
    PlanError::Invalid {
        name,
        requirement: requirement.into(),
        value,
    }
}

/// A compute budget in training FLOPs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    flops: f64,
}

impl Budget {
    /// A budget given in FLOPs: positive, finite, at most [`MAX_BUDGET_FLOPS`].
    pub fn from_flops(flops: f64) -> Result<Budget, PlanError> {
        if !(flops.is_finite() && flops > 0.0) {
            return Err(invalid(
                "budget_flops",
                "a positive finite number of FLOPs",
                flops,
            ));
        }
        if flops > MAX_BUDGET_FLOPS {
            return Err(invalid(
                "budget_flops",
                format!("at most {MAX_BUDGET_FLOPS:e} FLOPs"),
                flops,
            ));
        }
        Ok(Budget { flops })
    }

    /// A budget given as device-hours at a sustained rate: `hours * 3600 * flops_per_second`
    /// (the rate the training actually sustains, i.e. peak times utilisation).
    pub fn from_device_hours(hours: f64, flops_per_second: f64) -> Result<Budget, PlanError> {
        if !(hours.is_finite() && hours > 0.0) {
            return Err(invalid(
                "device_hours",
                "a positive finite number of hours",
                hours,
            ));
        }
        if !(flops_per_second.is_finite() && flops_per_second > 0.0) {
            return Err(invalid(
                "flops_per_second",
                "a positive finite sustained FLOP rate",
                flops_per_second,
            ));
        }
        Budget::from_flops(hours * 3600.0 * flops_per_second)
    }

    /// The budget in FLOPs.
    pub fn flops(self) -> f64 {
        self.flops
    }
}

/// What every proposed shape shares: vocabulary `V`, context `T`, head dimension and biases.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Architecture {
    /// Vocabulary size `V` (rows of the embedding and of the unembedding).
    pub vocab: usize,
    /// Context length `T`, in tokens.
    pub context: usize,
    /// Attention head dimension; widths are multiples of it.
    pub d_head: usize,
    /// Biases on the linear layers in the blocks (the paper's setup has them).
    pub biases: bool,
}

impl Architecture {
    fn validate(&self) -> Result<(), PlanError> {
        for (name, value, max) in [
            ("vocab", self.vocab, 1usize << 24),
            ("context", self.context, 1 << 24),
            ("d_head", self.d_head, 4096),
        ] {
            if value == 0 || value > max {
                return Err(invalid(
                    name,
                    format!("an integer from 1 to {max}"),
                    value as f64,
                ));
            }
        }
        Ok(())
    }

    /// Training FLOPs per token of shape `(width, depth)`: `6 P + 6 N V + 12 L N T`
    /// ([`FlopBreakdown`] for one token). Exact for widths up to [`MAX_WIDTH`] and depths up to
    /// [`MAX_DEPTH`].
    pub fn flops_per_token(&self, width: usize, depth: usize) -> FlopBreakdown {
        FlopBreakdown::for_tokens(width, depth, self.context, self.vocab, self.biases, 1)
    }

    /// `C(N, L) = r P f(N, L)`: the FLOPs of training shape `(width, depth)` at `r` tokens per
    /// non-embedding parameter, in `f64` throughout so that the width search may overshoot
    /// [`MAX_WIDTH`] without overflow.
    fn compute_at_ratio(&self, width: f64, depth: f64, tokens_per_param: f64) -> f64 {
        let per_block = if self.biases { 13.0 } else { 4.0 };
        let params = depth * (12.0 * width * width + per_block * width) + 2.0 * width;
        let per_token = 6.0 * params
            + 6.0 * width * self.vocab as f64
            + 12.0 * depth * width * self.context as f64;
        tokens_per_param * params * per_token
    }
}

/// Limits on the shapes a plan may propose.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapeLimits {
    /// Deepest model considered (blocks), 1 to [`MAX_DEPTH`].
    pub max_depth: usize,
    /// Narrowest width allowed.
    pub min_width: usize,
    /// Widest width allowed; at most [`MAX_WIDTH`] either way.
    pub max_width: Option<usize>,
    /// Training memory allowed per model replica, in bytes ([`memory_bytes`]).
    pub memory_bytes: Option<f64>,
    /// Sequences per micro-batch, for the activations of the memory estimate.
    pub batch: usize,
}

impl Default for ShapeLimits {
    fn default() -> Self {
        ShapeLimits {
            max_depth: DEFAULT_MAX_DEPTH,
            min_width: 1,
            max_width: None,
            memory_bytes: None,
            batch: DEFAULT_BATCH,
        }
    }
}

impl ShapeLimits {
    /// Checks the ranges and that some multiple of `d_head` lies in `[min_width, max_width]`.
    fn validate(&self, architecture: &Architecture) -> Result<(), PlanError> {
        if self.max_depth == 0 || self.max_depth > MAX_DEPTH {
            return Err(invalid(
                "max_depth",
                format!("an integer from 1 to {MAX_DEPTH}"),
                self.max_depth as f64,
            ));
        }
        if self.min_width == 0 || self.min_width > MAX_WIDTH {
            return Err(invalid(
                "min_width",
                format!("an integer from 1 to {MAX_WIDTH}"),
                self.min_width as f64,
            ));
        }
        if let Some(max) = self.max_width {
            if max == 0 || max > MAX_WIDTH {
                return Err(invalid(
                    "max_width",
                    format!("an integer from 1 to {MAX_WIDTH}"),
                    max as f64,
                ));
            }
            if max < self.min_width {
                return Err(PlanError::Inconsistent(format!(
                    "max_width {max} is below min_width {}",
                    self.min_width
                )));
            }
        }
        let d_head = architecture.d_head;
        let widest = self.max_width.unwrap_or(MAX_WIDTH);
        if self.min_width.div_ceil(d_head) * d_head > widest {
            return Err(PlanError::Inconsistent(format!(
                "no multiple of d_head {d_head} lies between min_width {} and max_width {widest}",
                self.min_width
            )));
        }
        if let Some(bytes) = self.memory_bytes
            && !(bytes.is_finite() && bytes > 0.0)
        {
            return Err(invalid("memory", "a positive finite size", bytes));
        }
        if self.batch == 0 || self.batch > 1 << 20 {
            return Err(invalid(
                "batch",
                "an integer from 1 to 1048576",
                self.batch as f64,
            ));
        }
        Ok(())
    }
}

/// Estimated training memory of one model replica, in bytes, with fp32 weights and AdamW:
///
/// - model state: [`BYTES_PER_PARAM`] (16) bytes per parameter, embeddings included: fp32
///   weights, gradients and the two moments; parameters `P + 2 N V` (untied embedding and
///   unembedding, ALiBi positions with no table: the paper's setup);
/// - activations of one micro-batch of `B` sequences of `T` tokens kept for the backward pass,
///   per block `T B N (64 + 4 T / d_head)`: Korthikanti et al. 2022 (*Reducing Activation
///   Recomputation in Large Transformer Models*, arXiv 2205.05198, section 4.1) count
///   `s b h (34 + 5 a s / h)` bytes in 16-bit precision with dropout; without dropout (no masks,
///   the softmax output serves the value product) that is `s b h (32 + 2 a s / h)`, doubled
///   for fp32, with `a = N / d_head` heads;
/// - the logits and their softmax for the loss, `8 T B V` (fp32).
///
/// Workspace, fragmentation and the framework's own buffers are not counted.
pub fn memory_bytes(width: usize, depth: usize, architecture: &Architecture, batch: usize) -> f64 {
    let (n, l) = (width as f64, depth as f64);
    let (v, t, b) = (
        architecture.vocab as f64,
        architecture.context as f64,
        batch as f64,
    );
    let params = params_non_embedding(width, depth, architecture.biases) as f64 + 2.0 * n * v;
    let per_block = t * b * n * (64.0 + 4.0 * t / architecture.d_head as f64);
    BYTES_PER_PARAM * params + l * per_block + 8.0 * t * b * v
}

/// A concrete shape that uses the budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Width `N` (d_model), a multiple of `d_head`.
    pub width: usize,
    /// Depth `L` (blocks).
    pub depth: usize,
    /// Attention heads, `N / d_head`.
    pub heads: usize,
    /// `N:L`, width over depth.
    pub width_depth_ratio: f64,
    /// Non-embedding parameters `P`.
    pub params_non_embedding: u64,
    /// Every parameter: `P + 2 N V` (untied embedding and unembedding).
    pub params_total: u64,
    /// Training tokens `D = floor(budget / f(N, L))`.
    pub tokens: u64,
    /// `D / P`, close to the plan's ratio `r`.
    pub tokens_per_param: f64,
    /// Training FLOPs of `D` tokens, by component; the total is the budget to within one token.
    pub flops: FlopBreakdown,
    /// [`memory_bytes`] of the shape.
    pub memory_bytes: f64,
}

/// Every shape that uses `budget` at `tokens_per_param` within `limits`, by depth (see the
/// module docs). Refuses invalid settings, and answers [`PlanError::NoShapes`] with the limit
/// that removed every shape.
pub fn candidate_shapes(
    budget: Budget,
    architecture: &Architecture,
    limits: &ShapeLimits,
    tokens_per_param: f64,
) -> Result<Vec<Candidate>, PlanError> {
    architecture.validate()?;
    limits.validate(architecture)?;
    if !(tokens_per_param.is_finite() && tokens_per_param > 0.0 && tokens_per_param <= 1e6) {
        return Err(invalid(
            "tokens_per_param",
            "a positive finite ratio of at most 1e6",
            tokens_per_param,
        ));
    }
    let d_head = architecture.d_head;
    let widest = limits.max_width.unwrap_or(MAX_WIDTH).min(MAX_WIDTH);
    let cost = |k: u64, depth: usize| {
        architecture.compute_at_ratio((k * d_head as u64) as f64, depth as f64, tokens_per_param)
    };
    let (mut outside_widths, mut over_memory) = (0usize, Vec::new());
    let mut shapes = Vec::new();
    for depth in 1..=limits.max_depth {
        if cost(1, depth) > budget.flops {
            // The narrowest model of this depth, and of every deeper one, overshoots.
            if depth == 1 {
                return Err(PlanError::NoShapes(format!(
                    "the smallest model (width {d_head}, depth 1) at {tokens_per_param} tokens per \
                     parameter needs {:.3e} FLOPs, more than the budget of {:.3e}: raise the budget",
                    cost(1, 1),
                    budget.flops
                )));
            }
            break;
        }
        // The largest multiple k with C(k d_head) <= budget: double, then bisect. Past the
        // widest multiple allowed, no width of this depth can use the budget (and the doubling
        // stops before k d_head can overflow, however few tokens per parameter).
        let widest_multiple = (widest / d_head) as u64;
        let (mut below, mut above) = (1u64, 2u64);
        let mut beyond = false;
        while cost(above, depth) <= budget.flops {
            if above > widest_multiple {
                beyond = true;
                break;
            }
            below = above;
            above *= 2;
        }
        if beyond {
            outside_widths += 1;
            continue;
        }
        while above - below > 1 {
            let middle = below + (above - below) / 2;
            if cost(middle, depth) <= budget.flops {
                below = middle;
            } else {
                above = middle;
            }
        }
        let distance = |k: u64| (cost(k, depth) / budget.flops).ln().abs();
        let allowed = |k: u64| {
            let width = k * d_head as u64;
            width >= limits.min_width as u64 && width <= widest as u64
        };
        let chosen = [below, above]
            .into_iter()
            .filter(|&k| allowed(k))
            .min_by(|&a, &b| distance(a).total_cmp(&distance(b)));
        let Some(k) = chosen else {
            outside_widths += 1;
            continue;
        };
        let width = k as usize * d_head;
        let per_token = architecture.flops_per_token(width, depth);
        let tokens = (budget.flops / per_token.total()).floor();
        if tokens < 1.0 {
            continue;
        }
        let memory = memory_bytes(width, depth, architecture, limits.batch);
        if limits.memory_bytes.is_some_and(|limit| memory > limit) {
            over_memory.push(memory);
            continue;
        }
        let params = params_non_embedding(width, depth, architecture.biases);
        let tokens = tokens as u64;
        shapes.push(Candidate {
            width,
            depth,
            heads: width / d_head,
            width_depth_ratio: width as f64 / depth as f64,
            params_non_embedding: params,
            params_total: params + 2 * (width * architecture.vocab) as u64,
            tokens,
            tokens_per_param: tokens as f64 / params as f64,
            flops: per_token.scaled(tokens as f64),
            memory_bytes: memory,
        });
    }
    if shapes.is_empty() {
        let reason = if !over_memory.is_empty() {
            let least = over_memory.iter().copied().fold(f64::INFINITY, f64::min);
            format!(
                "every shape that uses the budget needs more memory than the limit of {:.3} GiB \
                 (the smallest needs {:.3} GiB): raise the memory limit, lower the batch or the \
                 budget",
                limits.memory_bytes.unwrap_or(0.0) / GIB,
                least / GIB
            )
        } else if outside_widths > 0 {
            format!(
                "the widths that use the budget at depths 1 to {} lie outside [{}, {widest}]: \
                 widen the width limits or change the budget or max_depth",
                limits.max_depth, limits.min_width
            )
        } else {
            "the budget buys less than one token at every depth: raise the budget".to_string()
        };
        return Err(PlanError::NoShapes(reason));
    }
    Ok(shapes)
}

/// What the planner knows of one parameterization.
#[derive(Clone, Debug, PartialEq)]
pub struct ParameterizationFit {
    /// The parameterization's name (as stored with its runs).
    pub name: String,
    /// `L_p(C)`, fitted on its runs.
    pub curve: PowerLaw,
    /// The bootstrap curves of the fit, in resample order (empty: no intervals).
    pub resamples: Vec<PowerLaw>,
    /// `r`, the tokens per non-embedding parameter its runs trained at.
    pub tokens_per_param: f64,
    /// The shape penalty of its runs, if fitted.
    pub penalty: Option<ShapePenalty>,
}

/// A candidate shape with its predicted loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankedShape {
    /// The shape and its token count.
    pub shape: Candidate,
    /// Predicted relative excess loss of the shape, `curvature (ln(N:L) - optimum)^2` (0
    /// without a penalty).
    pub relative_penalty: f64,
    /// Predicted final loss, `L_p(budget) (1 + relative_penalty)`, nats/token.
    pub loss: f64,
    /// Bootstrap interval of the predicted loss (`None` without resamples).
    pub interval: Option<Interval>,
}

/// The compute another parameterization needs to reach a loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchedCompute {
    /// The other parameterization.
    pub parameterization: String,
    /// The loss to reach: the predicted loss of this plan's best shape.
    pub loss: f64,
    /// `C_q(loss)` at the other parameterization's optimal shape; `None` when its curve never
    /// reaches the loss (see `refusal`).
    pub flops: Option<f64>,
    /// `flops / budget`: above 1, the other parameterization needs more compute.
    pub ratio: Option<f64>,
    /// Bootstrap interval of `flops` over paired resamples.
    pub interval: Option<Interval>,
    /// Paired resamples where the other curve never reaches the loss (left out of the interval).
    pub unreachable_resamples: usize,
    /// Why `flops` is missing.
    pub refusal: Option<String>,
}

/// The plan of one parameterization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParameterizationPlan {
    /// The parameterization.
    pub parameterization: String,
    /// `r` of its candidate shapes.
    pub tokens_per_param: f64,
    /// The fitted curve.
    pub curve: PowerLaw,
    /// `L_p(budget)`, the loss at the optimal shape (nats/token).
    pub loss_at_budget: f64,
    /// Bootstrap interval of `loss_at_budget`.
    pub loss_at_budget_interval: Option<Interval>,
    /// The shape penalty used; `None`: every shape predicts `loss_at_budget` and the ranking
    /// follows closeness to [`FALLBACK_WIDTH_DEPTH_RATIO`].
    pub penalty: Option<ShapePenalty>,
    /// Every candidate shape, best first.
    pub shapes: Vec<RankedShape>,
    /// For the best shape's loss, the compute of every other parameterization.
    pub matched_compute: Vec<MatchedCompute>,
}

/// Ranks candidate shapes without a loss prediction: by closeness of `ln(N:L)` to
/// `ln(FALLBACK_WIDTH_DEPTH_RATIO)`, then shallower first.
pub fn rank_without_fit(mut shapes: Vec<Candidate>) -> Vec<Candidate> {
    let target = FALLBACK_WIDTH_DEPTH_RATIO.ln();
    shapes.sort_by(|a, b| {
        let distance = |c: &Candidate| (c.width_depth_ratio.ln() - target).abs();
        distance(a)
            .total_cmp(&distance(b))
            .then(a.depth.cmp(&b.depth))
    });
    shapes
}

fn validate_fit(fit: &ParameterizationFit) -> Result<(), PlanError> {
    let c = fit.curve;
    if ![c.e, c.a, c.b].iter().all(|v| v.is_finite()) || c.e < 0.0 || c.a <= 0.0 {
        return Err(PlanError::Inconsistent(format!(
            "the fitted curve of '{}' is not usable: E = {}, A = {}, b = {}",
            fit.name, c.e, c.a, c.b
        )));
    }
    if let Some(p) = fit.penalty
        && !(p.log_ratio_optimum.is_finite() && p.curvature.is_finite() && p.curvature >= 0.0)
    {
        return Err(PlanError::Inconsistent(format!(
            "the shape penalty of '{}' is not usable: optimum ln(N:L) = {}, curvature = {} \
             (must be finite, curvature >= 0)",
            fit.name, p.log_ratio_optimum, p.curvature
        )));
    }
    Ok(())
}

/// The percentile interval of finite `values` around `estimate`, `None` when there are none.
fn resample_interval(estimate: f64, values: Vec<f64>, confidence: f64) -> Option<Interval> {
    let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    (!values.is_empty()).then(|| Interval::from_resamples(estimate, values, confidence))
}

fn scaled(interval: Interval, factor: f64) -> Interval {
    Interval {
        estimate: interval.estimate * factor,
        low: interval.low * factor,
        high: interval.high * factor,
        std: interval.std * factor,
    }
}

/// Plans `budget` under every fitted parameterization (see the module docs): each one's
/// candidate shapes at its own ratio `r`, ranked by predicted loss, and the compute the others
/// need for its best shape's loss. Plans come best first (lowest predicted loss of their best
/// shape). `confidence` is the two-sided level of the intervals.
pub fn recommend(
    budget: Budget,
    architecture: &Architecture,
    limits: &ShapeLimits,
    fits: &[ParameterizationFit],
    confidence: f64,
) -> Result<Vec<ParameterizationPlan>, PlanError> {
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(invalid(
            "confidence",
            "a number strictly between 0 and 1",
            confidence,
        ));
    }
    let mut plans = Vec::with_capacity(fits.len());
    for fit in fits {
        validate_fit(fit)?;
        let candidates = candidate_shapes(budget, architecture, limits, fit.tokens_per_param)?;
        let loss_at_budget = fit.curve.loss(budget.flops);
        let interval = resample_interval(
            loss_at_budget,
            fit.resamples.iter().map(|c| c.loss(budget.flops)).collect(),
            confidence,
        );
        let target = fit
            .penalty
            .map_or(FALLBACK_WIDTH_DEPTH_RATIO.ln(), |p| p.log_ratio_optimum);
        let mut shapes: Vec<RankedShape> = candidates
            .into_iter()
            .map(|shape| {
                let relative_penalty = fit
                    .penalty
                    .map_or(0.0, |p| p.excess(shape.width_depth_ratio));
                let factor = 1.0 + relative_penalty;
                RankedShape {
                    shape,
                    relative_penalty,
                    loss: loss_at_budget * factor,
                    interval: interval.map(|i| scaled(i, factor)),
                }
            })
            .collect();
        shapes.sort_by(|a, b| {
            let distance = |s: &RankedShape| (s.shape.width_depth_ratio.ln() - target).abs();
            a.loss
                .total_cmp(&b.loss)
                .then(distance(a).total_cmp(&distance(b)))
                .then(a.shape.depth.cmp(&b.shape.depth))
        });
        plans.push(ParameterizationPlan {
            parameterization: fit.name.clone(),
            tokens_per_param: fit.tokens_per_param,
            curve: fit.curve,
            loss_at_budget,
            loss_at_budget_interval: interval,
            penalty: fit.penalty,
            shapes,
            matched_compute: Vec::new(),
        });
    }
    for (plan, fit) in plans.iter_mut().zip(fits) {
        let best = &plan.shapes[0];
        let factor = 1.0 + best.relative_penalty;
        let resample_losses: Vec<f64> = fit
            .resamples
            .iter()
            .map(|c| c.loss(budget.flops) * factor)
            .collect();
        plan.matched_compute = fits
            .iter()
            .filter(|other| other.name != fit.name)
            .map(|other| matched_compute(best.loss, &resample_losses, other, budget, confidence))
            .collect();
    }
    plans.sort_by(|a, b| a.shapes[0].loss.total_cmp(&b.shapes[0].loss));
    Ok(plans)
}

/// The compute `other` needs to reach `loss` (and, pairing resamples by index, each resample's
/// loss).
fn matched_compute(
    loss: f64,
    resample_losses: &[f64],
    other: &ParameterizationFit,
    budget: Budget,
    confidence: f64,
) -> MatchedCompute {
    let (flops, refusal) = match other.curve.compute_for_loss(loss) {
        Ok(c) if c.is_finite() => (Some(c), None),
        Ok(c) => (None, Some(format!("the compute overflows ({c})"))),
        Err(e) => (None, Some(e.to_string())),
    };
    let paired: Vec<f64> = (resample_losses.iter().zip(&other.resamples))
        .filter_map(|(l, curve)| curve.compute_for_loss(*l).ok())
        .filter(|c| c.is_finite())
        .collect();
    let pairs = resample_losses.len().min(other.resamples.len());
    let unreachable_resamples = pairs - paired.len();
    let interval = flops.and_then(|c| resample_interval(c, paired, confidence));
    MatchedCompute {
        parameterization: other.name.clone(),
        loss,
        flops,
        ratio: flops.map(|c| c / budget.flops),
        interval,
        unreachable_resamples,
        refusal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCH: Architecture = Architecture {
        vocab: 50_257,
        context: 1024,
        d_head: 64,
        biases: true,
    };

    #[test]
    fn budgets_are_validated() {
        assert_eq!(Budget::from_flops(1e20).unwrap().flops(), 1e20);
        let hours = Budget::from_device_hours(10.0, 4e14).unwrap();
        assert_eq!(hours.flops(), 10.0 * 3600.0 * 4e14);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e36] {
            assert!(
                matches!(Budget::from_flops(bad), Err(PlanError::Invalid { .. })),
                "{bad}"
            );
        }
        let err = Budget::from_device_hours(-2.0, 1e12).unwrap_err();
        assert!(err.to_string().starts_with("device_hours must be"), "{err}");
        let err = Budget::from_device_hours(2.0, f64::NAN).unwrap_err();
        assert!(err.to_string().contains("flops_per_second"), "{err}");
    }

    #[test]
    fn shapes_satisfy_the_constraints_and_use_the_budget() {
        let budget = Budget::from_flops(1e20).unwrap();
        let limits = ShapeLimits {
            max_depth: 48,
            min_width: 256,
            max_width: Some(4096),
            ..ShapeLimits::default()
        };
        let shapes = candidate_shapes(budget, &ARCH, &limits, 20.0).unwrap();
        assert!(shapes.len() > 20, "{}", shapes.len());
        for s in &shapes {
            assert_eq!(s.width % 64, 0, "{s:?}");
            assert!((256..=4096).contains(&s.width) && (1..=48).contains(&s.depth));
            assert_eq!(s.heads * 64, s.width);
            assert_eq!(
                s.params_non_embedding,
                params_non_embedding(s.width, s.depth, true)
            );
            assert_eq!(
                s.params_total,
                s.params_non_embedding + 2 * 50_257 * s.width as u64
            );
            // The whole budget, to within one token's FLOPs.
            let per_token = ARCH.flops_per_token(s.width, s.depth).total();
            assert!(s.flops.total() <= 1e20 && 1e20 - s.flops.total() < per_token);
            assert!((s.flops.total() / (s.tokens as f64 * per_token) - 1.0).abs() < 1e-12);
            // The chosen width is the multiple of 64 that brings r P f closest to the budget.
            let ratio_cost = |w: usize| 20.0 * ARCH.compute_at_ratio(w as f64, s.depth as f64, 1.0);
            let miss = |w: usize| (ratio_cost(w) / 1e20).ln().abs();
            for other in [s.width - 64, s.width + 64] {
                if (256..=4096).contains(&other) {
                    assert!(miss(s.width) <= miss(other), "{s:?} vs {other}");
                }
            }
            // D / P = r budget / C(N, L): off from r by at most half a width step of C (the
            // step below, the larger).
            let step = (ratio_cost(s.width) / ratio_cost(s.width - 64)).ln();
            assert!(
                (s.tokens_per_param / 20.0).ln().abs() <= step / 2.0 + 1e-9,
                "{s:?}"
            );
        }
        // Deeper shapes are narrower at a fixed budget.
        for pair in shapes.windows(2) {
            assert!(pair[0].depth < pair[1].depth && pair[0].width >= pair[1].width);
        }
        // A memory limit drops the shapes above it, and nothing else.
        let limit = shapes[shapes.len() / 2].memory_bytes;
        let capped = ShapeLimits {
            memory_bytes: Some(limit),
            ..limits
        };
        let kept = candidate_shapes(budget, &ARCH, &capped, 20.0).unwrap();
        let expected: Vec<&Candidate> = shapes.iter().filter(|s| s.memory_bytes <= limit).collect();
        assert_eq!(kept.iter().collect::<Vec<_>>(), expected);
        assert!(kept.len() < shapes.len());
    }

    #[test]
    fn the_memory_estimate_adds_state_and_activations() {
        let arch = Architecture {
            vocab: 1000,
            context: 128,
            d_head: 64,
            biases: true,
        };
        let p = params_non_embedding(256, 4, true) as f64;
        let state = 16.0 * (p + 2.0 * 256.0 * 1000.0);
        // Per block: 128 * 8 * 256 * (64 + 4 * 128 / 64) bytes; logits 8 * 128 * 8 * 1000.
        let activations = 4.0 * 128.0 * 8.0 * 256.0 * 72.0 + 8.0 * 128.0 * 8.0 * 1000.0;
        let estimate = memory_bytes(256, 4, &arch, 8);
        assert!(
            (estimate / (state + activations) - 1.0).abs() < 1e-15,
            "{estimate}"
        );
    }

    #[test]
    fn impossible_limits_are_refused_with_the_reason() {
        let budget = Budget::from_flops(1e18).unwrap();
        let refuse = |limits: ShapeLimits, r: f64| {
            candidate_shapes(budget, &ARCH, &limits, r)
                .unwrap_err()
                .to_string()
        };
        let base = ShapeLimits::default();
        let err = refuse(
            ShapeLimits {
                min_width: 600,
                max_width: Some(630),
                ..base
            },
            20.0,
        );
        assert!(err.contains("no multiple of d_head 64"), "{err}");
        let err = refuse(
            ShapeLimits {
                min_width: 512,
                max_width: Some(256),
                ..base
            },
            20.0,
        );
        assert!(
            err.contains("max_width 256 is below min_width 512"),
            "{err}"
        );
        let err = refuse(
            ShapeLimits {
                min_width: 8192,
                ..base
            },
            20.0,
        );
        assert!(err.contains("outside [8192, 1048576]"), "{err}");
        let err = refuse(
            ShapeLimits {
                memory_bytes: Some(1e6),
                ..base
            },
            20.0,
        );
        assert!(err.contains("more memory than the limit"), "{err}");
        let err = refuse(
            ShapeLimits {
                max_depth: 0,
                ..base
            },
            20.0,
        );
        assert!(err.starts_with("max_depth must be"), "{err}");
        assert!(refuse(base, f64::NAN).starts_with("tokens_per_param must be"));
        let tiny = Budget::from_flops(1e9).unwrap();
        let err = candidate_shapes(tiny, &ARCH, &base, 20.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("raise the budget"), "{err}");
        let bad = Architecture { d_head: 0, ..ARCH };
        assert!(candidate_shapes(budget, &bad, &base, 20.0).is_err());
    }

    /// A curve shifted to need `1 / k` of `base`'s compute for every loss.
    fn shifted(base: PowerLaw, k: f64) -> PowerLaw {
        PowerLaw {
            a: base.a * k.powf(-base.b),
            ..base
        }
    }

    #[test]
    fn planted_power_laws_rank_correctly() {
        let mup = PowerLaw {
            e: 1.8,
            a: 391.0,
            b: 0.15,
        };
        let budget = Budget::from_flops(3e19).unwrap();
        let limits = ShapeLimits {
            max_depth: 64,
            ..ShapeLimits::default()
        };
        let fits = [
            ParameterizationFit {
                name: "mup".into(),
                curve: mup,
                resamples: vec![],
                tokens_per_param: 20.0,
                penalty: Some(ShapePenalty {
                    log_ratio_optimum: 100f64.ln(),
                    curvature: 0.01,
                }),
            },
            ParameterizationFit {
                name: "completep".into(),
                curve: shifted(mup, 1.25),
                resamples: vec![],
                tokens_per_param: 20.0,
                penalty: Some(ShapePenalty {
                    log_ratio_optimum: 30f64.ln(),
                    curvature: 0.004,
                }),
            },
        ];
        let plans = recommend(budget, &ARCH, &limits, &fits, 0.95).unwrap();
        // CompleteP reaches every loss with less compute, so it plans the lower loss first.
        let names: Vec<&str> = plans.iter().map(|p| p.parameterization.as_str()).collect();
        assert_eq!(names, ["completep", "mup"]);
        for (plan, optimum) in plans.iter().zip([30.0f64, 100.0]) {
            let fit = fits
                .iter()
                .find(|f| f.name == plan.parameterization)
                .unwrap();
            assert_eq!(plan.loss_at_budget, fit.curve.loss(3e19));
            // Losses ascend, and each is L(budget) (1 + curvature (ln(N:L) - optimum)^2).
            for pair in plan.shapes.windows(2) {
                assert!(pair[0].loss <= pair[1].loss);
            }
            let curvature = fit.penalty.unwrap().curvature;
            for s in &plan.shapes {
                let excess = curvature * (s.shape.width_depth_ratio.ln() - optimum.ln()).powi(2);
                assert!((s.relative_penalty - excess).abs() < 1e-15);
                assert!((s.loss / (plan.loss_at_budget * (1.0 + excess)) - 1.0).abs() < 1e-15);
                assert_eq!(s.interval, None);
            }
            // The best shape is the candidate whose N:L is closest to the optimum in log terms.
            let closest = plan
                .shapes
                .iter()
                .min_by(|a, b| {
                    let d = |s: &RankedShape| (s.shape.width_depth_ratio.ln() - optimum.ln()).abs();
                    d(a).total_cmp(&d(b))
                })
                .unwrap();
            assert_eq!(plan.shapes[0].shape, closest.shape);
        }
        // The best CompleteP shape is deeper than muP's (N:L near 30 against near 100).
        assert!(plans[0].shapes[0].shape.depth > plans[1].shapes[0].shape.depth);
    }

    #[test]
    fn without_a_penalty_shapes_tie_and_rank_by_the_fallback_ratio() {
        let curve = PowerLaw {
            e: 1.8,
            a: 391.0,
            b: 0.15,
        };
        let fit = ParameterizationFit {
            name: "sp".into(),
            curve,
            resamples: vec![curve, shifted(curve, 2.0), shifted(curve, 0.5)],
            tokens_per_param: 20.0,
            penalty: None,
        };
        let budget = Budget::from_flops(1e21).unwrap();
        let plans = recommend(budget, &ARCH, &ShapeLimits::default(), &[fit], 0.5).unwrap();
        let plan = &plans[0];
        assert_eq!(plan.penalty, None);
        assert!(plan.matched_compute.is_empty());
        let loss = curve.loss(1e21);
        let target = FALLBACK_WIDTH_DEPTH_RATIO.ln();
        for pair in plan.shapes.windows(2) {
            assert_eq!((pair[0].loss, pair[1].loss), (loss, loss));
            let d = |s: &RankedShape| (s.shape.width_depth_ratio.ln() - target).abs();
            assert!(d(&pair[0]) <= d(&pair[1]));
        }
        // The interval is the percentile interval of the three resample losses.
        let interval = plan.shapes[0].interval.unwrap();
        let mut losses = [curve.loss(1e21), curve.loss(2e21), curve.loss(0.5e21)];
        losses.sort_by(f64::total_cmp);
        // At confidence 0.5, the 25th and 75th percentiles of three sorted values.
        assert!((interval.low - (losses[0] + losses[1]) / 2.0).abs() < 1e-12);
        assert!((interval.high - (losses[1] + losses[2]) / 2.0).abs() < 1e-12);
        let unfitted = candidate_shapes(budget, &ARCH, &ShapeLimits::default(), 20.0).unwrap();
        let ranked = rank_without_fit(unfitted);
        assert_eq!(ranked[0], plan.shapes[0].shape);
    }

    #[test]
    fn cross_parameterization_flops_match_a_hand_computation() {
        let mup = PowerLaw {
            e: 1.8,
            a: 391.0,
            b: 0.15,
        };
        let completep = PowerLaw {
            e: 1.7,
            a: 500.0,
            b: 0.17,
        };
        let penalty = ShapePenalty {
            log_ratio_optimum: 50f64.ln(),
            curvature: 0.02,
        };
        let fit = |name: &str, curve: PowerLaw, resamples: Vec<PowerLaw>| ParameterizationFit {
            name: name.into(),
            curve,
            resamples,
            tokens_per_param: 20.0,
            penalty: Some(penalty),
        };
        let fits = [
            fit("mup", mup, vec![mup, shifted(mup, 1.1)]),
            fit("completep", completep, vec![completep, completep]),
        ];
        let budget = Budget::from_flops(1e20).unwrap();
        let plans = recommend(budget, &ARCH, &ShapeLimits::default(), &fits, 0.9).unwrap();
        let mup_plan = plans.iter().find(|p| p.parameterization == "mup").unwrap();
        let best = &mup_plan.shapes[0];
        let excess = 0.02 * (best.shape.width_depth_ratio.ln() - 50f64.ln()).powi(2);
        let loss = (1.8 + 391.0 * 1e20f64.powf(-0.15)) * (1.0 + excess);
        assert!((best.loss / loss - 1.0).abs() < 1e-14);
        // CompleteP at its optimal shape: C = (A / (loss - E))^(1 / b).
        let by_hand = (500.0 / (loss - 1.7)).powf(1.0 / 0.17);
        let matched = &mup_plan.matched_compute[0];
        assert_eq!(matched.parameterization, "completep");
        assert_eq!(matched.loss, best.loss);
        let flops = matched.flops.unwrap();
        assert!(
            (flops / by_hand - 1.0).abs() < 1e-12,
            "{flops} vs {by_hand}"
        );
        assert!((matched.ratio.unwrap() - by_hand / 1e20).abs() < 1e-12 * by_hand / 1e20);
        // Resample pairs: (mup, completep) and (mup shifted by 1.1, completep).
        let shifted_loss = shifted(mup, 1.1).loss(1e20) * (1.0 + excess);
        let second = (500.0 / (shifted_loss - 1.7)).powf(1.0 / 0.17);
        let interval = matched.interval.unwrap();
        let (low, high) = (by_hand.min(second), by_hand.max(second));
        assert!((interval.low - (low + 0.05 * (high - low))).abs() < 1e-9 * high);
        assert!((interval.high - (low + 0.95 * (high - low))).abs() < 1e-9 * high);
        assert_eq!(matched.unreachable_resamples, 0);

        // A loss below the other curve's E is unreachable, with the reason.
        let floor = PowerLaw {
            e: 3.0,
            a: 10.0,
            b: 0.1,
        };
        let fits = [fit("mup", mup, vec![]), fit("sp", floor, vec![])];
        let plans = recommend(budget, &ARCH, &ShapeLimits::default(), &fits, 0.9).unwrap();
        let matched = &plans[0].matched_compute[0];
        assert_eq!(
            (plans[0].parameterization.as_str(), matched.flops),
            ("mup", None)
        );
        assert!(
            matched.refusal.as_deref().unwrap().contains("unreachable"),
            "{matched:?}"
        );
    }

    #[test]
    fn unusable_fits_and_settings_are_refused() {
        let curve = PowerLaw {
            e: 1.8,
            a: 391.0,
            b: 0.15,
        };
        let budget = Budget::from_flops(1e20).unwrap();
        let mut fit = ParameterizationFit {
            name: "mup".into(),
            curve,
            resamples: vec![],
            tokens_per_param: 20.0,
            penalty: Some(ShapePenalty {
                log_ratio_optimum: 4.0,
                curvature: -1.0,
            }),
        };
        let limits = ShapeLimits::default();
        let err = recommend(budget, &ARCH, &limits, std::slice::from_ref(&fit), 0.95).unwrap_err();
        assert!(err.to_string().contains("curvature >= 0"), "{err}");
        fit.penalty = None;
        let err = recommend(budget, &ARCH, &limits, std::slice::from_ref(&fit), 1.0).unwrap_err();
        assert!(err.to_string().starts_with("confidence must be"), "{err}");
        fit.curve.a = f64::NAN;
        let err = recommend(budget, &ARCH, &limits, &[fit], 0.95).unwrap_err();
        assert!(err.to_string().contains("not usable"), "{err}");
    }
}
