//! Learning-rate transfer across depth or width: the optimal LR per size and its drift
//! (section 5 of the CompleteP spec, "LR transfer across depth and width"; the paper's Fig. 1
//! and 3).
//!
//! For every size (depth `L` in blocks, or width `N`) the final losses of a learning-rate grid
//! are averaged over seeds, giving one mean loss per learning rate. A run that diverged counts
//! as worse than any finite loss: a grid point with a diverged seed has no mean loss, is never
//! the best point and stays out of the quadratic, but is counted.
//!
//! The optimum of one size comes from a least-squares quadratic in `x = log2(lr)` through the
//! best grid point and up to two finite neighbours on each side (at least three points):
//! `q(x) = c0 + c1 (x - x_c) + c2 (x - x_c)^2`. With `c2 > 0` and the vertex
//! `x* = x_c - c1 / (2 c2)` inside the fitted points' range, `log2(lr*) = x*` and the predicted
//! loss is `q(x*)`; otherwise the best grid point is the optimum, flagged (`from_vertex:
//! false`). A best point at the lowest or highest learning rate tried is an edge: the true
//! optimum may lie outside the grid.
//!
//! The **drift** is the least-squares slope of `log2(lr*)` against `log2(size)`: how many
//! octaves the optimal learning rate moves per doubling of the size. A parameterization
//! transfers when `|drift| < threshold` (0.25 octave per doubling by default: a quarter of the
//! usual factor-of-two grid step over one doubling).
//!
//! The interval of the drift is
//! - a seeded bootstrap over seeds when the median grid point has at least
//!   [`MIN_BOOTSTRAP_SEEDS`] seeds (fewer seeds give too few distinct resamples: two seeds give
//!   three, and the percentiles would only span the seeds' own drifts): each
//!   resample draws the seeds with replacement, recomputes every mean loss with the draw
//!   counts as weights, every optimum and the slope, and the interval is the percentiles of the
//!   resample slopes (the optima get intervals the same way);
//! - otherwise, with three sizes or more, the Student-t interval of the OLS slope through the
//!   optima of the seed-averaged losses,
//!   `drift ± t_{n-2, (1+c)/2} s / sqrt(S_xx)` with `s^2 = SSR / (n - 2)` and
//!   `S_xx = sum (log2 size - mean)^2` (e.g. Draper & Smith, *Applied Regression Analysis*,
//!   section 1.4); the t quantile is computed here by inverting the regularized incomplete beta
//!   function (see [`student_t_quantile`]);
//! - none with two sizes and one seed: a line through two points has no residual to judge it.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BootstrapOptions, Interval};
use crate::rng::SplitMix64;

/// The default drift threshold: optimal-LR drift below 0.25 octave per doubling transfers.
pub const DEFAULT_DRIFT_THRESHOLD: f64 = 0.25;

/// Grid points a size needs with a finite mean loss (a quadratic has three coefficients).
pub const MIN_LEARNING_RATES: usize = 3;

/// Seeds per grid point (median) from which the drift's interval is a bootstrap over seeds.
pub const MIN_BOOTSTRAP_SEEDS: usize = 5;

/// Neighbours on each side of the best grid point that enter the quadratic.
const NEIGHBOURS: usize = 2;

/// Learning rates whose log2 differ by less than this are one grid point.
const SAME_LR: f64 = 1e-9;

/// The size that varies across the runs of a transfer study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeAxis {
    /// Depth `L`, in transformer blocks.
    #[default]
    Depth,
    /// Width `N`, the residual-stream dimension.
    Width,
}

impl SizeAxis {
    /// `depth` or `width`.
    pub fn name(self) -> &'static str {
        match self {
            SizeAxis::Depth => "depth",
            SizeAxis::Width => "width",
        }
    }

    /// `depths` or `widths`.
    pub fn plural(self) -> &'static str {
        match self {
            SizeAxis::Depth => "depths",
            SizeAxis::Width => "widths",
        }
    }
}

/// Which end of a grid a best point sits at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edge {
    /// The lowest value tried.
    Low,
    /// The highest value tried.
    High,
}

impl Edge {
    /// `low` or `high`.
    pub fn name(self) -> &'static str {
        match self {
            Edge::Low => "low",
            Edge::High => "high",
        }
    }
}

/// One run of a transfer study.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferPoint {
    /// Depth (blocks) or width, per [`SizeAxis`]; positive.
    pub size: f64,
    /// The (base) learning rate; positive.
    pub lr: f64,
    /// Final loss (nats/token); `None`, infinite or NaN when the run diverged.
    pub loss: Option<f64>,
    /// The run's seed; runs of one grid point with different seeds are averaged.
    pub seed: u64,
}

/// Settings of a transfer analysis.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferOptions {
    /// Which size the points vary (only names things in messages).
    pub axis: SizeAxis,
    /// `|drift|` below this transfers, in octaves per doubling (default 0.25).
    pub threshold: f64,
    /// The bootstrap over seeds; `resamples: 0` skips it.
    pub bootstrap: BootstrapOptions,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            axis: SizeAxis::Depth,
            threshold: DEFAULT_DRIFT_THRESHOLD,
            bootstrap: BootstrapOptions::default(),
        }
    }
}

/// Why a transfer analysis was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransferError {
    /// A size or learning rate is not positive and finite.
    #[error("point {index}: {quantity} must be positive and finite, got {value}")]
    InvalidPoint {
        /// Index of the point in the input.
        index: usize,
        /// `size` or `lr`.
        quantity: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A setting is out of range.
    #[error("{0}")]
    InvalidOptions(String),
    /// Fewer than two sizes have an optimum, so there is no drift.
    #[error(
        "LR transfer needs an optimal learning rate at 2 or more {axis}, got {got}{detail}: \
         add runs at more {axis} with at least 3 learning rates each"
    )]
    TooFewSizes {
        /// `depths` or `widths`.
        axis: &'static str,
        /// Sizes with an optimum.
        got: usize,
        /// Why the other sizes have none (starts with "; ", or empty).
        detail: String,
    },
}

/// A least-squares quadratic `q(x) = c0 + c1 (x - center) + c2 (x - center)^2`, fitted on
/// `[x_min, x_max]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quadratic {
    /// The centre the polynomial is expanded around (mean of the fitted x values).
    pub center: f64,
    /// Value at the centre.
    pub c0: f64,
    /// Slope at the centre.
    pub c1: f64,
    /// Curvature coefficient (half the second derivative); positive for a bowl.
    pub c2: f64,
    /// Lowest x fitted.
    pub x_min: f64,
    /// Highest x fitted.
    pub x_max: f64,
}

impl Quadratic {
    /// Least-squares fit to `(x, y)` points; `None` with fewer than three distinct x values
    /// or non-finite input.
    pub fn fit(points: &[(f64, f64)]) -> Option<Quadratic> {
        let weighted: Vec<(f64, f64, f64)> = points.iter().map(|&(x, y)| (x, y, 1.0)).collect();
        Quadratic::fit_weighted(&weighted)
    }

    /// Weighted least-squares fit to `(x, y, weight)` points (weights are multiplicities,
    /// non-negative): minimises `sum w (q(x) - y)^2` by the normal equations in centred `x`.
    pub fn fit_weighted(points: &[(f64, f64, f64)]) -> Option<Quadratic> {
        let points: Vec<(f64, f64, f64)> = points.iter().copied().filter(|p| p.2 > 0.0).collect();
        if points
            .iter()
            .any(|(x, y, w)| !x.is_finite() || !y.is_finite() || !w.is_finite())
        {
            return None;
        }
        let mut xs: Vec<f64> = points.iter().map(|p| p.0).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        if xs.len() < 3 {
            return None;
        }
        let total: f64 = points.iter().map(|p| p.2).sum();
        let center = points.iter().map(|p| p.0 * p.2).sum::<f64>() / total;
        // Normal equations A c = b with A_jk = sum w u^(j+k), b_j = sum w u^j y, u = x - center.
        let mut a = [[0.0; 3]; 3];
        let mut b = [0.0; 3];
        for &(x, y, w) in &points {
            let u = x - center;
            let powers = [1.0, u, u * u];
            for j in 0..3 {
                b[j] += w * powers[j] * y;
                for k in 0..3 {
                    a[j][k] += w * powers[j] * powers[k];
                }
            }
        }
        let [c0, c1, c2] = solve3(a, b)?;
        Some(Quadratic {
            center,
            c0,
            c1,
            c2,
            x_min: xs[0],
            x_max: xs[xs.len() - 1],
        })
    }

    /// `q(x)`.
    pub fn value(&self, x: f64) -> f64 {
        let u = x - self.center;
        self.c0 + self.c1 * u + self.c2 * u * u
    }

    /// The minimum `x* = center - c1 / (2 c2)` when the curvature is positive.
    pub fn vertex(&self) -> Option<f64> {
        (self.c2 > 0.0).then(|| self.center - self.c1 / (2.0 * self.c2))
    }

    /// The vertex when the curvature is positive and it lies within `[x_min, x_max]`.
    pub fn vertex_in_range(&self) -> Option<f64> {
        self.vertex()
            .filter(|x| *x >= self.x_min && *x <= self.x_max)
    }
}

/// Solves a 3x3 linear system by Gaussian elimination with partial pivoting; `None` when it
/// is singular to working precision.
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    let scale = a
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() <= 1e-13 * scale {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..3 {
            let factor = a[row][col] / pivot_row[col];
            for (entry, pivot_entry) in a[row].iter_mut().zip(pivot_row).skip(col) {
                *entry -= factor * pivot_entry;
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let rest: f64 = (row + 1..3).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// One learning rate of one size: the mean final loss over its seeds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrGridPoint {
    /// The learning rate.
    pub lr: f64,
    /// `log2(lr)`.
    pub log2_lr: f64,
    /// Mean final loss over the seeds (nats/token); `None` when a seed diverged.
    pub mean_loss: Option<f64>,
    /// Runs at this learning rate.
    pub runs: usize,
    /// Of which diverged.
    pub diverged: usize,
}

/// The optimal learning rate of one size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizeOptimum {
    /// The depth or width.
    pub size: f64,
    /// The optimal learning rate `lr* = 2^log2_lr`.
    pub lr: f64,
    /// `log2(lr*)`.
    pub log2_lr: f64,
    /// Bootstrap interval of `log2(lr*)` over seeds; `None` without a seed bootstrap.
    pub interval: Option<Interval>,
    /// Loss at the optimum: `q(x*)` from the vertex, else the best grid point's mean loss.
    pub predicted_loss: f64,
    /// Whether the optimum is the quadratic's vertex (else the best grid point, because the
    /// curvature is not positive or the vertex lies outside the fitted points).
    pub from_vertex: bool,
    /// The best grid point is the lowest (`low`) or highest (`high`) learning rate tried.
    pub edge: Option<Edge>,
    /// The grid's learning rate with the lowest mean loss.
    pub best_grid_lr: f64,
    /// The quadratic in `log2(lr)` through the best point and its neighbours.
    pub quadratic: Quadratic,
    /// Runs at this size.
    pub points: usize,
    /// Of which diverged.
    pub diverged: usize,
    /// Every learning rate tried at this size, ascending.
    pub grid: Vec<LrGridPoint>,
}

/// A size without an optimum, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkippedSize {
    /// The depth or width.
    pub size: f64,
    /// Runs at this size.
    pub points: usize,
    /// Of which diverged.
    pub diverged: usize,
    /// Why it has no optimum.
    pub reason: String,
}

/// How the drift interval was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftMethod {
    /// Percentiles of the slope over resamples of the seeds.
    SeedBootstrap,
    /// The Student-t interval of the OLS slope (one seed per grid point, 3 sizes or more).
    StudentT,
}

impl DriftMethod {
    /// `seed_bootstrap` or `student_t`.
    pub fn name(self) -> &'static str {
        match self {
            DriftMethod::SeedBootstrap => "seed_bootstrap",
            DriftMethod::StudentT => "student_t",
        }
    }
}

/// The outcome of a transfer analysis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferFit {
    /// Which size varies.
    pub axis: SizeAxis,
    /// The optimum of every size that has one, by ascending size.
    pub optima: Vec<SizeOptimum>,
    /// Sizes without an optimum.
    pub skipped: Vec<SkippedSize>,
    /// Octaves the optimal learning rate moves per doubling of the size: the OLS slope of
    /// `log2(lr*)` against `log2(size)`.
    pub drift: f64,
    /// The line's `log2(lr*)` at size 1: `log2(lr*) = intercept + drift log2(size)`.
    pub intercept: f64,
    /// Interval of the drift (see [`DriftMethod`]); `None` with two sizes and one seed.
    pub drift_interval: Option<Interval>,
    /// How `drift_interval` was obtained.
    pub method: Option<DriftMethod>,
    /// The confidence level of the intervals.
    pub confidence: f64,
    /// The threshold of the verdict (octaves per doubling).
    pub threshold: f64,
    /// `|drift| < threshold`.
    pub transfers: bool,
    /// Whether the whole interval lies inside `(-threshold, threshold)`.
    pub interval_within_threshold: Option<bool>,
    /// Optima at a grid edge, skipped sizes, resamples without a drift, ...
    pub warnings: Vec<String>,
    /// Runs analysed.
    pub points: usize,
    /// Of which diverged.
    pub diverged: usize,
}

/// The runs at one learning rate: `(lr, [(seed index, loss)])`, loss `None` when diverged.
type LrCell = (f64, Vec<(usize, Option<f64>)>);

/// The runs of one size, grouped by learning rate, ascending.
struct SizeRuns {
    size: f64,
    cells: Vec<LrCell>,
}

impl SizeRuns {
    fn points(&self) -> usize {
        self.cells.iter().map(|c| c.1.len()).sum()
    }

    fn diverged(&self) -> usize {
        self.cells
            .iter()
            .flat_map(|c| &c.1)
            .filter(|r| r.1.is_none())
            .count()
    }

    /// Mean loss per learning rate, each seed weighted by `weights[seed]` (bootstrap draw
    /// counts; `None`: all 1). Grid points none of whose seeds carry weight are left out.
    fn grid(&self, weights: Option<&[u32]>) -> Vec<LrGridPoint> {
        let mut grid = Vec::with_capacity(self.cells.len());
        for (lr, runs) in &self.cells {
            let (mut sum, mut total, mut diverged, mut count) = (0.0, 0.0, 0, 0);
            for &(seed, loss) in runs {
                let w = weights.map_or(1.0, |w| f64::from(w[seed]));
                if w == 0.0 {
                    continue;
                }
                count += 1;
                match loss {
                    Some(l) => {
                        sum += w * l;
                        total += w;
                    }
                    None => diverged += 1,
                }
            }
            if count == 0 {
                continue;
            }
            grid.push(LrGridPoint {
                lr: *lr,
                log2_lr: lr.log2(),
                mean_loss: (diverged == 0).then(|| sum / total),
                runs: count,
                diverged,
            });
        }
        grid
    }
}

/// The optimum of one size's grid, or why there is none.
struct GridOptimum {
    log2_lr: f64,
    predicted_loss: f64,
    from_vertex: bool,
    edge: Option<Edge>,
    best_grid_lr: f64,
    quadratic: Quadratic,
}

fn grid_optimum(grid: &[LrGridPoint]) -> Result<GridOptimum, String> {
    let finite: Vec<(usize, f64, f64)> = (grid.iter().enumerate())
        .filter_map(|(i, p)| Some((i, p.log2_lr, p.mean_loss?)))
        .collect();
    if finite.len() < MIN_LEARNING_RATES {
        let diverged = grid.len() - finite.len();
        let note = if diverged > 0 {
            format!(" ({diverged} diverged)")
        } else {
            String::new()
        };
        return Err(format!(
            "{} learning rate{} with a finite loss{note}, need {MIN_LEARNING_RATES}",
            finite.len(),
            if finite.len() == 1 { "" } else { "s" }
        ));
    }
    // The first of equal minima, i.e. the lowest learning rate among ties.
    let best = (0..finite.len())
        .min_by(|&i, &j| finite[i].2.total_cmp(&finite[j].2))
        .unwrap_or(0);
    let from = best.saturating_sub(NEIGHBOURS);
    let to = (best + NEIGHBOURS).min(finite.len() - 1);
    let window: Vec<(f64, f64)> = finite[from..=to].iter().map(|p| (p.1, p.2)).collect();
    let quadratic =
        Quadratic::fit(&window).ok_or("the quadratic through the best points is singular")?;
    let (grid_index, best_x, best_loss) = finite[best];
    let edge = if grid_index == 0 {
        Some(Edge::Low)
    } else if grid_index == grid.len() - 1 {
        Some(Edge::High)
    } else {
        None
    };
    let (log2_lr, predicted_loss, from_vertex) = match quadratic.vertex_in_range() {
        Some(x) => (x, quadratic.value(x), true),
        None => (best_x, best_loss, false),
    };
    Ok(GridOptimum {
        log2_lr,
        predicted_loss,
        from_vertex,
        edge,
        best_grid_lr: grid[grid_index].lr,
        quadratic,
    })
}

/// OLS line `y = intercept + slope x`: `(slope, intercept, residual sum of squares, S_xx)`.
fn ols(points: &[(f64, f64)]) -> (f64, f64, f64, f64) {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ssr = (points.iter())
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    (slope, intercept, ssr, sxx)
}

fn format_size(size: f64) -> String {
    if size.fract() == 0.0 && size.abs() < 1e15 {
        format!("{size:.0}")
    } else {
        format!("{size}")
    }
}

/// The optimal learning rate per size, its drift across sizes, the drift's interval and the
/// verdict (see the module docs).
///
/// Refuses points with a size or learning rate that is not positive and finite, settings out
/// of range, and data where fewer than two sizes have an optimum.
pub fn fit_transfer(
    points: &[TransferPoint],
    options: &TransferOptions,
) -> Result<TransferFit, TransferError> {
    if !(options.threshold.is_finite() && options.threshold > 0.0) {
        return Err(TransferError::InvalidOptions(format!(
            "the drift threshold must be a positive number of octaves per doubling, got {}",
            options.threshold
        )));
    }
    let confidence = options.bootstrap.confidence;
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(TransferError::InvalidOptions(format!(
            "the confidence level must lie strictly between 0 and 1, got {confidence}"
        )));
    }
    for (index, p) in points.iter().enumerate() {
        for (quantity, value) in [("size", p.size), ("lr", p.lr)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(TransferError::InvalidPoint {
                    index,
                    quantity,
                    value,
                });
            }
        }
    }
    let axis = options.axis;

    // Seeds as indices 0..S, sizes ascending, learning rates ascending within a size.
    let mut seeds: Vec<u64> = points.iter().map(|p| p.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let mut by_size: BTreeMap<u64, Vec<&TransferPoint>> = BTreeMap::new();
    for p in points {
        by_size.entry(p.size.to_bits()).or_default().push(p);
    }
    let mut sizes: Vec<SizeRuns> = by_size
        .into_values()
        .map(|mut runs| {
            let size = runs[0].size;
            runs.sort_by(|a, b| a.lr.total_cmp(&b.lr));
            let mut cells: Vec<LrCell> = Vec::new();
            for p in runs {
                let seed = seeds.binary_search(&p.seed).unwrap_or(0);
                let loss = p.loss.filter(|l| l.is_finite());
                match cells.last_mut() {
                    Some((lr, cell)) if (lr.log2() - p.lr.log2()).abs() < SAME_LR => {
                        cell.push((seed, loss))
                    }
                    _ => cells.push((p.lr, vec![(seed, loss)])),
                }
            }
            SizeRuns { size, cells }
        })
        .collect();
    sizes.sort_by(|a, b| a.size.total_cmp(&b.size));

    let mut optima = Vec::new();
    let mut skipped = Vec::new();
    let mut warnings = Vec::new();
    for runs in &sizes {
        let grid = runs.grid(None);
        let label = format!("{} {}", axis.name(), format_size(runs.size));
        match grid_optimum(&grid) {
            Ok(o) => {
                if let Some(edge) = o.edge {
                    let (which, side) = match edge {
                        Edge::Low => ("lowest", "below"),
                        Edge::High => ("highest", "above"),
                    };
                    warnings.push(format!(
                        "{label}: the best learning rate {} is the {which} tried; the optimum \
                         may lie {side} the grid, extend it",
                        o.best_grid_lr
                    ));
                } else if !o.from_vertex {
                    warnings.push(format!(
                        "{label}: the quadratic has no minimum among the best points; the best \
                         grid learning rate {} is used",
                        o.best_grid_lr
                    ));
                }
                optima.push(SizeOptimum {
                    size: runs.size,
                    lr: o.log2_lr.exp2(),
                    log2_lr: o.log2_lr,
                    interval: None,
                    predicted_loss: o.predicted_loss,
                    from_vertex: o.from_vertex,
                    edge: o.edge,
                    best_grid_lr: o.best_grid_lr,
                    quadratic: o.quadratic,
                    points: runs.points(),
                    diverged: runs.diverged(),
                    grid,
                });
            }
            Err(reason) => {
                warnings.push(format!("{label} skipped: {reason}"));
                skipped.push(SkippedSize {
                    size: runs.size,
                    points: runs.points(),
                    diverged: runs.diverged(),
                    reason,
                });
            }
        }
    }
    if optima.len() < 2 {
        let detail = if skipped.is_empty() {
            String::new()
        } else {
            let reasons: Vec<String> = (skipped.iter())
                .map(|s| format!("{} {}: {}", axis.name(), format_size(s.size), s.reason))
                .collect();
            format!("; {}", reasons.join("; "))
        };
        return Err(TransferError::TooFewSizes {
            axis: axis.plural(),
            got: optima.len(),
            detail,
        });
    }

    let line: Vec<(f64, f64)> = optima.iter().map(|o| (o.size.log2(), o.log2_lr)).collect();
    let (drift, intercept, ssr, sxx) = ols(&line);

    // Median number of seeds per grid point decides the interval method.
    let mut seeds_per_point: Vec<usize> = (sizes.iter())
        .flat_map(|s| &s.cells)
        .map(|(_, runs)| {
            let mut s: Vec<usize> = runs.iter().map(|r| r.0).collect();
            s.sort_unstable();
            s.dedup();
            s.len()
        })
        .collect();
    seeds_per_point.sort_unstable();
    let median_seeds = seeds_per_point[seeds_per_point.len() / 2];

    let (drift_interval, method) =
        if median_seeds >= MIN_BOOTSTRAP_SEEDS && options.bootstrap.resamples > 0 {
            let interval = seed_bootstrap(
                &sizes,
                seeds.len(),
                &mut optima,
                drift,
                &options.bootstrap,
                &mut warnings,
            );
            (interval, interval.map(|_| DriftMethod::SeedBootstrap))
        } else if line.len() >= 3 {
            let dof = (line.len() - 2) as f64;
            let se = (ssr / dof / sxx).sqrt();
            let t = student_t_quantile(0.5 + confidence / 2.0, dof);
            let interval = Interval {
                estimate: drift,
                low: drift - t * se,
                high: drift + t * se,
                std: se,
            };
            (Some(interval), Some(DriftMethod::StudentT))
        } else {
            warnings.push(format!(
                "no interval on the drift: two {} with one seed each leave no residual; add a \
             third {} or more seeds",
                axis.plural(),
                axis.name()
            ));
            (None, None)
        };

    let threshold = options.threshold;
    Ok(TransferFit {
        axis,
        optima,
        skipped,
        drift,
        intercept,
        drift_interval,
        method,
        confidence,
        threshold,
        transfers: drift.abs() < threshold,
        interval_within_threshold: drift_interval.map(|i| i.low > -threshold && i.high < threshold),
        warnings,
        points: points.len(),
        diverged: points
            .iter()
            .filter(|p| !p.loss.is_some_and(f64::is_finite))
            .count(),
    })
}

/// Resamples the seeds, refits every optimum and the drift; sets the optima's intervals and
/// returns the drift's (`None` when no resample has two sizes with an optimum).
fn seed_bootstrap(
    sizes: &[SizeRuns],
    n_seeds: usize,
    optima: &mut [SizeOptimum],
    drift: f64,
    bootstrap: &BootstrapOptions,
    warnings: &mut Vec<String>,
) -> Option<Interval> {
    let mut rng = SplitMix64::new(bootstrap.seed);
    let mut drifts = Vec::with_capacity(bootstrap.resamples);
    let mut per_size: Vec<Vec<f64>> = vec![Vec::new(); optima.len()];
    for _ in 0..bootstrap.resamples {
        let mut weights = vec![0u32; n_seeds];
        for _ in 0..n_seeds {
            weights[rng.below(n_seeds as u64) as usize] += 1;
        }
        let mut line = Vec::new();
        for runs in sizes {
            let Ok(o) = grid_optimum(&runs.grid(Some(&weights))) else {
                continue;
            };
            line.push((runs.size.log2(), o.log2_lr));
            if let Some(k) = optima.iter().position(|p| p.size == runs.size) {
                per_size[k].push(o.log2_lr);
            }
        }
        if line.len() >= 2 {
            drifts.push(ols(&line).0);
        }
    }
    for (optimum, values) in optima.iter_mut().zip(per_size) {
        if !values.is_empty() {
            optimum.interval = Some(Interval::from_resamples(
                optimum.log2_lr,
                values,
                bootstrap.confidence,
            ));
        }
    }
    let dropped = bootstrap.resamples - drifts.len();
    if dropped > 0 {
        warnings.push(format!(
            "{dropped} of {} seed resamples had fewer than two sizes with an optimum and were \
             left out of the drift interval",
            bootstrap.resamples
        ));
    }
    (!drifts.is_empty()).then(|| Interval::from_resamples(drift, drifts, bootstrap.confidence))
}

// ---------------------------------------------------------------------------------------------
// Student-t quantiles

/// `ln Gamma(x)` for `x > 0`, by the Lanczos approximation (g = 7, 9 coefficients; relative
/// error below 1e-13 over the positive reals; Press et al., *Numerical Recipes*, 3rd ed.,
/// section 6.1, with Godfrey's coefficients).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (k, c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (x + k as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularized incomplete beta function `I_x(a, b)` for `a, b > 0`, `0 <= x <= 1`: its
/// continued fraction evaluated by the modified Lentz method, on the side of `x` where it
/// converges fast (Numerical Recipes, 3rd ed., section 6.4).
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// The continued fraction of the incomplete beta function.
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The Student-t distribution function with `dof` degrees of freedom:
/// `F(t) = 1 - I_{dof / (dof + t^2)}(dof / 2, 1 / 2) / 2` for `t >= 0`, and `F(-t) = 1 - F(t)`.
pub fn student_t_cdf(t: f64, dof: f64) -> f64 {
    if t.is_nan() || dof.is_nan() || dof <= 0.0 {
        return f64::NAN;
    }
    let tail = 0.5 * incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t));
    if t >= 0.0 { 1.0 - tail } else { tail }
}

/// The `p` quantile of the Student-t distribution with `dof > 0` degrees of freedom: the `t`
/// with [`student_t_cdf`]`(t) = p`, found by bisection (after bracketing by doubling) to
/// relative precision 1e-12. NaN for `p` outside `(0, 1)` or `dof <= 0`. For example
/// `t_{0.975}` is 12.706 with 1 degree of freedom, 4.303 with 2 and 2.228 with 10.
pub fn student_t_quantile(p: f64, dof: f64) -> f64 {
    if !(p > 0.0 && p < 1.0 && dof > 0.0) {
        return f64::NAN;
    }
    match p.partial_cmp(&0.5) {
        Some(Ordering::Less) => return -student_t_quantile(1.0 - p, dof),
        Some(Ordering::Equal) => return 0.0,
        _ => {}
    }
    let mut high = 1.0;
    while student_t_cdf(high, dof) < p && high < 1e300 {
        high *= 2.0;
    }
    let mut low = 0.0;
    for _ in 0..2000 {
        let mid = 0.5 * (low + high);
        if student_t_cdf(mid, dof) < p {
            low = mid;
        } else {
            high = mid;
        }
        if high - low <= 1e-12 * high {
            break;
        }
    }
    0.5 * (low + high)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loss `base + curvature (log2 lr - optimum)^2` on a grid of learning rates `2^k`,
    /// `k = lo..=hi`, for sizes `sizes` with `log2 lr*(size) = anchor + drift log2(size)`.
    fn bowls(
        sizes: &[f64],
        drift: f64,
        anchor: f64,
        (lo, hi): (i32, i32),
        seeds: &[u64],
        noise: f64,
    ) -> Vec<TransferPoint> {
        let mut rng = SplitMix64::new(17);
        let mut points = Vec::new();
        for &size in sizes {
            let optimum = anchor + drift * size.log2();
            for k in lo..=hi {
                let x = f64::from(k) * 0.5;
                for &seed in seeds {
                    let jitter = noise * (rng.next_f64() - 0.5);
                    points.push(TransferPoint {
                        size,
                        lr: x.exp2(),
                        loss: Some(3.0 - 0.1 * size.log2() + 0.08 * (x - optimum).powi(2) + jitter),
                        seed,
                    });
                }
            }
        }
        points
    }

    fn options(resamples: usize) -> TransferOptions {
        TransferOptions {
            bootstrap: BootstrapOptions {
                resamples,
                seed: 5,
                confidence: 0.95,
            },
            ..TransferOptions::default()
        }
    }

    #[test]
    fn planted_drifts_are_recovered() {
        let sizes = [2.0, 4.0, 8.0, 16.0, 32.0];
        for planted in [-0.5, 0.0, 0.3] {
            // Half-octave grid from 2^-12 to 2^-2; optima from 2^-6 drifting.
            let points = bowls(&sizes, planted, -6.0, (-24, -4), &[0], 0.0);
            let fit = fit_transfer(&points, &options(0)).unwrap();
            assert!(
                (fit.drift - planted).abs() < 0.05,
                "{planted}: {}",
                fit.drift
            );
            assert_eq!(fit.optima.len(), 5);
            for o in &fit.optima {
                let expected = -6.0 + planted * o.size.log2();
                assert!((o.log2_lr - expected).abs() < 1e-9, "{o:?}");
                assert!(o.from_vertex && o.edge.is_none(), "{o:?}");
                let loss = 3.0 - 0.1 * o.size.log2();
                assert!((o.predicted_loss - loss).abs() < 1e-9, "{o:?}");
                assert_eq!((o.points, o.diverged, o.grid.len()), (21, 0, 21));
            }
            // One seed, five sizes: the t interval, exact fit so zero width.
            assert_eq!(fit.method, Some(DriftMethod::StudentT));
            let interval = fit.drift_interval.unwrap();
            assert!(interval.contains(planted), "{interval:?}");
            assert_eq!(fit.transfers, planted.abs() < 0.25);
            assert_eq!(fit.interval_within_threshold, Some(planted.abs() < 0.25));
            assert!(fit.warnings.is_empty(), "{:?}", fit.warnings);
        }
    }

    #[test]
    fn noisy_drift_gets_a_t_interval_and_seeds_a_bootstrap() {
        let sizes = [2.0, 4.0, 8.0, 16.0];
        let points = bowls(&sizes, -0.5, -6.0, (-24, -4), &[0], 0.01);
        let fit = fit_transfer(&points, &options(200)).unwrap();
        assert!((fit.drift + 0.5).abs() < 0.05, "{}", fit.drift);
        assert_eq!(fit.method, Some(DriftMethod::StudentT));
        let interval = fit.drift_interval.unwrap();
        assert!(interval.low < fit.drift && fit.drift < interval.high);
        assert!(interval.contains(-0.5), "{interval:?}");
        assert!(!fit.transfers);
        assert_eq!(fit.interval_within_threshold, Some(false));

        // Two seeds: still the Student-t interval, through the seed-averaged optima.
        let points = bowls(&sizes, 0.0, -6.0, (-24, -4), &[1, 2], 0.01);
        let fit = fit_transfer(&points, &options(200)).unwrap();
        assert_eq!(fit.method, Some(DriftMethod::StudentT));

        let points = bowls(&sizes, 0.0, -6.0, (-24, -4), &[1, 2, 3, 4, 5], 0.01);
        let fit = fit_transfer(&points, &options(200)).unwrap();
        assert_eq!(fit.method, Some(DriftMethod::SeedBootstrap));
        assert!(fit.drift.abs() < 0.05, "{}", fit.drift);
        let interval = fit.drift_interval.unwrap();
        assert!(
            interval.contains(0.0) && interval.high - interval.low < 0.2,
            "{interval:?}"
        );
        assert!(fit.transfers && fit.interval_within_threshold == Some(true));
        for o in &fit.optima {
            let i = o.interval.unwrap();
            assert!(i.contains(-6.0), "{o:?}");
            assert_eq!(o.points, 105);
        }
        // Equal seeds, equal intervals.
        assert_eq!(fit, fit_transfer(&points, &options(200)).unwrap());
    }

    #[test]
    fn two_sizes_have_a_drift_but_no_interval() {
        let points = bowls(&[4.0, 8.0], -0.5, -6.0, (-20, -4), &[0], 0.0);
        let fit = fit_transfer(&points, &options(100)).unwrap();
        assert!((fit.drift + 0.5).abs() < 1e-9);
        assert_eq!((fit.drift_interval, fit.method), (None, None));
        assert_eq!(fit.interval_within_threshold, None);
        assert!(
            fit.warnings[0].contains("no interval on the drift"),
            "{:?}",
            fit.warnings
        );
    }

    #[test]
    fn optima_at_the_grid_edge_are_flagged() {
        // Size 8's optimum (2^-2) lies above its grid (up to 2^-3): the best point is the
        // highest learning rate, the vertex is outside the fitted points.
        let mut points = bowls(&[2.0, 4.0], 0.0, -6.0, (-20, -6), &[0], 0.0);
        points.extend(bowls(&[8.0], 0.0, -2.0, (-20, -6), &[0], 0.0));
        let fit = fit_transfer(&points, &options(0)).unwrap();
        let top = &fit.optima[2];
        assert_eq!(top.edge, Some(Edge::High));
        assert!(!top.from_vertex);
        assert_eq!(top.log2_lr, -3.0);
        assert_eq!(top.best_grid_lr, 0.125);
        assert!(
            fit.warnings
                .iter()
                .any(|w| w.starts_with("depth 8:") && w.contains("highest")),
            "{:?}",
            fit.warnings
        );
        // At the low edge.
        let mut points = bowls(&[2.0, 4.0], 0.0, -6.0, (-20, -6), &[0], 0.0);
        points.extend(bowls(&[8.0], 0.0, -11.0, (-20, -6), &[0], 0.0));
        let fit = fit_transfer(&points, &options(0)).unwrap();
        assert_eq!(fit.optima[2].edge, Some(Edge::Low));
        assert_eq!(fit.optima[2].log2_lr, -10.0);
    }

    #[test]
    fn diverged_runs_count_but_stay_out_of_the_quadratic() {
        let mut points = bowls(&[2.0, 4.0, 8.0], 0.0, -6.0, (-20, -4), &[0], 0.0);
        // Every learning rate at or above 2^-4 diverged at depth 8, and one more is NaN.
        for p in points.iter_mut() {
            if p.size == 8.0 && p.lr >= 0.0625 {
                p.loss = None;
            }
        }
        points.push(TransferPoint {
            size: 8.0,
            lr: 0.5,
            loss: Some(f64::NAN),
            seed: 0,
        });
        let fit = fit_transfer(&points, &options(0)).unwrap();
        let deep = &fit.optima[2];
        assert_eq!((deep.points, deep.diverged), (18, 6));
        assert!((deep.log2_lr + 6.0).abs() < 1e-9, "{deep:?}");
        // Diverged learning rates above the best bound it: no edge.
        assert_eq!(deep.edge, None);
        assert_eq!(deep.grid.last().unwrap().mean_loss, None);
        assert_eq!(fit.diverged, 6);
        assert_eq!(fit.points, points.len());
    }

    #[test]
    fn refusals_say_what_is_missing() {
        // Depth 4 has two learning rates only, depth 2 a full grid.
        let mut points = bowls(&[2.0], 0.0, -6.0, (-20, -4), &[0], 0.0);
        points.extend(bowls(&[4.0], 0.0, -6.0, (-13, -12), &[0], 0.0));
        let err = fit_transfer(&points, &options(0)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("at 2 or more depths, got 1")
                && message.contains("depth 4: 2 learning rates with a finite loss, need 3"),
            "{message}"
        );
        let width = TransferOptions {
            axis: SizeAxis::Width,
            ..options(0)
        };
        let err = fit_transfer(&[], &width).unwrap_err();
        assert_eq!(
            err,
            TransferError::TooFewSizes {
                axis: "widths",
                got: 0,
                detail: String::new()
            }
        );
        let bad = [TransferPoint {
            size: 2.0,
            lr: -0.1,
            loss: Some(3.0),
            seed: 0,
        }];
        let err = fit_transfer(&bad, &options(0)).unwrap_err();
        assert!(matches!(
            err,
            TransferError::InvalidPoint {
                index: 0,
                quantity: "lr",
                ..
            }
        ));
        let zero = TransferOptions {
            threshold: 0.0,
            ..options(0)
        };
        assert!(matches!(
            fit_transfer(&points, &zero),
            Err(TransferError::InvalidOptions(_))
        ));
    }

    #[test]
    fn quadratics_recover_their_coefficients() {
        let points: Vec<(f64, f64)> = (0..7)
            .map(|i| {
                let x = f64::from(i) - 2.0;
                (x, 1.5 - 0.4 * x + 0.25 * x * x)
            })
            .collect();
        let q = Quadratic::fit(&points).unwrap();
        for &(x, y) in &points {
            assert!((q.value(x) - y).abs() < 1e-12);
        }
        assert!((q.vertex().unwrap() - 0.8).abs() < 1e-12);
        assert_eq!((q.x_min, q.x_max), (-2.0, 4.0));
        assert!(Quadratic::fit(&points[..2]).is_none());
        assert!(Quadratic::fit(&[(1.0, 1.0), (1.0, 2.0), (2.0, 3.0)]).is_none());
        let concave = Quadratic::fit(&[(0.0, 0.0), (1.0, 1.0), (2.0, 0.0)]).unwrap();
        assert_eq!(concave.vertex(), None);
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        // Two-sided 95% critical values (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2).
        for (dof, expected) in [
            (1.0, 12.706),
            (2.0, 4.303),
            (3.0, 3.182),
            (5.0, 2.571),
            (10.0, 2.228),
            (30.0, 2.042),
            (100.0, 1.984),
        ] {
            let t = student_t_quantile(0.975, dof);
            assert!((t - expected).abs() < 1e-3, "{dof}: {t}");
            assert!((student_t_cdf(t, dof) - 0.975).abs() < 1e-10);
        }
        assert!((student_t_quantile(0.995, 4.0) - 4.604).abs() < 1e-3);
        assert!((student_t_quantile(0.025, 10.0) + 2.228).abs() < 1e-3);
        assert_eq!(student_t_quantile(0.5, 3.0), 0.0);
        assert!(student_t_quantile(1.0, 3.0).is_nan());
        // Many degrees of freedom approach the normal quantile 1.95996.
        assert!((student_t_quantile(0.975, 1e6) - 1.95996).abs() < 1e-4);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }
}
