//! One-click studies: the paper's experiments packaged as ready-made run sets, sized to finish on
//! a small CPU machine, with an estimate of their run time before launch.
//!
//! - **Depth transfer** (paper Fig. 1 and 3): a fixed width, several depths, a grid of base
//!   learning rates at every depth, under several parameterizations. The analysis reads the
//!   optimal LR at each depth and its drift in octaves per doubling of depth
//!   ([`crate::fit::transfer`]).
//! - **Compute efficiency** (paper Fig. 4 and 5): a few compute scales, several width/depth shapes
//!   at each, every model trained at a fixed number of tokens per non-embedding parameter. The
//!   analysis fits loss against FLOPs per parameterization, the FLOP savings at matched loss and
//!   the width/depth tolerance ([`crate::fit::shape`]).
//! - **Coordinate check** (paper Fig. 6 and 7): the depth and width coordinate checks and the
//!   linearization check, run as diagnostics rather than training runs.
//!
//! Everything here is pure: settings, their defaults per size, the expansion into run configs
//! and the run-time estimate. Storing and launching is the web layer's job.
//!
//! Run-time model: `seconds = C / R + s * L * c`, with `C` the run's FLOPs (training plus
//! validation forward passes), `s` its steps, `L` its depth, `R` a sustained FLOP rate and `c`
//! a fixed cost per block and step (kernel launches, element-wise passes, optimizer bookkeeping,
//! which dominate small models). [`Throughput::calibrate`] fits `R` and `c` to the runs this
//! server has finished; until there are enough, the defaults measured on a 2-core CPU apply.

use crate::flops::FlopBreakdown;
use crate::param::Parameterization;
use crate::train::{RunConfig, TrainError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The studies shapewise can run in one click.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StudyKind {
    DepthTransfer,
    CoordCheck,
    ComputeEfficiency,
}

impl StudyKind {
    pub const ALL: [StudyKind; 3] = [
        StudyKind::DepthTransfer,
        StudyKind::CoordCheck,
        StudyKind::ComputeEfficiency,
    ];

    /// The kind's name in URLs, JSON and the `sweeps.kind` column.
    pub fn name(self) -> &'static str {
        match self {
            StudyKind::DepthTransfer => "depth-transfer",
            StudyKind::CoordCheck => "coord-check",
            StudyKind::ComputeEfficiency => "compute-efficiency",
        }
    }

    pub fn parse(name: &str) -> Option<StudyKind> {
        StudyKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// A title for pages.
    pub fn title(self) -> &'static str {
        match self {
            StudyKind::DepthTransfer => "Depth transfer",
            StudyKind::CoordCheck => "Coordinate check",
            StudyKind::ComputeEfficiency => "Compute efficiency",
        }
    }

    /// What the study answers, in one sentence.
    pub fn question(self) -> &'static str {
        match self {
            StudyKind::DepthTransfer => {
                "Does the optimal learning rate found at a shallow model still hold when the model gets deeper?"
            }
            StudyKind::CoordCheck => {
                "Do activations and updates keep their size as depth and width grow, and does every layer still learn non-linearly?"
            }
            StudyKind::ComputeEfficiency => {
                "At a fixed compute budget, which parameterization reaches the lower loss, how many FLOPs does that save, and how much do the width/depth proportions matter?"
            }
        }
    }
}

/// The size knob: how much compute a study spends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudySize {
    /// A quick look: about a quarter of the default compute or less.
    Small,
    /// About an hour on a 2-core CPU.
    #[default]
    Default,
    /// About four times the default.
    Large,
}

impl StudySize {
    pub const ALL: [StudySize; 3] = [StudySize::Small, StudySize::Default, StudySize::Large];

    pub fn name(self) -> &'static str {
        match self {
            StudySize::Small => "small",
            StudySize::Default => "default",
            StudySize::Large => "large",
        }
    }

    pub fn parse(name: &str) -> Option<StudySize> {
        StudySize::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Settings of a depth-transfer study. The base shape is `width x min(depths)`, so at the
/// shallowest depth every muP-family parameterization trains the same model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthTransferSettings {
    pub parameterizations: Vec<Parameterization>,
    /// The fixed width `N`.
    pub width: usize,
    pub depths: Vec<usize>,
    /// Base learning rates `eta` tried at every depth (the plan scales them per group).
    pub lrs: Vec<f64>,
    /// Training tokens of every run (fixed across depths, as in the paper).
    pub tokens: u64,
    pub seeds: Vec<u64>,
    pub d_head: usize,
    pub context: usize,
    pub batch: usize,
}

impl DepthTransferSettings {
    /// The settings of each size. Default: width 128, depths 2 to 16, seven LRs an octave apart
    /// (2^-9 to 2^-3), 2^19 tokens per run, muP, depth-muP and CompleteP: 84 runs.
    pub fn for_size(size: StudySize) -> DepthTransferSettings {
        let octaves = |lo: i32, hi: i32| (lo..=hi).map(|k| 2f64.powi(k)).collect::<Vec<_>>();
        let (depths, lrs, tokens) = match size {
            StudySize::Small => (vec![2, 4, 8], octaves(-9, -4), 1 << 18),
            StudySize::Default => (vec![2, 4, 8, 16], octaves(-9, -3), 1 << 19),
            StudySize::Large => (vec![2, 4, 8, 16, 32], octaves(-10, -3), 1 << 20),
        };
        DepthTransferSettings {
            parameterizations: vec![
                Parameterization::Mup,
                Parameterization::DepthMup,
                Parameterization::CompleteP,
            ],
            width: 128,
            depths,
            lrs,
            tokens,
            seeds: vec![0],
            d_head: 64,
            context: 128,
            batch: 16,
        }
    }

    /// One run config per parameterization, depth, LR and seed.
    pub fn runs(&self) -> Result<Vec<RunConfig>, StudyError> {
        non_empty("parameterizations", self.parameterizations.len())?;
        non_empty("depths", self.depths.len())?;
        non_empty("lrs", self.lrs.len())?;
        non_empty("seeds", self.seeds.len())?;
        let base_depth = *self.depths.iter().min().unwrap_or(&1);
        let mut runs = Vec::new();
        for &parameterization in &self.parameterizations {
            for &depth in &self.depths {
                for &lr in &self.lrs {
                    for &seed in &self.seeds {
                        runs.push(RunConfig {
                            parameterization,
                            width: self.width,
                            depth,
                            d_head: self.d_head,
                            context: self.context,
                            batch: self.batch,
                            base_width: self.width,
                            base_depth,
                            lr,
                            // The paper's depth-transfer sweeps use no weight decay.
                            weight_decay: 0.0,
                            tokens: Some(self.tokens),
                            seed,
                            ..RunConfig::default()
                        });
                    }
                }
            }
        }
        Ok(runs)
    }
}

/// Settings of a compute-efficiency study: at each target non-embedding parameter count, one
/// shape per depth (the width that comes closest to the target, a multiple of `d_head`), every
/// run trained on `tokens_per_param` tokens per non-embedding parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeEfficiencySettings {
    pub parameterizations: Vec<Parameterization>,
    /// Target non-embedding parameter counts, one per compute scale.
    pub params: Vec<u64>,
    /// Depths tried at every scale (shapes whose width would fall below `d_head` are skipped).
    pub depths: Vec<usize>,
    /// Tokens per non-embedding parameter (Chinchilla-optimal is about 20).
    pub tokens_per_param: f64,
    /// Base learning rate, tuned at the base shape.
    pub lr: f64,
    /// The base shape the learning rate was tuned at.
    pub base_width: usize,
    pub base_depth: usize,
    pub seeds: Vec<u64>,
    pub d_head: usize,
    pub context: usize,
    pub batch: usize,
}

impl ComputeEfficiencySettings {
    /// The settings of each size. Default: 100k, 200k and 400k non-embedding parameters, depths
    /// 1, 2, 4 and 8 (N:L from about 5 to 180), 20 tokens per parameter, muP against CompleteP.
    pub fn for_size(size: StudySize) -> ComputeEfficiencySettings {
        let params = match size {
            StudySize::Small => vec![50_000, 100_000, 200_000],
            StudySize::Default => vec![100_000, 200_000, 400_000],
            StudySize::Large => vec![200_000, 400_000, 800_000],
        };
        ComputeEfficiencySettings {
            parameterizations: vec![Parameterization::Mup, Parameterization::CompleteP],
            params,
            depths: vec![1, 2, 4, 8],
            tokens_per_param: 20.0,
            lr: 2f64.powi(-7),
            base_width: 128,
            base_depth: 2,
            seeds: vec![0],
            d_head: 16,
            context: 128,
            batch: 16,
        }
    }

    /// The width, a multiple of `d_head`, whose non-embedding parameter count at `depth` is
    /// closest to `target` (in ratio), or `None` when even the narrowest width overshoots it by
    /// more than 2x. From `P = L (12 N^2 + 13 N) + 2 N` (section 4 of the spec).
    pub fn width_for(&self, target: u64, depth: usize) -> Option<usize> {
        let params = |n: usize| crate::flops::params_non_embedding(n, depth, true) as f64;
        let target = target as f64;
        let ideal = (target / (12.0 * depth as f64)).sqrt();
        let step = self.d_head.max(1);
        let below = ((ideal / step as f64).floor() as usize).max(1) * step;
        let best = [below, below + step]
            .into_iter()
            .min_by(|&a, &b| {
                let miss = |n| (params(n) / target).ln().abs();
                miss(a).total_cmp(&miss(b))
            })
            .unwrap_or(below);
        (params(best) <= 2.0 * target).then_some(best)
    }

    /// One run config per parameterization, scale, depth and seed.
    pub fn runs(&self) -> Result<Vec<RunConfig>, StudyError> {
        non_empty("parameterizations", self.parameterizations.len())?;
        non_empty("params", self.params.len())?;
        non_empty("depths", self.depths.len())?;
        non_empty("seeds", self.seeds.len())?;
        let mut runs = Vec::new();
        for &parameterization in &self.parameterizations {
            for &target in &self.params {
                for &depth in &self.depths {
                    let Some(width) = self.width_for(target, depth) else {
                        continue;
                    };
                    for &seed in &self.seeds {
                        runs.push(RunConfig {
                            parameterization,
                            width,
                            depth,
                            d_head: self.d_head,
                            context: self.context,
                            batch: self.batch,
                            base_width: self.base_width,
                            base_depth: self.base_depth,
                            lr: self.lr,
                            tokens: None,
                            tokens_per_param: self.tokens_per_param,
                            seed,
                            ..RunConfig::default()
                        });
                    }
                }
            }
        }
        if runs.is_empty() {
            return Err(StudyError::Invalid(format!(
                "no shape fits: every target parameter count in {:?} is too small for d_head {} at depths {:?}",
                self.params, self.d_head, self.depths
            )));
        }
        Ok(runs)
    }
}

/// Why a study request cannot be expanded.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Run(#[from] TrainError),
}

fn non_empty(field: &str, len: usize) -> Result<(), StudyError> {
    if len == 0 {
        return Err(StudyError::Invalid(format!(
            "'{field}' must be a non-empty list"
        )));
    }
    Ok(())
}

/// Settings of a study given as JSON overrides of the size's defaults: `overrides` is an object
/// whose keys are fields of `T` (unknown keys are refused).
pub fn settings_with_overrides<T>(
    defaults: &T,
    overrides: Option<Map<String, Value>>,
) -> Result<T, StudyError>
where
    T: Serialize + serde::de::DeserializeOwned,
{
    let Value::Object(mut merged) =
        serde_json::to_value(defaults).map_err(|e| StudyError::Invalid(e.to_string()))?
    else {
        return Err(StudyError::Invalid("settings are not an object".into()));
    };
    for (key, value) in overrides.unwrap_or_default() {
        if !merged.contains_key(&key) {
            let known: Vec<&str> = merged.keys().map(String::as_str).collect();
            return Err(StudyError::Invalid(format!(
                "unknown setting '{key}': this study has {}",
                known.join(", ")
            )));
        }
        merged.insert(key, value);
    }
    serde_json::from_value(Value::Object(merged))
        .map_err(|e| StudyError::Invalid(format!("invalid settings: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Run-time estimate

/// How fast this machine trains: `seconds = flops / flops_per_second + steps * depth *
/// seconds_per_block_step` (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Throughput {
    /// Sustained FLOP rate `R` on large matmuls.
    pub flops_per_second: f64,
    /// Fixed cost `c` of one block in one training step, in seconds.
    pub seconds_per_block_step: f64,
    /// Runs the numbers were fitted to; 0 for the built-in defaults.
    pub calibrated_on: usize,
}

/// One finished run, as the calibration sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimedRun {
    pub flops: f64,
    /// `steps * depth`.
    pub block_steps: f64,
    pub seconds: f64,
}

impl Default for Throughput {
    /// Measured with `shapewise bench` and the default depth-transfer study on a 2-core x86-64
    /// CPU (burn-flex): about 1.3e11 FLOP/s on 128-wide models, and a few milliseconds per
    /// block and step that dominate models narrower than about 128.
    fn default() -> Throughput {
        Throughput {
            flops_per_second: 1.3e11,
            seconds_per_block_step: 4e-3,
            calibrated_on: 0,
        }
    }
}

/// Fewest finished runs a calibration uses.
pub const MIN_CALIBRATION_RUNS: usize = 5;

impl Throughput {
    /// Seconds a run of `flops` FLOPs, `steps` steps and `depth` blocks takes.
    pub fn seconds(&self, flops: f64, steps: u64, depth: usize) -> f64 {
        flops / self.flops_per_second + (steps * depth as u64) as f64 * self.seconds_per_block_step
    }

    /// Fits `1/R` and `c` by least squares on relative errors (every run weighs the same
    /// whatever its length): minimise `sum ((x/R + b c) / t - 1)^2` over the runs' FLOPs `x`,
    /// block-steps `b` and seconds `t`. Falls back to the defaults with fewer than
    /// [`MIN_CALIBRATION_RUNS`] runs, and to a pure rate (`c = 0`, or `1/R = 0`) when the
    /// two-term fit gives a negative coefficient.
    pub fn calibrate(runs: &[TimedRun]) -> Throughput {
        let runs: Vec<&TimedRun> = runs
            .iter()
            .filter(|r| {
                r.flops.is_finite() && r.flops > 0.0 && r.seconds.is_finite() && r.seconds > 0.0
            })
            .collect();
        if runs.len() < MIN_CALIBRATION_RUNS {
            return Throughput::default();
        }
        // Normal equations of the weighted problem: rows (x/t, b/t), target 1.
        let (mut sxx, mut sxb, mut sbb, mut sx, mut sb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for r in &runs {
            let (x, b) = (r.flops / r.seconds, r.block_steps / r.seconds);
            sxx += x * x;
            sxb += x * b;
            sbb += b * b;
            sx += x;
            sb += b;
        }
        let det = sxx * sbb - sxb * sxb;
        let (inv_rate, per_block) = if det > 0.0 {
            ((sx * sbb - sb * sxb) / det, (sb * sxx - sx * sxb) / det)
        } else {
            (f64::NAN, f64::NAN)
        };
        let (inv_rate, per_block) = if inv_rate > 0.0 && per_block >= 0.0 {
            (inv_rate, per_block)
        } else if sxx > 0.0 && sx / sxx > 0.0 {
            (sx / sxx, 0.0)
        } else {
            return Throughput::default();
        };
        Throughput {
            flops_per_second: 1.0 / inv_rate,
            seconds_per_block_step: per_block,
            calibrated_on: runs.len(),
        }
    }
}

/// What a study will cost before it is launched.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub runs: usize,
    /// Training FLOPs of all runs.
    pub flops: f64,
    /// Estimated seconds on this machine, one run at a time.
    pub seconds: f64,
    pub throughput: Throughput,
}

/// FLOPs of a run including its validation passes: training `C` plus, for each of the
/// evaluations, a forward pass (a third of a training step's FLOPs per token) over the
/// validation set.
pub fn run_flops(config: &RunConfig, vocab: usize) -> Result<(f64, u64), TrainError> {
    let steps = config.total_steps()?;
    let tokens = steps * config.tokens_per_step();
    let per_token = FlopBreakdown::for_tokens(
        config.width,
        config.depth,
        config.context,
        vocab,
        config.biases,
        1,
    )
    .total();
    let evals = match config.eval_every {
        Some(every) => steps / every.max(1) + 1,
        None => 11,
    };
    let val_tokens = (evals * (config.val_sequences * config.context) as u64) as f64;
    Ok((per_token * (tokens as f64 + val_tokens / 3.0), steps))
}

/// The cost of training `runs` one after another at `throughput`. `vocab` is the corpus
/// vocabulary used when a run does not set its own.
pub fn estimate(
    runs: &[RunConfig],
    vocab: usize,
    throughput: Throughput,
) -> Result<Estimate, TrainError> {
    let mut jobs = Vec::with_capacity(runs.len());
    for run in runs {
        let (flops, steps) = run_flops(run, run.vocab.unwrap_or(vocab))?;
        jobs.push(Job {
            flops,
            steps,
            depth: run.depth,
        });
    }
    Ok(estimate_jobs(&jobs, throughput))
}

/// A unit of work for the estimate: FLOPs, training steps and depth of one model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Job {
    pub flops: f64,
    pub steps: u64,
    pub depth: usize,
}

impl Job {
    /// `steps` training steps of a `width x depth` model on `batch x context` tokens each.
    pub fn training(
        width: usize,
        depth: usize,
        context: usize,
        vocab: usize,
        batch: usize,
        steps: u64,
    ) -> Job {
        let tokens = steps * (batch * context) as u64;
        Job {
            flops: FlopBreakdown::for_tokens(width, depth, context, vocab, true, tokens).total(),
            steps,
            depth,
        }
    }
}

/// The cost of `jobs` one after another at `throughput`.
pub fn estimate_jobs(jobs: &[Job], throughput: Throughput) -> Estimate {
    Estimate {
        runs: jobs.len(),
        flops: jobs.iter().map(|j| j.flops).sum(),
        seconds: jobs
            .iter()
            .map(|j| throughput.seconds(j.flops, j.steps, j.depth))
            .sum(),
        throughput,
    }
}

/// A duration for people: "45 s", "12 min", "3.4 h".
pub fn human_duration(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{:.0} s", seconds)
    } else if seconds < 90.0 * 60.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_depth_transfer_is_the_documented_grid() {
        let settings = DepthTransferSettings::for_size(StudySize::Default);
        let runs = settings.runs().unwrap();
        assert_eq!(runs.len(), 3 * 4 * 7);
        for run in &runs {
            assert_eq!((run.base_width, run.base_depth), (128, 2));
            assert_eq!(run.tokens, Some(1 << 19));
            assert_eq!(run.weight_decay, 0.0);
            run.validate().unwrap();
        }
        let lrs: Vec<f64> = settings.lrs.iter().map(|lr| lr.log2()).collect();
        assert_eq!(lrs, vec![-9.0, -8.0, -7.0, -6.0, -5.0, -4.0, -3.0]);
    }

    #[test]
    fn sizes_order_the_compute() {
        let throughput = Throughput::default();
        let cost = |size| {
            let depth = estimate(
                &DepthTransferSettings::for_size(size).runs().unwrap(),
                256,
                throughput,
            )
            .unwrap();
            let compute = estimate(
                &ComputeEfficiencySettings::for_size(size).runs().unwrap(),
                256,
                throughput,
            )
            .unwrap();
            (depth.seconds, compute.seconds)
        };
        let (small, default, large) = (
            cost(StudySize::Small),
            cost(StudySize::Default),
            cost(StudySize::Large),
        );
        assert!(small.0 < default.0 && default.0 < large.0);
        assert!(small.1 < default.1 && default.1 < large.1);
        // The default studies are sized for about an hour on a 2-core CPU.
        for seconds in [default.0, default.1] {
            assert!((1200.0..7200.0).contains(&seconds), "{seconds} s");
        }
    }

    #[test]
    fn compute_efficiency_shapes_hit_their_targets() {
        let settings = ComputeEfficiencySettings::for_size(StudySize::Default);
        let runs = settings.runs().unwrap();
        assert_eq!(runs.len(), 2 * 3 * 4);
        for target in &settings.params {
            for &depth in &settings.depths {
                let width = settings.width_for(*target, depth).unwrap();
                assert_eq!(width % settings.d_head, 0);
                let p = crate::flops::params_non_embedding(width, depth, true) as f64;
                let ratio = p / *target as f64;
                assert!(
                    (0.6..1.6).contains(&ratio),
                    "{target} at depth {depth}: {width} -> {ratio}"
                );
            }
        }
        for run in &runs {
            run.validate().unwrap();
        }
    }

    #[test]
    fn overrides_replace_defaults_and_unknown_keys_are_refused() {
        let defaults = DepthTransferSettings::for_size(StudySize::Small);
        let mut overrides = Map::new();
        overrides.insert("width".into(), Value::from(64));
        let settings = settings_with_overrides(&defaults, Some(overrides)).unwrap();
        assert_eq!(settings.width, 64);
        assert_eq!(settings.depths, defaults.depths);
        let mut bad = Map::new();
        bad.insert("widht".into(), Value::from(64));
        let error = settings_with_overrides(&defaults, Some(bad)).unwrap_err();
        assert!(
            error.to_string().contains("unknown setting 'widht'"),
            "{error}"
        );
        let mut wrong_type = Map::new();
        wrong_type.insert("depths".into(), Value::from("many"));
        assert!(settings_with_overrides(&defaults, Some(wrong_type)).is_err());
    }

    #[test]
    fn calibration_recovers_a_planted_machine() {
        let truth = Throughput {
            flops_per_second: 2e11,
            seconds_per_block_step: 3e-3,
            calibrated_on: 0,
        };
        let runs: Vec<TimedRun> = [
            (1e12, 2000.0),
            (5e12, 800.0),
            (2e13, 4000.0),
            (3e11, 6000.0),
            (8e12, 300.0),
        ]
        .into_iter()
        .map(|(flops, block_steps)| TimedRun {
            flops,
            block_steps,
            seconds: flops / truth.flops_per_second + block_steps * truth.seconds_per_block_step,
        })
        .collect();
        let fitted = Throughput::calibrate(&runs);
        assert_eq!(fitted.calibrated_on, 5);
        assert!((fitted.flops_per_second / 2e11 - 1.0).abs() < 1e-6);
        assert!((fitted.seconds_per_block_step / 3e-3 - 1.0).abs() < 1e-6);
        assert_eq!(Throughput::calibrate(&runs[..4]), Throughput::default());
    }
}
