//! Charts of the planner: predicted loss of the candidate shapes of a budget against their
//! width-to-depth ratio `N:L`, one line per parameterization.

use super::{
    ChartError, DrawResult, HEIGHT, TickedAxis, WIDTH, draw_legend, draw_message, framed_chart,
    padded_range, series_color,
};
use crate::numbers::significant;
use plotters::prelude::*;

/// One candidate shape of a line: `N:L`, predicted loss (nats/token) and its interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShapePoint {
    /// Width over depth.
    pub width_depth_ratio: f64,
    /// Predicted final loss.
    pub loss: f64,
    /// Bootstrap interval `(low, high)` of the loss, if any.
    pub interval: Option<(f64, f64)>,
}

/// Predicted loss against `N:L` (log axis), one line per `(label, points)` with its intervals as
/// error bars and its best shape ringed. Points with a non-positive ratio or a loss that is not
/// finite are skipped; with nothing left the chart says so.
pub fn shape_loss_chart(series: &[(String, Vec<ShapePoint>)]) -> Result<String, ChartError> {
    let lines: Vec<(String, Vec<ShapePoint>)> = series
        .iter()
        .map(|(label, points)| {
            let mut points: Vec<ShapePoint> = points
                .iter()
                .filter(|p| {
                    p.width_depth_ratio.is_finite()
                        && p.width_depth_ratio > 0.0
                        && p.loss.is_finite()
                })
                .map(|p| ShapePoint {
                    width_depth_ratio: p.width_depth_ratio.log10(),
                    interval: p
                        .interval
                        .filter(|(low, high)| low.is_finite() && high.is_finite()),
                    ..*p
                })
                .collect();
            points.sort_by(|a, b| a.width_depth_ratio.total_cmp(&b.width_depth_ratio));
            (label.clone(), points)
        })
        .collect();
    let mut svg = String::new();
    let result = if lines.iter().all(|(_, p)| p.is_empty()) {
        draw_message(&mut svg, "no candidate shapes")
    } else {
        draw_shape_lines(&mut svg, &lines)
    };
    result.map_err(|e| ChartError(e.to_string()))?;
    Ok(svg.replacen(
        "<svg ",
        "<svg role=\"img\" aria-label=\"Predicted loss of the candidate shapes versus width over depth, log N:L axis\" ",
        1,
    ))
}

fn draw_shape_lines(svg: &mut String, lines: &[(String, Vec<ShapePoint>)]) -> DrawResult {
    let points = || lines.iter().flat_map(|(_, p)| p.iter());
    let (x_lo, x_hi) = padded_range(points().map(|p| p.width_depth_ratio), true);
    let losses = points().flat_map(|p| {
        let (low, high) = p.interval.unwrap_or((p.loss, p.loss));
        [p.loss, low, high]
    });
    let (y_lo, y_hi) = padded_range(losses, false);
    {
        let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = framed_chart(
            &root,
            TickedAxis::log(x_lo, x_hi),
            TickedAxis::linear(y_lo, y_hi),
            (
                "width / depth N:L (log scale)",
                "predicted final loss (nats/token)",
            ),
            (&|v: &f64| significant(10f64.powf(*v)), &|v: &f64| {
                significant(*v)
            }),
        )?;
        for (index, (label, points)) in lines.iter().enumerate() {
            if points.is_empty() {
                continue;
            }
            let color = series_color(index);
            let xy: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (p.width_depth_ratio, p.loss))
                .collect();
            chart
                .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))?
                .label(label.clone())
                .legend(move |(lx, ly)| {
                    EmptyElement::at((lx, ly))
                        + PathElement::new(vec![(0, 0), (16, 0)], color.stroke_width(2))
                        + Circle::new((8, 0), 4, color.filled())
                });
            chart.draw_series(xy.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
            chart.draw_series(points.iter().filter_map(|p| {
                let (low, high) = p.interval?;
                Some(PathElement::new(
                    vec![(p.width_depth_ratio, low), (p.width_depth_ratio, high)],
                    color.mix(0.5).stroke_width(1),
                ))
            }))?;
            if let Some(best) = xy.iter().min_by(|a, b| a.1.total_cmp(&b.1)) {
                chart.draw_series(std::iter::once(Circle::new(
                    *best,
                    9,
                    color.stroke_width(3),
                )))?;
            }
        }
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label("recommended shape")
            .legend(|(lx, ly)| Circle::new((lx + 8, ly), 7, RGBColor(60, 60, 60).stroke_width(2)));
        draw_legend(&mut chart, SeriesLabelPosition::UpperMiddle)?;
        root.present()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_charts_draw_lines_intervals_and_guard_empty_data() {
        let line = |optimum: f64, loss: f64| {
            [8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
                .iter()
                .map(|r: &f64| {
                    let l = loss * (1.0 + 0.01 * (r.ln() - optimum.ln()).powi(2));
                    ShapePoint {
                        width_depth_ratio: *r,
                        loss: l,
                        interval: Some((l - 0.02, l + 0.02)),
                    }
                })
                .collect::<Vec<_>>()
        };
        let svg = shape_loss_chart(&[
            ("completep".into(), line(30.0, 2.9)),
            ("mup".into(), line(100.0, 3.0)),
        ])
        .unwrap();
        assert!(svg.starts_with("<svg role=\"img\""), "{svg:.100}");
        assert!(svg.contains("completep") && svg.contains("recommended shape"));
        assert!(svg.contains("width / depth N:L (log scale)"));
        for empty in [
            vec![],
            vec![("a".to_string(), vec![])],
            vec![(
                "a".to_string(),
                vec![ShapePoint {
                    width_depth_ratio: 0.0,
                    loss: 3.0,
                    interval: None,
                }],
            )],
        ] {
            assert!(
                shape_loss_chart(&empty)
                    .unwrap()
                    .contains("no candidate shapes")
            );
        }
        // One point, without an interval, still draws.
        let one = ShapePoint {
            width_depth_ratio: 64.0,
            loss: 3.0,
            interval: None,
        };
        assert!(
            !shape_loss_chart(&[("a".into(), vec![one])])
                .unwrap()
                .contains("no candidate shapes")
        );
    }
}
