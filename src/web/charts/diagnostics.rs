//! Charts of the diagnostics: a size measure against depth or width on log-log axes, one line
//! per parameterization (coordinate checks: mean |final residual|; linearization checks: the
//! relative distance from linearization). A power law `y ~ x^k` is a straight line of slope `k`.

use super::{
    ChartError, DrawResult, HEIGHT, TickedAxis, WIDTH, draw_legend, draw_message, framed_chart,
    log_ticks, padded_range, series_color,
};
use crate::coord::{CoordAxis, CoordTable};
use crate::linearize::LinearizeTable;
use crate::numbers::significant;
use crate::param::Parameterization;
use plotters::prelude::*;

/// One line of a chart: a parameterization and its `(size, value)` points.
pub struct SizeSeries {
    pub parameterization: Parameterization,
    pub points: Vec<(f64, f64)>,
}

/// The colour of a parameterization, the same in every diagnostics chart.
pub fn parameterization_color(p: Parameterization) -> RGBColor {
    let index = Parameterization::ALL
        .iter()
        .position(|q| *q == p)
        .unwrap_or(0);
    series_color(index)
}

/// The `#rrggbb` colour of a parameterization, for legends and tables drawn in HTML.
pub fn parameterization_css_color(p: Parameterization) -> String {
    let RGBColor(r, g, b) = parameterization_color(p);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// Mean |final residual| against depth (or width) at `step`, one line per parameterization.
pub fn coord_chart(table: &CoordTable, step: u64) -> Result<String, ChartError> {
    let series: Vec<SizeSeries> = table
        .parameterizations()
        .into_iter()
        .map(|p| SizeSeries {
            parameterization: p,
            points: table.series(p, step, |r| r.residual),
        })
        .collect();
    let x_title = match table.axis {
        CoordAxis::Depth => "depth L (blocks, log scale)",
        CoordAxis::Width => "width N (log scale)",
    };
    log_log_chart(
        &series,
        (x_title, "mean |final residual| (log scale)"),
        &format!(
            "Mean absolute final residual stream versus {} at step {step}, log-log axes",
            axis_word(table.axis)
        ),
    )
}

/// The relative distance from linearization of the MLP branch against depth, one line per
/// parameterization.
pub fn linearization_chart(table: &LinearizeTable) -> Result<String, ChartError> {
    let series: Vec<SizeSeries> = table
        .parameterizations()
        .into_iter()
        .map(|p| SizeSeries {
            parameterization: p,
            points: table.series(p),
        })
        .collect();
    log_log_chart(
        &series,
        (
            "depth L (blocks, log scale)",
            "distance from linearization, MLP branch (log scale)",
        ),
        "Relative distance from linearization of the MLP branch versus depth, log-log axes",
    )
}

fn axis_word(axis: CoordAxis) -> &'static str {
    match axis {
        CoordAxis::Depth => "depth",
        CoordAxis::Width => "width",
    }
}

/// Lines with markers on log-log axes; points that cannot go on log axes (not finite, not
/// positive) are left out, and with none left the chart says so.
pub fn log_log_chart(
    series: &[SizeSeries],
    (x_title, y_title): (&str, &str),
    aria_label: &str,
) -> Result<String, ChartError> {
    let lines: Vec<(Parameterization, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            let mut points: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0)
                .map(|(x, y)| (x.log10(), y.log10()))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (s.parameterization, points)
        })
        .collect();
    let mut svg = String::new();
    let result = if lines.iter().all(|(_, p)| p.is_empty()) {
        draw_message(&mut svg, "nothing to draw: no positive values")
    } else {
        draw_log_log(&mut svg, &lines, (x_title, y_title))
    };
    result.map_err(|e| ChartError(e.to_string()))?;
    let aria = format!(
        "<svg role=\"img\" aria-label=\"{}\" ",
        aria_label.replace('"', "'")
    );
    Ok(svg.replacen("<svg ", &aria, 1))
}

fn draw_log_log(
    svg: &mut String,
    lines: &[(Parameterization, Vec<(f64, f64)>)],
    titles: (&str, &str),
) -> DrawResult {
    let xs = || lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.0));
    let (x_lo, x_hi) = padded_range(xs(), true);
    let (y_lo, y_hi) = padded_range(lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)), true);
    // Room above the data for the legend in the upper right corner.
    let y_hi = y_hi + 0.1 * (lines.len() as f64 + 1.0) * (y_hi - y_lo);
    // Ticks at the sizes of the grid when there are few (depths 2, 4, 8, ...), else decades.
    let mut x_ticks: Vec<f64> = xs().collect();
    x_ticks.sort_by(f64::total_cmp);
    x_ticks.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    if x_ticks.len() > 10 {
        x_ticks = log_ticks(x_lo, x_hi, 7.0);
    }
    let y_ticks = log_ticks(y_lo, y_hi, 6.0);
    let label = |v: &f64| significant(10f64.powf(*v));
    {
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
            titles,
            (&label, &label),
        )?;
        for (parameterization, points) in lines {
            if points.is_empty() {
                continue;
            }
            let color = parameterization_color(*parameterization);
            // SP is drawn with rings: where the width is the base width it is the same model as
            // muP, and the rings keep it visible under muP's line.
            let ring = *parameterization == Parameterization::Sp;
            let marker = move |p: (f64, f64)| {
                if ring {
                    Circle::new(p, 8, color.stroke_width(2))
                } else {
                    Circle::new(p, 4, color.filled())
                }
            };
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(parameterization.name())
                .legend(move |(lx, ly)| {
                    EmptyElement::at((lx, ly))
                        + PathElement::new(vec![(0, 0), (16, 0)], color.stroke_width(2))
                        + if ring {
                            Circle::new((8, 0), 6, color.stroke_width(2))
                        } else {
                            Circle::new((8, 0), 4, color.filled())
                        }
                });
            chart.draw_series(points.iter().map(|p| marker(*p)))?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_log_charts_draw_and_guard_bad_values() {
        let line = |p, k: f64| SizeSeries {
            parameterization: p,
            points: [2.0, 4.0, 8.0, 16.0]
                .iter()
                .map(|&x: &f64| (x, 0.3 * x.powf(k)))
                .collect(),
        };
        let svg = log_log_chart(
            &[
                line(Parameterization::DepthMup, -0.5),
                line(Parameterization::CompleteP, 0.0),
            ],
            ("depth", "distance"),
            "a \"quoted\" title",
        )
        .unwrap();
        assert!(svg.starts_with("<svg role=\"img\" aria-label=\"a 'quoted' title\""));
        assert!(svg.contains("depth-mup") && svg.contains("completep"));
        // Ticks at the depths of the grid.
        assert!(svg.contains("\n16\n") && svg.contains("\n2\n"), "{svg}");
        let bad = SizeSeries {
            parameterization: Parameterization::Sp,
            points: vec![(2.0, 0.0), (4.0, f64::NAN), (-1.0, 1.0)],
        };
        assert!(
            log_log_chart(&[bad], ("x", "y"), "t")
                .unwrap()
                .contains("nothing to draw")
        );
        assert_ne!(
            parameterization_css_color(Parameterization::Sp),
            parameterization_css_color(Parameterization::CompleteP)
        );
    }
}
