//! FLOP savings from runs matched at equal compute: the estimator that pairs each run of one
//! parameterization with the run of the other at the same FLOPs (the same width, depth and
//! tokens in a study), so that what is particular to a shape cancels.
//!
//! Reading savings off two separately fitted curves, `1 - C_X(L) / C_Y(L)`, compares two
//! extrapolated curves whose difference is a fraction of their scatter: with a few frontier
//! points per curve and 1% scatter, two near-parallel curves are barely told apart (the
//! interval spans tens of points). The runs themselves hold a sharper comparison: at each
//! compute `C_s` trained by both, the loss difference `dL_s = L_baseline,s - L_candidate,s`
//! (each side averaged over its seeds) is what the candidate gains there.
//!
//! A loss difference becomes a compute ratio through the slope of the baseline's compute
//! frontier, `sigma(C) = -dL/d ln C = b A C^-b` (nats per e-fold of compute) of its fitted
//! `L(C) = E + A C^-b`: to first order the baseline needs `k_s = exp(dL_s / sigma(C_s))` times
//! the compute to gain `dL_s` along its frontier. The estimate is the mean log ratio
//! `r = mean_s ln k_s` over the `n` matched computes, and the savings are `1 - exp(-r)` (the
//! share of the baseline's compute the candidate does without), as for the curve reading.
//!
//! Its interval combines the two sources of error on `r`: the scatter of the matched pairs,
//! `se_pairs = sd(ln k_s) / sqrt(n)`, and the slope, the spread of `r` recomputed with each
//! bootstrap resample of the baseline's curve (`se_slope`, from the central 95% of the
//! resamples, see [`robust_spread`]);
//! `r +- t_{n-1, (1+c)/2} sqrt(se_pairs^2 + se_slope^2)` (Student-t, since `n` is small),
//! mapped through `1 - exp(-r)`. The savings are an average over the computes the study
//! trained, between its smallest and largest matched run, not a reading at one loss.

use serde::{Deserialize, Serialize};

use super::transfer::student_t_quantile;
use super::{Interval, PowerLaw};

/// The fewest computes trained by both sides the estimator accepts (the Student-t interval then
/// has 3 degrees of freedom).
pub const MIN_MATCHED_COMPUTES: usize = 4;

/// Runs whose FLOPs differ by less than this fraction are at the same compute.
const SAME_COMPUTE: f64 = 1e-9;

/// FLOP savings of a candidate over a baseline from runs matched at equal compute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchedSavings {
    /// `1 - exp(-r)`, with `r` the mean log compute ratio.
    pub savings: f64,
    /// The Student-t interval of the savings (see the module docs).
    pub interval: Interval,
    /// The mean log compute ratio `r` (e-folds of baseline compute the candidate's gain is
    /// worth).
    pub log_ratio: f64,
    /// Standard error of `r` from the scatter of the matched pairs.
    pub se_pairs: f64,
    /// Standard error of `r` from the uncertainty of the baseline's slope.
    pub se_slope: f64,
    /// The matched computes (FLOPs), increasing.
    pub computes: Vec<f64>,
    /// Mean loss difference `L_baseline - L_candidate` at each matched compute (nats/token).
    pub loss_differences: Vec<f64>,
}

/// Mean loss per distinct compute: `(flops, mean loss)`, increasing in FLOPs.
fn by_compute(runs: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = runs
        .iter()
        .copied()
        .filter(|(c, l)| c.is_finite() && *c > 0.0 && l.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut groups: Vec<(f64, f64, usize)> = Vec::new();
    for (c, l) in sorted {
        match groups.last_mut() {
            Some(g) if (c - g.0).abs() <= SAME_COMPUTE * g.0 => {
                g.1 += l;
                g.2 += 1;
            }
            _ => groups.push((c, l, 1)),
        }
    }
    groups
        .into_iter()
        .map(|(c, sum, n)| (c, sum / n as f64))
        .collect()
}

/// `-dL/d ln C = b A C^-b` of `curve` at `compute`; `None` unless positive and finite.
fn slope(curve: &PowerLaw, compute: f64) -> Option<f64> {
    let s = curve.b * curve.a * compute.powf(-curve.b);
    (s.is_finite() && s > 0.0).then_some(s)
}

/// Mean of `dL_s / sigma(C_s)` over the pairs; `None` when a slope is not positive.
fn mean_log_ratio(pairs: &[(f64, f64)], curve: &PowerLaw) -> Option<f64> {
    let mut sum = 0.0;
    for &(c, dl) in pairs {
        sum += dl / slope(curve, c)?;
    }
    Some(sum / pairs.len() as f64)
}

/// The central 95% range of `values` over `2 x 1.96` (the standard deviation of a normal
/// distribution, but not moved by the few resample curves that fit a wild slope: on the
/// default compute-efficiency study about 1% of them give a mean log ratio 50 times the
/// others'); 0 with fewer than 2 values.
fn robust_spread(mut values: Vec<f64>) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.975) - at(0.025)) / (2.0 * 1.959_964)
}

/// Savings of `candidate` over `baseline` from their runs (`(flops, final loss)`, seeds as
/// separate entries) at the computes both trained, with the baseline's fitted curve and its
/// bootstrap resamples for the slope. `None` with fewer than [`MIN_MATCHED_COMPUTES`] matched
/// computes or a curve that does not fall with compute.
pub fn matched_savings(
    candidate: &[(f64, f64)],
    baseline: &[(f64, f64)],
    baseline_curve: &PowerLaw,
    baseline_resamples: &[PowerLaw],
    confidence: f64,
) -> Option<MatchedSavings> {
    let candidate = by_compute(candidate);
    let pairs: Vec<(f64, f64)> = by_compute(baseline)
        .into_iter()
        .filter_map(|(c, base)| {
            let (_, cand) = candidate
                .iter()
                .find(|(cc, _)| (cc - c).abs() <= SAME_COMPUTE * c)?;
            Some((c, base - cand))
        })
        .collect();
    let n = pairs.len();
    if n < MIN_MATCHED_COMPUTES {
        return None;
    }
    let ratios: Vec<f64> = pairs
        .iter()
        .map(|&(c, dl)| Some(dl / slope(baseline_curve, c)?))
        .collect::<Option<_>>()?;
    let r = ratios.iter().sum::<f64>() / n as f64;
    let var = ratios.iter().map(|x| (x - r).powi(2)).sum::<f64>() / (n - 1) as f64;
    let se_pairs = (var / n as f64).sqrt();
    let resampled: Vec<f64> = baseline_resamples
        .iter()
        .filter_map(|curve| mean_log_ratio(&pairs, curve))
        .collect();
    let se_slope = robust_spread(resampled);
    let se = se_pairs.hypot(se_slope);
    let t = student_t_quantile(0.5 + confidence / 2.0, (n - 1) as f64);
    let savings_of = |r: f64| 1.0 - (-r).exp();
    Some(MatchedSavings {
        savings: savings_of(r),
        interval: Interval {
            estimate: savings_of(r),
            low: savings_of(r - t * se),
            high: savings_of(r + t * se),
            // The delta method: d savings / dr = exp(-r).
            std: (-r).exp() * se,
        },
        log_ratio: r,
        se_pairs,
        se_slope,
        computes: pairs.iter().map(|p| p.0).collect(),
        loss_differences: pairs.iter().map(|p| p.1).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// A baseline frontier `L(C) = 2 + 40 C^-0.15`, a candidate that is the baseline with its
    /// compute multiplied by `k` (`L_cand(C) = L_base(k C)`), at eight computes over three
    /// decades, each shape `u_s` off the frontier by the same amount for both (the shape effect
    /// the pairing cancels), with independent noise `noise` per run and two seeds.
    /// `(flops, loss)` of every run of one side.
    type Runs = Vec<(f64, f64)>;

    fn planted(k: f64, noise: f64) -> (Runs, Runs, PowerLaw) {
        let base = PowerLaw {
            e: 2.0,
            a: 40.0,
            b: 0.15,
        };
        let mut rng = SplitMix64::new(11);
        let (mut cand, mut baseline) = (Vec::new(), Vec::new());
        for s in 0..8 {
            let c = 1e10 * 10f64.powf(3.0 * s as f64 / 7.0);
            let shape_penalty = 0.05 * (rng.next_f64() - 0.5);
            for _seed in 0..2 {
                let mut n = || noise * (2.0 * rng.next_f64() - 1.0) * 3f64.sqrt();
                baseline.push((c, base.loss(c) + shape_penalty + n()));
                cand.push((c, base.loss(k * c) + shape_penalty + n()));
            }
        }
        (cand, baseline, base)
    }

    #[test]
    fn a_planted_compute_multiplier_is_recovered_within_its_interval() {
        // Candidate worth 1.25x compute: savings 1 - 1/1.25 = 20%.
        let (cand, base, curve) = planted(1.25, 0.004);
        let m = matched_savings(&cand, &base, &curve, &[], 0.95).unwrap();
        assert_eq!(m.computes.len(), 8);
        assert!(m.interval.contains(0.2), "{m:?}");
        assert!((m.savings - 0.2).abs() < 0.05, "{m:?}");
        assert!(m.interval.high - m.interval.low < 0.2, "{m:?}");
        // Without noise, the first-order reading is exact up to the curvature of ln C.
        let (cand, base, curve) = planted(1.25, 0.0);
        let m = matched_savings(&cand, &base, &curve, &[], 0.95).unwrap();
        assert!((m.savings - 0.2).abs() < 0.01, "{m:?}");
    }

    #[test]
    fn an_uncertain_slope_widens_the_interval() {
        let (cand, base, curve) = planted(1.25, 0.004);
        let narrow = matched_savings(&cand, &base, &curve, &[], 0.95).unwrap();
        let resamples: Vec<PowerLaw> = [0.1, 0.15, 0.2, 0.12, 0.18]
            .iter()
            .map(|&b| PowerLaw { b, ..curve })
            .collect();
        let wide = matched_savings(&cand, &base, &curve, &resamples, 0.95).unwrap();
        assert_eq!(narrow.savings, wide.savings);
        assert!(wide.se_slope > 0.0 && narrow.se_slope == 0.0);
        assert!(
            wide.interval.high - wide.interval.low > narrow.interval.high - narrow.interval.low
        );
    }

    #[test]
    fn too_few_matched_computes_or_a_flat_curve_give_nothing() {
        let (cand, base, curve) = planted(1.25, 0.004);
        // Only three of the candidate's computes are the baseline's.
        let shifted: Vec<(f64, f64)> = cand
            .iter()
            .enumerate()
            .map(|(i, &(c, l))| (if i < 6 { c } else { c * 1.5 }, l))
            .collect();
        assert!(matched_savings(&shifted, &base, &curve, &[], 0.95).is_none());
        let flat = PowerLaw { b: 0.0, ..curve };
        assert!(matched_savings(&cand, &base, &flat, &[], 0.95).is_none());
    }
}
