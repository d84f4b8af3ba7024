//! Whether the runs support an answer: the rules every fitted answer (compute fits, FLOP
//! savings, plans, study analyses) is checked against, and the verdict they produce.
//!
//! A verdict is *conclusive* unless a rule says otherwise; warnings are plain sentences. The
//! thresholds (documented in the README, section *Verdicts*):
//!
//! | rule | warning | inconclusive |
//! |---|---|---|
//! | savings interval | | wider than ±[`SAVINGS_HALF_WIDTH`] (20 points in all) or spanning 0 |
//! | extrapolation beyond the largest run | past [`EXTRAPOLATION_WARN`]x | past [`EXTRAPOLATION_LIMIT`]x |
//! | compute coverage of a fit | | fewer than [`MIN_SCALES`] compute scales or less than [`MIN_DECADES`] decade |
//! | target differs from the runs (vocabulary, context, data) | always, naming the difference | |
//! | `E` on a bound, a predicted loss below the known floor | always | |
//! | LR drift across depth or width | | no interval, wider than ±[`DRIFT_HALF_WIDTH`], or across the transfer threshold |

use serde::{Deserialize, Serialize};

use crate::numbers::significant as sig;

/// Half-width (in savings, 0.10 = 10 points) beyond which a savings interval is inconclusive.
pub const SAVINGS_HALF_WIDTH: f64 = 0.10;
/// Extrapolation factor (target compute over the largest run's) beyond which a warning is given.
pub const EXTRAPOLATION_WARN: f64 = 10.0;
/// Extrapolation factor beyond which a prediction is inconclusive.
pub const EXTRAPOLATION_LIMIT: f64 = 100.0;
/// Fewest compute scales a conclusive fit needs (three points fit any three-parameter curve).
pub const MIN_SCALES: usize = 4;
/// Fewest decades of compute a conclusive fit spans.
pub const MIN_DECADES: f64 = 1.0;
/// Half-width (octaves of learning rate per doubling of the size) beyond which an LR-drift
/// interval is inconclusive.
pub const DRIFT_HALF_WIDTH: f64 = 0.25;

/// Whether an answer is supported by its runs, and why not.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verdict {
    /// `false` when a rule found the runs cannot support the answer (see `warnings`).
    pub conclusive: bool,
    /// Every rule that fired, inconclusive ones first, as plain sentences.
    pub warnings: Vec<String>,
    /// What to run next to make the answer conclusive, as a sentence; `None` when nothing is
    /// needed or nothing would help.
    pub next_runs: Option<String>,
    /// How many of `warnings`, from the first, are reasons for an inconclusive verdict.
    #[serde(skip)]
    reasons: usize,
}

impl Verdict {
    /// A conclusive verdict with no warnings.
    pub fn new() -> Self {
        Verdict {
            conclusive: true,
            warnings: Vec::new(),
            next_runs: None,
            reasons: 0,
        }
    }

    /// Marks the answer inconclusive for `reason` (listed after earlier reasons, before the
    /// warnings).
    pub fn inconclusive(&mut self, reason: impl Into<String>) {
        self.conclusive = false;
        self.warnings.insert(self.reasons, reason.into());
        self.reasons += 1;
    }

    /// Adds a warning that leaves the verdict as it is.
    pub fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }

    /// Sets what to run next, keeping the first suggestion given.
    pub fn suggest(&mut self, next_runs: impl Into<String>) {
        self.next_runs.get_or_insert_with(|| next_runs.into());
    }

    /// Adds `other`'s findings, each prefixed with `context` (e.g. a parameterization's name)
    /// unless it is empty; findings already present are not repeated.
    pub fn absorb(&mut self, context: &str, other: &Verdict) {
        let prefix = |w: &String| {
            if context.is_empty() {
                w.clone()
            } else {
                format!("{context}: {w}")
            }
        };
        for (i, w) in other.warnings.iter().enumerate() {
            let w = prefix(w);
            if self.warnings.contains(&w) {
                continue;
            }
            if i < other.reasons {
                self.inconclusive(w);
            } else {
                self.warn(w);
            }
        }
        if let Some(next) = &other.next_runs {
            self.suggest(prefix(next));
        }
    }

    /// A FLOP-savings interval `[low, high]` (fractions): inconclusive when wider than
    /// ±[`SAVINGS_HALF_WIDTH`] or when it spans 0; no interval at all is inconclusive too.
    pub fn check_savings_interval(&mut self, interval: Option<[f64; 2]>) {
        let Some([low, high]) = interval else {
            self.inconclusive(
                "the savings have no interval (no bootstrap, or no resample reaches the loss)",
            );
            return;
        };
        if (high - low) / 2.0 > SAVINGS_HALF_WIDTH {
            self.inconclusive(format!(
                "the savings interval [{}, {}] is wider than ±{} points",
                percent(low),
                percent(high),
                SAVINGS_HALF_WIDTH * 100.0
            ));
        } else if low < 0.0 && high > 0.0 {
            self.inconclusive(format!(
                "the savings interval [{}, {}] spans 0: either side may need less compute",
                percent(low),
                percent(high)
            ));
        }
    }

    /// A prediction at `target` FLOPs from runs reaching at most `largest` FLOPs.
    pub fn check_extrapolation(&mut self, target: f64, largest: f64) {
        let factor = target / largest;
        if factor.is_nan() || factor <= EXTRAPOLATION_WARN {
            return;
        }
        let sentence = format!(
            "the budget ({}) is {} times the largest run's compute ({})",
            sig(target),
            sig(factor),
            sig(largest)
        );
        if factor > EXTRAPOLATION_LIMIT {
            self.inconclusive(format!(
                "{sentence}: beyond {EXTRAPOLATION_LIMIT}x a fitted curve is a guess"
            ));
            self.suggest(format!(
                "add runs of at least {} FLOPs (the budget over {EXTRAPOLATION_LIMIT})",
                sig(target / EXTRAPOLATION_LIMIT)
            ));
        } else {
            self.warn(format!(
                "{sentence}: beyond {EXTRAPOLATION_WARN}x predictions widen quickly"
            ));
        }
    }

    /// The compute values (FLOPs) of a fit's scales: inconclusive below [`MIN_SCALES`] scales
    /// or [`MIN_DECADES`] decade, with the scales that would fix it suggested (see
    /// [`scales_to_add`]).
    pub fn check_coverage(&mut self, scales: &[f64]) {
        let (smallest, largest) = min_max(scales);
        let decades = (largest / smallest).log10();
        let mut short = Vec::new();
        if scales.len() < MIN_SCALES {
            short.push(format!(
                "{} compute scale{} (at least {MIN_SCALES} needed)",
                scales.len(),
                if scales.len() == 1 { "" } else { "s" }
            ));
        }
        if decades.is_nan() || decades < MIN_DECADES {
            short.push(format!(
                "{} decades of compute (at least {MIN_DECADES} needed)",
                sig(decades.max(0.0))
            ));
        }
        if short.is_empty() {
            return;
        }
        self.inconclusive(format!(
            "the runs cover {} ({} to {})",
            short.join(" and "),
            sig(smallest),
            sig(largest)
        ));
        let add = scales_to_add(scales);
        if !add.is_empty() {
            let list: Vec<String> = add.iter().map(|&c| sig(c)).collect();
            self.suggest(format!(
                "add {} compute scale{} at {} FLOPs",
                add.len(),
                if add.len() == 1 { "" } else { "s" },
                list.join(", ")
            ));
        }
    }

    /// A target setting that differs from the runs' (for example vocabulary 50257 against the
    /// runs' 256): a warning naming both.
    pub fn check_target(&mut self, what: &str, target: &str, runs: &[String]) {
        if runs.iter().any(|r| r != target) {
            self.warn(format!(
                "the target {what} ({target}) differs from the runs' ({}): the fit is \
                 extrapolated to it",
                runs.join(", ")
            ));
        }
    }

    /// The drift of the optimal learning rate (octaves per doubling of the size) and its
    /// interval, against the threshold below which the learning rate is said to transfer.
    pub fn check_drift(&mut self, interval: Option<[f64; 2]>, threshold: f64) {
        let Some([low, high]) = interval else {
            self.inconclusive(
                "the drift has no interval (one seed and two sizes): the spread of the optima \
                 is unknown",
            );
            self.suggest("train a second seed of every grid point, or a third size");
            return;
        };
        let range = format!("[{}, {}]", sig(low), sig(high));
        if (high - low) / 2.0 > DRIFT_HALF_WIDTH {
            self.inconclusive(format!(
                "the drift interval {range} octaves per doubling is wider than \
                 ±{DRIFT_HALF_WIDTH}"
            ));
            self.suggest("train more seeds of every grid point, or more sizes");
        } else if (low < threshold && high > threshold) || (low < -threshold && high > -threshold) {
            self.inconclusive(format!(
                "the drift interval {range} crosses the threshold ±{}: whether the learning \
                 rate transfers is not settled",
                sig(threshold)
            ));
            self.suggest("train more seeds of every grid point, or more sizes");
        }
    }

    /// A predicted loss below the data's known floor (nats/token).
    pub fn check_floor(&mut self, predicted: f64, floor: Option<f64>) {
        if let Some(floor) = floor
            && predicted < floor
        {
            self.warn(format!(
                "the predicted loss {} is below the data's entropy floor {}: no model can \
                 reach it",
                sig(predicted),
                sig(floor)
            ));
        }
    }
}

/// Compute scales to add so that a fit covers [`MIN_SCALES`] scales over [`MIN_DECADES`]
/// decade: geometric steps of 4x above the largest, until both hold (at most 4 scales; none
/// for an empty list).
pub fn scales_to_add(scales: &[f64]) -> Vec<f64> {
    if scales.is_empty() {
        return Vec::new();
    }
    let (smallest, mut largest) = min_max(scales);
    let mut count = scales.len();
    let mut add = Vec::new();
    while (count < MIN_SCALES || (largest / smallest).log10() < MIN_DECADES) && add.len() < 4 {
        largest *= 4.0;
        add.push(largest);
        count += 1;
    }
    add
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// A fraction as a percentage to 3 significant digits (`-2.934` is `-293%`).
fn percent(fraction: f64) -> String {
    format!("{}%", sig(fraction * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_savings_interval_wider_than_ten_points_or_across_zero_is_inconclusive() {
        let mut v = Verdict::new();
        v.check_savings_interval(Some([0.15, 0.25]));
        assert!(v.conclusive && v.warnings.is_empty());
        let mut v = Verdict::new();
        v.check_savings_interval(Some([-2.93, 0.67]));
        assert!(!v.conclusive);
        assert!(v.warnings[0].contains("wider than ±10 points"), "{v:?}");
        let mut v = Verdict::new();
        v.check_savings_interval(Some([-0.02, 0.05]));
        assert!(!v.conclusive);
        assert!(v.warnings[0].contains("spans 0"), "{v:?}");
        let mut v = Verdict::new();
        v.check_savings_interval(None);
        assert!(!v.conclusive);
    }

    #[test]
    fn extrapolation_warns_past_ten_and_is_inconclusive_past_a_hundred() {
        let mut v = Verdict::new();
        v.check_extrapolation(9e14, 1e14);
        assert!(v.conclusive && v.warnings.is_empty());
        v.check_extrapolation(5e15, 1e14);
        assert!(v.conclusive);
        assert!(v.warnings[0].contains("50 times"), "{v:?}");
        let mut v = Verdict::new();
        v.check_extrapolation(1e18, 1e13);
        assert!(!v.conclusive);
        assert!(v.warnings[0].contains("1e5 times"), "{v:?}");
    }

    #[test]
    fn coverage_needs_four_scales_over_a_decade_and_suggests_the_missing_ones() {
        let mut v = Verdict::new();
        v.check_coverage(&[1e12, 4e12, 1.6e13, 6.4e13]);
        assert!(v.conclusive, "{v:?}");
        let mut v = Verdict::new();
        v.check_coverage(&[1e12, 4e12, 1.6e13]);
        assert!(!v.conclusive);
        assert!(v.warnings[0].contains("3 compute scales"), "{v:?}");
        assert_eq!(
            v.next_runs.as_deref(),
            Some("add 1 compute scale at 6.4e13 FLOPs")
        );
        let mut v = Verdict::new();
        v.check_coverage(&[1e12, 2e12, 3e12, 4e12, 5e12]);
        assert!(!v.conclusive);
        assert!(v.warnings[0].contains("0.699 decades"), "{v:?}");
        assert_eq!(scales_to_add(&[1e12, 2e12, 3e12, 4e12, 5e12]), vec![2e13]);
    }

    #[test]
    fn target_differences_and_floors_warn_without_deciding() {
        let mut v = Verdict::new();
        v.check_target("vocabulary", "50257", &["256".into()]);
        v.check_floor(1.92, Some(2.13));
        v.check_floor(2.5, Some(2.13));
        v.check_target("context", "128", &["128".into()]);
        assert!(v.conclusive);
        assert_eq!(v.warnings.len(), 2, "{v:?}");
        assert!(v.warnings[0].contains("50257") && v.warnings[0].contains("256"));
        assert!(v.warnings[1].contains("below the data's entropy floor 2.13"));
    }

    #[test]
    fn a_drift_interval_needs_to_be_narrow_and_on_one_side_of_the_threshold() {
        let mut v = Verdict::new();
        v.check_drift(Some([-0.1, 0.15]), 0.5);
        assert!(v.conclusive, "{v:?}");
        let mut v = Verdict::new();
        v.check_drift(Some([0.8, 1.1]), 0.5);
        assert!(v.conclusive, "{v:?}");
        let mut v = Verdict::new();
        v.check_drift(Some([-0.4, 0.3]), 0.5);
        assert!(
            !v.conclusive && v.warnings[0].contains("wider than ±0.25"),
            "{v:?}"
        );
        let mut v = Verdict::new();
        v.check_drift(Some([0.3, 0.7]), 0.5);
        assert!(
            !v.conclusive && v.warnings[0].contains("crosses the threshold"),
            "{v:?}"
        );
        let mut v = Verdict::new();
        v.check_drift(None, 0.5);
        assert!(!v.conclusive && v.next_runs.is_some(), "{v:?}");
    }

    #[test]
    fn inconclusive_reasons_come_before_warnings_and_absorb_prefixes() {
        let mut v = Verdict::new();
        v.warn("w");
        v.inconclusive("r");
        assert_eq!(v.warnings, ["r", "w"]);
        let mut all = Verdict::new();
        all.absorb("muP", &v);
        assert!(!all.conclusive);
        assert_eq!(all.warnings, ["muP: r", "muP: w"]);
    }
}
