//! Coordinate checks (section 5 of the CompleteP spec; Yang et al. 2021 for width, Dey et al.
//! 2025, Fig. 7, for depth): train models that differ only in depth (or width) for a few steps at
//! a fixed learning rate and watch the mean absolute activation `mean |x|` at each step.
//!
//! A parameterization with stable feature learning keeps these sizes flat as the model grows.
//! Expected over depth: SP and muP grow (about `L^1/2` at step 1, up to linear later); depth-muP
//! and CompleteP stay flat; CompleteP's step-1 residual falls like `L^-1/2` because at init its
//! `L` branches enter with weight `1/L`. Expected over width: muP flat, SP growing.
//!
//! Growth is summarised by the least-squares slope of `ln mean|x|` against `ln size`: the
//! exponent `k` in `mean|x| ~ size^k`.

use crate::data::DataSource;
use crate::model::ActivationScales;
use crate::param::{AttentionScale, Parameterization};
use crate::train::{RunConfig, Schedule, TrainError, Trainer};
use serde::{Deserialize, Serialize};

/// Which size varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoordAxis {
    Depth,
    Width,
}

/// The grid and the training settings of a coordinate check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordOptions {
    pub axis: CoordAxis,
    pub parameterizations: Vec<Parameterization>,
    /// Depths tried when `axis` is depth; the smallest is the base depth.
    pub depths: Vec<usize>,
    /// Widths tried when `axis` is width; the smallest is the base width.
    pub widths: Vec<usize>,
    /// The fixed width when `axis` is depth (also the base width).
    pub width: usize,
    /// The fixed depth when `axis` is width (also the base depth).
    pub depth: usize,
    /// Optimizer steps per model; activations are measured in the forward pass of each.
    pub steps: u64,
    /// Seeds per point, averaged.
    pub seeds: u64,
    /// Constant base learning rate (no warmup, no decay).
    pub lr: f64,
    pub batch: usize,
    pub context: usize,
    pub d_head: usize,
    /// Kept equal across parameterizations so only their rules differ.
    pub attention_scale: AttentionScale,
}

/// Largest size, step count, seed count and number of models a coordinate check accepts
/// (bounds that keep one check to minutes or hours on a CPU, not days).
pub const MAX_DEPTH: usize = 256;
pub const MAX_WIDTH: usize = 2048;
pub const MAX_STEPS: u64 = 200;
pub const MAX_SEEDS: u64 = 16;
pub const MAX_MODELS: u64 = 400;
/// Most sizes (depths or widths) one check lists.
pub const MAX_SIZES: usize = 64;

/// The limits a coordinate check and a linearization check share: 1 to [`MAX_SEEDS`] seeds, a
/// positive finite learning rate, at most 256 sequences of at most 1024 tokens.
pub(crate) fn check_seeds_lr_batch(
    seeds: u64,
    lr: f64,
    batch: usize,
    context: usize,
) -> Result<(), String> {
    if seeds == 0 || seeds > MAX_SEEDS {
        return Err(format!(
            "seeds must be between 1 and {MAX_SEEDS}, got {seeds}"
        ));
    }
    if !lr.is_finite() || lr <= 0.0 {
        return Err(format!("lr must be a positive number, got {lr}"));
    }
    if context > 1024 || batch > 256 {
        return Err(format!(
            "batch must be at most 256 and context at most 1024, got {batch} and {context}"
        ));
    }
    Ok(())
}

impl CoordOptions {
    /// Settings that finish in a few minutes on two CPU cores: all four parameterizations, the
    /// paper's base learning rate `2^-8`, 10 steps, 2 seeds, batch 8 x 64 tokens, `d_head` 32;
    /// depths 2..32 at width 128, or widths 64..512 at depth 2.
    pub fn defaults(axis: CoordAxis) -> CoordOptions {
        CoordOptions {
            axis,
            parameterizations: vec![
                Parameterization::Sp,
                Parameterization::Mup,
                Parameterization::DepthMup,
                Parameterization::CompleteP,
            ],
            depths: vec![2, 4, 8, 16, 32],
            widths: vec![64, 128, 256, 512],
            width: 128,
            depth: 2,
            steps: 10,
            seeds: 2,
            lr: 2f64.powi(-8),
            batch: 8,
            context: 64,
            d_head: 32,
            attention_scale: AttentionScale::DHead,
        }
    }

    /// Checks the grid without training anything: sizes and counts within the limits above, a
    /// positive finite learning rate, and every grid point a run the trainer accepts.
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
        let (name, limit) = match self.axis {
            CoordAxis::Depth => ("depths", MAX_DEPTH),
            CoordAxis::Width => ("widths", MAX_WIDTH),
        };
        if self.sizes().is_empty() {
            return Err(format!("{name} must list at least one size"));
        }
        if self.sizes().len() > MAX_SIZES {
            return Err(format!(
                "{name} must list at most {MAX_SIZES} sizes, got {}",
                self.sizes().len()
            ));
        }
        if let Some(s) = self.sizes().iter().find(|&&s| s == 0 || s > limit) {
            return Err(format!("{name} must be between 1 and {limit}, got {s}"));
        }
        let (fixed, fixed_limit, value) = match self.axis {
            CoordAxis::Depth => ("width", MAX_WIDTH, self.width),
            CoordAxis::Width => ("depth", MAX_DEPTH, self.depth),
        };
        if value == 0 || value > fixed_limit {
            return Err(format!(
                "{fixed} must be between 1 and {fixed_limit}, got {value}"
            ));
        }
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(format!(
                "steps must be between 1 and {MAX_STEPS}, got {}",
                self.steps
            ));
        }
        check_seeds_lr_batch(self.seeds, self.lr, self.batch, self.context)?;
        if self.model_count() > MAX_MODELS {
            return Err(format!(
                "the grid has {} models (parameterizations x sizes x seeds); at most {MAX_MODELS}",
                self.model_count()
            ));
        }
        for &p in &self.parameterizations {
            for &size in self.sizes() {
                self.run_config(p, size, 0)
                    .validate()
                    .map_err(|e| format!("{p} at {} {size}: {e}", &name[..name.len() - 1]))?;
            }
        }
        Ok(())
    }

    fn sizes(&self) -> &[usize] {
        match self.axis {
            CoordAxis::Depth => &self.depths,
            CoordAxis::Width => &self.widths,
        }
    }

    /// Models trained in all: parameterizations x sizes x seeds.
    pub fn model_count(&self) -> u64 {
        (self.parameterizations.len() * self.sizes().len()) as u64 * self.seeds
    }

    /// The models it trains, one per parameterization and size, with seed 0 (the seeds
    /// differ only in their seed): what admission control estimates.
    pub fn run_configs(&self) -> Vec<RunConfig> {
        self.parameterizations
            .iter()
            .flat_map(|&p| {
                self.sizes()
                    .iter()
                    .map(move |&size| self.run_config(p, size, 0))
            })
            .collect()
    }

    fn run_config(&self, parameterization: Parameterization, size: usize, seed: u64) -> RunConfig {
        let smallest = self.sizes().iter().copied().min().unwrap_or(size);
        let (width, depth, base_width, base_depth) = match self.axis {
            CoordAxis::Depth => (self.width, size, self.width, smallest),
            CoordAxis::Width => (size, self.depth, smallest, self.depth),
        };
        RunConfig {
            parameterization,
            alpha: None,
            width,
            depth,
            base_width,
            base_depth,
            d_head: self.d_head,
            context: self.context,
            batch: self.batch,
            lr: self.lr,
            attention_scale: Some(self.attention_scale),
            tokens: Some(self.steps * (self.batch * self.context) as u64),
            schedule: Schedule::Constant,
            warmup_fraction: 0.0,
            seed,
            data: DataSource::Builtin {
                seed: 0,
                vocab: 256,
            },
            ..RunConfig::default()
        }
    }
}

/// Seed-averaged activation sizes of one model at one step.
///
/// A model that diverged has non-finite values; JSON has no NaN or infinity, so they are
/// written as `null` and read back as NaN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoordRow {
    pub parameterization: Parameterization,
    pub width: usize,
    pub depth: usize,
    /// 1-based: step 1 is the forward pass at initialisation.
    pub step: u64,
    #[serde(deserialize_with = "nullable_f64")]
    pub embedding: f64,
    #[serde(deserialize_with = "nullable_f64")]
    pub attention_branch: f64,
    #[serde(deserialize_with = "nullable_f64")]
    pub mlp_branch: f64,
    #[serde(deserialize_with = "nullable_f64")]
    pub residual: f64,
    #[serde(deserialize_with = "nullable_f64")]
    pub logits: f64,
    /// Training loss of the step's batch.
    #[serde(deserialize_with = "nullable_f64")]
    pub loss: f64,
}

/// Reads a number, or `null` (how serde_json writes NaN and infinities) as NaN.
fn nullable_f64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// The fitted growth exponent of one parameterization at one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoordSlope {
    pub parameterization: Parameterization,
    pub step: u64,
    /// `k` in `mean |final residual| ~ size^k`; absent without two usable sizes.
    pub slope: Option<f64>,
}

/// The result of a coordinate check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoordTable {
    pub axis: CoordAxis,
    pub rows: Vec<CoordRow>,
}

/// Least-squares slope of `ln y` on `ln x`.
pub fn log_log_slope(points: &[(f64, f64)]) -> f64 {
    let logs: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x.ln(), y.ln())).collect();
    let n = logs.len() as f64;
    let mean_x = logs.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = logs.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = logs.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let sxx: f64 = logs.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    sxy / sxx
}

/// [`log_log_slope`] over the points that can go on log axes (finite, positive), or `None`
/// when fewer than two distinct sizes remain.
pub fn fitted_slope(points: &[(f64, f64)]) -> Option<f64> {
    let usable: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0)
        .collect();
    let distinct = usable.iter().any(|p| p.0 != usable[0].0);
    distinct
        .then(|| log_log_slope(&usable))
        .filter(|k| k.is_finite())
}

impl CoordTable {
    /// The growth exponent of the final residual stream of every parameterization at step 1 and
    /// at the last step.
    pub fn slopes(&self) -> Vec<CoordSlope> {
        let last = self.last_step();
        let mut steps = vec![1];
        if last > 1 {
            steps.push(last);
        }
        self.parameterizations()
            .into_iter()
            .flat_map(|p| {
                steps.iter().map(move |&step| CoordSlope {
                    parameterization: p,
                    step,
                    slope: fitted_slope(&self.series(p, step, |r| r.residual)),
                })
            })
            .collect()
    }

    /// The size a row varies in.
    pub fn size(&self, row: &CoordRow) -> usize {
        match self.axis {
            CoordAxis::Depth => row.depth,
            CoordAxis::Width => row.width,
        }
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

    /// The last step measured.
    pub fn last_step(&self) -> u64 {
        self.rows.iter().map(|r| r.step).max().unwrap_or(0)
    }

    /// `(size, value)` for one parameterization at one step.
    pub fn series(
        &self,
        parameterization: Parameterization,
        step: u64,
        value: impl Fn(&CoordRow) -> f64,
    ) -> Vec<(f64, f64)> {
        self.rows
            .iter()
            .filter(|r| r.parameterization == parameterization && r.step == step)
            .map(|r| (self.size(r) as f64, value(r)))
            .collect()
    }

    /// Growth exponent of the final residual stream with size at `step`.
    pub fn residual_slope(&self, parameterization: Parameterization, step: u64) -> f64 {
        log_log_slope(&self.series(parameterization, step, |r| r.residual))
    }

    /// The table as CSV with a header row.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "parameterization,width,depth,step,embedding,attention_branch,mlp_branch,residual,logits,loss\n",
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{},{},{},{},{:.6e},{:.6e},{:.6e},{:.6e},{:.6e},{:.6}\n",
                r.parameterization,
                r.width,
                r.depth,
                r.step,
                r.embedding,
                r.attention_branch,
                r.mlp_branch,
                r.residual,
                r.logits,
                r.loss
            ));
        }
        out
    }

    /// Residual stream size per parameterization and size at the first and last step, and the
    /// growth exponents.
    pub fn summary(&self) -> String {
        let last = self.last_step();
        let axis = match self.axis {
            CoordAxis::Depth => "depth",
            CoordAxis::Width => "width",
        };
        let mut out = format!(
            "mean |final residual| by {axis} (step 1 / step {last}); exponent k of size^k\n"
        );
        for p in self.parameterizations() {
            let first = self.series(p, 1, |r| r.residual);
            let later = self.series(p, last, |r| r.residual);
            let cells: Vec<String> = first
                .iter()
                .zip(&later)
                .map(|(a, b)| format!("{}: {:.3}/{:.3}", a.0, a.1, b.1))
                .collect();
            out.push_str(&format!(
                "{:<10} {}  k(step 1) {:+.2}  k(step {last}) {:+.2}\n",
                p.name(),
                cells.join("  "),
                self.residual_slope(p, 1),
                self.residual_slope(p, last)
            ));
        }
        out
    }
}

fn average(scales: &[(ActivationScales, f64)]) -> (ActivationScales, f64) {
    let n = scales.len() as f64;
    let mut mean = ActivationScales::default();
    let mut loss = 0.0;
    for (s, l) in scales {
        mean.embedding += s.embedding / n;
        mean.attention_branch += s.attention_branch / n;
        mean.mlp_branch += s.mlp_branch / n;
        mean.residual += s.residual / n;
        mean.logits += s.logits / n;
        loss += l / n;
    }
    (mean, loss)
}

/// Runs the grid; `progress` is called with a label after each model.
pub fn run_coord_check(
    options: &CoordOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<CoordTable, TrainError> {
    options.validate().map_err(TrainError::Config)?;
    let mut rows = Vec::new();
    for &parameterization in &options.parameterizations {
        for &size in options.sizes() {
            let mut per_step: Vec<Vec<(ActivationScales, f64)>> =
                vec![Vec::new(); options.steps as usize];
            for seed in 0..options.seeds {
                let config = options.run_config(parameterization, size, seed);
                let mut trainer = Trainer::new(&config)?;
                for samples in per_step.iter_mut() {
                    let outcome = trainer.step(true);
                    let scales = outcome.scales.unwrap_or_default();
                    samples.push((scales, outcome.loss));
                }
                progress(&format!("{parameterization} {size} seed {seed}"));
            }
            let config = options.run_config(parameterization, size, 0);
            for (index, samples) in per_step.iter().enumerate() {
                let (mean, loss) = average(samples);
                rows.push(CoordRow {
                    parameterization,
                    width: config.width,
                    depth: config.depth,
                    step: index as u64 + 1,
                    embedding: mean.embedding,
                    attention_branch: mean.attention_branch,
                    mlp_branch: mean.mlp_branch,
                    residual: mean.residual,
                    logits: mean.logits,
                    loss,
                });
            }
        }
    }
    Ok(CoordTable {
        axis: options.axis,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_recovers_a_power_law() {
        let points: Vec<(f64, f64)> = [2.0, 4.0, 8.0, 16.0]
            .iter()
            .map(|&x: &f64| (x, 3.0 * x.powf(-0.5)))
            .collect();
        assert!((log_log_slope(&points) + 0.5).abs() < 1e-12);
        assert_eq!(fitted_slope(&points), Some(log_log_slope(&points)));
        // Points that cannot go on log axes are left out; one size is not a fit.
        let mut noisy = points.clone();
        noisy.push((32.0, f64::NAN));
        noisy.push((64.0, 0.0));
        assert!((fitted_slope(&noisy).unwrap() + 0.5).abs() < 1e-12);
        assert_eq!(fitted_slope(&[(2.0, 1.0), (2.0, 3.0)]), None);
        assert_eq!(fitted_slope(&[]), None);
    }

    #[test]
    fn defaults_are_valid_and_limits_are_enforced() {
        for axis in [CoordAxis::Depth, CoordAxis::Width] {
            assert_eq!(CoordOptions::defaults(axis).validate(), Ok(()));
        }
        let refused = |change: fn(&mut CoordOptions), word: &str| {
            let mut options = CoordOptions::defaults(CoordAxis::Depth);
            change(&mut options);
            let message = options.validate().unwrap_err();
            assert!(message.contains(word), "{message}");
        };
        refused(|o| o.depths = vec![], "depths");
        refused(|o| o.depths = vec![2, 1000], "depths");
        refused(|o| o.steps = 0, "steps");
        refused(|o| o.lr = f64::NAN, "lr");
        refused(
            |o| o.parameterizations = vec![Parameterization::Alpha],
            "alpha",
        );
        refused(|o| o.width = 100, "multiple of d_head");
        refused(
            |o| {
                o.seeds = 16;
                o.depths = (1..=8).collect();
            },
            "models",
        );
    }

    #[test]
    fn rows_with_non_finite_values_round_trip_through_json() {
        let row = CoordRow {
            parameterization: Parameterization::Sp,
            width: 64,
            depth: 2,
            step: 1,
            embedding: 1.0,
            attention_branch: 2.0,
            mlp_branch: 3.0,
            residual: f64::INFINITY,
            logits: 5.0,
            loss: f64::NAN,
        };
        let json = serde_json::to_string(&row).unwrap();
        let back: CoordRow = serde_json::from_str(&json).unwrap();
        assert!(back.residual.is_nan() && back.loss.is_nan());
        assert_eq!(back.mlp_branch, 3.0);
    }
}
