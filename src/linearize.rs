//! Relative distance from linearization (Dey et al. 2025, Fig. 6; section 5 of the CompleteP
//! spec): how far one optimizer step moves a residual branch's output away from its first-order
//! Taylor prediction. A branch whose update is nearly linear in its parameters learns "lazily".
//!
//! # What is measured
//!
//! For each parameterization, depth `L` and seed:
//!
//! 1. A model is built at initialisation `theta_0` (the same [`Trainer`] the training runs use)
//!    and takes **one AdamW step on the whole model**, with the plan's per-group learning rates,
//!    epsilons and weight decays, on the first training batch. AdamW's first step is element-wise
//!    (`m_hat = g`, `v_hat = g^2`), so a block's update `dtheta = theta_1 - theta_0` is exactly
//!    the update a step on that block alone would make: the paper's "one step on one block's
//!    weights".
//! 2. The watched block is the **middle one**, index `floor(L / 2)` (0-based: block 1 of 2,
//!    block 2 of 4, block 0 of 1). Its input, the residual stream `h` entering it, is computed at
//!    `theta_0` on the same batch and held fixed.
//! 3. The watched function is the block's **MLP branch**, a two-layer residual branch as in the
//!    paper's analysis: `F(theta) = r M(LN2(h_mid))` with `M(x) = act(x W_fc + b_fc) W_out +
//!    b_out`, its input `h_mid = h + r A(theta_0)` fixed, `r` the plan's residual multiplier and
//!    `theta` the branch's parameters (LN2 gain and bias, both weights and biases), over all
//!    `B x T x N` entries of the batch. Also reported: the **attention branch**
//!    `r A(LN1(h))` (LN1, QKV and output projection), and the **whole block**
//!    `h_out - h = r (A + M(LN2(h + r A)))` (every block parameter), whose distance also holds
//!    the coupling of the two branches through LN2 (the MLP sees the attention's change); that
//!    coupling fades with depth under every rule as `r A` becomes small next to `h`, so the
//!    whole block's distance falls with depth at small learning rates even under CompleteP.
//! 4. The linear prediction is `F_lin = F(theta_0) + J dtheta` with `J = dF/dtheta` at
//!    `theta_0`: the full inner product of the Jacobian with the whole update (the reference
//!    notebook uses only one row of it, which is wrong for a two-layer branch). burn has no
//!    forward-mode differentiation, so `J dtheta` is a central finite difference along the
//!    update, `(F(theta_0 + h dtheta) - F(theta_0 - h dtheta)) / (2 h)` with
//!    `h =` [`FINITE_DIFFERENCE_STEP`], evaluated in f64: its truncation error is
//!    `h^2 / 6 |F'''[dtheta^3]|` (measured: a few `1e-6` of `|J dtheta|` for an update as large
//!    as the weights themselves) and its rounding error about `1e-16 |F| / h`.
//! 5. The **relative distance from linearization** is
//!    `d = ||F(theta_1) - F_lin|| / ||F(theta_1) - F(theta_0)||` (Frobenius norms over all
//!    entries): the share of the branch's change that the linearization misses, 0 for a branch
//!    that is linear in its parameters. The paper's Fig. 6 plots this ratio of the non-linear
//!    remainder to the change; normalising by `||J dtheta||` instead
//!    ([`LinearizeRow::distance_vs_linear`], also reported) agrees with it to first order in `d`.
//!
//! Distances are averaged over seeds, and their growth with depth is summarised by the
//! least-squares slope `k` of `ln d` against `ln L` (`d ~ L^k`).
//!
//! # What to expect
//!
//! The non-linear remainder is second order in the update and the change first order, so `d`
//! grows like the size of the branch's update, i.e. like its learning rate. Under the
//! `m_L^-alpha` rules the hidden and block-norm learning rates scale like `m_L^(alpha - 1)`:
//! depth-muP (`alpha = 1/2`) falls like `L^-1/2` (lazy: deep branches barely leave their
//! linearization), CompleteP (`alpha = 1`) stays flat. muP has no depth rule for the learning
//! rate and stays flat too (its instability with depth is in the forward pass, see the
//! coordinate check in [`crate::coord`]). The width is also the base width, so SP coincides with
//! muP here. Measured at the defaults (width 128, lr `2^-8`, 4 seeds, depths 2 to 64): MLP-branch
//! exponents depth-muP -0.56, CompleteP -0.07, muP +0.11.
//!
//! Everything runs on burn-flex on the CPU; the block is re-evaluated in f64 from the trained
//! f32 parameters (read back exactly), with burn's own `linear`, `layer_norm` and `softmax`.

use crate::coord::fitted_slope;
use crate::data::DataSource;
use crate::model::{Activation, ModelConfig, Positions};
use crate::param::{AttentionScale, Parameterization};
use crate::train::{RunConfig, Schedule, TrainError, Trainer};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::activation::{gelu, relu, softmax};
use burn::tensor::module::{layer_norm, linear};
use burn::tensor::{DType, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The step `h` of the central difference that computes `J dtheta`, as a fraction of the update
/// (scale-free: the perturbations are `theta_0 +- h dtheta`).
pub const FINITE_DIFFERENCE_STEP: f64 = 1e-3;

/// LayerNorm's epsilon, burn's `LayerNormConfig` default that [`crate::model::Gpt`] uses.
const LAYER_NORM_EPS: f64 = 1e-5;

/// Largest depth, width and model count a linearization check accepts, the coordinate check's
/// (it trains one step per model and re-evaluates one block in f64: these bound it to minutes on
/// a CPU).
pub use crate::coord::{MAX_DEPTH, MAX_MODELS, MAX_SIZES, MAX_WIDTH};

/// The grid and settings of a linearization check. Every field has a default; together they
/// finish in about a minute on two CPU cores (muP, depth-muP and CompleteP; SP coincides with muP
/// because the width is the base width).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinearizeOptions {
    pub parameterizations: Vec<Parameterization>,
    /// Depths `L` tried; the smallest is the base depth `L_base`.
    pub depths: Vec<usize>,
    /// Width `N`, also the base width (so only the depth rules differ from the base model).
    pub width: usize,
    /// Seeds per depth, averaged.
    pub seeds: u64,
    /// Base learning rate `eta` of the single step (the plan scales it per group).
    pub lr: f64,
    /// Sequences in the batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub context: usize,
    pub d_head: usize,
    /// Kept equal across parameterizations so only their rules differ.
    pub attention_scale: AttentionScale,
}

impl Default for LinearizeOptions {
    fn default() -> Self {
        LinearizeOptions {
            parameterizations: vec![
                Parameterization::Mup,
                Parameterization::DepthMup,
                Parameterization::CompleteP,
            ],
            depths: vec![2, 4, 8, 16, 32, 64],
            width: 128,
            seeds: 4,
            lr: 2f64.powi(-8),
            batch: 4,
            context: 64,
            d_head: 32,
            attention_scale: AttentionScale::DHead,
        }
    }
}

impl LinearizeOptions {
    /// Models trained in all: parameterizations x depths x seeds.
    pub fn model_count(&self) -> u64 {
        (self.parameterizations.len() * self.depths.len()) as u64 * self.seeds
    }

    fn base_depth(&self) -> usize {
        self.depths.iter().copied().min().unwrap_or(1)
    }

    /// The models it trains, one per parameterization and depth, with seed 0 (the seeds
    /// differ only in their seed): what admission control estimates.
    pub fn run_configs(&self) -> Vec<RunConfig> {
        self.parameterizations
            .iter()
            .flat_map(|&p| self.depths.iter().map(move |&d| self.run_config(p, d, 0)))
            .collect()
    }

    /// The one-step run of one grid point: constant learning rate, no warmup, one batch.
    fn run_config(&self, parameterization: Parameterization, depth: usize, seed: u64) -> RunConfig {
        RunConfig {
            parameterization,
            alpha: None,
            width: self.width,
            depth,
            base_width: self.width,
            base_depth: self.base_depth(),
            d_head: self.d_head,
            context: self.context,
            batch: self.batch,
            lr: self.lr,
            attention_scale: Some(self.attention_scale),
            tokens: Some((self.batch * self.context) as u64),
            schedule: Schedule::Constant,
            warmup_fraction: 0.0,
            val_sequences: 1,
            seed,
            data: DataSource::Builtin {
                seed: 0,
                vocab: 256,
            },
            ..RunConfig::default()
        }
    }

    /// Checks the grid without training anything: sizes within the limits above, a positive
    /// finite learning rate, and every grid point a run the trainer accepts.
    pub fn validate(&self) -> Result<(), String> {
        if self.parameterizations.is_empty() {
            return Err("parameterizations must list at least one parameterization".into());
        }
        if self.parameterizations.contains(&Parameterization::Alpha) {
            return Err(
                "parameterization 'alpha' needs its own alpha: use depth-mup (0.5) or completep (1)"
                    .into(),
            );
        }
        if self.depths.is_empty() {
            return Err("depths must list at least one depth".into());
        }
        if self.depths.len() > MAX_SIZES {
            return Err(format!(
                "depths must list at most {MAX_SIZES} depths, got {}",
                self.depths.len()
            ));
        }
        if let Some(d) = self.depths.iter().find(|&&d| d == 0 || d > MAX_DEPTH) {
            return Err(format!("depths must be between 1 and {MAX_DEPTH}, got {d}"));
        }
        if self.width == 0 || self.width > MAX_WIDTH {
            return Err(format!(
                "width must be between 1 and {MAX_WIDTH}, got {}",
                self.width
            ));
        }
        crate::coord::check_seeds_lr_batch(self.seeds, self.lr, self.batch, self.context)?;
        if self.model_count() > MAX_MODELS {
            return Err(format!(
                "the grid has {} models (parameterizations x depths x seeds); at most {MAX_MODELS}",
                self.model_count()
            ));
        }
        for &p in &self.parameterizations {
            for &depth in &self.depths {
                self.run_config(p, depth, 0)
                    .validate()
                    .map_err(|e| format!("{p} at depth {depth}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Why a linearization check could not run.
#[derive(Debug, thiserror::Error)]
pub enum LinearizeError {
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("reading the model's parameters failed: {0}")]
    Tensor(String),
    #[error(
        "the step left block {block} of the {parameterization} model at depth {depth} unchanged: raise lr"
    )]
    NoChange {
        parameterization: Parameterization,
        depth: usize,
        block: usize,
    },
    #[error(
        "the step made block {block} of the {parameterization} model at depth {depth} non-finite: lower lr"
    )]
    NonFinite {
        parameterization: Parameterization,
        depth: usize,
        block: usize,
    },
}

/// One depth of one parameterization, averaged over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearizeRow {
    pub parameterization: Parameterization,
    pub width: usize,
    pub depth: usize,
    /// The watched block, `floor(depth / 2)` (0-based).
    pub block: usize,
    /// The learning rate the plan gives the block's hidden weights at this depth.
    pub hidden_lr: f64,
    /// The MLP branch's relative distance `||F(theta_1) - F_lin|| / ||F(theta_1) -
    /// F(theta_0)||`, mean over seeds.
    pub distance: f64,
    /// The MLP branch's distance for each seed, in seed order.
    pub distance_per_seed: Vec<f64>,
    /// The MLP branch's `||F(theta_1) - F_lin|| / ||J dtheta||`, mean over seeds.
    pub distance_vs_linear: f64,
    /// How much the step changed the MLP branch's output: `||F(theta_1) - F(theta_0)|| /
    /// ||F(theta_0)||`, mean over seeds.
    pub relative_change: f64,
    /// The attention branch's distance (`F = r A(LN1(h))`), mean over seeds.
    pub attention_distance: f64,
    /// The whole block's distance (`F = r (A + M)`, input `h` fixed), mean over seeds.
    pub block_distance: f64,
}

/// The fitted growth of the distances with depth for one parameterization: `k` in
/// `distance ~ L^k` (least squares on logs), absent with fewer than two depths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DepthSlope {
    pub parameterization: Parameterization,
    /// Of the MLP branch's distance.
    pub slope: Option<f64>,
    /// Of the attention branch's distance.
    pub attention_slope: Option<f64>,
    /// Of the whole block's distance.
    pub block_slope: Option<f64>,
}

/// The result of a linearization check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearizeTable {
    /// The base learning rate of the step.
    pub lr: f64,
    /// The central-difference step `h` used for `J dtheta`.
    pub finite_difference_step: f64,
    pub rows: Vec<LinearizeRow>,
    /// One per parameterization, in the order of the rows.
    pub slopes: Vec<DepthSlope>,
}

impl LinearizeTable {
    fn new(lr: f64, rows: Vec<LinearizeRow>) -> LinearizeTable {
        let mut table = LinearizeTable {
            lr,
            finite_difference_step: FINITE_DIFFERENCE_STEP,
            rows,
            slopes: Vec::new(),
        };
        table.slopes = table
            .parameterizations()
            .into_iter()
            .map(|p| DepthSlope {
                parameterization: p,
                slope: fitted_slope(&table.series_of(p, |r| r.distance)),
                attention_slope: fitted_slope(&table.series_of(p, |r| r.attention_distance)),
                block_slope: fitted_slope(&table.series_of(p, |r| r.block_distance)),
            })
            .collect();
        table
    }

    /// Parameterizations present, in first-seen order.
    pub fn parameterizations(&self) -> Vec<Parameterization> {
        let mut seen = Vec::new();
        for row in &self.rows {
            if !seen.contains(&row.parameterization) {
                seen.push(row.parameterization);
            }
        }
        seen
    }

    /// `(depth, MLP-branch distance)` of one parameterization, in depth order.
    pub fn series(&self, parameterization: Parameterization) -> Vec<(f64, f64)> {
        self.series_of(parameterization, |r| r.distance)
    }

    /// `(depth, value)` of one parameterization, in depth order.
    pub fn series_of(
        &self,
        parameterization: Parameterization,
        value: impl Fn(&LinearizeRow) -> f64,
    ) -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = self
            .rows
            .iter()
            .filter(|r| r.parameterization == parameterization)
            .map(|r| (r.depth as f64, value(r)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points
    }

    /// The fitted exponents of one parameterization.
    pub fn slopes_of(&self, parameterization: Parameterization) -> Option<&DepthSlope> {
        self.slopes
            .iter()
            .find(|s| s.parameterization == parameterization)
    }

    /// The fitted exponent of one parameterization's MLP-branch distance, if it has one.
    pub fn slope(&self, parameterization: Parameterization) -> Option<f64> {
        self.slopes_of(parameterization).and_then(|s| s.slope)
    }

    /// The table as CSV with a header row.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "parameterization,width,depth,block,hidden_lr,distance,distance_vs_linear,relative_change,attention_distance,block_distance\n",
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{},{},{},{},{:.6e},{:.6e},{:.6e},{:.6e},{:.6e},{:.6e}\n",
                r.parameterization,
                r.width,
                r.depth,
                r.block,
                r.hidden_lr,
                r.distance,
                r.distance_vs_linear,
                r.relative_change,
                r.attention_distance,
                r.block_distance
            ));
        }
        out
    }

    /// Distance per depth for each parameterization, and the fitted exponents.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "relative distance from linearization of the middle block's MLP branch after one step (lr {}); exponent k of L^k (attention branch, whole block)\n",
            self.lr
        );
        let k = |slope: Option<f64>| slope.map_or_else(|| "—".to_string(), |k| format!("{k:+.2}"));
        for p in self.parameterizations() {
            let cells: Vec<String> = self
                .series(p)
                .iter()
                .map(|(depth, d)| format!("{depth}: {d:.4}"))
                .collect();
            let slopes = self.slopes_of(p);
            out.push_str(&format!(
                "{:<10} {}  k {} ({}, {})\n",
                p.name(),
                cells.join("  "),
                k(slopes.and_then(|s| s.slope)),
                k(slopes.and_then(|s| s.attention_slope)),
                k(slopes.and_then(|s| s.block_slope)),
            ));
        }
        out
    }
}

/// Runs the grid; `progress` is called with a label after each model.
pub fn run_linearization(
    options: &LinearizeOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<LinearizeTable, LinearizeError> {
    options.validate().map_err(LinearizeError::Options)?;
    let mut rows = Vec::new();
    for &parameterization in &options.parameterizations {
        for &depth in &options.depths {
            let mut samples = Vec::new();
            for seed in 0..options.seeds {
                let config = options.run_config(parameterization, depth, seed);
                samples.push(measure(&config)?);
                progress(&format!("{parameterization} depth {depth} seed {seed}"));
            }
            let n = samples.len() as f64;
            let mean = |f: fn(&Measurement) -> f64| samples.iter().map(f).sum::<f64>() / n;
            let plan = options.run_config(parameterization, depth, 0).plan();
            rows.push(LinearizeRow {
                parameterization,
                width: options.width,
                depth,
                block: depth / 2,
                hidden_lr: plan.map_or(f64::NAN, |p| p.groups.hidden_weights.lr),
                distance: mean(|m| m.distance),
                distance_per_seed: samples.iter().map(|m| m.distance).collect(),
                distance_vs_linear: mean(|m| m.distance_vs_linear),
                relative_change: mean(|m| m.relative_change),
                attention_distance: mean(|m| m.attention_distance),
                block_distance: mean(|m| m.block_distance),
            });
        }
    }
    Ok(LinearizeTable::new(options.lr, rows))
}

/// What one model (one seed) measured (see [`LinearizeRow`] for the definitions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    pub distance: f64,
    pub distance_vs_linear: f64,
    pub relative_change: f64,
    pub attention_distance: f64,
    pub block_distance: f64,
}

/// One model: one AdamW step of the run `config` (which must have at least one step), then the
/// distances of its middle block's branches and of the whole block (see the module
/// documentation).
pub fn measure(config: &RunConfig) -> Result<Measurement, LinearizeError> {
    let mut trainer = Trainer::new(config)?;
    let before = HostParams::of(trainer.model())?;
    let batch = trainer
        .corpus()
        .train_batch(config.seed, trainer.steps_done(), config.batch);
    trainer.step(false);
    let after = HostParams::of(trainer.model())?;
    let block = config.depth / 2;
    let forward = BlockForward::new(trainer.model().config(), trainer.plan());
    let tokens = inputs(&batch, config.context);
    let h = forward.stream_before(&before, &tokens, config.batch, block)?;
    let theta_0 = before.block(block);
    let theta_1 = after.block(block);
    let update = theta_1.combine(&theta_0, 1.0, -1.0);
    let attention = forward.attention_branch(&theta_0, h.clone())?;
    let mid = h.clone() + attention.mul_scalar(forward.residual);
    let distances = |output: Output| {
        let f = |theta: &HostParams| forward.output(output, theta, h.clone(), mid.clone());
        let f_0 = f(&theta_0)?;
        let f_1 = f(&theta_1)?;
        let jvp = central_difference(&f, &theta_0, &update, FINITE_DIFFERENCE_STEP)?;
        let change = f_1 - f_0.clone();
        let remainder = change.clone() - jvp.clone();
        let (change, remainder, linear, initial) =
            (norm(change), norm(remainder), norm(jvp), norm(f_0));
        let (parameterization, depth) = (config.parameterization, config.depth);
        if !(change.is_finite() && remainder.is_finite() && linear.is_finite()) {
            return Err(LinearizeError::NonFinite {
                parameterization,
                depth,
                block,
            });
        }
        if change == 0.0 {
            return Err(LinearizeError::NoChange {
                parameterization,
                depth,
                block,
            });
        }
        Ok((remainder / change, remainder / linear, change / initial))
    };
    let (distance, distance_vs_linear, relative_change) = distances(Output::Mlp)?;
    Ok(Measurement {
        distance,
        distance_vs_linear,
        relative_change,
        attention_distance: distances(Output::Attention)?.0,
        block_distance: distances(Output::Block)?.0,
    })
}

/// `J dtheta` of `f` at `theta` by the central difference of step `step` along `direction`:
/// `(f(theta + step direction) - f(theta - step direction)) / (2 step)`.
fn central_difference(
    f: &dyn Fn(&HostParams) -> Result<Tensor<3>, LinearizeError>,
    theta: &HostParams,
    direction: &HostParams,
    step: f64,
) -> Result<Tensor<3>, LinearizeError> {
    let plus = f(&theta.combine(direction, 1.0, step))?;
    let minus = f(&theta.combine(direction, 1.0, -step))?;
    Ok((plus - minus).div_scalar(2.0 * step))
}

/// The function of the block's parameters that is linearized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    /// The whole block, `F = r (A + M)` with the block's input `h` fixed.
    Block,
    /// The attention branch alone, `r A(LN1(h))`, with `h` fixed.
    Attention,
    /// The MLP branch alone, `r M(LN2(h_mid))`, with its input `h_mid = h + r A(theta_0)` fixed.
    Mlp,
}

/// The first `context` tokens of each `context + 1` window of a training batch.
fn inputs(batch: &[u32], context: usize) -> Vec<usize> {
    batch
        .chunks_exact(context + 1)
        .flat_map(|row| row[..context].iter().map(|&t| t as usize))
        .collect()
}

/// The Frobenius norm `sqrt(sum x^2)` over every entry.
fn norm<const D: usize>(x: Tensor<D>) -> f64 {
    x.square().sum().into_scalar::<f64>().sqrt()
}

/// A parameter tensor on the host in f64, row-major.
#[derive(Clone, Debug, PartialEq)]
struct HostTensor {
    values: Vec<f64>,
    shape: Vec<usize>,
}

/// Parameters on the host, by their dotted module path (`blocks.3.qkv.weight`), or inside one
/// block by their path in the block (`qkv.weight`).
#[derive(Clone, Debug, Default, PartialEq)]
struct HostParams(BTreeMap<String, HostTensor>);

/// Reads every float parameter of a module with its path.
struct Collector {
    path: Vec<String>,
    params: HostParams,
    error: Option<String>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        match tensor.into_data().try_into_vec_as::<f64>() {
            Ok(values) => {
                self.params
                    .0
                    .insert(self.path.join("."), HostTensor { values, shape });
            }
            Err(e) => self.error = Some(format!("{}: {e:?}", self.path.join("."))),
        }
    }
}

impl HostParams {
    fn of<M: Module>(module: &M) -> Result<HostParams, LinearizeError> {
        let mut collector = Collector {
            path: Vec::new(),
            params: HostParams::default(),
            error: None,
        };
        module.visit(&mut collector);
        match collector.error {
            Some(e) => Err(LinearizeError::Tensor(e)),
            None => Ok(collector.params),
        }
    }

    /// Block `index`'s parameters, keyed by their path inside the block.
    fn block(&self, index: usize) -> HostParams {
        let prefix = format!("blocks.{index}.");
        HostParams(
            self.0
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
                .collect(),
        )
    }

    /// `a self + b other`, entry by entry (both must hold the same parameters).
    fn combine(&self, other: &HostParams, a: f64, b: f64) -> HostParams {
        HostParams(
            self.0
                .iter()
                .filter_map(|(k, x)| {
                    let y = other.0.get(k)?;
                    let values = x
                        .values
                        .iter()
                        .zip(&y.values)
                        .map(|(x, y)| a * x + b * y)
                        .collect();
                    Some((
                        k.clone(),
                        HostTensor {
                            values,
                            shape: x.shape.clone(),
                        },
                    ))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Result<&HostTensor, LinearizeError> {
        self.0
            .get(name)
            .ok_or_else(|| LinearizeError::Tensor(format!("the model has no parameter {name}")))
    }
}

/// The model's forward pass up to and through one block, in f64, from host parameters; it
/// mirrors [`crate::model::Gpt`] (checked against it in the tests).
struct BlockForward {
    config: ModelConfig,
    residual: f64,
    attention_scale: f64,
    device: Device,
}

/// The outputs of one block.
struct BlockParts {
    /// `Attn(LN1(h))`, before the residual multiplier.
    attention: Tensor<3>,
    /// `MLP(LN2(h + r A))`, before the residual multiplier.
    mlp: Tensor<3>,
}

impl BlockForward {
    fn new(config: &ModelConfig, plan: &crate::param::ParamPlan) -> BlockForward {
        BlockForward {
            config: config.clone(),
            residual: plan.residual_multiplier,
            attention_scale: plan.attention_scale,
            device: Device::flex(),
        }
    }

    fn tensor<const D: usize>(&self, values: Vec<f64>, shape: [usize; D]) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values, shape), (&self.device, DType::F64))
    }

    fn param<const D: usize>(
        &self,
        params: &HostParams,
        name: &str,
    ) -> Result<Tensor<D>, LinearizeError> {
        let p = params.get(name)?;
        let shape: [usize; D] = p.shape.clone().try_into().map_err(|_| {
            LinearizeError::Tensor(format!("{name} has shape {:?}, not rank {D}", p.shape))
        })?;
        Ok(self.tensor(p.values.clone(), shape))
    }

    fn optional<const D: usize>(
        &self,
        params: &HostParams,
        name: &str,
    ) -> Result<Option<Tensor<D>>, LinearizeError> {
        if params.0.contains_key(name) {
            self.param(params, name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// `h_0 = E[x] (+ P[t])`, `[B, T, N]`, for `tokens` of `batch` rows.
    fn embed(
        &self,
        params: &HostParams,
        tokens: &[usize],
        batch: usize,
    ) -> Result<Tensor<3>, LinearizeError> {
        let n = self.config.width;
        let time = tokens.len() / batch.max(1);
        let table = params.get("token_embedding")?;
        let positions = params.0.get("position_embedding");
        let mut values = Vec::with_capacity(tokens.len() * n);
        for (i, &token) in tokens.iter().enumerate() {
            let row = table
                .values
                .get(token * n..(token + 1) * n)
                .ok_or_else(|| LinearizeError::Tensor(format!("token {token} out of range")))?;
            match positions {
                Some(p) => {
                    let t = i % time;
                    let pos = &p.values[t * n..(t + 1) * n];
                    values.extend(row.iter().zip(pos).map(|(a, b)| a + b));
                }
                None => values.extend_from_slice(row),
            }
        }
        Ok(self.tensor(values, [batch, time, n]))
    }

    /// The additive attention bias `[1, H, T, T]`: `-inf` above the diagonal, ALiBi's
    /// `-slope_h (i - j)` on and below it (as `model::attention_bias`).
    fn attention_bias(&self, time: usize) -> Tensor<4> {
        let heads = self.config.heads();
        let mut values = vec![0f64; heads * time * time];
        for h in 0..heads {
            let slope = match self.config.positions {
                Positions::Alibi => 2f64.powf(-8.0 * (h + 1) as f64 / heads as f64),
                Positions::Learned => 0.0,
            };
            for i in 0..time {
                for j in 0..time {
                    values[(h * time + i) * time + j] = if j > i {
                        f64::NEG_INFINITY
                    } else {
                        -slope * (i - j) as f64
                    };
                }
            }
        }
        self.tensor(values, [1, heads, time, time])
    }

    fn norm(
        &self,
        params: &HostParams,
        name: &str,
        x: Tensor<3>,
    ) -> Result<Tensor<3>, LinearizeError> {
        let gamma = self.param::<1>(params, &format!("{name}.gamma"))?;
        let beta = self.optional::<1>(params, &format!("{name}.beta"))?;
        Ok(layer_norm(x, gamma, beta, LAYER_NORM_EPS))
    }

    fn linear(
        &self,
        params: &HostParams,
        name: &str,
        x: Tensor<3>,
    ) -> Result<Tensor<3>, LinearizeError> {
        let weight = self.param::<2>(params, &format!("{name}.weight"))?;
        let bias = self.optional::<1>(params, &format!("{name}.bias"))?;
        Ok(linear(x, weight, bias))
    }

    /// Both branches of a block with parameters `block` on the stream `h: [B, T, N]`.
    fn parts(&self, block: &HostParams, h: Tensor<3>) -> Result<BlockParts, LinearizeError> {
        let attention = self.attention_branch(block, h.clone())?;
        let mid = h + attention.clone().mul_scalar(self.residual);
        let mlp = self.mlp_branch(block, mid)?;
        Ok(BlockParts { attention, mlp })
    }

    /// `A = Attn(LN1(h))`, before the residual multiplier.
    fn attention_branch(
        &self,
        block: &HostParams,
        h: Tensor<3>,
    ) -> Result<Tensor<3>, LinearizeError> {
        let [batch, time, n] = h.dims();
        let (dh, heads) = (self.config.d_head, self.config.heads());
        let qkv = self.linear(block, "qkv", self.norm(block, "ln1", h.clone())?)?;
        let split = |i: usize| {
            qkv.clone()
                .narrow(2, i * n, n)
                .reshape([batch, time, heads, dh])
                .swap_dims(1, 2)
        };
        let q = split(0).mul_scalar(self.attention_scale);
        let (k, v) = (split(1), split(2));
        let scores = q.matmul(k.swap_dims(2, 3)) + self.attention_bias(time);
        let y = softmax(scores, 3).matmul(v);
        self.linear(block, "proj", y.swap_dims(1, 2).reshape([batch, time, n]))
    }

    /// `M = MLP(LN2(mid))`, before the residual multiplier.
    fn mlp_branch(&self, block: &HostParams, mid: Tensor<3>) -> Result<Tensor<3>, LinearizeError> {
        let hidden = self.linear(block, "fc", self.norm(block, "ln2", mid)?)?;
        let hidden = match self.config.activation {
            Activation::Relu2 => relu(hidden).square(),
            Activation::Gelu => gelu(hidden),
        };
        self.linear(block, "fc_out", hidden)
    }

    /// The linearized function `output` of the block parameters `block` (input `h`, and `mid`
    /// for the MLP branch alone).
    fn output(
        &self,
        output: Output,
        block: &HostParams,
        h: Tensor<3>,
        mid: Tensor<3>,
    ) -> Result<Tensor<3>, LinearizeError> {
        Ok(match output {
            Output::Block => return self.block_output(block, h),
            Output::Attention => self.attention_branch(block, h)?,
            Output::Mlp => self.mlp_branch(block, mid)?,
        }
        .mul_scalar(self.residual))
    }

    /// `F(theta) = r (A + M)`: the block's residual contribution `h_out - h`.
    fn block_output(&self, block: &HostParams, h: Tensor<3>) -> Result<Tensor<3>, LinearizeError> {
        let parts = self.parts(block, h)?;
        Ok((parts.attention + parts.mlp).mul_scalar(self.residual))
    }

    /// The residual stream entering block `index` (`h_0` for block 0).
    fn stream_before(
        &self,
        params: &HostParams,
        tokens: &[usize],
        batch: usize,
        index: usize,
    ) -> Result<Tensor<3>, LinearizeError> {
        let mut h = self.embed(params, tokens, batch)?;
        for i in 0..index {
            h = h.clone() + self.block_output(&params.block(i), h)?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Gpt;
    use burn::tensor::Int;

    fn tiny_config(parameterization: Parameterization, depth: usize, lr: f64) -> RunConfig {
        LinearizeOptions {
            parameterizations: vec![parameterization],
            depths: vec![1, depth],
            width: 32,
            seeds: 1,
            lr,
            batch: 2,
            context: 16,
            d_head: 16,
            attention_scale: AttentionScale::DHead,
        }
        .run_config(parameterization, depth, 0)
    }

    fn mean_abs(x: Tensor<3>) -> f64 {
        x.abs().mean().into_scalar::<f64>()
    }

    /// The f64 re-implementation reproduces the model's own forward pass (in f32), for both
    /// position encodings and activations.
    #[test]
    fn the_f64_block_matches_the_model() {
        for (positions, activation) in [
            (Positions::Alibi, Activation::Relu2),
            (Positions::Learned, Activation::Gelu),
        ] {
            let config = RunConfig {
                positions,
                activation,
                ..tiny_config(Parameterization::CompleteP, 3, 0.01)
            };
            let trainer = Trainer::new(&config).unwrap();
            let model: &Gpt = trainer.model();
            let batch = trainer.corpus().train_batch(0, 0, config.batch);
            let tokens = inputs(&batch, config.context);
            let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
            let device = Device::flex().autodiff();
            let input = Tensor::<2, Int>::from_data(
                TensorData::new(ids, [config.batch, config.context]),
                &device,
            );
            let (_, scales) = model.forward_with_scales(input);
            let params = HostParams::of(model).unwrap();
            let forward = BlockForward::new(model.config(), trainer.plan());
            let before_last = forward
                .stream_before(&params, &tokens, config.batch, 2)
                .unwrap();
            let last = params.block(2);
            let parts = forward.parts(&last, before_last.clone()).unwrap();
            let h = before_last
                + (parts.attention.clone() + parts.mlp.clone()).mul_scalar(forward.residual);
            let close = |ours: f64, theirs: f64| (ours - theirs).abs() <= 1e-4 * theirs.abs();
            assert!(close(mean_abs(h), scales.residual), "{positions:?}");
            assert!(close(mean_abs(parts.attention), scales.attention_branch));
            assert!(close(mean_abs(parts.mlp), scales.mlp_branch));
        }
    }

    /// A central difference is exact for a quadratic, so for `F` affine in the update direction
    /// (only the MLP's output layer moves: `M = act(...) W_out + b_out`) the finite-difference
    /// `J dtheta` equals the exact change, and the distance is zero up to rounding; moving the
    /// QKV weights instead is non-linear.
    #[test]
    fn the_finite_difference_jvp_is_exact_for_a_linear_direction() {
        let config = tiny_config(Parameterization::CompleteP, 2, 0.01);
        let trainer = Trainer::new(&config).unwrap();
        let params = HostParams::of(trainer.model()).unwrap();
        let forward = BlockForward::new(trainer.model().config(), trainer.plan());
        let batch = trainer.corpus().train_batch(0, 0, config.batch);
        let tokens = inputs(&batch, config.context);
        let h = forward
            .stream_before(&params, &tokens, config.batch, 1)
            .unwrap();
        let theta = params.block(1);
        let direction = |moved: &[&str]| {
            let mut d = theta.combine(&theta, 0.0, 0.0);
            for (name, t) in d.0.iter_mut() {
                if moved.contains(&name.as_str()) {
                    for (i, v) in t.values.iter_mut().enumerate() {
                        *v = 0.01 * ((i * 7919 % 13) as f64 - 6.0);
                    }
                }
            }
            d
        };
        let distance = |d: &HostParams| {
            let f_0 = forward.block_output(&theta, h.clone()).unwrap();
            let f_1 = forward
                .block_output(&theta.combine(d, 1.0, 1.0), h.clone())
                .unwrap();
            let f = |t: &HostParams| forward.block_output(t, h.clone());
            let jvp = central_difference(&f, &theta, d, FINITE_DIFFERENCE_STEP).unwrap();
            let change = f_1 - f_0;
            norm(change.clone() - jvp) / norm(change)
        };
        let linear = distance(&direction(&["fc_out.weight", "fc_out.bias"]));
        assert!(linear < 1e-10, "affine direction: {linear}");
        let curved = distance(&direction(&["qkv.weight"]));
        assert!(curved > 1e-3, "QKV direction: {curved}");
        // The error of the difference is truncation, O(h^2) (halving h quarters it), not
        // rounding, and small at the step used: the estimate at h moves by 3/4 of its error
        // when h halves.
        let d = direction(&["qkv.weight", "fc.weight"]);
        let f = |t: &HostParams| forward.block_output(t, h.clone());
        let at = |step| central_difference(&f, &theta, &d, step).unwrap();
        let (coarse, used, fine) = (
            at(2.0 * FINITE_DIFFERENCE_STEP),
            at(FINITE_DIFFERENCE_STEP),
            at(FINITE_DIFFERENCE_STEP / 2.0),
        );
        let gap = |a: Tensor<3>, b: Tensor<3>| norm(a - b);
        let (g_coarse, g_fine) = (gap(coarse, used.clone()), gap(used.clone(), fine));
        let ratio = g_coarse / g_fine;
        assert!((3.5..4.5).contains(&ratio), "gap ratio {ratio}");
        let error = g_fine * 4.0 / 3.0 / norm(used);
        eprintln!("relative error of J dtheta at h = {FINITE_DIFFERENCE_STEP}: {error:.1e}");
        assert!(error < 1e-4, "{error}");
    }

    /// The spec's expectation at tiny shapes (width 32, depths 1 to 16, lr `2^-8`, 2 seeds).
    /// Measured: depth-muP's MLP-branch exponent -0.54, CompleteP's -0.02 (and -0.53, -0.03 with 3
    /// seeds; -0.55, -0.02 at lr `2^-6`).
    #[test]
    fn depth_mup_turns_lazy_with_depth_and_completep_does_not() {
        let options = LinearizeOptions {
            parameterizations: vec![Parameterization::DepthMup, Parameterization::CompleteP],
            depths: vec![1, 2, 4, 8, 16],
            width: 32,
            seeds: 2,
            lr: 2f64.powi(-8),
            batch: 2,
            context: 16,
            d_head: 16,
            attention_scale: AttentionScale::DHead,
        };
        let table = run_linearization(&options, &mut |_| {}).unwrap();
        eprintln!("{}", table.summary());
        let depth_mup = table.slope(Parameterization::DepthMup).unwrap();
        let completep = table.slope(Parameterization::CompleteP).unwrap();
        assert!(
            (-0.75..-0.35).contains(&depth_mup),
            "depth-muP k {depth_mup}"
        );
        assert!(completep.abs() < 0.15, "CompleteP k {completep}");
        let at_16 = |p| table.series(p).last().map(|(_, d)| *d).unwrap();
        assert!(at_16(Parameterization::CompleteP) > 3.0 * at_16(Parameterization::DepthMup));
        assert_eq!(table.rows.len(), 10);
        assert!(table.rows.iter().all(|r| r.block == r.depth / 2));
    }

    #[test]
    fn the_distance_vanishes_with_the_learning_rate() {
        let at = |lr| {
            measure(&tiny_config(Parameterization::CompleteP, 2, lr))
                .unwrap()
                .distance
        };
        let (tiny, small, moderate) = (at(1e-6), at(1e-3), at(3e-2));
        eprintln!("distance at lr 1e-6 {tiny}, 1e-3 {small}, 3e-2 {moderate}");
        assert!(tiny < 1e-3, "{tiny}");
        // Below f32's resolution of the weights the step changes nothing, which is an error.
        let unchanged = measure(&tiny_config(Parameterization::CompleteP, 2, 1e-30));
        assert!(
            matches!(unchanged, Err(LinearizeError::NoChange { block: 1, .. })),
            "{unchanged:?}"
        );
        assert!(
            tiny < small && small < moderate,
            "{tiny} {small} {moderate}"
        );
    }
}
