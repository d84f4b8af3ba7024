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
//! Run-time model: `seconds = C / R + D L N k + o`, with `C` the run's FLOPs (training plus
//! validation forward passes), `D` its training tokens, `L` its depth, `N` its width, `R` a
//! sustained FLOP rate of the matrix products, `k` the cost of the element-wise passes per
//! token, block and unit of width (LayerNorm, activations, softmax, residual adds, optimizer:
//! they dominate models narrower than a few hundred on a CPU) and `o` a fixed cost per run.
//! [`Throughput::calibrate`] scales the defaults measured on a 2-core CPU to the runs this
//! server has finished.

use crate::data::DataSource;
use crate::flops::FlopBreakdown;
use crate::param::Parameterization;
use crate::train::{RunConfig, TrainError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The studies shapewise can run in one click.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StudySize {
    /// A quick look: about a quarter of the default compute or less.
    Small,
    /// About three hours on a 2-core CPU for the depth transfer, at most 75 minutes for the
    /// compute efficiency.
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
    /// The training data, as a run takes it: the built-in corpus by default, or the team's
    /// text or nanoGPT `.bin` data (under the server's data roots).
    pub data: DataSource,
}

impl DepthTransferSettings {
    /// The settings of each size. Default: muP and CompleteP at width 64 (`d_head` 16), depths
    /// 1 to 16, seven base LRs half an octave apart (2^-8.5 to 2^-5.5, around the optimum the
    /// base shape 64x1 reaches in 2^18 tokens), 2^18 tokens per run, three seeds: 210 runs.
    /// Depth 1 makes five depths, so the drift's Student-t interval has three degrees of
    /// freedom instead of two. The seeds average down the loss noise (about 0.02 nats between
    /// neighbouring LRs of one seed), which moves a depth's optimum by a quarter octave: measured
    /// here, CompleteP's drift interval was 0.57 octave wide with one seed and 0.47 with two.
    /// `small` has one seed; `large` adds depth-muP and depth 32.
    pub fn for_size(size: StudySize) -> DepthTransferSettings {
        let half_octaves = |lo: i32, hi: i32| {
            (lo..=hi)
                .map(|k| 2f64.powf(k as f64 / 2.0))
                .collect::<Vec<_>>()
        };
        let (depths, tokens, seeds) = match size {
            StudySize::Small => (vec![1, 2, 4, 8], 1 << 17, vec![0]),
            StudySize::Default => (vec![1, 2, 4, 8, 16], 1 << 18, vec![0, 1, 2]),
            StudySize::Large => (vec![1, 2, 4, 8, 16, 32], 1 << 18, vec![0, 1, 2]),
        };
        let mut parameterizations = vec![Parameterization::Mup, Parameterization::CompleteP];
        if size == StudySize::Large {
            parameterizations.insert(1, Parameterization::DepthMup);
        }
        DepthTransferSettings {
            parameterizations,
            width: 64,
            depths,
            lrs: half_octaves(-17, -11),
            tokens,
            seeds,
            d_head: 16,
            context: 128,
            batch: 16,
            data: RunConfig::default().data,
        }
    }

    /// One run config per depth, LR, seed and parameterization, in that order of loops: the
    /// parameterizations alternate, so a study stopped partway compares them on the same grid.
    pub fn runs(&self) -> Result<Vec<RunConfig>, StudyError> {
        non_empty("parameterizations", self.parameterizations.len())?;
        non_empty("depths", self.depths.len())?;
        non_empty("lrs", self.lrs.len())?;
        non_empty("seeds", self.seeds.len())?;
        let base_depth = *self.depths.iter().min().unwrap_or(&1);
        let mut depths = self.depths.clone();
        depths.sort_unstable();
        let mut runs = Vec::new();
        for &depth in &depths {
            for &lr in &self.lrs {
                for &seed in &self.seeds {
                    for &parameterization in &self.parameterizations {
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
                            data: self.data.clone(),
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
/// shape per depth (the width that comes closest to the target, a multiple of `d_head`; a shape
/// two targets share is trained once), every run trained on `tokens_per_param` tokens per
/// non-embedding parameter, each parameterization at its own tuned base learning rate.
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
    /// Base learning rate of each parameterization, in the order of `parameterizations` (one
    /// value applies to all), tuned at the base shape's width and the study's middle depth.
    pub lrs: Vec<f64>,
    /// The base shape the learning rates were tuned at.
    pub base_width: usize,
    pub base_depth: usize,
    pub seeds: Vec<u64>,
    pub d_head: usize,
    pub context: usize,
    pub batch: usize,
    /// The training data, as a run takes it (see [`DepthTransferSettings::data`]).
    pub data: DataSource,
}

/// The tuned base learning rates of the default compute-efficiency study: the optimal base LR
/// of each parameterization at depth 4 (the geometric middle of the study's depths 2, 4 and 8)
/// in the default three-seed depth-transfer study on the built-in corpus (width 64, base shape
/// 64x1, `d_head` 16, 2^18 tokens; README, *Studies*), rounded to a quarter octave. muP's
/// optimum moves with depth, so it is tuned where the study's shapes sit; CompleteP's does not.
pub const TUNED_BASE_LRS: [(Parameterization, f64); 2] = [
    // Measured optimum 2^-7.08 (seed mean of three).
    (Parameterization::Mup, 0.007_812_5), // 2^-7
    // Measured optimum 2^-7.00 (seed mean of three).
    (Parameterization::CompleteP, 0.007_812_5), // 2^-7
];

impl ComputeEfficiencySettings {
    /// The settings of each size. Default: 12.5k to 100k non-embedding parameters a factor 2
    /// apart at depths 2, 4 and 8 (9 distinct shapes from 16x2 to 48x4: seven compute scales
    /// over 2.2 decades), 20 tokens per parameter, muP against CompleteP, each at its tuned
    /// base LR ([`TUNED_BASE_LRS`]), two seeds: 36 runs. The savings come from the runs matched
    /// at equal compute ([`crate::fit::matched`]), whose pair scatter the second seed halves.
    /// `small` has one seed.
    pub fn for_size(size: StudySize) -> ComputeEfficiencySettings {
        let (params, seeds) = match size {
            StudySize::Small => (vec![12_500, 25_000, 50_000], vec![0]),
            StudySize::Default => (vec![12_500, 25_000, 50_000, 100_000], vec![0, 1]),
            StudySize::Large => (vec![12_500, 25_000, 50_000, 100_000, 200_000], vec![0, 1]),
        };
        let (parameterizations, lrs) = TUNED_BASE_LRS.into_iter().unzip();
        ComputeEfficiencySettings {
            parameterizations,
            params,
            depths: vec![2, 4, 8],
            tokens_per_param: 20.0,
            lrs,
            base_width: 64,
            base_depth: 1,
            seeds,
            d_head: 16,
            context: 128,
            batch: 16,
            data: RunConfig::default().data,
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

    /// The base learning rate of each parameterization, in their order.
    fn lr_per_parameterization(&self) -> Result<Vec<f64>, StudyError> {
        match self.lrs.len() {
            1 => Ok(vec![self.lrs[0]; self.parameterizations.len()]),
            n if n == self.parameterizations.len() => Ok(self.lrs.clone()),
            n => Err(StudyError::Invalid(format!(
                "'lrs' has {n} learning rates for {} parameterizations: give one per \
                 parameterization, in the same order, or one for all",
                self.parameterizations.len()
            ))),
        }
    }

    /// The distinct shapes `(width, depth)`, by target and then depth.
    pub fn shapes(&self) -> Vec<(usize, usize)> {
        let mut shapes = Vec::new();
        for &target in &self.params {
            for &depth in &self.depths {
                if let Some(width) = self.width_for(target, depth)
                    && !shapes.contains(&(width, depth))
                {
                    shapes.push((width, depth));
                }
            }
        }
        shapes
    }

    /// One run config per shape, seed and parameterization, in that order of loops: the
    /// parameterizations alternate, so a study stopped partway compares them at the same
    /// compute scales.
    pub fn runs(&self) -> Result<Vec<RunConfig>, StudyError> {
        non_empty("parameterizations", self.parameterizations.len())?;
        non_empty("params", self.params.len())?;
        non_empty("depths", self.depths.len())?;
        non_empty("seeds", self.seeds.len())?;
        let lrs = self.lr_per_parameterization()?;
        let mut runs = Vec::new();
        for (width, depth) in self.shapes() {
            for &seed in &self.seeds {
                for (&parameterization, &lr) in self.parameterizations.iter().zip(&lrs) {
                    runs.push(RunConfig {
                        parameterization,
                        width,
                        depth,
                        d_head: self.d_head,
                        context: self.context,
                        batch: self.batch,
                        base_width: self.base_width,
                        base_depth: self.base_depth,
                        lr,
                        tokens: None,
                        tokens_per_param: self.tokens_per_param,
                        seed,
                        data: self.data.clone(),
                        ..RunConfig::default()
                    });
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

/// How fast this machine trains: `seconds = flops / flops_per_second + width_token_blocks *
/// seconds_per_width_token_block + seconds_per_run` (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Throughput {
    /// Sustained FLOP rate `R` of the matrix products.
    pub flops_per_second: f64,
    /// Cost `k` of the element-wise passes (LayerNorm, activations, softmax, residual adds,
    /// optimizer), per training token, block and unit of width, in seconds.
    pub seconds_per_width_token_block: f64,
    /// Fixed cost `o` of one run (model set-up, data, evaluation bookkeeping), in seconds.
    pub seconds_per_run: f64,
    /// Runs the numbers were scaled to; 0 for the built-in defaults.
    pub calibrated_on: usize,
}

/// One finished run, as the calibration sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimedRun {
    pub job: Job,
    /// Wall-clock seconds from start to finish.
    pub seconds: f64,
}

impl Default for Throughput {
    /// Fitted (least squares on relative error) to 12 runs of the study shapes (widths 16 to
    /// 96, depths 2 and 4, `d_head` 16, batch 16, context 128, 20k to 262k tokens) on a 2-core
    /// x86-64 CPU with AVX2 (burn-flex); every run lands within 17% of its time.
    fn default() -> Throughput {
        Throughput {
            flops_per_second: 2.77e10,
            seconds_per_width_token_block: 2.08e-7,
            seconds_per_run: 0.75,
            calibrated_on: 0,
        }
    }
}

/// Fewest finished runs a calibration uses.
pub const MIN_CALIBRATION_RUNS: usize = 5;

impl Throughput {
    /// Seconds `job` takes.
    pub fn seconds(&self, job: &Job) -> f64 {
        job.flops / self.flops_per_second
            + job.width_token_blocks * self.seconds_per_width_token_block
            + self.seconds_per_run
    }

    /// The defaults scaled to this machine: every term times the median of measured over
    /// predicted seconds of `runs`. One factor, not a refit of the three terms: the runs of one
    /// server often share a width or a depth, which leaves the terms unidentifiable, while the
    /// shape of the cost model carries over between machines. Falls back to the defaults with
    /// fewer than [`MIN_CALIBRATION_RUNS`] usable runs.
    pub fn calibrate(runs: &[TimedRun]) -> Throughput {
        let defaults = Throughput::default();
        let mut ratios: Vec<f64> = runs
            .iter()
            .filter(|r| r.seconds.is_finite() && r.seconds > 0.0 && r.job.flops.is_finite())
            .map(|r| r.seconds / defaults.seconds(&r.job))
            .filter(|ratio| ratio.is_finite() && *ratio > 0.0)
            .collect();
        if ratios.len() < MIN_CALIBRATION_RUNS {
            return defaults;
        }
        ratios.sort_by(f64::total_cmp);
        let n = ratios.len();
        let factor = if n % 2 == 1 {
            ratios[n / 2]
        } else {
            0.5 * (ratios[n / 2 - 1] + ratios[n / 2])
        };
        Throughput {
            flops_per_second: defaults.flops_per_second / factor,
            seconds_per_width_token_block: defaults.seconds_per_width_token_block * factor,
            seconds_per_run: defaults.seconds_per_run * factor,
            calibrated_on: n,
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
            width_token_blocks: (steps * run.tokens_per_step()) as f64
                * (run.depth * run.width) as f64,
        });
    }
    Ok(estimate_jobs(&jobs, throughput))
}

/// A unit of work for the estimate: one model's FLOPs and its element-wise volume.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Job {
    pub flops: f64,
    /// Training tokens times depth times width.
    pub width_token_blocks: f64,
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
            width_token_blocks: tokens as f64 * (depth * width) as f64,
        }
    }
}

/// The cost of `jobs` one after another at `throughput`.
pub fn estimate_jobs(jobs: &[Job], throughput: Throughput) -> Estimate {
    Estimate {
        runs: jobs.len(),
        // Folded from +0 (a float `sum` starts at -0, which prints as "-0 s" for no jobs).
        flops: jobs.iter().fold(0.0, |total, j| total + j.flops),
        seconds: jobs
            .iter()
            .fold(0.0, |total, j| total + throughput.seconds(j)),
        throughput,
    }
}

/// Seconds between two of the store's timestamps (`YYYY-MM-DDTHH:MM:SS.sssZ`, UTC), or `None`
/// when either does not parse.
pub fn seconds_between(start: &str, end: &str) -> Option<f64> {
    Some(unix_seconds(end)? - unix_seconds(start)?)
}

/// Seconds since 1970-01-01 of a `YYYY-MM-DDTHH:MM:SS[.fff]Z` timestamp (days from the civil
/// date by Howard Hinnant's algorithm).
fn unix_seconds(stamp: &str) -> Option<f64> {
    let stamp = stamp.strip_suffix('Z').unwrap_or(stamp);
    let (date, time) = stamp.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (date.next()??, date.next()??, date.next()??);
    let mut time = time.splitn(3, ':');
    let hours: f64 = time.next()?.parse().ok()?;
    let minutes: f64 = time.next()?.parse().ok()?;
    let seconds: f64 = time.next()?.parse().ok()?;
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days as f64 * 86_400.0 + hours * 3600.0 + minutes * 60.0 + seconds)
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
        assert_eq!(runs.len(), 2 * 5 * 7 * 3);
        for run in &runs {
            assert_eq!((run.base_width, run.base_depth), (64, 1));
            assert_eq!(run.tokens, Some(1 << 18));
            assert_eq!(run.weight_decay, 0.0);
            run.validate().unwrap();
        }
        let lrs: Vec<f64> = settings.lrs.iter().map(|lr| lr.log2()).collect();
        let half_octaves: Vec<f64> = (-17..=-11).map(|k| k as f64 / 2.0).collect();
        for (lr, expected) in lrs.iter().zip(&half_octaves) {
            assert!((lr - expected).abs() < 1e-12, "{lrs:?}");
        }
        // Depth reaches 16, and the parameterizations alternate run by run.
        assert_eq!(runs.iter().map(|r| r.depth).max(), Some(16));
        assert_eq!(runs[0].parameterization, Parameterization::Mup);
        assert_eq!(runs[1].parameterization, Parameterization::CompleteP);
        assert_eq!((runs[0].depth, runs[0].lr), (runs[1].depth, runs[1].lr));
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
        // The default compute-efficiency study takes at most 75 minutes on a 2-core CPU, the
        // depth transfer about three hours.
        assert!((600.0..4500.0).contains(&default.1), "{} s", default.1);
        assert!((600.0..11000.0).contains(&default.0), "{} s", default.0);
    }

    #[test]
    fn compute_efficiency_shapes_hit_their_targets() {
        let settings = ComputeEfficiencySettings::for_size(StudySize::Default);
        let runs = settings.runs().unwrap();
        let shapes = settings.shapes();
        assert_eq!(runs.len(), 2 * 2 * shapes.len());
        for (i, shape) in shapes.iter().enumerate() {
            assert!(!shapes[..i].contains(shape), "{shape:?} twice");
        }
        for target in &settings.params {
            for &depth in &settings.depths {
                let Some(width) = settings.width_for(*target, depth) else {
                    continue;
                };
                assert_eq!(width % settings.d_head, 0);
                let p = crate::flops::params_non_embedding(width, depth, true) as f64;
                let ratio = p / *target as f64;
                assert!(
                    (0.5..2.0).contains(&ratio),
                    "{target} at depth {depth}: {width} -> {ratio}"
                );
            }
        }
        // Each parameterization at its own tuned LR, alternating run by run.
        for pair in runs.chunks(2) {
            assert_eq!(pair[0].parameterization, Parameterization::Mup);
            assert_eq!(pair[1].parameterization, Parameterization::CompleteP);
            assert_eq!(
                (pair[0].width, pair[0].depth),
                (pair[1].width, pair[1].depth)
            );
            for (run, (parameterization, lr)) in pair.iter().zip(TUNED_BASE_LRS) {
                assert_eq!((run.parameterization, run.lr), (parameterization, lr));
            }
        }
        for run in &runs {
            run.validate().unwrap();
        }
        let mut mismatched = settings.clone();
        mismatched.lrs = vec![0.01, 0.02, 0.03];
        let error = mismatched.runs().unwrap_err().to_string();
        assert!(
            error.contains("'lrs' has 3 learning rates for 2"),
            "{error}"
        );
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
    fn calibration_scales_the_defaults_to_the_machine() {
        let defaults = Throughput::default();
        let jobs = [
            Job::training(64, 4, 128, 256, 16, 100),
            Job::training(32, 8, 128, 256, 16, 400),
            Job::training(128, 2, 128, 256, 16, 50),
            Job::training(16, 2, 128, 256, 16, 1000),
            Job::training(96, 4, 128, 256, 16, 300),
        ];
        // A machine 1.5 times slower, with one run twice as slow again (an outlier the
        // median ignores).
        let runs: Vec<TimedRun> = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| TimedRun {
                job: *job,
                seconds: defaults.seconds(job) * if i == 2 { 3.0 } else { 1.5 },
            })
            .collect();
        let fitted = Throughput::calibrate(&runs);
        assert_eq!(fitted.calibrated_on, 5);
        for job in &jobs[..2] {
            let ratio = fitted.seconds(job) / defaults.seconds(job);
            assert!((ratio - 1.5).abs() < 1e-9, "{ratio}");
        }
        assert_eq!(Throughput::calibrate(&runs[..4]), defaults);
    }

    #[test]
    fn store_timestamps_give_durations() {
        let d = seconds_between("2026-02-28T23:59:30.250Z", "2026-03-01T00:01:00.750Z");
        assert_eq!(d, Some(90.5));
        let year = seconds_between("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z");
        assert_eq!(year, Some(366.0 * 86_400.0));
        assert_eq!(seconds_between("yesterday", "2025-01-01T00:00:00Z"), None);
    }
}
