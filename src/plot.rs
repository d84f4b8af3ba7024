//! Figures as SVG strings, drawn with plotters (text is laid out with plotters' built-in font
//! metrics, so no system fonts are needed).

use crate::coord::{CoordAxis, CoordTable};
use plotters::prelude::*;

/// A figure could not be drawn (for example, a series with no positive values on a log axis).
#[derive(Debug, thiserror::Error)]
#[error("could not draw the figure: {0}")]
pub struct PlotError(String);

/// A colour from dark blue (0) to yellow (1), for ordered series such as training steps.
fn ramp(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(68.0, 230.0), lerp(1.0, 200.0), lerp(84.0, 30.0))
}

/// Positive range of values, widened by a margin, for a log axis.
fn log_range(values: impl Iterator<Item = f64>, margin: f64) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    (hi > 0.0).then(|| (lo / margin, hi * margin))
}

/// The coordinate check figure: one panel per parameterization, mean |final residual| against
/// depth (or width) on log-log axes, one line per training step.
pub fn coord_check_svg(table: &CoordTable) -> Result<String, PlotError> {
    let mut svg = String::new();
    draw_coord_check(table, &mut svg).map_err(|e| PlotError(e.to_string()))?;
    Ok(svg)
}

fn draw_coord_check(
    table: &CoordTable,
    svg: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let params = table.parameterizations();
    let last = table.last_step();
    // Sizes are powers of two in practice: plot log2(size) on a linear axis labelled 2^x.
    let (x_lo, x_hi) = log_range(table.rows.iter().map(|r| table.size(r) as f64), 1.2)
        .map(|(lo, hi)| (lo.log2(), hi.log2()))
        .ok_or("no sizes to plot")?;
    let octaves = (x_hi - x_lo).ceil() as usize + 1;
    let (y_lo, y_hi) = log_range(table.rows.iter().map(|r| r.residual), 1.5)
        .ok_or("no positive values to plot")?;
    let x_desc = match table.axis {
        CoordAxis::Depth => "depth L",
        CoordAxis::Width => "width N",
    };
    let root =
        SVGBackend::with_string(svg, (340 * params.len().max(1) as u32, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    for (index, (panel, p)) in root
        .split_evenly((1, params.len().max(1)))
        .iter()
        .zip(&params)
        .enumerate()
    {
        let mut chart = ChartBuilder::on(panel)
            .caption(p.name(), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_lo..x_hi, (y_lo..y_hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("mean |final residual|")
            .x_labels(octaves)
            .x_label_formatter(&|x| format!("{:.0}", x.exp2()))
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .draw()?;
        for step in 1..=last {
            let color = ramp((step - 1) as f64 / (last.max(2) - 1) as f64);
            let points: Vec<(f64, f64)> = table
                .series(*p, step, |r| r.residual)
                .into_iter()
                .map(|(size, value)| (size.log2(), value))
                .collect();
            let line = chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
            // The colour ramp is ordered, so the first and last steps suffice as legend.
            if step == 1 || step == last {
                line.label(format!("step {step}")).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            }
            chart.draw_series(
                points
                    .into_iter()
                    .map(|pt| Circle::new(pt, 3, color.filled())),
            )?;
        }
        if index + 1 == params.len() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}
