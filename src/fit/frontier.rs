//! Loss against compute on the compute frontier, with the irreducible loss bounded by what is
//! known and shared between parameterizations trained on the same data.
//!
//! A study trains several width/depth shapes at each compute scale. Fitting `L(C) = E + A C^-b`
//! through all of them treats the shape-to-shape spread at one scale as noise, and the curve
//! through the middle of it says little about the best model a budget buys. The fit here uses
//! the *compute frontier* instead (Hoffmann et al. 2022, approach 1): runs are grouped into
//! compute scales (runs within a factor [`SCALE_FACTOR`] of a scale's cheapest run), and each
//! scale contributes its lowest-loss run, unless a cheaper scale already reached a lower loss
//! (the frontier is the lower envelope: it only descends).
//!
//! Three parameters through a handful of frontier points are barely identified: `E` trades off
//! against `b` along a long ridge, and a free `E` wanders to 0 or up to the lowest loss. Two
//! pieces of knowledge pin it down:
//!
//! - `E` is bounded: `floor <= E < min L`, with `floor` the data's known entropy rate (nats per
//!   token; the built-in corpus knows it exactly) or 0, and `min L` the lowest loss observed (a
//!   loss below `E` is impossible for a curve that approaches `E` from above).
//! - `E` belongs to the data, not to the parameterization: parameterizations trained on the
//!   same data share one `E` and differ in `A_k` and `b_k`.
//!
//! The fit profiles `E` out. For a fixed `E`, each group's `(a_k, b_k)` (`A_k = exp(a_k)`)
//! minimise the Huber loss of `ln(E + exp(a_k - b_k ln C)) - ln L` (the same objective as
//! [`super::fit_power_law`], see the module docs of [`super`]) by L-BFGS from the least-squares
//! line through `ln(L - E)`; the profile objective, summed over the groups, is scanned on a grid
//! of `E = min L - (min L - floor) s` with `s` log-spaced from 1e-4 to 1, then refined by golden
//! section in `ln s` between the best grid point's neighbours. An optimum at an end of that
//! range is reported as [`EBound`].
//!
//! Intervals come from the bootstrap: each group's runs are resampled with replacement, the
//! frontier is taken again (a scale whose runs were not drawn drops out; the frontier point of a
//! scale weighs as many draws as the scale's runs received, divided by its run count, so that
//! one run per scale is the ordinary bootstrap), and everything is refitted jointly, so that
//! resample `i` of one group pairs with resample `i` of another.

use serde::{Deserialize, Serialize};

use super::{
    BootstrapOptions, FitError, FitOptions, Interval, PowerLaw, Resampler, check_bootstrap,
    check_value, huber, interval, minimize,
};
use crate::rng::mix64;

/// Runs whose FLOPs lie within this factor of the cheapest run of a compute scale belong to
/// that scale (a study's shapes at one scale differ by a few percent).
pub const SCALE_FACTOR: f64 = 1.25;

/// The fewest compute scales each group's frontier needs: with `E` shared or bounded, two
/// points would determine `A` and `b` exactly, so three leave one degree of freedom for the
/// noise; fewer than [`crate::verdict::MIN_SCALES`] make the answer inconclusive, not refused.
pub const MIN_FRONTIER_SCALES: usize = 3;

/// Grid points of the profile scan over `E`.
const SCAN_POINTS: usize = 25;
/// Smallest `s` of the scan: `E` within 1e-4 of the range below the lowest loss.
const SCAN_MIN_S: f64 = 1e-4;
/// Golden-section iterations refining the best grid point (the bracket shrinks by 0.618 each).
const GOLDEN_ITERATIONS: usize = 30;

/// The compute scales of runs with `flops`: indices grouped, scales in increasing compute, each
/// scale starting at its cheapest run and holding the runs within [`SCALE_FACTOR`] of it.
pub fn compute_scales(flops: &[f64]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..flops.len()).collect();
    order.sort_by(|&i, &j| flops[i].total_cmp(&flops[j]).then(i.cmp(&j)));
    let mut scales: Vec<Vec<usize>> = Vec::new();
    let mut start = f64::NAN;
    for i in order {
        match scales.last_mut() {
            Some(scale) if flops[i] <= start * SCALE_FACTOR => scale.push(i),
            _ => {
                start = flops[i];
                scales.push(vec![i]);
            }
        }
    }
    scales
}

/// Which end of its range the fitted `E` sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EBound {
    /// At the known floor (or 0): the data do not pull `E` up.
    Floor,
    /// Just below the lowest observed loss: the curves have not started to bend.
    LowestLoss,
}

/// One group's `(compute FLOPs, loss)` points: all its runs, not only the frontier.
pub type GroupPoints<'a> = &'a [(f64, f64)];

/// The joint fit of groups sharing one `E`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrontierFit {
    /// One curve per group, all with the same `E`.
    pub curves: Vec<PowerLaw>,
    /// Per group, the indices (into its points) of its frontier runs, in increasing compute.
    pub frontiers: Vec<Vec<usize>>,
    /// The lower bound of `E` used (the known floor, or 0).
    pub floor: f64,
    /// The upper bound of `E`: the lowest loss of any group's frontier.
    pub lowest_loss: f64,
    /// Set when `E` sits on an end of `[floor, lowest_loss)`.
    pub e_bound: Option<EBound>,
}

/// [`FrontierFit`] with bootstrap intervals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrontierBootstrap {
    pub fit: FrontierFit,
    /// Interval of the shared `E`.
    pub e: Interval,
    /// Per group, the intervals of `A` and `b`.
    pub a: Vec<Interval>,
    pub b: Vec<Interval>,
    pub confidence: f64,
    /// Per resample, one curve per group (refitted jointly): paired readings such as FLOP
    /// savings come from these.
    pub resamples: Vec<Vec<PowerLaw>>,
}

/// Fits every group's frontier with one shared `E` in `[floor, lowest frontier loss)` (see the
/// module docs). Pass one group for a fit of its own.
///
/// Refuses non-positive or non-finite values, a group with fewer than
/// [`MIN_FRONTIER_SCALES`] compute scales, and a floor at or above the lowest loss.
pub fn fit_frontiers(groups: &[GroupPoints], floor: f64) -> Result<FrontierFit, FitError> {
    Problem::new(groups, floor)?.fit_all().map(|(fit, _)| fit)
}

/// [`fit_frontiers`], then `bootstrap.resamples` joint refits of resampled runs.
pub fn bootstrap_frontiers(
    groups: &[GroupPoints],
    floor: f64,
    bootstrap: &BootstrapOptions,
) -> Result<FrontierBootstrap, FitError> {
    check_bootstrap(bootstrap)?;
    let problem = Problem::new(groups, floor)?;
    let (fit, s) = problem.fit_all()?;
    let mut samplers: Vec<Resampler> = (groups.iter().enumerate())
        .map(|(k, g)| Resampler::new(g.len(), mix64(bootstrap.seed ^ (k as u64 + 1))))
        .collect();
    let mut resamples = Vec::with_capacity(bootstrap.resamples);
    for _ in 0..bootstrap.resamples {
        let counts: Vec<Vec<u32>> = samplers.iter_mut().filter_map(Iterator::next).collect();
        let data = problem.frontier_points(Some(&counts));
        // A resample whose groups all keep one scale or more always has a finite optimum; one
        // that does not is left out (it would say nothing about the curves).
        if let Some((curves, _)) = problem.fit(&data, Some(s)) {
            resamples.push(curves);
        }
    }
    if resamples.is_empty() {
        return Err(FitError::NoOptimum);
    }
    let interval_of = |estimate: f64, value: &dyn Fn(&[PowerLaw]) -> f64| {
        interval(
            estimate,
            resamples.iter().map(|r| value(r)).collect(),
            bootstrap.confidence,
        )
    };
    let e = interval_of(fit.curves[0].e, &|r| r[0].e);
    let a = (0..groups.len())
        .map(|k| interval_of(fit.curves[k].a, &|r| r[k].a))
        .collect();
    let b = (0..groups.len())
        .map(|k| interval_of(fit.curves[k].b, &|r| r[k].b))
        .collect();
    Ok(FrontierBootstrap {
        fit,
        e,
        a,
        b,
        confidence: bootstrap.confidence,
        resamples,
    })
}

/// Centred `ln C`, `ln L` and weights of one group's frontier.
#[derive(Clone, Debug, Default)]
struct WeightedPoints {
    x: Vec<f64>,
    y: Vec<f64>,
    w: Vec<f64>,
}

/// Validated groups: their points, scales and frontiers.
struct Problem<'a> {
    groups: &'a [GroupPoints<'a>],
    scales: Vec<Vec<Vec<usize>>>,
    frontiers: Vec<Vec<usize>>,
    center: f64,
    floor: f64,
    lowest: f64,
}

impl<'a> Problem<'a> {
    fn new(groups: &'a [GroupPoints<'a>], floor: f64) -> Result<Self, FitError> {
        if !(floor >= 0.0 && floor.is_finite()) {
            return Err(FitError::InvalidFloor { floor });
        }
        let mut scales = Vec::with_capacity(groups.len());
        let mut frontiers: Vec<Vec<usize>> = Vec::with_capacity(groups.len());
        for points in groups {
            for (index, &(c, l)) in points.iter().enumerate() {
                check_value(index, "compute", c)?;
                check_value(index, "loss", l)?;
            }
            let flops: Vec<f64> = points.iter().map(|p| p.0).collect();
            let group_scales = descending(points, compute_scales(&flops));
            if group_scales.len() < MIN_FRONTIER_SCALES {
                return Err(FitError::TooFewScales {
                    quantity: "compute scales",
                    needed: MIN_FRONTIER_SCALES,
                    got: group_scales.len(),
                });
            }
            frontiers.push(
                group_scales
                    .iter()
                    .map(|scale| best_of(points, scale.iter().copied()))
                    .collect(),
            );
            scales.push(group_scales);
        }
        if groups.is_empty() {
            return Err(FitError::TooFewScales {
                quantity: "compute scales",
                needed: MIN_FRONTIER_SCALES,
                got: 0,
            });
        }
        let frontier_points =
            || (groups.iter().zip(&frontiers)).flat_map(|(points, f)| f.iter().map(|&i| points[i]));
        let lowest = frontier_points().map(|p| p.1).fold(f64::INFINITY, f64::min);
        if floor >= lowest {
            return Err(FitError::FloorAboveLoss { floor, lowest });
        }
        let (sum, n) = frontier_points().fold((0.0, 0.0), |(s, n), p| (s + p.0.ln(), n + 1.0));
        Ok(Problem {
            groups,
            scales,
            frontiers,
            center: sum / n,
            floor,
            lowest,
        })
    }

    /// The frontier of each group as weighted log points: of all runs (`counts: None`, weight
    /// 1 each), or of a bootstrap resample (per group, draws per run; see the module docs).
    fn frontier_points(&self, counts: Option<&[Vec<u32>]>) -> Vec<WeightedPoints> {
        let mut data = Vec::with_capacity(self.groups.len());
        for (k, points) in self.groups.iter().enumerate() {
            let mut group = WeightedPoints::default();
            for scale in &self.scales[k] {
                let (best, weight) = match counts {
                    None => (best_of(points, scale.iter().copied()), 1.0),
                    Some(counts) => {
                        let drawn = scale.iter().copied().filter(|&i| counts[k][i] > 0);
                        if drawn.clone().next().is_none() {
                            continue;
                        }
                        let draws: u32 = scale.iter().map(|&i| counts[k][i]).sum();
                        (
                            best_of(points, drawn),
                            f64::from(draws) / scale.len() as f64,
                        )
                    }
                };
                let (c, l) = points[best];
                group.x.push(c.ln() - self.center);
                group.y.push(l.ln());
                group.w.push(weight);
            }
            data.push(group);
        }
        data
    }

    /// The joint optimum over `E` and every group's `(a, b)`: the curves and the `s` of `E`.
    /// `near`: the `s` of a previous optimum, scanned first (a bootstrap resample lies close
    /// to the full-data optimum). `None` when no group has a finite optimum or a group has no
    /// points.
    fn fit(&self, data: &[WeightedPoints], near: Option<f64>) -> Option<(Vec<PowerLaw>, f64)> {
        if data.iter().any(|g| g.y.is_empty()) {
            return None;
        }
        let lowest = data
            .iter()
            .flat_map(|g| g.y.iter())
            .copied()
            .fold(f64::INFINITY, f64::min)
            .exp();
        let span = lowest - self.floor;
        let e_of = |ln_s: f64| lowest - span * ln_s.exp();
        let profile = |ln_s: f64| -> (f64, Vec<[f64; 2]>) {
            let e = e_of(ln_s);
            let mut total = 0.0;
            let mut thetas = Vec::with_capacity(data.len());
            for group in data {
                let Some((theta, f)) = fit_group(group, e) else {
                    return (f64::INFINITY, Vec::new());
                };
                total += f;
                thetas.push(theta);
            }
            (total, thetas)
        };
        // Scan ln s on a grid, then refine between the best point's neighbours.
        let (low, high) = (SCAN_MIN_S.ln(), 0.0);
        let mut grid: Vec<f64> = (0..SCAN_POINTS)
            .map(|j| low + (high - low) * j as f64 / (SCAN_POINTS - 1) as f64)
            .collect();
        if let Some(s) = near {
            grid.push(s.ln().clamp(low, high));
        }
        let values: Vec<f64> = grid.iter().map(|&t| profile(t).0).collect();
        let best = (0..grid.len()).min_by(|&i, &j| values[i].total_cmp(&values[j]))?;
        if !values[best].is_finite() {
            return None;
        }
        let step = (high - low) / (SCAN_POINTS - 1) as f64;
        let (mut a, mut b) = ((grid[best] - step).max(low), (grid[best] + step).min(high));
        let ratio = (5f64.sqrt() - 1.0) / 2.0;
        let (mut c, mut d) = (b - ratio * (b - a), a + ratio * (b - a));
        let (mut fc, mut fd) = (profile(c).0, profile(d).0);
        for _ in 0..GOLDEN_ITERATIONS {
            if fc <= fd {
                (b, d, fd) = (d, c, fc);
                c = b - ratio * (b - a);
                fc = profile(c).0;
            } else {
                (a, c, fc) = (c, d, fd);
                d = a + ratio * (b - a);
                fd = profile(d).0;
            }
        }
        // The best of the refined point and the bracket's ends (an optimum on a bound).
        let candidates = [(a + b) / 2.0, grid[best], low.max(a), high.min(b)];
        let (ln_s, (_, thetas)) = candidates
            .iter()
            .map(|&t| (t, profile(t)))
            .min_by(|p, q| p.1.0.total_cmp(&q.1.0))?;
        let e = e_of(ln_s);
        let curves = thetas
            .iter()
            .map(|&[a_c, b]| PowerLaw {
                e,
                a: (a_c + b * self.center).exp(),
                b,
            })
            .collect();
        Some((curves, ln_s.exp()))
    }

    /// The fit of every run's frontier, and the `s` of its `E`.
    fn fit_all(&self) -> Result<(FrontierFit, f64), FitError> {
        let (curves, s) = self
            .fit(&self.frontier_points(None), None)
            .ok_or(FitError::NoOptimum)?;
        Ok((self.result(curves, s), s))
    }

    fn result(&self, curves: Vec<PowerLaw>, s: f64) -> FrontierFit {
        let e_bound = if s >= 0.99 {
            Some(EBound::Floor)
        } else if s <= 2.0 * SCAN_MIN_S {
            Some(EBound::LowestLoss)
        } else {
            None
        };
        FrontierFit {
            curves,
            frontiers: self.frontiers.clone(),
            floor: self.floor,
            lowest_loss: self.lowest,
            e_bound,
        }
    }
}

/// The index of the lowest-loss point among `indices` (the first of equal ones).
/// The scales (in increasing compute) whose best run reaches a lower loss than every cheaper
/// scale's: the frontier only descends. A scale whose best shape costs more and ends higher
/// than a cheaper run is not compute-efficient, whatever its shape, and would bend the curve
/// up.
fn descending(points: &[(f64, f64)], scales: Vec<Vec<usize>>) -> Vec<Vec<usize>> {
    let mut lowest = f64::INFINITY;
    scales
        .into_iter()
        .filter(|scale| {
            let loss = points[best_of(points, scale.iter().copied())].1;
            let lower = loss < lowest;
            lowest = lowest.min(loss);
            lower
        })
        .collect()
}

fn best_of(points: &[(f64, f64)], indices: impl Iterator<Item = usize>) -> usize {
    indices
        .min_by(|&i, &j| points[i].1.total_cmp(&points[j].1).then(i.cmp(&j)))
        .expect("a compute scale holds at least one run")
}

/// One group's `(a_c, b)` at a fixed `E` and its objective; `None` without a finite optimum.
fn fit_group(group: &WeightedPoints, e: f64) -> Option<([f64; 2], f64)> {
    let objective = |t: &[f64; 2], g: &mut [f64; 2]| group_objective(group, e, t, g);
    minimize(&[least_squares_start(group, e)], &objective, &START_OPTIONS)
}

/// One start is enough for a two-parameter fit from the least-squares line.
const START_OPTIONS: FitOptions = FitOptions {
    huber_delta: super::EPOCH_HUBER_DELTA,
    max_iterations: 200,
    tolerance: 1e-12,
    screen_iterations: 0,
    screen_keep: None,
};

/// The weighted least-squares line `ln(L - E) = a_c - b x`, a start for the Huber fit (a
/// single scale gives slope 0).
fn least_squares_start(group: &WeightedPoints, e: f64) -> [f64; 2] {
    let z: Vec<f64> = group
        .y
        .iter()
        .map(|&y| (y.exp() - e).max(1e-300).ln())
        .collect();
    let sw: f64 = group.w.iter().sum();
    let mx = group
        .x
        .iter()
        .zip(&group.w)
        .map(|(x, w)| x * w)
        .sum::<f64>()
        / sw;
    let mz = z.iter().zip(&group.w).map(|(z, w)| z * w).sum::<f64>() / sw;
    let (mut sxz, mut sxx) = (0.0, 0.0);
    for ((x, z), w) in group.x.iter().zip(&z).zip(&group.w) {
        sxz += w * (x - mx) * (z - mz);
        sxx += w * (x - mx) * (x - mx);
    }
    let slope = if sxx > 0.0 { sxz / sxx } else { 0.0 };
    [mz - slope * mx, -slope]
}

/// Summed Huber loss of `ln(E + exp(a_c - b x)) - ln L` and its gradient in `(a_c, b)`.
fn group_objective(group: &WeightedPoints, e: f64, theta: &[f64; 2], grad: &mut [f64; 2]) -> f64 {
    let [a_c, b] = *theta;
    let mut total = 0.0;
    *grad = [0.0; 2];
    for ((x, &y), &w) in group.x.iter().zip(&group.y).zip(&group.w) {
        let reducible = (a_c - b * x).exp();
        let predicted = e + reducible;
        let (h, dh) = huber(predicted.ln() - y, START_OPTIONS.huber_delta);
        total += w * h;
        // d ln(E + e^u) / du = e^u / (E + e^u).
        let share = reducible / predicted;
        grad[0] += w * dh * share;
        grad[1] -= w * dh * share * x;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Points of `curve` at `scales` compute values, `shapes` per scale (each shape's loss
    /// raised by a penalty up to 3%), with relative Gaussian-ish noise.
    fn planted(
        curve: PowerLaw,
        scales: &[f64],
        shapes: usize,
        noise: f64,
        seed: u64,
    ) -> Vec<(f64, f64)> {
        let mut rng = SplitMix64::new(seed);
        let mut points = Vec::new();
        for &c in scales {
            for shape in 0..shapes {
                let c = c * (1.0 + 0.02 * shape as f64);
                let penalty = 0.03 * shape as f64 / shapes.max(1) as f64;
                let z: f64 = (0..12).map(|_| rng.next_f64()).sum::<f64>() - 6.0;
                points.push((c, curve.loss(c) * (1.0 + penalty) * (1.0 + noise * z)));
            }
        }
        points
    }

    fn decades(from: f64, n: usize, per_decade: f64) -> Vec<f64> {
        (0..n)
            .map(|i| from * 10f64.powf(i as f64 / per_decade))
            .collect()
    }

    #[test]
    fn compute_scales_group_runs_within_the_factor_of_the_cheapest() {
        let scales = compute_scales(&[1.0, 4.0, 1.2, 1.3, 4.9, 5.1]);
        assert_eq!(scales, vec![vec![0, 2], vec![3], vec![1, 4], vec![5]]);
        assert!(compute_scales(&[]).is_empty());
    }

    #[test]
    fn the_frontier_takes_the_best_run_of_each_scale() {
        let points = [
            (1e10, 5.0),
            (1.1e10, 4.0),
            (1e11, 3.5),
            (1.05e11, 3.6),
            (1e12, 3.0),
        ];
        let fit = fit_frontiers(&[&points], 0.0).unwrap();
        assert_eq!(fit.frontiers, vec![vec![1, 2, 4]]);
    }

    #[test]
    fn a_scale_no_better_than_a_cheaper_one_is_off_the_frontier() {
        // The scale at 2e11 holds only a poor shape: worse than the run at 1e11.
        let points = [
            (1e10, 4.0),
            (1e11, 3.5),
            (2e11, 3.7),
            (1e12, 3.0),
            (1e13, 2.8),
        ];
        let fit = fit_frontiers(&[&points], 0.0).unwrap();
        assert_eq!(fit.frontiers, vec![vec![0, 1, 3, 4]]);
        // Too few scales left to fit once the dominated ones go.
        let flat = [(1e10, 4.0), (1e11, 4.1), (1e12, 3.0), (1e13, 3.2)];
        assert!(matches!(
            fit_frontiers(&[&flat], 0.0),
            Err(FitError::TooFewScales { got: 2, .. })
        ));
    }

    #[test]
    fn shared_e_recovers_two_planted_curves_on_their_frontiers() {
        let e = 2.0;
        let cp = PowerLaw {
            e,
            a: 40.0,
            b: 0.12,
        };
        let mup = PowerLaw {
            e,
            a: 52.0,
            b: 0.12,
        };
        let scales = decades(1e12, 10, 2.5);
        let a = planted(cp, &scales, 3, 0.002, 1);
        let b = planted(mup, &scales, 3, 0.002, 2);
        let fit = fit_frontiers(&[&a, &b], 1.5).unwrap();
        let [fa, fb] = [fit.curves[0], fit.curves[1]];
        assert_eq!(fa.e, fb.e);
        assert!((fa.e - e).abs() < 0.1, "E = {}", fa.e);
        assert!(
            (fa.b - 0.12).abs() < 0.02 && (fb.b - 0.12).abs() < 0.02,
            "{fa:?} {fb:?}"
        );
        assert_eq!(fit.e_bound, None);
        // The planted saving at matched loss: 1 - (40/52)^(1/b).
        let loss = cp.loss(1e14);
        let planted_saving = super::super::flop_savings(&cp, &mup, loss).unwrap();
        let fitted = super::super::flop_savings(&fa, &fb, loss).unwrap();
        assert!(
            (fitted - planted_saving).abs() < 0.05,
            "{fitted} vs {planted_saving}"
        );
    }

    #[test]
    fn e_stays_within_its_bounds_and_says_when_it_sits_on_one() {
        // A pure power law (E = 0): the fitted E sits on the floor.
        let pure = PowerLaw {
            e: 0.0,
            a: 30.0,
            b: 0.1,
        };
        let points = planted(pure, &decades(1e10, 6, 2.0), 1, 0.0, 3);
        let fit = fit_frontiers(&[&points], 0.0).unwrap();
        assert_eq!(fit.e_bound, Some(EBound::Floor));
        assert!(fit.curves[0].e >= 0.0);
        // A known floor above the planted E: E is held at the floor, never below it.
        let curve = PowerLaw {
            e: 1.0,
            a: 30.0,
            b: 0.1,
        };
        let points = planted(curve, &decades(1e10, 6, 2.0), 1, 0.0, 4);
        let fit = fit_frontiers(&[&points], 1.5).unwrap();
        assert!(fit.curves[0].e >= 1.5, "{:?}", fit.curves[0]);
        assert_eq!(fit.e_bound, Some(EBound::Floor));
        // A floor at or above the lowest loss is refused.
        let lowest = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        assert!(matches!(
            fit_frontiers(&[&points], lowest),
            Err(FitError::FloorAboveLoss { .. })
        ));
    }

    #[test]
    fn a_group_needs_three_compute_scales() {
        let points = [(1e10, 4.0), (1.1e10, 3.9), (1e11, 3.5)];
        assert!(matches!(
            fit_frontiers(&[&points], 0.0),
            Err(FitError::TooFewScales { got: 2, .. })
        ));
    }

    #[test]
    fn bootstrap_intervals_cover_the_planted_values_and_pair_the_groups() {
        let e = 2.0;
        let cp = PowerLaw {
            e,
            a: 40.0,
            b: 0.12,
        };
        let mup = PowerLaw {
            e,
            a: 52.0,
            b: 0.12,
        };
        let scales = decades(1e12, 10, 2.5);
        let a = planted(cp, &scales, 2, 0.003, 5);
        let b = planted(mup, &scales, 2, 0.003, 6);
        let options = BootstrapOptions {
            resamples: 100,
            seed: 7,
            confidence: 0.95,
        };
        let boot = bootstrap_frontiers(&[&a, &b], 1.5, &options).unwrap();
        assert!(boot.e.contains(e), "{:?}", boot.e);
        assert!(boot.b[0].contains(0.12) && boot.b[1].contains(0.12));
        assert!(boot.resamples.len() >= 95);
        assert!(
            boot.resamples
                .iter()
                .all(|r| r.len() == 2 && r[0].e == r[1].e)
        );
        // Equal seeds, equal intervals.
        let again = bootstrap_frontiers(&[&a, &b], 1.5, &options).unwrap();
        assert_eq!(boot, again);
    }
}
