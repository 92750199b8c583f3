//! PNG charts for the binaries: learning curves at the end of `train` and `report`, and grouped
//! bar charts (with error bars and a dashed reference line) for `evaluate`.
//!
//! Drawn with `plotters` into an RGB buffer; text uses DejaVu Sans, embedded in the binary
//! (`assets/fonts/`, Bitstream Vera licence beside it), so no system font or fontconfig is needed;
//! the buffer is encoded with the `png` crate and written atomically with
//! [`crate::agents::infra::run::write_atomic`]. Charts are [`WIDTH`] x [`HEIGHT`] pixels; series take
//! the colours of [`PALETTE`] (Okabe-Ito, colour-blind friendly) in order.
//!
//! Inputs are taken as they come: non-finite values are skipped (a line breaks at them), empty
//! series draw nothing, a single point draws a marker, and a range with one value is padded.

use std::io;
use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

/// Width of every chart in pixels.
pub const WIDTH: u32 = 800;
/// Height of every chart in pixels.
pub const HEIGHT: u32 = 500;

/// An RGB colour.
pub type Rgb = [u8; 3];

/// Series colours, in order (Okabe-Ito; the yellow, weakest on white, comes last).
pub const PALETTE: [Rgb; 8] = [
    [0, 114, 178],   // blue
    [230, 159, 0],   // orange
    [0, 158, 115],   // bluish green
    [213, 94, 0],    // vermillion
    [204, 121, 167], // reddish purple
    [86, 180, 233],  // sky blue
    [0, 0, 0],       // black
    [240, 228, 66],  // yellow
];

/// The colour of the `i`-th series (the palette repeats after eight).
pub fn series_colour(i: usize) -> Rgb {
    PALETTE[i % PALETTE.len()]
}

const ERROR_BAR: Rgb = [40, 40, 40];
const REFERENCE: Rgb = [90, 90, 90];
const GRID: Rgb = [228, 228, 228];

/// The embedded font, registered with plotters under [`FONT`] once per process.
const FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FONT: &str = "sans-serif";

/// One line of a [`LineChart`]: `(x, y)` points drawn in the given order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { label: label.into(), points }
    }
}

/// A line chart, e.g. a learning curve (x = env steps, y = return), one line per series.
#[derive(Debug, Clone, Copy)]
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
}

/// One bar: a mean with its error bar (`mean ± std`; a non-finite or negative `std` draws none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    pub mean: f64,
    pub std: f64,
}

/// A group of bars (a condition such as "pixels only"), one per series label; `None` is missing.
#[derive(Debug, Clone, PartialEq)]
pub struct BarGroup {
    pub label: String,
    pub bars: Vec<Option<Bar>>,
}

/// A grouped bar chart: groups along x, one bar per series (agent, checkpoint) in each group,
/// bars drawn from 0 (so negative means hang down), and an optional dashed horizontal reference
/// line `(label, value)`, e.g. the random policy's score.
#[derive(Debug, Clone, Copy)]
pub struct BarChart<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub series_labels: &'a [String],
    pub groups: &'a [BarGroup],
    pub reference: Option<(&'a str, f64)>,
}

/// Draws `chart` and writes it to `path` as a PNG (atomically).
pub fn write_line_chart(path: &Path, chart: &LineChart) -> io::Result<()> {
    crate::agents::infra::run::write_atomic(path, &line_chart_png(chart)?)
}

/// Draws `chart` and writes it to `path` as a PNG (atomically).
pub fn write_bar_chart(path: &Path, chart: &BarChart) -> io::Result<()> {
    crate::agents::infra::run::write_atomic(path, &bar_chart_png(chart)?)
}

/// The PNG bytes of a line chart.
pub fn line_chart_png(chart: &LineChart) -> io::Result<Vec<u8>> {
    encode_png(&render(|area| draw_line_chart(area, chart))?)
}

/// The PNG bytes of a bar chart.
pub fn bar_chart_png(chart: &BarChart) -> io::Result<Vec<u8>> {
    encode_png(&render(|area| draw_bar_chart(area, chart))?)
}

/// Reads a metrics.csv written by `m3ixup_agents::infra::run::MetricsSink` and returns the `(x, y)`
/// pairs of two named columns, skipping rows where either cell is empty, unreadable or not
/// finite. An empty file gives no points; a file whose header lacks either column is an
/// `InvalidInput` error naming the columns it has.
pub fn csv_series(path: &Path, x_key: &str, y_key: &str) -> io::Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(path)?;
    parse_csv_series(&text, x_key, y_key)
        .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {message}", path.display())))
}

/// Smooths `points` with a trailing moving average over `window` points (x kept), skipping
/// non-finite values; `window <= 1` returns the finite points unchanged.
pub fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let finite: Vec<(f64, f64)> = points.iter().copied().filter(|&(x, y)| usable(x) && usable(y)).collect();
    let window = window.max(1);
    let mut sum = 0.0;
    let mut out = Vec::with_capacity(finite.len());
    for (i, &(x, y)) in finite.iter().enumerate() {
        sum += y;
        if i >= window {
            sum -= finite[i - window].1;
        }
        out.push((x, sum / (i + 1).min(window) as f64));
    }
    out
}

fn parse_csv_series(text: &str, x_key: &str, y_key: &str) -> Result<Vec<(f64, f64)>, String> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|k| k.trim().to_string()).collect(),
        Err(e) => return Err(e.to_string()),
    };
    if header.iter().all(String::is_empty) {
        return Ok(Vec::new());
    }
    let column = |key: &str| {
        header
            .iter()
            .position(|h| h == key)
            .ok_or_else(|| format!("no column {key:?} (columns: {})", header.join(", ")))
    };
    let (xi, yi) = (column(x_key)?, column(y_key)?);
    let cell = |row: &csv::StringRecord, i: usize| {
        row.get(i).and_then(|c| c.trim().parse::<f64>().ok()).filter(|v| usable(*v))
    };
    let mut points = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| e.to_string())?;
        if let (Some(x), Some(y)) = (cell(&row, xi), cell(&row, yi)) {
            points.push((x, y));
        }
    }
    Ok(points)
}

// ---------------------------------------------------------------------------------------------
// Drawing

/// A finite value small enough that ranges and pixel positions computed from it stay finite.
fn usable(v: f64) -> bool {
    v.is_finite() && v.abs() < 1e300
}

fn colour(rgb: Rgb) -> RGBColor {
    RGBColor(rgb[0], rgb[1], rgb[2])
}

/// Draws with `draw` on a white [`WIDTH`] x [`HEIGHT`] RGB buffer and returns the buffer.
fn render(
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<(), Box<dyn std::error::Error>>,
) -> io::Result<Vec<u8>> {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        let registered = register_font(FONT, FontStyle::Normal, FONT_BYTES);
        assert!(registered.is_ok(), "the embedded font parses");
    });
    let mut buffer = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut buffer, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&area).map_err(|e| io::Error::other(format!("drawing a chart: {e}")))?;
        area.present().map_err(|e| io::Error::other(format!("drawing a chart: {e}")))?;
    }
    Ok(buffer)
}

fn encode_png(rgb: &[u8]) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(io::Error::other)?;
    writer.write_image_data(rgb).map_err(io::Error::other)?;
    writer.finish().map_err(io::Error::other)?;
    Ok(bytes)
}

/// `(lo, hi)` of the finite values, padded when they are one value (or none: `0..1`), with a 5%
/// margin so that lines and bars do not touch the frame.
fn axis_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| usable(*v)).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = padded_range(lo, hi);
    let margin = (hi - lo) * 0.05;
    (lo - margin, hi + margin)
}

fn padded_range(lo: f64, hi: f64) -> (f64, f64) {
    if !(usable(lo) && usable(hi)) || lo > hi {
        return (0.0, 1.0);
    }
    let scale = lo.abs().max(hi.abs());
    if hi - lo <= scale * 1e-9 {
        let pad = if scale == 0.0 { 1.0 } else { scale * 0.1 };
        return (lo - pad, hi + pad);
    }
    (lo, hi)
}

/// A tick label with k/M/B suffixes on axes that reach 10,000, and as many decimals as the
/// axis's scale needs (`span`: the axis's length).
fn format_tick(v: f64, span: f64, axis_max: f64) -> String {
    let step = span / 10.0;
    if v.abs() < step * 1e-6 {
        return "0".to_string();
    }
    if step < 1e-5 || axis_max >= 1e15 {
        return format!("{v:.1e}");
    }
    let (div, suffix) = match v.abs() {
        a if axis_max >= 1e4 && a >= 1e9 => (1e9, "B"),
        a if axis_max >= 1e4 && a >= 1e6 => (1e6, "M"),
        a if axis_max >= 1e4 && a >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let decimals = (-(step / div).log10().floor()).clamp(0.0, 6.0) as usize;
    let mut s = format!("{:.*}", decimals, v / div);
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    s.push_str(suffix);
    s
}

/// The runs of consecutive usable points of a series (a line breaks at a non-finite value).
fn finite_runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut runs = vec![Vec::new()];
    for &(x, y) in points {
        if usable(x) && usable(y) {
            runs.last_mut().expect("one run at least").push((x, y));
        } else if !runs.last().expect("one run at least").is_empty() {
            runs.push(Vec::new());
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw_line_chart(area: &DrawingArea<BitMapBackend, Shift>, chart: &LineChart) -> DrawResult {
    let points = || chart.series.iter().flat_map(|s| s.points.iter().copied());
    let (x_lo, x_hi) = axis_range(points().filter(|p| usable(p.1)).map(|p| p.0));
    let (y_lo, y_hi) = axis_range(points().filter(|p| usable(p.0)).map(|p| p.1));
    // Room below the lowest point for the legend (about 20 px per entry of a ~380 px plot).
    let y_lo = y_lo - (y_hi - y_lo) * (chart.series.len() as f64 * 20.0 + 12.0) / 380.0;
    let mut plot = ChartBuilder::on(area)
        .caption(chart.title, (FONT, 20))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
    let x_max = x_lo.abs().max(x_hi.abs());
    let y_max = y_lo.abs().max(y_hi.abs());
    plot.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(TRANSPARENT)
        .bold_line_style(colour(GRID))
        .x_label_formatter(&|v| format_tick(*v, x_hi - x_lo, x_max))
        .y_label_formatter(&|v| format_tick(*v, y_hi - y_lo, y_max))
        .draw()?;
    for (i, series) in chart.series.iter().enumerate() {
        let style = ShapeStyle::from(colour(series_colour(i))).stroke_width(2);
        let runs = finite_runs(&series.points);
        for (k, run) in runs.iter().enumerate() {
            let drawn = if run.len() == 1 {
                plot.draw_series(run.iter().map(|&p| Circle::new(p, 4, style.filled())))?
            } else {
                plot.draw_series(LineSeries::new(run.iter().copied(), style))?
            };
            if k == 0 {
                drawn
                    .label(series.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
        }
    }
    if chart.series.iter().any(|s| !finite_runs(&s.points).is_empty()) {
        plot.configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(colour(GRID))
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    Ok(())
}

fn draw_bar_chart(area: &DrawingArea<BitMapBackend, Shift>, chart: &BarChart) -> DrawResult {
    let n_groups = chart.groups.len().max(1);
    let n_series = chart.series_labels.len().max(chart.groups.iter().map(|g| g.bars.len()).max().unwrap_or(0)).max(1);
    // Bars start at 0; error bars and the reference line count too.
    let bars = || chart.groups.iter().flat_map(|g| g.bars.iter().flatten().copied());
    let extent = bars()
        .flat_map(|b| {
            let std = if b.std.is_finite() && b.std > 0.0 { b.std } else { 0.0 };
            [b.mean - std, b.mean + std]
        })
        .chain([0.0])
        .chain(chart.reference.map(|(_, v)| v));
    let (y_lo, y_hi) = axis_range(extent);
    // Headroom above the highest bar for the legend (about 20 px per entry of a ~380 px plot).
    let entries = chart.series_labels.len() + usize::from(chart.reference.is_some());
    let y_hi = y_hi + (y_hi - y_lo) * (entries as f64 * 20.0 + 12.0) / 380.0;
    let mut plot = ChartBuilder::on(area)
        .caption(chart.title, (FONT, 20))
        .margin(14)
        .x_label_area_size(LABEL_AREA)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..n_groups as f64, y_lo..y_hi)?;
    let y_max = y_lo.abs().max(y_hi.abs());
    plot.configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc(chart.y_label)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(TRANSPARENT)
        .bold_line_style(colour(GRID))
        .y_label_formatter(&|v| format_tick(*v, y_hi - y_lo, y_max))
        .draw()?;
    // The zero line the bars hang from.
    plot.draw_series(LineSeries::new([(0.0, 0.0), (n_groups as f64, 0.0)], BLACK))?;

    let width = 0.8 / n_series as f64;
    for s in 0..n_series {
        let fill = colour(series_colour(s)).filled();
        let rects: Vec<_> = chart
            .groups
            .iter()
            .enumerate()
            .filter_map(|(g, group)| group.bars.get(s).copied().flatten().map(|b| (g, b)))
            .filter(|(_, b)| usable(b.mean))
            .map(|(g, b)| {
                let x0 = g as f64 + 0.1 + s as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, b.mean)], fill)
            })
            .collect();
        let drawn = plot.draw_series(rects)?;
        if let Some(label) = chart.series_labels.get(s) {
            drawn.label(label.as_str()).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], fill));
        }
    }
    // Error bars: mean ± std with caps.
    let error = ShapeStyle::from(colour(ERROR_BAR)).stroke_width(2);
    for (g, group) in chart.groups.iter().enumerate() {
        for (s, bar) in group.bars.iter().enumerate() {
            let Some(b) = bar.filter(|b| usable(b.mean) && b.std.is_finite() && b.std > 0.0) else { continue };
            let centre = g as f64 + 0.1 + s as f64 * width + width * 0.45;
            let cap = width * 0.2;
            let (lo, hi) = (b.mean - b.std, b.mean + b.std);
            for segment in [
                vec![(centre, lo), (centre, hi)],
                vec![(centre - cap, lo), (centre + cap, lo)],
                vec![(centre - cap, hi), (centre + cap, hi)],
            ] {
                plot.draw_series(LineSeries::new(segment, error))?;
            }
        }
    }
    if let Some((label, value)) = chart.reference.filter(|(_, v)| usable(*v)) {
        let style = ShapeStyle::from(colour(REFERENCE)).stroke_width(2);
        plot.draw_series(DashedLineSeries::new([(0.0, value), (n_groups as f64, value)], 8, 6, style))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    // Group labels under the plot, centred under their bars, wrapped at spaces to the group's
    // width (in a smaller font when a word is still too wide).
    let (left, _) = plot.backend_coord(&(0.0, y_lo));
    let (right, bottom) = plot.backend_coord(&(n_groups as f64, y_lo));
    let room = ((right - left) as f64 / n_groups as f64 * 0.95) as u32;
    for (g, group) in chart.groups.iter().enumerate() {
        let (x, _) = plot.backend_coord(&(g as f64 + 0.5, y_lo));
        let (lines, size) = wrap_label(area, &group.label, room);
        let style = TextStyle::from((FONT, size).into_font()).color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
        for (k, line) in lines.iter().enumerate() {
            area.draw(&Text::new(line.clone(), (x, bottom + 6 + k as i32 * (size as i32 + 2)), style.clone()))?;
        }
    }
    if !chart.series_labels.is_empty() || chart.reference.is_some() {
        plot.configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(colour(GRID))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}

/// Height of the bar chart's label area: room for three lines of group labels.
const LABEL_AREA: u32 = 52;

/// `label` in at most three lines of at most `room` pixels, and the font size that fits them
/// (13 px, down to 9; a word wider than `room` even then is cut with "..").
fn wrap_label(area: &DrawingArea<BitMapBackend, Shift>, label: &str, room: u32) -> (Vec<String>, u32) {
    let width = |text: &str, size: u32| {
        area.estimate_text_size(text, &TextStyle::from((FONT, size).into_font())).map_or(0, |(w, _)| w)
    };
    let wrap = |size: u32| {
        let mut lines: Vec<String> = Vec::new();
        for word in label.split_whitespace() {
            match lines.last_mut() {
                Some(line) if width(&format!("{line} {word}"), size) <= room => {
                    line.push(' ');
                    line.push_str(word);
                }
                _ => lines.push(word.to_string()),
            }
        }
        lines
    };
    for size in (9..=13).rev() {
        let lines = wrap(size);
        if lines.len() <= 3 && lines.iter().all(|l| width(l, size) <= room) {
            return (lines, size);
        }
    }
    let mut lines = wrap(9);
    lines.truncate(3);
    for line in &mut lines {
        while width(line, 9) > room && line.chars().count() > 2 {
            line.pop();
            while line.ends_with("..") {
                line.truncate(line.len() - 2);
            }
            line.pop();
            line.push_str("..");
        }
    }
    (lines, 9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp_dir(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("m3ixup-plot-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight));
        pixels.truncate(info.buffer_size());
        (info.width, info.height, pixels)
    }

    fn count(pixels: &[u8], c: Rgb) -> usize {
        pixels.chunks_exact(3).filter(|p| *p == c).count()
    }

    /// The rows (y) where colour `c` appears, top first.
    fn rows_with(pixels: &[u8], c: Rgb) -> Vec<u32> {
        let row_len = (WIDTH * 3) as usize;
        (0..HEIGHT).filter(|&y| pixels[y as usize * row_len..][..row_len].chunks_exact(3).any(|p| p == c)).collect()
    }

    fn bars(means: &[f64]) -> Vec<Option<Bar>> {
        means.iter().map(|&m| Some(Bar { mean: m, std: 0.0 })).collect()
    }

    #[test]
    fn tick_labels_use_suffixes_for_large_values_and_the_decimals_the_axis_needs() {
        assert_eq!(format_tick(1.5e6, 5e6, 2e6), "1.5M");
        assert_eq!(format_tick(12_500.0, 5e3, 2e4), "12.5k");
        assert_eq!(format_tick(14_000.0, 2e4, 2e4), "14k");
        assert_eq!(format_tick(2e9, 1e10, 5e9), "2B");
        assert_eq!(format_tick(2_500.0, 5e3, 5_000.0), "2500");
        assert_eq!(format_tick(-0.0, 10.0, 10.0), "0");
        assert_eq!(format_tick(1e-17, 1.0, 1.0), "0");
        assert_eq!(format_tick(-2.5, 5.0, 16.0), "-2.5");
        assert_eq!(format_tick(0.05, 0.5, 0.3), "0.05");
    }

    #[test]
    fn ranges_with_one_value_are_padded() {
        assert_eq!(padded_range(0.0, 0.0), (-1.0, 1.0));
        let (lo, hi) = padded_range(-12.0, -12.0);
        assert!((lo + 13.2).abs() < 1e-9 && (hi + 10.8).abs() < 1e-9);
        assert_eq!(padded_range(1.0, 2.0), (1.0, 2.0));
        assert_eq!(padded_range(f64::NAN, 2.0), (0.0, 1.0));
        assert_eq!(padded_range(f64::INFINITY, f64::NEG_INFINITY), (0.0, 1.0));
        let (lo, hi) = axis_range([0.0, 10.0, f64::NAN].into_iter());
        assert_eq!((lo, hi), (-0.5, 10.5), "5% margins, NaN ignored");
    }

    #[test]
    fn lines_break_at_non_finite_values() {
        let runs = finite_runs(&[(0.0, 1.0), (1.0, f64::NAN), (2.0, 2.0), (3.0, 3.0), (f64::INFINITY, 1.0)]);
        assert_eq!(runs, vec![vec![(0.0, 1.0)], vec![(2.0, 2.0), (3.0, 3.0)]]);
        assert!(finite_runs(&[]).is_empty());
    }

    #[test]
    fn charts_are_written_as_decodable_pngs_of_the_right_size() {
        let dir = temp_dir("write");
        let series = [Series::new("return", vec![(0.0, -10.0), (1e5, -5.0), (2e5, -2.0)])];
        let chart = LineChart { title: "curve", x_label: "env steps", y_label: "return", series: &series };
        write_line_chart(&dir.join("curve.png"), &chart).unwrap();
        let (w, h, px) = decode(&std::fs::read(dir.join("curve.png")).unwrap());
        assert_eq!((w, h, px.len()), (WIDTH, HEIGHT, (WIDTH * HEIGHT * 3) as usize));
        let labels = ["agent".to_string()];
        let groups = [BarGroup { label: "all".into(), bars: bars(&[-1.0]) }];
        let chart =
            BarChart { title: "bars", y_label: "score", series_labels: &labels, groups: &groups, reference: None };
        write_bar_chart(&dir.join("bars.png"), &chart).unwrap();
        let (w, h, _) = decode(&std::fs::read(dir.join("bars.png")).unwrap());
        assert_eq!((w, h), (WIDTH, HEIGHT));
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["bars.png", "curve.png"], "no temporary left");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn each_series_is_drawn_in_its_colour_and_the_text_is_drawn() {
        let series = [
            Series::new("rising", (0..50).map(|i| (i as f64, i as f64)).collect()),
            Series::new("falling", (0..50).map(|i| (i as f64, 50.0 - i as f64)).collect()),
        ];
        let chart = LineChart { title: "two lines", x_label: "x", y_label: "y", series: &series };
        let (_, _, px) = decode(&line_chart_png(&chart).unwrap());
        assert!(count(&px, PALETTE[0]) > 500, "{}", count(&px, PALETTE[0]));
        assert!(count(&px, PALETTE[1]) > 500, "{}", count(&px, PALETTE[1]));
        assert_eq!(count(&px, PALETTE[2]), 0, "a third colour only for a third series");
        // The rising line's pixels span the plot's height (x and y map linearly).
        let rows = rows_with(&px, PALETTE[0]);
        assert!(rows.last().unwrap() - rows.first().unwrap() > HEIGHT / 2, "{rows:?}");
        // Anti-aliased text: grey pixels that no line or grid colour has.
        let greys = px.chunks_exact(3).filter(|p| p[0] == p[1] && p[1] == p[2] && p[0] > 40 && p[0] < 200).count();
        assert!(greys > 200, "text drawn: {greys} grey pixels");
    }

    #[test]
    fn bars_hang_from_zero_in_their_colours_with_error_bars_and_a_reference() {
        let labels = ["a".to_string(), "b".to_string()];
        let groups = [
            BarGroup {
                label: "all sensors".into(),
                bars: vec![Some(Bar { mean: -4.0, std: 0.8 }), Some(Bar { mean: 2.0, std: 0.0 })],
            },
            BarGroup { label: "pixels only".into(), bars: vec![None, Some(Bar { mean: 3.0, std: f64::NAN })] },
        ];
        let chart = BarChart {
            title: "dropout",
            y_label: "score",
            series_labels: &labels,
            groups: &groups,
            reference: Some(("random", -8.0)),
        };
        let (_, _, px) = decode(&bar_chart_png(&chart).unwrap());
        let (a, b) = (rows_with(&px, PALETTE[0]), rows_with(&px, PALETTE[1]));
        assert!(!a.is_empty() && !b.is_empty());
        // The negative bar hangs below the positive ones (image rows grow downwards).
        let a_bottom = *a.iter().filter(|&&y| y > 60).max().unwrap();
        let b_top = *b.iter().filter(|&&y| y > 60).min().unwrap();
        assert!(a_bottom > b_top + 100, "a ends at {a_bottom}, b starts at {b_top}");
        assert!(count(&px, ERROR_BAR) > 20, "an error bar");
        assert!(count(&px, REFERENCE) > 100, "the dashed reference line");
        assert!(rows_with(&px, REFERENCE).iter().any(|&y| y > a_bottom), "the reference (-8) lies below the -4 bar");
    }

    #[test]
    fn empty_nan_single_and_flat_inputs_do_not_panic() {
        let cases: Vec<Vec<Series>> = vec![
            vec![],
            vec![Series::new("empty", vec![])],
            vec![Series::new("nan", vec![(f64::NAN, f64::NAN), (1.0, f64::INFINITY)])],
            vec![Series::new("single", vec![(5.0, 5.0)])],
            vec![Series::new("flat", vec![(0.0, 3.0), (1.0, 3.0)])],
            vec![Series::new("huge", vec![(0.0, 1e308), (1.0, -1e308)])],
        ];
        for series in &cases {
            let chart = LineChart { title: "", x_label: "", y_label: "", series };
            let (w, h, px) = decode(&line_chart_png(&chart).unwrap());
            assert_eq!((w, h), (WIDTH, HEIGHT));
            if series.first().is_some_and(|s| s.label == "single") {
                assert!(count(&px, PALETTE[0]) > 10, "a single point draws a marker");
            }
        }
        let labels = ["a".to_string()];
        for groups in [
            vec![],
            vec![BarGroup { label: "none".into(), bars: vec![None] }],
            vec![BarGroup { label: "nan".into(), bars: vec![Some(Bar { mean: f64::NAN, std: 1.0 })] }],
        ] {
            let chart = BarChart {
                title: "",
                y_label: "",
                series_labels: &labels,
                groups: &groups,
                reference: Some(("r", f64::NAN)),
            };
            let (w, h, _) = decode(&bar_chart_png(&chart).unwrap());
            assert_eq!((w, h), (WIDTH, HEIGHT));
        }
    }

    #[test]
    fn csv_series_reads_two_columns_and_skips_empty_cells() {
        let dir = temp_dir("csv");
        let path = dir.join("metrics.csv");
        std::fs::write(
            &path,
            "env_steps,\"loss, total\",episode_return\n\
             0,1.5,\n\
             1000,1.25,-12.5\n\
             2000,,-10\n\
             ,0.5,-9\n\
             4000,0.25,NaN\n\
             5000,0.125,-7.25\r\n",
        )
        .unwrap();
        assert_eq!(
            csv_series(&path, "env_steps", "episode_return").unwrap(),
            vec![(1000.0, -12.5), (2000.0, -10.0), (5000.0, -7.25)]
        );
        assert_eq!(csv_series(&path, "env_steps", "loss, total").unwrap().len(), 4);
        let err = csv_series(&path, "env_steps", "reward").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("reward"), "{err}");

        std::fs::write(&path, "").unwrap();
        assert!(csv_series(&path, "a", "b").unwrap().is_empty());
        assert_eq!(csv_series(&dir.join("missing.csv"), "a", "b").unwrap_err().kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn moving_average_trails_and_skips_nan() {
        let pts = [(0.0, 1.0), (1.0, 3.0), (2.0, f64::NAN), (3.0, 5.0), (4.0, 7.0)];
        assert_eq!(moving_average(&pts, 2), vec![(0.0, 1.0), (1.0, 2.0), (3.0, 4.0), (4.0, 6.0)]);
        assert_eq!(moving_average(&pts, 0).len(), 4);
    }
}
