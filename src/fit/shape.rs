//! Width/depth tolerance at matched compute: loss against log(N:L), its optimum and the
//! range of shapes within 1% of it (section 6 of the CompleteP spec, "Width/depth tolerance";
//! the paper's Fig. 5 reads the compute-optimal N:L the same way).
//!
//! **Compute scales.** Runs are sorted by training FLOPs; a scale starts at the cheapest run
//! not yet placed and takes every run whose FLOPs are at most [`DEFAULT_SCALE_FACTOR`] (1.5)
//! times that run's, so the FLOPs within one scale differ by at most a factor of 1.5. Shapes
//! compared at "matched compute" are those of one scale; the scale is labelled by the geometric
//! mean of its FLOPs.
//!
//! **Per scale.** With `x = ln(N:L)`, `N:L` the width divided by the depth (blocks), a
//! least-squares quadratic `q(x)` is fitted to every run's final loss (it needs three distinct
//! shapes, else the scale is skipped with a note). The optimum `x*` is the vertex when the
//! curvature is positive and the vertex lies within the observed shapes; otherwise the shape
//! with the lowest mean loss, flagged (and flagged as an edge when it is the lowest or highest
//! N:L tried). The optimal loss is `L* = q(x*)`, and the shapes within `tolerance` (1% by
//! default) of it are the `x` around `x*` with `q(x) <= (1 + tolerance) L*`, bounded by the roots
//! of `q(x) = (1 + tolerance) L*` and clipped to the observed shapes (flagged when clipped: the
//! tolerant range may extend beyond what was tried). The optimum's interval is a seeded
//! bootstrap: the scale's runs resampled with replacement, the quadratic and optimum refitted,
//! percentiles of the resample `N:L*`.
//!
//! **Pooled penalty.** Normalising each scale by its own `L*`, every run gives a relative excess
//! `r = L / L* - 1`, and one [`ShapePenalty`] `r = k (x - x0)^2` is fitted to all scales at
//! once (those whose optimum is the quadratic's vertex: a scale whose best shape sits at the
//! edge of those tried has no fitted minimum, so its `L*` would bias `r`; every scale enters
//! only when none has a vertex) by least squares: for a fixed `x0` the best `k` is `sum(r u) / sum(u^2)` with
//! `u = (x - x0)^2`, so the residual sum is `sum r^2 - sum(r u)^2 / sum u^2`, minimised over
//! `x0` by a grid search refined by golden-section search (`k > 0` only: a penalty).

use serde::{Deserialize, Serialize};

use super::transfer::{Edge, Quadratic};
use super::{BootstrapOptions, Interval};
use crate::rng::{SplitMix64, mix64};

/// Runs whose FLOPs lie within this factor of a scale's cheapest run belong to that scale.
pub const DEFAULT_SCALE_FACTOR: f64 = 1.5;

/// The default tolerance: shapes within 1% of the optimal loss.
pub const DEFAULT_TOLERANCE: f64 = 0.01;

/// Distinct shapes a scale needs for its quadratic.
pub const MIN_SHAPES: usize = 3;

/// The loss penalty of a shape away from the optimal width-to-depth ratio, pooled over compute
/// scales: `L / L* - 1 = curvature * (ln(N:L) - log_ratio_optimum)^2`, with `N:L` the width
/// divided by the depth (blocks) and `L*` the fitted optimal loss at the same compute.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapePenalty {
    /// `ln(N:L)` of the optimal shape (natural log of width over depth).
    pub log_ratio_optimum: f64,
    /// Relative excess loss per squared unit of `ln(N:L)` away from the optimum (dimensionless).
    pub curvature: f64,
}

impl ShapePenalty {
    /// The predicted relative excess loss `L / L* - 1` of a shape with `N:L = ratio`.
    pub fn excess(&self, ratio: f64) -> f64 {
        self.curvature * (ratio.ln() - self.log_ratio_optimum).powi(2)
    }

    /// The optimal `N:L`, `exp(log_ratio_optimum)`.
    pub fn ratio_optimum(&self) -> f64 {
        self.log_ratio_optimum.exp()
    }

    /// The `N:L` range within `tolerance` of the optimum: `exp(x0 ± sqrt(tolerance / k))`.
    pub fn ratio_range(&self, tolerance: f64) -> [f64; 2] {
        let half = (tolerance / self.curvature).sqrt();
        [
            (self.log_ratio_optimum - half).exp(),
            (self.log_ratio_optimum + half).exp(),
        ]
    }
}

/// One run of a tolerance study.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapePoint {
    /// Width `N` (residual-stream dimension).
    pub width: f64,
    /// Depth `L` (blocks).
    pub depth: f64,
    /// Training FLOPs.
    pub flops: f64,
    /// Final loss (nats/token).
    pub loss: f64,
}

impl ShapePoint {
    /// `N:L`, width over depth.
    pub fn ratio(&self) -> f64 {
        self.width / self.depth
    }
}

/// Settings of a tolerance analysis.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapeOptions {
    /// Relative loss above the optimum still tolerated (default 0.01: 1%).
    pub tolerance: f64,
    /// FLOPs ratio within one compute scale (default 1.5).
    pub scale_factor: f64,
    /// The bootstrap of each scale's optimum; `resamples: 0` skips it.
    pub bootstrap: BootstrapOptions,
}

impl Default for ShapeOptions {
    fn default() -> Self {
        ShapeOptions {
            tolerance: DEFAULT_TOLERANCE,
            scale_factor: DEFAULT_SCALE_FACTOR,
            bootstrap: BootstrapOptions::default(),
        }
    }
}

/// Why a tolerance analysis was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShapeError {
    /// A width, depth, FLOPs or loss value is not positive and finite.
    #[error("point {index}: {quantity} must be positive and finite, got {value}")]
    InvalidPoint {
        /// Index of the point in the input.
        index: usize,
        /// `width`, `depth`, `flops` or `loss`.
        quantity: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A setting is out of range.
    #[error("{0}")]
    InvalidOptions(String),
    /// No compute scale has enough shapes.
    #[error(
        "width/depth tolerance needs a compute scale (FLOPs within a factor of {factor}) with at \
         least {MIN_SHAPES} distinct shapes N:L, got none{detail}: add runs of more shapes at \
         matched compute"
    )]
    NoScale {
        /// The scale factor used.
        factor: f64,
        /// The scales seen and their shapes (starts with ": ", or empty).
        detail: String,
    },
}

/// The tolerance of one compute scale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleTolerance {
    /// Geometric mean of the scale's FLOPs.
    pub flops: f64,
    /// Lowest FLOPs of the scale.
    pub flops_min: f64,
    /// Highest FLOPs of the scale.
    pub flops_max: f64,
    /// The scale's runs.
    pub points: Vec<ShapePoint>,
    /// Distinct `N:L` among them.
    pub shapes: usize,
    /// Loss against `x = ln(N:L)`.
    pub quadratic: Quadratic,
    /// The optimal `N:L`.
    pub ratio_optimum: f64,
    /// `ln` of it.
    pub log_ratio_optimum: f64,
    /// Bootstrap interval of the optimal `N:L`; `None` without resamples or when no resample
    /// kept three shapes.
    pub interval: Option<Interval>,
    /// `L* = q(x*)`, the fitted loss at the optimum (nats/token).
    pub optimal_loss: f64,
    /// Whether the optimum is the quadratic's vertex (else the best observed shape).
    pub from_vertex: bool,
    /// When the optimum is not the vertex: the best shape is the lowest (`low`) or highest
    /// (`high`) N:L tried.
    pub edge: Option<Edge>,
    /// `[low, high]` `N:L` whose fitted loss is within the tolerance of `L*`.
    pub ratio_range: [f64; 2],
    /// The range's low end is the lowest `N:L` tried: it may extend below.
    pub range_clipped_low: bool,
    /// The range's high end is the highest `N:L` tried: it may extend above.
    pub range_clipped_high: bool,
    /// `[lowest, highest]` `N:L` tried.
    pub observed_ratio_range: [f64; 2],
}

/// A compute scale without a fit, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkippedScale {
    /// Geometric mean of the scale's FLOPs.
    pub flops: f64,
    /// Runs of the scale.
    pub points: usize,
    /// Distinct `N:L` among them.
    pub shapes: usize,
    /// Why it was skipped.
    pub reason: String,
}

/// The outcome of a tolerance analysis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapeTolerance {
    /// The tolerance used (relative loss).
    pub tolerance: f64,
    /// The FLOPs factor that defined the scales.
    pub scale_factor: f64,
    /// The confidence level of the intervals.
    pub confidence: f64,
    /// Fitted scales, by ascending FLOPs.
    pub scales: Vec<ScaleTolerance>,
    /// Scales with too few shapes.
    pub skipped: Vec<SkippedScale>,
    /// The penalty pooled over the fitted scales; `None` when the pooled data show no positive
    /// curvature.
    pub penalty: Option<ShapePenalty>,
    /// Optima at an edge, clipped ranges, skipped scales, ...
    pub warnings: Vec<String>,
}

/// Splits points (sorted by FLOPs) into scales: indices into `sorted`.
fn compute_scales(sorted: &[ShapePoint], factor: f64) -> Vec<std::ops::Range<usize>> {
    let mut scales = Vec::new();
    let mut start = 0;
    while start < sorted.len() {
        let limit = sorted[start].flops * factor;
        let end = (start..sorted.len())
            .find(|&i| sorted[i].flops > limit)
            .unwrap_or(sorted.len());
        scales.push(start..end);
        start = end;
    }
    scales
}

/// Distinct values of `x`, ascending, with the weighted mean of `y` at each:
/// `(x, mean y, total weight)`.
fn shape_means(points: &[(f64, f64, f64)]) -> Vec<(f64, f64, f64)> {
    let mut sorted: Vec<(f64, f64, f64)> = points.iter().copied().filter(|p| p.2 > 0.0).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut means: Vec<(f64, f64, f64)> = Vec::new();
    for (x, y, w) in sorted {
        match means.last_mut() {
            Some(last) if last.0 == x => {
                last.1 += w * y;
                last.2 += w;
            }
            _ => means.push((x, w * y, w)),
        }
    }
    for m in &mut means {
        m.1 /= m.2;
    }
    means
}

/// The optimum of one scale's weighted `(x, loss, weight)` points: `(quadratic, x*, vertex?,
/// edge)`; `None` with fewer than three distinct shapes.
fn scale_optimum(points: &[(f64, f64, f64)]) -> Option<(Quadratic, f64, bool, Option<Edge>)> {
    let means = shape_means(points);
    if means.len() < MIN_SHAPES {
        return None;
    }
    let quadratic = Quadratic::fit_weighted(points)?;
    if let Some(x) = quadratic.vertex_in_range() {
        return Some((quadratic, x, true, None));
    }
    let best = (0..means.len()).min_by(|&i, &j| means[i].1.total_cmp(&means[j].1))?;
    let edge = if best == 0 {
        Some(Edge::Low)
    } else if best == means.len() - 1 {
        Some(Edge::High)
    } else {
        None
    };
    Some((quadratic, means[best].0, false, edge))
}

/// The `x` around `x*` with `q(x) <= level`, clipped to `[x_min, x_max]`: `(low, high, clipped
/// low, clipped high)`.
fn tolerant_range(q: &Quadratic, x_star: f64, level: f64) -> (f64, f64, bool, bool) {
    // Roots of c2 u^2 + c1 u + (c0 - level) = 0 in u = x - center.
    let (a, b, c) = (q.c2, q.c1, q.c0 - level);
    let mut roots = Vec::new();
    if a.abs() > f64::EPSILON * (b.abs() + c.abs()) {
        let discriminant = b * b - 4.0 * a * c;
        if discriminant >= 0.0 {
            // The numerically stable pair of roots.
            let s = -0.5 * (b + b.signum() * discriminant.sqrt());
            if s != 0.0 {
                roots.push(s / a);
                roots.push(c / s);
            } else {
                roots.push(0.0);
            }
        }
    } else if b != 0.0 {
        roots.push(-c / b);
    }
    let roots: Vec<f64> = roots.into_iter().map(|u| u + q.center).collect();
    let below = roots
        .iter()
        .copied()
        .filter(|r| *r <= x_star)
        .fold(f64::NEG_INFINITY, f64::max);
    let above = roots
        .iter()
        .copied()
        .filter(|r| *r >= x_star)
        .fold(f64::INFINITY, f64::min);
    let (low, clipped_low) = if below > q.x_min {
        (below, false)
    } else {
        (q.x_min, true)
    };
    let (high, clipped_high) = if above < q.x_max {
        (above, false)
    } else {
        (q.x_max, true)
    };
    (low, high, clipped_low, clipped_high)
}

/// Fits one scale; `Err` is the reason it is skipped.
fn fit_scale(
    points: &[ShapePoint],
    tolerance: f64,
    bootstrap: &BootstrapOptions,
    seed: u64,
) -> Result<ScaleTolerance, String> {
    let weighted: Vec<(f64, f64, f64)> = points
        .iter()
        .map(|p| (p.ratio().ln(), p.loss, 1.0))
        .collect();
    let shapes = shape_means(&weighted).len();
    // A value of x that is a shape tried maps back to that shape's exact N:L.
    let ratio_of = |x: f64| {
        (points.iter())
            .map(ShapePoint::ratio)
            .find(|r| r.ln() == x)
            .unwrap_or_else(|| x.exp())
    };
    if shapes < MIN_SHAPES {
        return Err(format!(
            "{shapes} distinct shape{} N:L, need {MIN_SHAPES}",
            if shapes == 1 { "" } else { "s" }
        ));
    }
    let (quadratic, x_star, from_vertex, edge) =
        scale_optimum(&weighted).ok_or("the quadratic in ln(N:L) is singular")?;
    let optimal_loss = quadratic.value(x_star);
    let (low, high, range_clipped_low, range_clipped_high) =
        tolerant_range(&quadratic, x_star, (1.0 + tolerance) * optimal_loss);

    let interval = if bootstrap.resamples > 0 {
        let mut rng = SplitMix64::new(seed);
        let n = points.len();
        let mut ratios = Vec::with_capacity(bootstrap.resamples);
        for _ in 0..bootstrap.resamples {
            let mut counts = vec![0u32; n];
            for _ in 0..n {
                counts[rng.below(n as u64) as usize] += 1;
            }
            let resample: Vec<(f64, f64, f64)> = (weighted.iter().zip(&counts))
                .map(|(&(x, y, _), &c)| (x, y, f64::from(c)))
                .collect();
            if let Some((_, x, _, _)) = scale_optimum(&resample) {
                ratios.push(x.exp());
            }
        }
        (!ratios.is_empty())
            .then(|| Interval::from_resamples(ratio_of(x_star), ratios, bootstrap.confidence))
    } else {
        None
    };

    let flops_min = points.iter().map(|p| p.flops).fold(f64::INFINITY, f64::min);
    let flops_max = points.iter().map(|p| p.flops).fold(0.0, f64::max);
    let flops = (points.iter().map(|p| p.flops.ln()).sum::<f64>() / points.len() as f64).exp();
    Ok(ScaleTolerance {
        flops,
        flops_min,
        flops_max,
        points: points.to_vec(),
        shapes,
        quadratic,
        ratio_optimum: ratio_of(x_star),
        log_ratio_optimum: x_star,
        interval,
        optimal_loss,
        from_vertex,
        edge,
        ratio_range: [ratio_of(low), ratio_of(high)],
        range_clipped_low,
        range_clipped_high,
        observed_ratio_range: [ratio_of(quadratic.x_min), ratio_of(quadratic.x_max)],
    })
}

/// Fits `r = k (x - x0)^2` to `(x, r)` points by least squares with `k > 0` (see the module
/// docs); `None` when no `x0` gives a positive `k`.
fn pooled_penalty(points: &[(f64, f64)]) -> Option<ShapePenalty> {
    if points.is_empty() {
        return None;
    }
    // The explained sum of squares at x0, and k; minus infinity where k would not be positive.
    let explained = |x0: f64| -> (f64, f64) {
        let (mut ru, mut uu) = (0.0, 0.0);
        for &(x, r) in points {
            let u = (x - x0).powi(2);
            ru += r * u;
            uu += u * u;
        }
        if ru > 0.0 && uu > 0.0 {
            (ru * ru / uu, ru / uu)
        } else {
            (f64::NEG_INFINITY, 0.0)
        }
    };
    let lo = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min) - 2.0;
    let hi = points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max) + 2.0;
    const STEPS: usize = 2000;
    let step = (hi - lo) / STEPS as f64;
    let best = (0..=STEPS)
        .map(|i| lo + step * i as f64)
        .max_by(|&a, &b| explained(a).0.total_cmp(&explained(b).0))?;
    if !explained(best).0.is_finite() {
        return None;
    }
    // Golden-section search for the maximum within one grid step of the best grid point.
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (best - step, best + step);
    for _ in 0..100 {
        let c = b - phi * (b - a);
        let d = a + phi * (b - a);
        if explained(c).0 > explained(d).0 {
            b = d;
        } else {
            a = c;
        }
    }
    let x0 = if explained(0.5 * (a + b)).0 >= explained(best).0 {
        0.5 * (a + b)
    } else {
        best
    };
    let (_, k) = explained(x0);
    (k > 0.0).then_some(ShapePenalty {
        log_ratio_optimum: x0,
        curvature: k,
    })
}

/// The width/depth tolerance per compute scale and the penalty pooled over scales (see the
/// module docs).
///
/// Refuses points with a width, depth, FLOPs or loss that is not positive and finite,
/// settings out of range, and data where no compute scale has three distinct shapes.
pub fn fit_shape_tolerance(
    points: &[ShapePoint],
    options: &ShapeOptions,
) -> Result<ShapeTolerance, ShapeError> {
    if !(options.tolerance.is_finite() && options.tolerance > 0.0) {
        return Err(ShapeError::InvalidOptions(format!(
            "the tolerance must be a positive fraction of the optimal loss, got {}",
            options.tolerance
        )));
    }
    if !(options.scale_factor.is_finite() && options.scale_factor >= 1.0) {
        return Err(ShapeError::InvalidOptions(format!(
            "the scale factor must be at least 1, got {}",
            options.scale_factor
        )));
    }
    let confidence = options.bootstrap.confidence;
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(ShapeError::InvalidOptions(format!(
            "the confidence level must lie strictly between 0 and 1, got {confidence}"
        )));
    }
    for (index, p) in points.iter().enumerate() {
        for (quantity, value) in [
            ("width", p.width),
            ("depth", p.depth),
            ("flops", p.flops),
            ("loss", p.loss),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ShapeError::InvalidPoint {
                    index,
                    quantity,
                    value,
                });
            }
        }
    }
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.flops.total_cmp(&b.flops));

    let mut scales = Vec::new();
    let mut skipped = Vec::new();
    let mut warnings = Vec::new();
    for (index, range) in compute_scales(&sorted, options.scale_factor)
        .into_iter()
        .enumerate()
    {
        let members = &sorted[range];
        let seed = mix64(options.bootstrap.seed ^ index as u64);
        match fit_scale(members, options.tolerance, &options.bootstrap, seed) {
            Ok(scale) => {
                let label = format!("{:.3e} FLOPs", scale.flops);
                if let Some(edge) = scale.edge {
                    warnings.push(format!(
                        "{label}: the best shape is the {} N:L tried ({}); the optimum may lie \
                         beyond the shapes tried",
                        if edge == Edge::Low {
                            "lowest"
                        } else {
                            "highest"
                        },
                        format_ratio(scale.ratio_optimum)
                    ));
                } else if !scale.from_vertex {
                    warnings.push(format!(
                        "{label}: the loss has no minimum inside the shapes tried; the best \
                         shape is used"
                    ));
                }
                if scale.range_clipped_low || scale.range_clipped_high {
                    warnings.push(format!(
                        "{label}: the range within {}% reaches the {} shape tried and may \
                         extend beyond it",
                        options.tolerance * 100.0,
                        match (scale.range_clipped_low, scale.range_clipped_high) {
                            (true, true) => "lowest and the highest",
                            (true, false) => "lowest",
                            _ => "highest",
                        }
                    ));
                }
                scales.push(scale);
            }
            Err(reason) => {
                let flops = (members.iter().map(|p| p.flops.ln()).sum::<f64>()
                    / members.len() as f64)
                    .exp();
                let shapes = shape_means(
                    &(members.iter())
                        .map(|p| (p.ratio().ln(), p.loss, 1.0))
                        .collect::<Vec<_>>(),
                )
                .len();
                warnings.push(format!("{flops:.3e} FLOPs skipped: {reason}"));
                skipped.push(SkippedScale {
                    flops,
                    points: members.len(),
                    shapes,
                    reason,
                });
            }
        }
    }
    if scales.is_empty() {
        let detail = if skipped.is_empty() {
            String::new()
        } else {
            let seen: Vec<String> = (skipped.iter())
                .map(|s| format!("{:.3e} FLOPs: {}", s.flops, s.reason))
                .collect();
            format!(" ({})", seen.join("; "))
        };
        return Err(ShapeError::NoScale {
            factor: options.scale_factor,
            detail,
        });
    }

    // A scale whose optimum is a shape at the edge of those tried has no fitted minimum: its
    // L* is not the optimal loss, and normalising by it would bias the pooled fit. Such scales
    // enter only when no scale has an interior optimum.
    let interior = scales.iter().any(|s| s.from_vertex);
    if interior && scales.iter().any(|s| !s.from_vertex) {
        let left_out: Vec<String> = (scales.iter())
            .filter(|s| !s.from_vertex)
            .map(|s| format!("{:.3e}", s.flops))
            .collect();
        warnings.push(format!(
            "the pooled penalty leaves out the scales without a minimum inside the shapes tried \
             ({} FLOPs)",
            left_out.join(", ")
        ));
    }
    let relative: Vec<(f64, f64)> = (scales.iter())
        .filter(|s| s.from_vertex || !interior)
        .flat_map(|s| {
            (s.points.iter()).map(move |p| (p.ratio().ln(), p.loss / s.optimal_loss - 1.0))
        })
        .collect();
    let penalty = pooled_penalty(&relative);
    if penalty.is_none() {
        warnings.push(
            "no pooled penalty: the losses do not rise away from any shape across the scales"
                .into(),
        );
    }
    Ok(ShapeTolerance {
        tolerance: options.tolerance,
        scale_factor: options.scale_factor,
        confidence,
        scales,
        skipped,
        penalty,
        warnings,
    })
}

/// `N:L` for messages: `32` or `21.3`.
fn format_ratio(ratio: f64) -> String {
    if (ratio - ratio.round()).abs() < 1e-9 {
        format!("{ratio:.0}")
    } else {
        format!("{ratio:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs at `flops` with `N:L = 2^k` for `k` in `ks`, each at depth `d` and width
    /// `N = d 2^k`, loss `l_star (1 + k_curv (ln(N:L) - x0)^2) (1 + noise)`.
    fn planted_scale(
        flops: f64,
        l_star: f64,
        x0: f64,
        curvature: f64,
        ks: std::ops::RangeInclusive<i32>,
        noise: f64,
        seed: u64,
    ) -> Vec<ShapePoint> {
        let mut rng = SplitMix64::new(seed);
        ks.map(|k| {
            let ratio = f64::from(k).exp2();
            let depth = 4.0;
            let x = ratio.ln();
            let jitter = noise * (rng.next_f64() - 0.5);
            ShapePoint {
                width: ratio * depth,
                depth,
                // Within a factor 1.2 of each other: one scale.
                flops: flops * (1.0 + 0.2 * rng.next_f64()),
                loss: l_star * (1.0 + curvature * (x - x0).powi(2)) * (1.0 + jitter),
            }
        })
        .collect()
    }

    fn options(resamples: usize) -> ShapeOptions {
        ShapeOptions {
            bootstrap: BootstrapOptions {
                resamples,
                seed: 3,
                confidence: 0.95,
            },
            ..ShapeOptions::default()
        }
    }

    #[test]
    fn planted_optima_ranges_and_penalty_are_recovered() {
        let x0 = 64f64.ln();
        let curvature = 0.02;
        let mut points = planted_scale(1e17, 3.2, x0, curvature, 2..=10, 0.0, 1);
        points.extend(planted_scale(1e18, 2.9, x0, curvature, 2..=10, 0.0, 2));
        let fit = fit_shape_tolerance(&points, &options(0)).unwrap();
        assert_eq!(fit.scales.len(), 2);
        assert!(fit.skipped.is_empty());
        for (scale, l_star) in fit.scales.iter().zip([3.2, 2.9]) {
            assert!((scale.ratio_optimum / 64.0 - 1.0).abs() < 1e-9, "{scale:?}");
            assert!((scale.optimal_loss - l_star).abs() < 1e-9, "{scale:?}");
            assert!(scale.from_vertex && scale.edge.is_none());
            // q(x) = L* (1 + k (x - x0)^2) <= 1.01 L*  <=>  |x - x0| <= sqrt(0.01 / k).
            let half = (0.01f64 / curvature).sqrt();
            let expected = [(x0 - half).exp(), (x0 + half).exp()];
            for (got, want) in scale.ratio_range.iter().zip(expected) {
                assert!((got / want - 1.0).abs() < 1e-9, "{scale:?}");
            }
            assert!(!scale.range_clipped_low && !scale.range_clipped_high);
            assert_eq!((scale.points.len(), scale.shapes), (9, 9));
            assert_eq!(scale.observed_ratio_range, [4.0, 1024.0]);
            assert!(scale.flops_min <= scale.flops && scale.flops <= scale.flops_max);
            assert!(scale.flops_max / scale.flops_min <= 1.2);
        }
        let penalty = fit.penalty.unwrap();
        assert!((penalty.log_ratio_optimum - x0).abs() < 1e-6, "{penalty:?}");
        assert!((penalty.curvature - curvature).abs() < 1e-9, "{penalty:?}");
        assert!((penalty.ratio_optimum() - 64.0).abs() < 1e-4);
        assert!((penalty.excess(128.0) - curvature * 2f64.ln().powi(2)).abs() < 1e-9);
        assert!(fit.warnings.is_empty(), "{:?}", fit.warnings);
    }

    #[test]
    fn noisy_optima_get_bootstrap_intervals() {
        let x0 = 32f64.ln();
        let mut points = Vec::new();
        for seed in 0..3 {
            points.extend(planted_scale(1e18, 2.9, x0, 0.03, 1..=9, 0.004, seed));
        }
        let fit = fit_shape_tolerance(&points, &options(300)).unwrap();
        let scale = &fit.scales[0];
        assert!((scale.log_ratio_optimum - x0).abs() < 0.15, "{scale:?}");
        let interval = scale.interval.unwrap();
        assert!(interval.contains(32.0), "{interval:?}");
        assert!(interval.low > 16.0 && interval.high < 64.0, "{interval:?}");
        assert_eq!((scale.points.len(), scale.shapes), (27, 9));
        let penalty = fit.penalty.unwrap();
        assert!((penalty.curvature - 0.03).abs() < 0.005, "{penalty:?}");
        assert_eq!(fit, fit_shape_tolerance(&points, &options(300)).unwrap());
    }

    #[test]
    fn edges_and_clipped_ranges_are_flagged() {
        // The optimum N:L 4096 lies above the shapes tried (4 to 256): the best is the highest.
        let points = planted_scale(1e18, 3.0, 4096f64.ln(), 0.02, 2..=8, 0.0, 1);
        let fit = fit_shape_tolerance(&points, &options(0)).unwrap();
        let scale = &fit.scales[0];
        // The quadratic recovers the planted bowl, whose vertex lies outside the shapes.
        assert!(!scale.from_vertex);
        assert_eq!(scale.edge, Some(Edge::High));
        assert_eq!(scale.ratio_optimum, 256.0);
        assert!(scale.range_clipped_high && !scale.range_clipped_low);
        assert_eq!(scale.ratio_range[1], 256.0);
        assert!(
            fit.warnings
                .iter()
                .any(|w| w.contains("highest N:L tried (256)")),
            "{:?}",
            fit.warnings
        );
        // A wide tolerance reaches both ends.
        let points = planted_scale(1e18, 3.0, 32f64.ln(), 0.02, 3..=7, 0.0, 1);
        let wide = ShapeOptions {
            tolerance: 0.5,
            ..options(0)
        };
        let scale = &fit_shape_tolerance(&points, &wide).unwrap().scales[0];
        assert!(scale.range_clipped_low && scale.range_clipped_high);
        assert_eq!(scale.ratio_range, [8.0, 128.0]);
    }

    #[test]
    fn the_pooled_penalty_leaves_out_scales_without_a_minimum() {
        let x0 = 64f64.ln();
        let mut points = planted_scale(1e17, 3.2, x0, 0.02, 2..=10, 0.0, 1);
        // At 1e19 the optimum lies far above the shapes tried.
        points.extend(planted_scale(1e19, 2.5, 4096f64.ln(), 0.05, 2..=8, 0.0, 2));
        let fit = fit_shape_tolerance(&points, &options(0)).unwrap();
        assert_eq!(fit.scales.len(), 2);
        assert_eq!(fit.scales[1].edge, Some(Edge::High));
        let penalty = fit.penalty.unwrap();
        assert!((penalty.log_ratio_optimum - x0).abs() < 1e-6, "{penalty:?}");
        assert!((penalty.curvature - 0.02).abs() < 1e-9, "{penalty:?}");
        assert!(
            fit.warnings
                .iter()
                .any(|w| w.contains("pooled penalty leaves out") && w.contains("1.")),
            "{:?}",
            fit.warnings
        );
    }

    #[test]
    fn scales_group_by_flops_and_small_ones_are_skipped() {
        let x0 = 64f64.ln();
        let mut points = planted_scale(1e18, 2.9, x0, 0.02, 2..=10, 0.0, 1);
        // Two shapes at 1e16: skipped with a note.
        points.extend(planted_scale(1e16, 3.5, x0, 0.02, 5..=6, 0.0, 1));
        let fit = fit_shape_tolerance(&points, &options(0)).unwrap();
        assert_eq!(fit.scales.len(), 1);
        assert_eq!(fit.skipped.len(), 1);
        assert_eq!((fit.skipped[0].points, fit.skipped[0].shapes), (2, 2));
        assert!(
            fit.skipped[0]
                .reason
                .contains("2 distinct shapes N:L, need 3")
        );
        assert!(fit.warnings.iter().any(|w| w.contains("skipped")));

        let scales = compute_scales(
            &[1.0, 1.4, 1.5, 1.6, 2.3, 2.5, 10.0].map(|flops| ShapePoint {
                width: 1.0,
                depth: 1.0,
                flops,
                loss: 1.0,
            }),
            1.5,
        );
        // 1.6 opens a scale that ends before 2.5 > 1.6 * 1.5.
        assert_eq!(scales, vec![0..3, 3..5, 5..6, 6..7]);
    }

    #[test]
    fn refusals_say_what_is_missing() {
        let points = planted_scale(1e18, 2.9, 4.0, 0.02, 5..=6, 0.0, 1);
        let err = fit_shape_tolerance(&points, &options(0)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("at least 3 distinct shapes")
                && message.contains("2 distinct shapes N:L, need 3"),
            "{message}"
        );
        let mut bad = points.clone();
        bad[1].depth = 0.0;
        assert!(matches!(
            fit_shape_tolerance(&bad, &options(0)),
            Err(ShapeError::InvalidPoint {
                index: 1,
                quantity: "depth",
                ..
            })
        ));
        let negative = ShapeOptions {
            tolerance: -0.01,
            ..options(0)
        };
        assert!(matches!(
            fit_shape_tolerance(&points, &negative),
            Err(ShapeError::InvalidOptions(_))
        ));
        assert!(matches!(
            fit_shape_tolerance(&[], &options(0)),
            Err(ShapeError::NoScale { .. })
        ));
    }
}
