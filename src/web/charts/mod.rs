//! Server-side loss charts for the pages: inline SVG strings drawn with plotters (built-in text
//! metrics, no system fonts), as `src/plot.rs` draws the CLI's figures.
//!
//! Log axes are drawn as a linear axis over `log10(value)` with tick labels mapped back, so the
//! ticks can be chosen here: plotters' own log axis shows no tick at all when the data spans less
//! than a decade, which a loss curve usually does.

pub mod analysis;
pub mod diagnostics;
pub mod planner;

use crate::numbers::significant;
use crate::store::MetricPoint;
use plotters::prelude::*;
use std::fmt::Write as _;

/// Chart size in pixels (the page scales it down to the available width).
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 480;
/// Training-loss points drawn per series at most (validation points are always all drawn).
const MAX_TRAIN_POINTS: usize = 1200;

/// Distinct colours that stay readable on white and apart for common colour-vision deficiencies
/// (Okabe-Ito without its yellow, then a few more).
const PALETTE: [RGBColor; 10] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(0, 0, 0),       // black
    RGBColor(140, 86, 75),   // brown
    RGBColor(127, 127, 127), // grey
    RGBColor(188, 189, 34),  // olive
];

/// The colour of series `index`.
pub fn series_color(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// The colour of series `index` as CSS `#rrggbb` (for legends drawn in HTML).
pub fn series_css_color(index: usize) -> String {
    let RGBColor(r, g, b) = series_color(index);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// The x axis of a loss chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum XAxis {
    Step,
    Tokens,
    #[default]
    Flops,
    Wall,
}

impl XAxis {
    /// Every axis, in the order the pages offer them.
    pub const ALL: [XAxis; 4] = [XAxis::Step, XAxis::Tokens, XAxis::Flops, XAxis::Wall];

    /// The query-parameter value.
    pub fn name(self) -> &'static str {
        match self {
            XAxis::Step => "step",
            XAxis::Tokens => "tokens",
            XAxis::Flops => "flops",
            XAxis::Wall => "wall",
        }
    }

    /// Parses a query-parameter value.
    pub fn parse(name: &str) -> Option<XAxis> {
        XAxis::ALL.into_iter().find(|x| x.name() == name)
    }

    /// The axis title, with its unit.
    pub fn title(self) -> &'static str {
        match self {
            XAxis::Step => "training step",
            XAxis::Tokens => "training tokens",
            XAxis::Flops => "training compute (FLOPs)",
            XAxis::Wall => "wall-clock time (seconds)",
        }
    }

    /// A short label for links.
    pub fn label(self) -> &'static str {
        match self {
            XAxis::Step => "step",
            XAxis::Tokens => "tokens",
            XAxis::Flops => "FLOPs",
            XAxis::Wall => "seconds",
        }
    }

    fn value(self, p: &MetricPoint) -> Option<f64> {
        match self {
            XAxis::Step => Some(p.step as f64),
            XAxis::Tokens => Some(p.tokens as f64),
            XAxis::Flops => Some(p.flops),
            XAxis::Wall => p.wall_secs,
        }
    }
}

/// A chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("could not draw the chart: {0}")]
pub struct ChartError(String);

/// One line (or set of markers) to draw, in data coordinates already mapped to the axes.
struct Line {
    color: RGBColor,
    points: Vec<(f64, f64)>,
    markers: bool,
    /// Legend text; `None` leaves the line out of the legend.
    label: Option<String>,
}

/// Train and validation loss against `x`, for one run (`series.len() == 1`: train and val in two
/// colours) or several (one colour per run: a line for train loss, dots for val loss).
/// Points that cannot be shown (missing, not finite, or not positive on a log axis) are skipped;
/// with nothing left the chart says "no data yet".
pub fn loss_chart(
    series: &[(String, Vec<MetricPoint>)],
    x: XAxis,
    log: bool,
) -> Result<String, ChartError> {
    let map = |v: f64| -> Option<f64> {
        if !v.is_finite() || (log && v <= 0.0) {
            None
        } else if log {
            Some(v.log10())
        } else {
            Some(v)
        }
    };
    let single = series.len() == 1;
    let mut lines = Vec::new();
    for (index, (label, points)) in series.iter().enumerate() {
        let train: Vec<MetricPoint> = points
            .iter()
            .filter(|p| p.train_loss.is_some())
            .cloned()
            .collect();
        let train = crate::web::runs::downsample(train, MAX_TRAIN_POINTS);
        let pick = |points: &[MetricPoint], loss: fn(&MetricPoint) -> Option<f64>| {
            points
                .iter()
                .filter_map(|p| Some((map(x.value(p)?)?, map(loss(p)?)?)))
                .collect::<Vec<_>>()
        };
        let train = pick(&train, |p| p.train_loss);
        let val = pick(points, |p| p.val_loss);
        let (train_color, val_color) = if single {
            (series_color(0), series_color(1))
        } else {
            (series_color(index), series_color(index))
        };
        // Several runs: one legend entry per run (its colour); the page explains line and dots.
        let (train_label, val_label) = if single {
            (Some("train loss".to_string()), Some("val loss".to_string()))
        } else if train.is_empty() {
            (None, Some(label.clone()))
        } else {
            (Some(label.clone()), None)
        };
        lines.push(Line {
            color: train_color,
            points: train,
            markers: false,
            label: train_label,
        });
        lines.push(Line {
            color: val_color,
            points: val,
            markers: true,
            label: val_label,
        });
    }
    let mut svg = String::new();
    let result = if lines.iter().all(|l| l.points.is_empty()) {
        draw_message(&mut svg, "no data yet")
    } else {
        draw_lines(&mut svg, &lines, x, log)
    };
    result.map_err(|e| ChartError(e.to_string()))?;
    let aria = format!(
        "<svg role=\"img\" aria-label=\"Loss versus {}{}\" ",
        x.title(),
        if log { ", log-log axes" } else { "" }
    );
    Ok(svg.replacen("<svg ", &aria, 1))
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A linear axis over `[lo, hi]` with the tick values chosen here.
#[derive(Clone)]
struct TickedAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl TickedAxis {
    /// `lo..hi` with about seven ticks at powers of ten (and their multiples).
    fn log(lo: f64, hi: f64) -> TickedAxis {
        TickedAxis {
            lo,
            hi,
            ticks: log_ticks(lo, hi, 7.0),
        }
    }

    /// `lo..hi` with about six evenly spaced round ticks.
    fn linear(lo: f64, hi: f64) -> TickedAxis {
        TickedAxis {
            lo,
            hi,
            ticks: linear_ticks(lo, hi, 6.0),
        }
    }
}

impl plotters::coord::ranged1d::Ranged for TickedAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = (value - self.lo) / (self.hi - self.lo);
        (f64::from(limit.0) + t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Grid lines and labels at the ticks only (no light lines between them).
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

fn draw_message(svg: &mut String, message: &str) -> DrawResult {
    {
        let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT / 2)).into_drawing_area();
        root.fill(&WHITE)?;
        let style = ("sans-serif", 22)
            .into_font()
            .color(&RGBColor(90, 90, 90))
            .pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Center,
            ));
        root.draw(&Text::new(
            message.to_string(),
            (WIDTH as i32 / 2, HEIGHT as i32 / 4),
            style,
        ))?;
        root.present()?;
    }
    Ok(())
}

/// The range of `values` with a little room, never empty.
fn padded_range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let span = hi - lo;
    if !span.is_finite() || span <= 0.0 {
        // One value (or one x): a window around it.
        let pad = if log { 0.1 } else { (lo.abs() * 0.1).max(1e-9) };
        return (lo - pad, hi + pad);
    }
    let pad = span * 0.04;
    (lo - pad, hi + pad)
}

/// A "nice" step (1, 2 or 5 times a power of ten) for about `target` intervals over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = span / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let nice = if normalized < 1.5 {
        1.0
    } else if normalized < 3.5 {
        2.0
    } else if normalized < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Evenly spaced nice values inside `[lo, hi]`.
fn linear_ticks(lo: f64, hi: f64, target: f64) -> Vec<f64> {
    let step = nice_step(hi - lo, target);
    if !step.is_finite() || step <= 0.0 {
        return vec![lo];
    }
    let mut ticks = Vec::new();
    let mut k = (lo / step).ceil();
    while k * step <= hi + step * 1e-9 && ticks.len() < 50 {
        // Snap to the step to avoid 0.30000000000000004.
        ticks.push((k * step * 1e9).round() / 1e9);
        k += 1.0;
    }
    ticks
}

/// Ticks of a log10 axis from `lo` to `hi` (in log10 units), about `target` of them: powers of
/// ten over wide ranges; over narrower ones the 1-2-5 values, or where those give fewer than
/// three, `1, 1.5, 2, 3, 4, 5, 6, 8` times a power of ten. Ticks closer than
/// `0.8 (hi - lo) / target` to the previous one are dropped, so that labels never overlap.
fn log_ticks(lo: f64, hi: f64, target: f64) -> Vec<f64> {
    let decades = hi - lo;
    let candidates = |mantissas: &[f64]| -> Vec<f64> {
        let mut ticks = Vec::new();
        for e in (lo.floor() as i64)..=(hi.ceil() as i64) {
            for m in mantissas {
                let t = e as f64 + m.log10();
                if t >= lo - 1e-9 && t <= hi + 1e-9 {
                    ticks.push(t);
                }
            }
        }
        ticks
    };
    let ticks = if decades >= 3.0 {
        // Powers of ten, every `every`-th of them.
        let every = (decades / target).ceil().max(1.0) as i64;
        (lo.ceil() as i64..=hi.floor() as i64)
            .filter(|e| e.rem_euclid(every) == 0)
            .map(|e| e as f64)
            .collect()
    } else {
        let one_two_five = candidates(&[1.0, 2.0, 5.0]);
        if one_two_five.len() >= 3 {
            one_two_five
        } else {
            candidates(&[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0])
        }
    };
    let min_gap = 0.8 * decades / target;
    let mut kept: Vec<f64> = Vec::with_capacity(ticks.len());
    for t in ticks {
        if kept.last().is_none_or(|&last| t - last >= min_gap) {
            kept.push(t);
        }
    }
    kept
}

/// Axis label colour.
const TEXT: RGBColor = RGBColor(40, 40, 40);

/// Formats a tick value for display.
type TickLabel<'f> = &'f dyn Fn(&f64) -> String;

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<TickedAxis, TickedAxis>>;

/// The frame every chart here shares: margins, axes with our ticks, grid, labels and titles.
fn framed_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    x: TickedAxis,
    y: TickedAxis,
    (x_desc, y_desc): (&str, &str),
    (x_label, y_label): (TickLabel<'_>, TickLabel<'_>),
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(root)
        .margin(14)
        .margin_right(28)
        .x_label_area_size(56)
        .y_label_area_size(76)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(x_label)
        .y_label_formatter(y_label)
        .label_style(("sans-serif", 17).into_font().color(&TEXT))
        .axis_desc_style(("sans-serif", 18).into_font().color(&TEXT))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(WHITE)
        .axis_style(RGBColor(120, 120, 120))
        .draw()?;
    Ok(chart)
}

fn draw_legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, position: SeriesLabelPosition) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", 17).into_font().color(&TEXT))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()?;
    Ok(())
}

fn draw_lines(svg: &mut String, lines: &[Line], x: XAxis, log: bool) -> DrawResult {
    let (x_lo, x_hi) = padded_range(lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)), log);
    let (y_lo, y_hi) = padded_range(lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)), log);
    let (x_ticks, y_ticks) = if log {
        (log_ticks(x_lo, x_hi, 7.0), log_ticks(y_lo, y_hi, 6.0))
    } else {
        (linear_ticks(x_lo, x_hi, 7.0), linear_ticks(y_lo, y_hi, 6.0))
    };
    let label = move |v: &f64| {
        if log {
            significant(10f64.powf(*v))
        } else {
            significant(*v)
        }
    };
    {
        let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let y_desc = if log {
            "loss (nats/token, log scale)"
        } else {
            "loss (nats/token)"
        };
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
            (x.title(), y_desc),
            (&label, &label),
        )?;
        for line in lines.iter().filter(|l| !l.points.is_empty()) {
            let color = line.color;
            if line.markers {
                let drawn = chart.draw_series(LineSeries::new(
                    line.points.clone(),
                    color.mix(0.55).stroke_width(1),
                ))?;
                if let Some(label) = &line.label {
                    drawn.label(label.clone()).legend(move |(lx, ly)| {
                        EmptyElement::at((lx, ly))
                            + PathElement::new(vec![(0, 0), (16, 0)], color.mix(0.55))
                            + Circle::new((8, 0), 4, color.filled())
                    });
                }
                chart.draw_series(
                    line.points
                        .iter()
                        .map(|p| Circle::new(*p, 4, color.filled())),
                )?;
            } else {
                let drawn = chart
                    .draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))?;
                if let Some(label) = &line.label {
                    drawn.label(label.clone()).legend(move |(lx, ly)| {
                        PathElement::new(vec![(lx, ly), (lx + 16, ly)], color.stroke_width(2))
                    });
                }
            }
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present()?;
    }
    Ok(())
}

/// Final validation loss against the learning rate (x: log2 of the learning rate, ticks labelled
/// with the learning rates themselves), one line per series (`(label, [(lr, loss)])`), the lowest
/// loss of each line ringed. Points with a learning rate that is not positive or a loss that is
/// not finite are skipped; with nothing left the chart says "no finished runs yet".
pub fn lr_sweep_chart(series: &[(String, Vec<(f64, f64)>)]) -> Result<String, ChartError> {
    let lines: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(label, points)| {
            let mut points: Vec<(f64, f64)> = points
                .iter()
                .filter(|(lr, loss)| lr.is_finite() && *lr > 0.0 && loss.is_finite())
                .map(|(lr, loss)| (lr.log2(), *loss))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (label.clone(), points)
        })
        .collect();
    let mut svg = String::new();
    let result = if lines.iter().all(|(_, p)| p.is_empty()) {
        draw_message(&mut svg, "no finished runs yet")
    } else {
        draw_lr_lines(&mut svg, &lines)
    };
    result.map_err(|e| ChartError(e.to_string()))?;
    Ok(svg.replacen(
        "<svg ",
        "<svg role=\"img\" aria-label=\"Final validation loss versus learning rate, log2 learning-rate axis\" ",
        1,
    ))
}

fn draw_lr_lines(svg: &mut String, lines: &[(String, Vec<(f64, f64)>)]) -> DrawResult {
    let xs = || lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.0));
    let (x_lo, x_hi) = padded_range(xs(), true);
    let (y_lo, y_hi) = padded_range(lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)), false);
    // Ticks at the learning rates of the grid when there are few, else at powers of two.
    let mut x_ticks: Vec<f64> = xs().collect();
    x_ticks.sort_by(f64::total_cmp);
    x_ticks.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    if x_ticks.len() > 10 {
        let every = ((x_hi - x_lo) / 8.0).ceil().max(1.0) as i64;
        x_ticks = (x_lo.ceil() as i64..=x_hi.floor() as i64)
            .filter(|e| e.rem_euclid(every) == 0)
            .map(|e| e as f64)
            .collect();
    }
    let y_ticks = linear_ticks(y_lo, y_hi, 6.0);
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
            (
                "learning rate (log2 scale)",
                "final validation loss (nats/token)",
            ),
            (&|v: &f64| significant(2f64.powf(*v)), &|v: &f64| {
                significant(*v)
            }),
        )?;
        for (index, (label, points)) in lines.iter().enumerate() {
            if points.is_empty() {
                continue;
            }
            let color = series_color(index);
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(label.clone())
                .legend(move |(lx, ly)| {
                    EmptyElement::at((lx, ly))
                        + PathElement::new(vec![(0, 0), (16, 0)], color.stroke_width(2))
                        + Circle::new((8, 0), 4, color.filled())
                });
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
            if let Some(best) = points.iter().min_by(|a, b| a.1.total_cmp(&b.1)) {
                chart.draw_series(std::iter::once(Circle::new(
                    *best,
                    9,
                    color.stroke_width(3),
                )))?;
            }
        }
        // One legend entry explains the rings. The legend goes top centre: loss against learning
        // rate is U-shaped, high at both ends.
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label("best learning rate of a line")
            .legend(|(lx, ly)| Circle::new((lx + 8, ly), 7, RGBColor(60, 60, 60).stroke_width(2)));
        draw_legend(&mut chart, SeriesLabelPosition::UpperMiddle)?;
        root.present()?;
    }
    Ok(())
}

/// Minimal SVG with a message, for errors the page should still show in place of a chart.
pub fn message_svg(message: &str) -> String {
    let mut svg = String::new();
    if draw_message(&mut svg, message).is_err() {
        svg.clear();
        let _ = write!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"60\"></svg>"
        );
    }
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(step: i64, train: f64, val: Option<f64>) -> MetricPoint {
        MetricPoint {
            step,
            tokens: step * 512,
            flops: step as f64 * 1e9,
            train_loss: Some(train),
            val_loss: val,
            lr: Some(0.01),
            wall_secs: Some(step as f64 * 0.1),
        }
    }

    #[test]
    fn charts_draw_and_guard_empty_data() {
        let points: Vec<MetricPoint> = (1..=50)
            .map(|s| point(s, 5.0 / (s as f64).sqrt(), (s % 10 == 0).then_some(4.0)))
            .collect();
        for x in XAxis::ALL {
            for log in [true, false] {
                let svg = loss_chart(&[("run".into(), points.clone())], x, log).unwrap();
                assert!(svg.starts_with("<svg role=\"img\""), "{svg:.100}");
                assert!(svg.contains("train loss") && svg.contains("val loss"));
            }
        }
        let empty = loss_chart(&[("run".into(), vec![])], XAxis::Flops, true).unwrap();
        assert!(empty.contains("no data yet"));
        // Zero or negative values cannot go on a log axis; they are dropped, not fatal.
        let zero = vec![point(0, 0.0, None)];
        let svg = loss_chart(&[("run".into(), zero)], XAxis::Step, true).unwrap();
        assert!(svg.contains("no data yet"));
        // One point still draws.
        let one = vec![point(3, 2.0, Some(2.0))];
        assert!(
            !loss_chart(
                &[("a".into(), one.clone()), ("b".into(), one)],
                XAxis::Tokens,
                false
            )
            .unwrap()
            .contains("no data yet")
        );
    }

    #[test]
    fn lr_sweep_charts_mark_the_best_point_and_guard_empty_data() {
        let line = |shift: f64| {
            [0.001, 0.003, 0.01, 0.03]
                .iter()
                .map(|lr: &f64| (*lr, 3.0 + shift + (lr.log2() + 7.0).powi(2) * 0.05))
                .collect::<Vec<_>>()
        };
        let svg = lr_sweep_chart(&[
            ("mup, depth 2".into(), line(0.0)),
            ("mup, depth 4".into(), line(-0.2)),
        ])
        .unwrap();
        assert!(svg.starts_with("<svg role=\"img\""), "{svg:.100}");
        assert!(svg.contains("mup, depth 4") && svg.contains("best learning rate"));
        assert!(svg.contains("learning rate (log2 scale)"));
        // Tick labels are the grid's learning rates.
        assert!(
            svg.contains("\n0.003\n") && svg.contains("\n0.01\n"),
            "{svg}"
        );
        for empty in [
            vec![],
            vec![("a".to_string(), vec![])],
            vec![("a".to_string(), vec![(0.0, 3.0), (0.01, f64::NAN)])],
        ] {
            assert!(
                lr_sweep_chart(&empty)
                    .unwrap()
                    .contains("no finished runs yet")
            );
        }
        // One point still draws.
        let one = lr_sweep_chart(&[("a".into(), vec![(0.01, 3.0)])]).unwrap();
        assert!(!one.contains("no finished runs yet"));
    }

    #[test]
    fn ticks_and_labels() {
        assert_eq!(significant(1e12), "1e12");
        assert_eq!(significant(2.5e12), "2.5e12");
        assert_eq!(significant(300.0), "300");
        assert_eq!(significant(2.5), "2.5");
        assert_eq!(significant(0.00390625), "0.00391");
        assert_eq!(
            linear_ticks(2.1, 5.5, 6.0),
            vec![2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5]
        );
        let t = log_ticks(8.0, 12.2, 7.0);
        assert_eq!(t, vec![8.0, 9.0, 10.0, 11.0, 12.0]);
        // A narrow log range still gets ticks, 1-2-5 where they suffice.
        let narrow = log_ticks(2.1f64.log10(), 5.5f64.log10(), 6.0);
        assert!(narrow.len() >= 3, "{narrow:?}");
        let values: Vec<f64> = log_ticks(0.5, 2.6, 6.0)
            .iter()
            .map(|t| 10f64.powf(*t))
            .collect();
        assert_eq!(values.len(), 6, "{values:?}");
        assert!(
            values
                .iter()
                .zip([5.0, 10.0, 20.0, 50.0, 100.0, 200.0])
                .all(|(v, w)| (v / w - 1.0).abs() < 1e-9)
        );
        // Labels never crowd: consecutive ticks are at least 0.8 range / target apart.
        for (lo, hi) in [
            (0.3, 0.45),
            (0.3, 0.9),
            (1.0, 2.4),
            (12.0, 14.9),
            (-2.0, 3.0),
            (8.0, 8.2),
        ] {
            let ticks = log_ticks(lo, hi, 6.0);
            assert!(!ticks.is_empty(), "{lo}..{hi}");
            for pair in ticks.windows(2) {
                assert!(
                    pair[1] - pair[0] >= 0.8 * (hi - lo) / 6.0 - 1e-12,
                    "{lo}..{hi}: {ticks:?}"
                );
            }
        }
    }
}
