//! Drawing panels side by side with plotters: PNG or SVG by the output's extension.
//!
//! Text uses DejaVu Sans embedded in the binary and registered as "sans-serif" (plotters'
//! `ab_glyph` backend), so nothing has to be installed: no fontconfig, no freetype.

use crate::series::{Panel, Series, Style};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Legend entries per panel; more would run off the chart.
const MAX_LEGEND: usize = 12;

/// tab10, the palette the Python plots used.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn register_font() {
    REGISTER.call_once(|| {
        // The font is compiled in, so registering cannot meet a missing file.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Renders `panels` under `title` into `path` (`.svg` for SVG, anything else PNG).
///
/// SVG when `path` ends in `.svg`, PNG otherwise whatever its extension (or none). The chart is
/// drawn into a temporary file beside `path` and renamed into place, so a reader never sees half
/// a chart and a failed drawing leaves an earlier chart as it was.
pub fn render(path: &Path, title: &str, panels: &[Panel], size: (u32, u32)) -> Result<(), String> {
    render_grid(path, title, panels, Grid::row(panels.len()), size)
}

/// How panels are laid out: `columns` to a row, and whether the panels of a row share one y
/// scale (configurations compared side by side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub columns: usize,
    pub shared_y: bool,
}

impl Grid {
    /// Every panel side by side, each on its own scale.
    pub fn row(panels: usize) -> Self {
        Self {
            columns: panels.max(1),
            shared_y: false,
        }
    }
}

/// [`render`], with the panels laid out by `grid`.
pub fn render_grid(
    path: &Path,
    title: &str,
    panels: &[Panel],
    grid: Grid,
    size: (u32, u32),
) -> Result<(), String> {
    register_font();
    let svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The temporary file's extension picks the encoder.
    let temp = path.with_file_name(format!(
        ".{name}.{}.tmp.{}",
        std::process::id(),
        if svg { "svg" } else { "png" }
    ));
    let drawn = if svg {
        let root = SVGBackend::new(&temp, size).into_drawing_area();
        draw(&root, title, panels, grid).and_then(|()| root.present().map_err(|e| e.to_string()))
    } else {
        let root = BitMapBackend::new(&temp, size).into_drawing_area();
        draw(&root, title, panels, grid).and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    let placed = drawn.and_then(|()| {
        std::fs::rename(&temp, path).map_err(|e| format!("moving the chart into place: {e}"))
    });
    if placed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    placed
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    panels: &[Panel],
    grid: Grid,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 26).into_font().color(&BLACK))
        .map_err(|e| e.to_string())?;
    let columns = grid.columns.max(1);
    let rows = panels.len().div_ceil(columns).max(1);
    let areas = root.split_evenly((rows, columns));
    for (row, (areas, panels)) in areas
        .chunks(columns)
        .zip(panels.chunks(columns))
        .enumerate()
    {
        let top = grid
            .shared_y
            .then(|| {
                panels
                    .iter()
                    .filter_map(|p| ranges(p, None).map(|r| r.1 .1))
                    .fold(f64::NAN, f64::max)
            })
            .filter(|t| t.is_finite());
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel, top).map_err(|e| format!("row {}: {e}", row + 1))?;
        }
    }
    Ok(())
}

/// 12,345 -> "12.3k", 2,500,000 -> "2.5M": short labels that never overlap.
/// A tick label on an axis from `lo` to `hi`: as [`short_number`], but with as many decimals as
/// ticks about a tenth of a narrow span apart need to read differently (40.78, 40.82, ... rather
/// than 40.8 twice).
pub fn tick_label(v: f64, (lo, hi): (f64, f64)) -> String {
    let step = (hi - lo).abs() / 10.0;
    if v.abs() >= 1e4 || !(step > 0.0 && step < 1.0) {
        return short_number(v);
    }
    let decimals = (-step.log10().floor()).clamp(1.0, 6.0) as usize;
    let text = format!("{v:.decimals$}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

pub fn short_number(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = if scaled.abs() >= 100.0 || scaled.fract() == 0.0 {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{suffix}")
}

/// Axis ranges that hold every point with some room: y from 0, x padded by 5%.
/// The panel's x range and its y range from 0, to `top` when given (panels sharing a scale).
fn ranges(panel: &Panel, top: Option<f64>) -> Option<((f64, f64), (f64, f64))> {
    let pts: Vec<(f64, f64)> = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if pts.is_empty() {
        return None;
    }
    let (mut x0, mut x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let y1 = pts.iter().fold(0.0f64, |m, p| m.max(p.1));
    if (x1 - x0).abs() < f64::EPSILON {
        let pad = (x0.abs() * 0.1).max(1.0);
        x0 -= pad;
        x1 += pad;
    } else {
        let pad = (x1 - x0) * 0.05;
        x0 -= pad;
        x1 += pad;
    }
    let y1 = if y1 > 0.0 { y1 * 1.12 } else { 1.0 };
    Some(((x0, x1), (0.0, top.unwrap_or(y1))))
}

/// The right-hand axis's range: from 0 to a little above the largest value.
fn secondary_range(panel: &Panel) -> Option<(f64, f64)> {
    let top = panel
        .secondary
        .as_ref()?
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(f64::NAN, f64::max);
    top.is_finite()
        .then_some((0.0, if top > 0.0 { top * 1.12 } else { 1.0 }))
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    top: Option<f64>,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let Some(((x0, x1), (y0, y1))) = ranges(panel, top) else {
        area.draw(&Text::new(
            format!("{}: no data", panel.title),
            (40, 60),
            ("sans-serif", 20),
        ))
        .map_err(err)?;
        return Ok(());
    };
    let ticks = panel.x_ticks.clone().unwrap_or_default();
    let labelled = panel.series.iter().filter(|s| !s.points.is_empty()).count();
    let caption = if labelled > MAX_LEGEND {
        format!("{} (legend: first {MAX_LEGEND} of {labelled})", panel.title)
    } else {
        panel.title.clone()
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .right_y_label_area_size(if panel.secondary.is_some() { 72 } else { 0 })
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    if let (Some(secondary), Some((s0, s1))) = (&panel.secondary, secondary_range(panel)) {
        return draw_dual(chart, panel, secondary, (x0, x1), (y0, y1), (s0, s1)).map_err(err);
    }
    let x_tick = |v: &f64| tick_label(*v, (x0, x1));
    let y_tick = |v: &f64| tick_label(*v, (y0, y1));
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(RGBColor(246, 246, 246))
        .bold_line_style(RGBColor(215, 215, 215))
        .y_label_formatter(&y_tick);
    if ticks.is_empty() {
        mesh.x_labels(8).x_label_formatter(&x_tick);
    } else {
        // ISL ticks are drawn below, exactly at the ISLs, as exact token counts.
        mesh.x_labels(0).disable_x_mesh();
    }
    mesh.draw().map_err(err)?;
    if !ticks.is_empty() {
        draw_isl_ticks(area, &mut chart, &ticks, (y0, y1)).map_err(err)?;
    }
    draw_primary(&mut chart, panel).map_err(err)?;
    draw_legend(&mut chart, panel, (x0, x1), (y0, y1)).map_err(err)?;
    Ok(())
}

/// The corner whose region (a third of the width, 40% of the height) holds the fewest points.
fn legend_corner(panel: &Panel, (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> SeriesLabelPosition {
    let (w, h) = (x1 - x0, y1 - y0);
    let count = |left: bool, top: bool| {
        panel
            .series
            .iter()
            .flat_map(|s| interpolated(&s.points))
            .filter(|(x, y)| {
                let in_x = if left {
                    *x <= x0 + w * 0.36
                } else {
                    *x >= x1 - w * 0.36
                };
                let in_y = if top {
                    *y >= y1 - h * 0.42
                } else {
                    *y <= y0 + h * 0.42
                };
                in_x && in_y
            })
            .count()
    };
    [
        (count(false, true), SeriesLabelPosition::UpperRight),
        (count(true, true), SeriesLabelPosition::UpperLeft),
        (count(false, false), SeriesLabelPosition::LowerRight),
        (count(true, false), SeriesLabelPosition::LowerLeft),
    ]
    .into_iter()
    .min_by_key(|(n, _)| *n)
    .map_or(SeriesLabelPosition::UpperRight, |(_, p)| p)
}

/// Points along a polyline (10 per segment), so a line crossing a corner counts as there.
fn interpolated(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = points.to_vec();
    for w in points.windows(2) {
        for i in 1..10 {
            let t = f64::from(i) / 10.0;
            out.push((
                w[0].0 + (w[1].0 - w[0].0) * t,
                w[0].1 + (w[1].1 - w[0].1) * t,
            ));
        }
    }
    out
}

/// The points of `s` that can be drawn (finite in both coordinates).
fn finite_points(s: &Series) -> Vec<(f64, f64)> {
    s.points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// The primary series: colour by slot, grey for every-run points, at most [`MAX_LEGEND`] labelled.
fn draw_primary<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut legend_entries = 0;
    let colors = series_colors(panel);
    for (series, &color) in panel.series.iter().zip(&colors) {
        let in_legend = legend_entries < MAX_LEGEND
            && (!series.points.is_empty() || series.style.listed_when_empty());
        legend_entries += usize::from(in_legend);
        draw_series(chart, series, color, in_legend)?;
    }
    draw_point_labels(chart, panel, &colors)
}

/// The colour each of `panel`'s primary series is drawn in: its palette slot, else the next
/// slot in order; grey for every-run points.
pub fn series_colors(panel: &Panel) -> Vec<RGBColor> {
    let mut next = 0;
    panel
        .series
        .iter()
        .map(|series| {
            if series.style == Style::GreyPoints {
                return GREY;
            }
            let slot = series.color.unwrap_or_else(|| {
                next += 1;
                next - 1
            });
            COLORS[slot % COLORS.len()]
        })
        .collect()
}

/// Every-run points.
const GREY: RGBColor = RGBColor(150, 150, 150);

/// The legend, in the emptiest corner, when any series has points.
fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    panel: &Panel,
    x: (f64, f64),
    y: (f64, f64),
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    if panel.series.iter().any(|s| !s.points.is_empty()) {
        chart
            .configure_series_labels()
            .position(legend_corner(panel, x, y))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    Ok(())
}

/// A panel with a right-hand axis: primary series as usual, secondary ones dashed against it.
fn draw_dual<'a, DB: DrawingBackend + 'a>(
    chart: Chart<'a, DB>,
    panel: &Panel,
    secondary: &crate::series::Secondary,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    (s0, s1): (f64, f64),
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = chart.set_secondary_coord(x0..x1, s0..s1);
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(RGBColor(246, 246, 246))
        .bold_line_style(RGBColor(215, 215, 215))
        .x_label_formatter(&|v| tick_label(*v, (x0, x1)))
        .y_label_formatter(&|v| tick_label(*v, (y0, y1)))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc(&secondary.y_label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .y_label_formatter(&|v| tick_label(*v, (s0, s1)))
        .draw()?;
    draw_primary(&mut chart, panel)?;
    for (i, s) in secondary.series.iter().enumerate() {
        let color = COLORS[s.color.unwrap_or(i) % COLORS.len()];
        let pts = finite_points(s);
        if pts.is_empty() {
            continue;
        }
        if s.style == Style::Line {
            // In the legend beside the left axis's lines, so each colour says what it is.
            chart
                .draw_secondary_series(LineSeries::new(pts, color.stroke_width(2)))?
                .label(format!("{} (right axis)", s.label))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            continue;
        }
        chart.draw_secondary_series(DashedLineSeries::new(
            pts.clone(),
            6,
            4,
            color.stroke_width(2),
        ))?;
        chart.draw_secondary_series(
            pts.iter()
                .map(|p| TriangleMarker::new(*p, 5, color.filled())),
        )?;
    }
    draw_legend(&mut chart, panel, (x0, x1), (y0, y1))
}

type Chart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A light grid line and an exact label at every ISL; labels that would collide with the previous
/// one are skipped so none overlap.
fn draw_isl_ticks<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &mut Chart<'_, DB>,
    ticks: &[f64],
    (y0, y1): (f64, f64),
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let grid = RGBColor(225, 225, 225);
    for &t in ticks {
        chart.draw_series(LineSeries::new(
            vec![(t, y0), (t, y1)],
            grid.stroke_width(1),
        ))?;
    }
    let (base_x, base_y) = area.get_base_pixel();
    let font = ("sans-serif", 15).into_font().color(&BLACK);
    let mut last_right = i32::MIN;
    for &t in ticks {
        let label = format!("{t:.0}");
        let (px, py) = chart.backend_coord(&(t, y0));
        let width = 9 * label.len() as i32;
        let left = px - base_x - width / 2;
        if left <= last_right + 6 {
            continue;
        }
        last_right = left + width;
        area.draw(&PathElement::new(
            vec![(px - base_x, py - base_y), (px - base_x, py - base_y + 5)],
            BLACK,
        ))?;
        area.draw(&Text::new(label, (left, py - base_y + 8), font.clone()))?;
    }
    Ok(())
}

/// The legend entry of a series without points: a threshold no run meets (its label says so),
/// or a key saying what a solid or dashed line means.
fn list_without_points<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    s: &Series,
    color: RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let style = s.style;
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
        .label(s.label.clone())
        .legend(move |(x, y)| {
            let (line, gap): (ShapeStyle, i32) = match style {
                Style::Key { dashed } => (BLACK.stroke_width(2), if dashed { 5 } else { 0 }),
                _ => (color.mix(0.3).stroke_width(1), 0),
            };
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (8, 0)], line)
                + PathElement::new(vec![(8 + gap, 0), (20, 0)], line)
        });
    Ok(())
}

fn draw_series<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    s: &Series,
    color: RGBColor,
    in_legend: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let pts = finite_points(s);
    if pts.is_empty() {
        if in_legend && s.style.listed_when_empty() {
            list_without_points(chart, s, color)?;
        }
        return Ok(());
    }
    match s.style {
        Style::Key { .. } => Ok(()),
        Style::GreyPoints => {
            let anno = chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
            if in_legend {
                anno.label(s.label.clone())
                    .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
            }
            Ok(())
        }
        Style::Line => draw_line(chart, &pts, s, color, in_legend),
        _ => {
            draw_line(chart, &pts, s, color, in_legend)?;
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
            draw_errors(chart, s, color)
        }
    }
}

/// A vertical bar over each point's interval, where the series has them.
fn draw_errors<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    s: &Series,
    color: RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let bars = s
        .points
        .iter()
        .zip(&s.errors)
        .filter_map(|(p, e)| e.map(|(low, high)| (p, low, high)))
        .filter(|(p, low, high)| p.0.is_finite() && low.is_finite() && high.is_finite());
    chart.draw_series(bars.map(|(p, low, high)| {
        ErrorBar::new_vertical(p.0, low, p.1, high, color.stroke_width(2), 12)
    }))?;
    Ok(())
}

/// The line of a line-drawn series, and its legend entry when `in_legend` (plotters draws one
/// swatch per `.legend` call, so only series in the legend get one).
fn draw_line<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    pts: &[(f64, f64)],
    s: &Series,
    color: RGBColor,
    in_legend: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    // The swatch: a stroke of the series' width and `length` pixels.
    let (width, length, dashed) = match s.style {
        Style::Frontier { width } => {
            // Markers wider than the stroke. A frontier of one run is a large dot, larger for
            // looser thresholds, so equal ones nest as rings instead of hiding each other.
            let radius = if pts.len() == 1 {
                width as i32 + 6
            } else {
                (width as i32 / 2 + 3).max(4)
            };
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, radius, color.filled())))?;
            (width, 20, false)
        }
        Style::DashedWithMarkers => (2, 8, true),
        _ => (2, 20, false),
    };
    let stroke = color.stroke_width(width);
    let anno = if dashed {
        chart.draw_series(DashedLineSeries::new(pts.to_vec(), 6, 4, stroke))?
    } else {
        chart.draw_series(LineSeries::new(pts.to_vec(), stroke))?
    };
    if in_legend {
        let swatch = color.stroke_width(width.min(8));
        anno.label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + length, y)], swatch));
    }
    Ok(())
}

/// A label's box in pixels: left, top, right, bottom.
type LabelBox = (i32, i32, i32, i32);

/// Where a label `width` pixels wide goes beside the point at `(x, y)` (pixels): the first of
/// right above, right below, left above, left below, further up, further down that overlaps no
/// box in `placed` (right above when all do); its box is added to `placed`.
fn place_label(placed: &mut Vec<LabelBox>, (x, y): (i32, i32), width: i32) -> (i32, i32) {
    const HEIGHT: i32 = 13;
    let candidates = [
        (6, -16),
        (6, 4),
        (-6 - width, -16),
        (-6 - width, 4),
        (6, -30),
        (6, 18),
    ];
    let boxed = |(dx, dy): (i32, i32)| (x + dx, y + dy, x + dx + width, y + dy + HEIGHT);
    let free = |b: &LabelBox| {
        placed
            .iter()
            .all(|o| b.2 <= o.0 || o.2 <= b.0 || b.3 <= o.1 || o.3 <= b.1)
    };
    let offset = candidates
        .into_iter()
        .find(|c| free(&boxed(*c)))
        .unwrap_or(candidates[0]);
    placed.push(boxed(offset));
    offset
}

/// The point labels of every series (a Pareto point's concurrency), each put beside its point
/// where it overlaps no label already placed: right above, right below, left above, left below,
/// then further up or down; where every place is taken, right above.
fn draw_point_labels<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    panel: &Panel,
    colors: &[RGBColor],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut placed: Vec<LabelBox> = Vec::new();
    for (s, color) in panel.series.iter().zip(colors) {
        for (p, label) in s.points.iter().zip(&s.point_labels) {
            if !(p.0.is_finite() && p.1.is_finite()) {
                continue;
            }
            let width = 7 * label.chars().count() as i32;
            let offset = place_label(&mut placed, chart.backend_coord(p), width);
            chart.draw_series(std::iter::once(
                EmptyElement::at(*p)
                    + Text::new(
                        label.clone(),
                        offset,
                        ("sans-serif", 13).into_font().color(color),
                    ),
            ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_nearby_points_go_where_they_overlap_nothing() {
        let mut placed = Vec::new();
        let first = place_label(&mut placed, (100, 100), 21);
        assert_eq!(first, (6, -16));
        // The same point again: right above is taken, right below is free.
        assert_eq!(place_label(&mut placed, (100, 100), 21), (6, 4));
        // A point 3 px away: both right-hand places are taken, left above is free.
        assert_eq!(place_label(&mut placed, (103, 101), 21), (-27, -16));
        let boxes = placed.clone();
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                let apart = a.2 <= b.0 || b.2 <= a.0 || a.3 <= b.1 || b.3 <= a.1;
                assert!(apart, "{a:?} overlaps {b:?}");
            }
        }
        // A point far away takes the usual place.
        assert_eq!(place_label(&mut placed, (400, 300), 21), (6, -16));
    }

    #[test]
    fn ticks_on_a_narrow_axis_read_differently() {
        let ticks: Vec<String> = (0..8)
            .map(|i| tick_label(40.75 + 0.04 * f64::from(i), (40.74, 41.05)))
            .collect();
        let distinct: std::collections::BTreeSet<&String> = ticks.iter().collect();
        assert_eq!(distinct.len(), ticks.len(), "{ticks:?}");
        assert_eq!(ticks[0], "40.75");
        // Wide axes keep the short form.
        assert_eq!(tick_label(12_345.0, (0.0, 20_000.0)), "12.3k");
        assert_eq!(tick_label(0.0, (0.0, 1.2)), "0");
        assert_eq!(tick_label(0.4, (0.0, 1.2)), "0.4");
    }

    #[test]
    fn short_numbers_read_well() {
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(950.0), "950");
        assert_eq!(short_number(2.5), "2.5");
        assert_eq!(short_number(12_345.0), "12.3k");
        assert_eq!(short_number(2_500_000.0), "2.5M");
        assert_eq!(short_number(14_336.0), "14.3k");
    }
}
