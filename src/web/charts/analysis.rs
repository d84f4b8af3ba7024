//! Charts of the scaling analysis: learning-rate transfer, loss against compute with its
//! bootstrap band, the residuals of that fit, and the width/depth tolerance. Each returns an
//! inline SVG string, or a message chart when there is nothing to draw.

use super::{
    ChartError, DrawResult, HEIGHT, TickedAxis, WIDTH, draw_legend, draw_message, framed_chart,
    linear_ticks, log_ticks, padded_range, series_color,
};
use crate::fit::shape::ShapeTolerance;
use crate::fit::transfer::TransferFit;
use crate::fit::{Interval, PowerLaw};
use crate::numbers::significant;
use crate::web::fits::ComputeGroupFit;
use plotters::prelude::*;

/// Points along each fitted curve.
const CURVE_POINTS: usize = 120;
/// Grey of reference lines and neutral legend entries.
const NEUTRAL: RGBColor = RGBColor(60, 60, 60);

/// Adds the accessible name to a drawn SVG.
fn labelled(svg: String, label: &str) -> String {
    let label = label.replace('&', "&amp;").replace('"', "&quot;");
    svg.replacen(
        "<svg ",
        &format!("<svg role=\"img\" aria-label=\"{label}\" "),
        1,
    )
}

/// `count` evenly spaced values from `lo` to `hi`.
fn steps(lo: f64, hi: f64, count: usize) -> impl Iterator<Item = f64> {
    let step = (hi - lo) / (count.max(2) - 1) as f64;
    (0..count.max(2)).map(move |i| lo + step * i as f64)
}

fn finish(svg: String, result: DrawResult, label: &str) -> Result<String, ChartError> {
    result.map_err(|e| ChartError(e.to_string()))?;
    Ok(labelled(svg, label))
}

// ---------------------------------------------------------------------------------------------
// LR transfer

/// Mean final loss against `log2(lr)` for one parameterization's transfer fit: one line per
/// size through its grid's mean losses, the quadratic of each size dashed over the points it
/// was fitted to, the optimum as a ringed dot with its interval as a horizontal bar, and the
/// learning rates where a seed diverged as crosses along the top.
pub fn transfer_chart(fit: &TransferFit) -> Result<String, ChartError> {
    let finite = || {
        (fit.optima.iter())
            .flat_map(|o| o.grid.iter())
            .filter_map(|p| Some((p.log2_lr, p.mean_loss?)))
    };
    let mut svg = String::new();
    let result = if finite().next().is_none() {
        draw_message(&mut svg, "no finite losses to draw")
    } else {
        draw_transfer(&mut svg, fit)
    };
    let label = format!(
        "Final loss versus learning rate (log2 scale), one line per {}, optimum marked",
        fit.axis.name()
    );
    finish(svg, result, &label)
}

fn draw_transfer(svg: &mut String, fit: &TransferFit) -> DrawResult {
    let xs = (fit.optima.iter())
        .flat_map(|o| o.grid.iter().map(|p| p.log2_lr))
        .chain(
            (fit.optima.iter())
                .filter_map(|o| o.interval)
                .flat_map(|i| [i.low, i.high]),
        );
    let (x_lo, x_hi) = padded_range(xs, true);
    let ys = (fit.optima.iter())
        .flat_map(|o| o.grid.iter().filter_map(|p| p.mean_loss))
        .chain(fit.optima.iter().map(|o| o.predicted_loss));
    let (y_lo, y_hi) = padded_range(ys, false);
    // Room at the top for the diverged markers.
    let y_hi = y_hi + 0.06 * (y_hi - y_lo);
    let diverged_y = y_hi - 0.03 * (y_hi - y_lo);
    let x_ticks: Vec<f64> = (x_lo.ceil() as i64..=x_hi.floor() as i64)
        .map(|e| e as f64)
        .collect();
    let every = ((x_ticks.len() as f64) / 10.0).ceil().max(1.0) as usize;
    let x_ticks = x_ticks.into_iter().step_by(every).collect();
    let y_ticks = linear_ticks(y_lo, y_hi, 6.0);
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = framed_chart(
        &root,
        TickedAxis {
            lo: x_lo,
            hi: x_hi,
            ticks: x_ticks,
        },
        TickedAxis {
            lo: y_lo,
            hi: y_hi,
            ticks: y_ticks,
        },
        ("learning rate (log2 scale)", "final loss (nats/token)"),
        (&|v: &f64| significant(v.exp2()), &|v: &f64| significant(*v)),
    )?;
    let mut any_diverged = false;
    for (index, optimum) in fit.optima.iter().enumerate() {
        let color = series_color(index);
        let points: Vec<(f64, f64)> = (optimum.grid.iter())
            .filter_map(|p| Some((p.log2_lr, p.mean_loss?)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(format!("{} {}", fit.axis.name(), significant(optimum.size)))
            .legend(move |(lx, ly)| {
                EmptyElement::at((lx, ly))
                    + PathElement::new(vec![(0, 0), (16, 0)], color.stroke_width(2))
                    + Circle::new((8, 0), 4, color.filled())
            });
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        let q = optimum.quadratic;
        let fitted: Vec<(f64, f64)> = steps(q.x_min, q.x_max, 40)
            .map(|x| (x, q.value(x)))
            .collect();
        chart.draw_series(DashedLineSeries::new(
            fitted,
            6,
            4,
            color.mix(0.8).stroke_width(1),
        ))?;
        let star = (optimum.log2_lr, optimum.predicted_loss);
        if let Some(interval) = optimum.interval {
            draw_horizontal_bar(&mut chart, interval, star.1, color)?;
        }
        chart.draw_series([
            Circle::new(star, 6, color.filled()),
            Circle::new(star, 10, color.stroke_width(2)),
        ])?;
        let diverged: Vec<(f64, f64)> = (optimum.grid.iter())
            .filter(|p| p.mean_loss.is_none())
            .map(|p| (p.log2_lr, diverged_y))
            .collect();
        any_diverged |= !diverged.is_empty();
        chart.draw_series(
            diverged
                .into_iter()
                .map(|p| Cross::new(p, 6, color.stroke_width(2))),
        )?;
    }
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
        .label("optimum (bar: interval)")
        .legend(|(lx, ly)| {
            EmptyElement::at((lx + 8, ly))
                + Circle::new((0, 0), 4, NEUTRAL.filled())
                + Circle::new((0, 0), 7, NEUTRAL.stroke_width(2))
        });
    if any_diverged {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label("a seed diverged")
            .legend(|(lx, ly)| Cross::new((lx + 8, ly), 5, NEUTRAL.stroke_width(2)));
    }
    // U-shaped curves are high at both ends: the legend goes top centre.
    draw_legend(&mut chart, SeriesLabelPosition::UpperMiddle)?;
    root.present()?;
    Ok(())
}

/// A horizontal interval bar with end ticks at height `y`.
fn draw_horizontal_bar(
    chart: &mut super::Chart<'_, '_>,
    interval: Interval,
    y: f64,
    color: RGBColor,
) -> DrawResult {
    let (lo, hi) = (interval.low, interval.high);
    let span = chart.y_range();
    let tick = 0.015 * (span.end - span.start);
    chart.draw_series([
        PathElement::new(vec![(lo, y), (hi, y)], color.stroke_width(2)),
        PathElement::new(vec![(lo, y - tick), (lo, y + tick)], color.stroke_width(2)),
        PathElement::new(vec![(hi, y - tick), (hi, y + tick)], color.stroke_width(2)),
    ])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Loss against compute

/// The band of a curve's resamples at `log10 C`: `(low, high)` percentiles of `log10 L`.
fn band_at(curves: &[PowerLaw], compute: f64, confidence: f64) -> Option<(f64, f64)> {
    let values: Vec<f64> = (curves.iter())
        .map(|c| c.loss(compute))
        .filter(|l| l.is_finite() && *l > 0.0)
        .collect();
    if values.is_empty() {
        return None;
    }
    let i = Interval::from_resamples(f64::NAN, values, confidence);
    Some((i.low.log10(), i.high.log10()))
}

/// Final loss against training FLOPs on log-log axes, one colour per group: the runs as dots,
/// the fitted `L(C) = E + A C^-b` as a line over the runs' FLOPs (a little beyond), and the
/// bootstrap band (percentiles of the resample curves at the fit's confidence) shaded.
pub fn compute_chart(groups: &[ComputeGroupFit]) -> Result<String, ChartError> {
    let mut svg = String::new();
    let result = if groups.iter().all(|g| g.residuals.is_empty()) {
        draw_message(&mut svg, "no fitted runs to draw")
    } else {
        draw_compute(&mut svg, groups)
    };
    finish(
        svg,
        result,
        "Final loss versus training compute, log-log axes, with fitted curves and bootstrap bands",
    )
}

/// The FLOPs range a group's curve is drawn over (log10): its runs' range, a tenth of a decade
/// further each way.
fn curve_range(group: &ComputeGroupFit) -> (f64, f64) {
    let logs = group.residuals.iter().map(|r| r.flops.log10());
    let lo = logs.clone().fold(f64::INFINITY, f64::min);
    let hi = logs.fold(f64::NEG_INFINITY, f64::max);
    (lo - 0.1, hi + 0.1)
}

fn draw_compute(svg: &mut String, groups: &[ComputeGroupFit]) -> DrawResult {
    struct Drawn {
        points: Vec<(f64, f64)>,
        /// Whether each point is its compute scale's best run (drawn filled; the others hollow).
        frontier: Vec<bool>,
        curve: Vec<(f64, f64)>,
        band: Vec<(f64, f64, f64)>,
    }
    let drawn: Vec<Drawn> = (groups.iter())
        .map(|g| {
            let (lo, hi) = curve_range(g);
            let curve = g.curve();
            let xs: Vec<f64> = steps(lo, hi, CURVE_POINTS).collect();
            Drawn {
                points: (g.residuals.iter())
                    .map(|r| (r.flops.log10(), r.loss.log10()))
                    .collect(),
                frontier: g.residuals.iter().map(|r| r.on_frontier).collect(),
                curve: (xs.iter())
                    .map(|&x| (x, curve.loss(10f64.powf(x))))
                    .filter(|p| p.1.is_finite() && p.1 > 0.0)
                    .map(|(x, l)| (x, l.log10()))
                    .collect(),
                band: (xs.iter())
                    .filter_map(|&x| {
                        let (low, high) = band_at(&g.curves, 10f64.powf(x), g.confidence)?;
                        Some((x, low, high))
                    })
                    .collect(),
            }
        })
        .collect();
    let xs = drawn
        .iter()
        .flat_map(|d| d.points.iter().chain(&d.curve).map(|p| p.0));
    let (x_lo, x_hi) = padded_range(xs, true);
    // The data, the curves and the entropy floor set the y range; a band wider than that (a
    // barely identified fit) is clipped to it instead of flattening the data into a line.
    let floor = groups.iter().find_map(|g| g.floor).map(f64::log10);
    let ys = drawn
        .iter()
        .flat_map(|d| d.points.iter().chain(&d.curve).map(|p| p.1))
        .chain(floor);
    let (y_lo, y_hi) = padded_range(ys, true);
    let clip = |y: f64| y.clamp(y_lo, y_hi);
    let label = |v: &f64| significant(10f64.powf(*v));
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = framed_chart(
        &root,
        TickedAxis::log(x_lo, x_hi),
        TickedAxis {
            lo: y_lo,
            hi: y_hi,
            ticks: log_ticks(y_lo, y_hi, 6.0),
        },
        (
            "training compute (FLOPs, log scale)",
            "final loss (nats/token, log scale)",
        ),
        (&label, &label),
    )?;
    for (index, (group, d)) in groups.iter().zip(&drawn).enumerate() {
        let color = series_color(index);
        if d.band.len() >= 2 {
            let outline: Vec<(f64, f64)> = (d.band.iter().map(|b| (b.0, clip(b.2))))
                .chain(d.band.iter().rev().map(|b| (b.0, clip(b.1))))
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(outline, color.mix(0.15))))?;
        }
        chart
            .draw_series(LineSeries::new(d.curve.clone(), color.stroke_width(2)))?
            .label(format!("{} (b = {:.3})", group.group, group.b))
            .legend(move |(lx, ly)| {
                EmptyElement::at((lx, ly))
                    + PathElement::new(vec![(0, 0), (16, 0)], color.stroke_width(2))
                    + Circle::new((8, 0), 4, color.filled())
            });
        chart.draw_series(d.points.iter().zip(&d.frontier).map(|(p, &on_frontier)| {
            let style = if on_frontier {
                color.filled()
            } else {
                color.stroke_width(1)
            };
            Circle::new(*p, 4, style)
        }))?;
    }
    if let Some(floor) = floor {
        chart
            .draw_series(DashedLineSeries::new(
                [(x_lo, floor), (x_hi, floor)],
                6,
                4,
                NEUTRAL.stroke_width(1),
            ))?
            .label(format!(
                "entropy floor, lower bound of E ({})",
                significant(10f64.powf(floor))
            ))
            .legend(|(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 16, ly)], NEUTRAL));
    }
    if drawn.iter().any(|d| d.band.len() >= 2) {
        let confidence = groups.first().map_or(0.95, |g| g.confidence);
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(format!("{:.0}% bootstrap band", confidence * 100.0))
            .legend(|(lx, ly)| {
                Rectangle::new([(lx, ly - 5), (lx + 16, ly + 5)], NEUTRAL.mix(0.2).filled())
            });
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

/// Relative residuals `(L - L(C)) / L(C)` of each group's runs against its fitted curve, in
/// percent, against training FLOPs (log scale), with the zero line: a systematic bend means
/// the power law does not describe the runs.
pub fn residual_chart(groups: &[ComputeGroupFit]) -> Result<String, ChartError> {
    let mut svg = String::new();
    let result = if groups.iter().all(|g| g.residuals.is_empty()) {
        draw_message(&mut svg, "no fitted runs to draw")
    } else {
        draw_residuals(&mut svg, groups)
    };
    finish(
        svg,
        result,
        "Relative residuals of the loss-versus-compute fits, percent, versus training compute",
    )
}

fn draw_residuals(svg: &mut String, groups: &[ComputeGroupFit]) -> DrawResult {
    let series: Vec<Vec<(f64, f64)>> = (groups.iter())
        .map(|g| {
            (g.residuals.iter())
                .map(|r| (r.flops.log10(), 100.0 * r.relative_residual))
                .filter(|p| p.1.is_finite())
                .collect()
        })
        .collect();
    let (x_lo, x_hi) = padded_range(series.iter().flatten().map(|p| p.0), true);
    // Symmetric around zero so that the sign of a residual reads at a glance.
    let extent = (series.iter().flatten())
        .map(|p| p.1.abs())
        .fold(0.0, f64::max)
        .max(0.05)
        * 1.15;
    let (y_lo, y_hi) = (-extent, extent);
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = framed_chart(
        &root,
        TickedAxis::log(x_lo, x_hi),
        TickedAxis::linear(y_lo, y_hi),
        (
            "training compute (FLOPs, log scale)",
            "relative residual (% of the fitted loss)",
        ),
        (&|v: &f64| significant(10f64.powf(*v)), &|v: &f64| {
            significant(*v)
        }),
    )?;
    chart.draw_series(LineSeries::new(
        vec![(x_lo, 0.0), (x_hi, 0.0)],
        NEUTRAL.mix(0.6).stroke_width(1),
    ))?;
    for (index, (group, points)) in groups.iter().zip(&series).enumerate() {
        let color = series_color(index);
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?
            .label(format!(
                "{} (RMSE of log-loss {:.2}%)",
                group.group,
                100.0 * group.rmse_log_loss
            ))
            .legend(move |(lx, ly)| Circle::new((lx + 8, ly), 4, color.filled()));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Width/depth tolerance

/// Final loss against `N:L` (log scale) for one parameterization's tolerance fit: one colour
/// per compute scale, the runs as dots, the fitted quadratic in `ln(N:L)` over the shapes
/// tried, the optimum as a ringed dot, and the range within the tolerance shaded.
pub fn tolerance_chart(fit: &ShapeTolerance) -> Result<String, ChartError> {
    let mut svg = String::new();
    let result = if fit.scales.is_empty() {
        draw_message(&mut svg, "no compute scale with three shapes")
    } else {
        draw_tolerance(&mut svg, fit)
    };
    finish(
        svg,
        result,
        "Final loss versus width-to-depth ratio N:L (log scale) per compute scale, with the \
         fitted quadratic, the optimum and the range within tolerance",
    )
}

fn draw_tolerance(svg: &mut String, fit: &ShapeTolerance) -> DrawResult {
    // x is log10(N:L); the quadratics are in ln(N:L).
    let ln10 = std::f64::consts::LN_10;
    let xs = (fit.scales.iter()).flat_map(|s| {
        (s.points.iter().map(|p| p.ratio().log10())).chain(s.ratio_range.iter().map(|r| r.log10()))
    });
    let (x_lo, x_hi) = padded_range(xs, true);
    let curves: Vec<Vec<(f64, f64)>> = (fit.scales.iter())
        .map(|s| {
            let q = s.quadratic;
            steps(q.x_min, q.x_max, CURVE_POINTS)
                .map(|x| (x / ln10, q.value(x)))
                .collect()
        })
        .collect();
    let ys = (fit.scales.iter())
        .flat_map(|s| s.points.iter().map(|p| p.loss))
        .chain(curves.iter().flatten().map(|p| p.1));
    let (y_lo, y_hi) = padded_range(ys, false);
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = framed_chart(
        &root,
        TickedAxis::log(x_lo, x_hi),
        TickedAxis::linear(y_lo, y_hi),
        (
            "width-to-depth ratio N:L (log scale)",
            "final loss (nats/token)",
        ),
        (&|v: &f64| significant(10f64.powf(*v)), &|v: &f64| {
            significant(*v)
        }),
    )?;
    for (index, (scale, curve)) in fit.scales.iter().zip(&curves).enumerate() {
        let color = series_color(index);
        let [low, high] = scale.ratio_range.map(f64::log10);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(low, y_lo), (high, y_hi)],
            color.mix(0.1).filled(),
        )))?;
        chart
            .draw_series(LineSeries::new(curve.clone(), color.stroke_width(2)))?
            .label(format!(
                "{} FLOPs: N:L* {}",
                significant(scale.flops),
                significant(scale.ratio_optimum)
            ))
            .legend(move |(lx, ly)| {
                EmptyElement::at((lx, ly))
                    + PathElement::new(vec![(0, 0), (16, 0)], color.stroke_width(2))
                    + Circle::new((8, 0), 4, color.filled())
            });
        chart.draw_series(
            (scale.points.iter())
                .map(|p| Circle::new((p.ratio().log10(), p.loss), 4, color.filled())),
        )?;
        let star = (scale.ratio_optimum.log10(), scale.optimal_loss);
        if let Some(interval) = scale.interval {
            let bar = Interval {
                estimate: star.0,
                low: interval.low.log10(),
                high: interval.high.log10(),
                std: 0.0,
            };
            draw_horizontal_bar(&mut chart, bar, star.1, color)?;
        }
        chart.draw_series([
            Circle::new(star, 6, color.filled()),
            Circle::new(star, 10, color.stroke_width(2)),
        ])?;
    }
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
        .label(format!(
            "shaded: within {}% of the optimum",
            significant(fit.tolerance * 100.0)
        ))
        .legend(|(lx, ly)| {
            Rectangle::new([(lx, ly - 5), (lx + 16, ly + 5)], NEUTRAL.mix(0.2).filled())
        });
    draw_legend(&mut chart, SeriesLabelPosition::UpperMiddle)?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::shape::{ShapeOptions, ShapePoint, fit_shape_tolerance};
    use crate::fit::transfer::{TransferOptions, TransferPoint, fit_transfer};
    use crate::fit::{BootstrapOptions, power_law_goodness};
    use crate::web::fits::ComputeResidual;

    fn no_bootstrap() -> BootstrapOptions {
        BootstrapOptions {
            resamples: 0,
            ..BootstrapOptions::default()
        }
    }

    #[test]
    fn transfer_charts_draw_every_size_and_the_diverged_runs() {
        let mut points = Vec::new();
        for depth in [2.0, 4.0, 8.0] {
            for k in -12..=-4 {
                let x = f64::from(k);
                for seed in [0, 1] {
                    let loss = (k < -5 || depth < 8.0)
                        .then_some(3.0 + 0.05 * (x + 8.0).powi(2) + 0.01 * seed as f64);
                    points.push(TransferPoint {
                        size: depth,
                        lr: x.exp2(),
                        loss,
                        seed,
                    });
                }
            }
        }
        let options = TransferOptions {
            bootstrap: BootstrapOptions {
                resamples: 50,
                ..BootstrapOptions::default()
            },
            ..TransferOptions::default()
        };
        let fit = fit_transfer(&points, &options).unwrap();
        let svg = transfer_chart(&fit).unwrap();
        assert!(svg.starts_with("<svg role=\"img\""), "{svg:.100}");
        for text in ["depth 2", "depth 8", "a seed diverged", "optimum", "0.0039"] {
            assert!(svg.contains(text), "{text}");
        }
        assert!(svg.contains("learning rate (log2 scale)"));
    }

    fn group(name: &str, curve: PowerLaw, curves: Vec<PowerLaw>) -> ComputeGroupFit {
        let points: Vec<(f64, f64)> = (0..8)
            .map(|i| {
                let c = 1e15 * 10f64.powf(f64::from(i) * 0.5);
                (c, curve.loss(c) * (1.0 + 0.01 * f64::from(i % 3) - 0.01))
            })
            .collect();
        let goodness = power_law_goodness(&curve, &points);
        ComputeGroupFit {
            group: name.into(),
            e: curve.e,
            a: curve.a,
            b: curve.b,
            intervals: None,
            shared_e: false,
            floor: None,
            e_bound: None,
            n_runs: points.len(),
            compute_scales: points.iter().map(|p| p.0).collect(),
            residuals: (points.iter().zip(&goodness.relative_residuals))
                .enumerate()
                .map(
                    |(i, (&(flops, loss), &relative_residual))| ComputeResidual {
                        run_id: i as i64,
                        flops,
                        loss,
                        fitted: curve.loss(flops),
                        relative_residual,
                        on_frontier: true,
                    },
                )
                .collect(),
            rmse_log_loss: goodness.rmse_log_loss,
            r_squared: goodness.r_squared,
            verdict: crate::verdict::Verdict::new(),
            confidence: 0.95,
            curves,
        }
    }

    #[test]
    fn compute_and_residual_charts_draw_curves_bands_and_residuals() {
        let curve = PowerLaw {
            e: 1.8,
            a: 391.0,
            b: 0.15,
        };
        let resamples: Vec<PowerLaw> = (0..20)
            .map(|i| PowerLaw {
                b: 0.14 + 0.001 * f64::from(i),
                ..curve
            })
            .collect();
        let groups = [
            group("mup", curve, resamples),
            group("completep", PowerLaw { a: 380.0, ..curve }, Vec::new()),
        ];
        let svg = compute_chart(&groups).unwrap();
        assert!(svg.contains("mup (b = 0.150)") && svg.contains("completep"));
        assert!(svg.contains("95% bootstrap band") && svg.contains("<polygon"));
        assert!(svg.contains("training compute (FLOPs, log scale)"));
        let svg = residual_chart(&groups).unwrap();
        assert!(svg.contains("RMSE of log-loss") && svg.contains("relative residual"));
        assert!(compute_chart(&[]).unwrap().contains("no fitted runs"));
        assert!(residual_chart(&[]).unwrap().contains("no fitted runs"));
    }

    #[test]
    fn tolerance_charts_shade_the_tolerant_range() {
        let points: Vec<ShapePoint> = (2..=10)
            .flat_map(|k| {
                [1e17, 1e18].map(|flops| {
                    let ratio = f64::from(k).exp2();
                    ShapePoint {
                        width: ratio * 4.0,
                        depth: 4.0,
                        flops,
                        loss: 3.0 * (1.0 + 0.02 * (ratio.ln() - 64f64.ln()).powi(2))
                            - (flops.log10() - 17.0) * 0.3,
                    }
                })
            })
            .collect();
        let options = ShapeOptions {
            bootstrap: BootstrapOptions {
                resamples: 20,
                ..no_bootstrap()
            },
            ..ShapeOptions::default()
        };
        let fit = fit_shape_tolerance(&points, &options).unwrap();
        let svg = tolerance_chart(&fit).unwrap();
        assert!(svg.contains("N:L* 64"), "{svg}");
        assert!(svg.contains("within 1% of the optimum") && svg.contains("<rect"));
        assert!(svg.contains("width-to-depth ratio N:L"));
        let empty = ShapeTolerance {
            scales: Vec::new(),
            ..fit
        };
        assert!(
            tolerance_chart(&empty)
                .unwrap()
                .contains("no compute scale")
        );
    }
}
