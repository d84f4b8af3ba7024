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
#[derive(Clone, Debug, PartialEq)]
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

impl CoordOptions {
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoordRow {
    pub parameterization: Parameterization,
    pub width: usize,
    pub depth: usize,
    /// 1-based: step 1 is the forward pass at initialisation.
    pub step: u64,
    pub embedding: f64,
    pub attention_branch: f64,
    pub mlp_branch: f64,
    pub residual: f64,
    pub logits: f64,
    /// Training loss of the step's batch.
    pub loss: f64,
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

impl CoordTable {
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
    if options.steps == 0 || options.seeds == 0 || options.sizes().is_empty() {
        return Err(TrainError::Config(
            "a coordinate check needs at least one size, one step and one seed".into(),
        ));
    }
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
    }
}
