//! Dependency-light PNG charts for the binaries: learning curves at the end of `train` and
//! grouped bar charts (with error bars and a dashed reference line) for `evaluate`.
//!
//! Pure Rust: pixels are drawn into an RGB buffer, text with an embedded 5x7 bitmap font (no
//! system fonts or libraries), and the image is encoded with the `png` crate and written
//! atomically with [`crate::agents::run::write_atomic`]. Charts are [`WIDTH`] x [`HEIGHT`]
//! pixels; series take the colours of [`PALETTE`] (Okabe-Ito, colour-blind friendly) in order.
//!
//! Inputs are taken as they come: non-finite values are skipped (a line breaks at them), empty
//! series draw nothing, a single point draws a marker, and a range with one value is padded.

use std::io;
use std::path::Path;

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

const BACKGROUND: Rgb = [255, 255, 255];
const TEXT: Rgb = [30, 30, 30];
const AXIS: Rgb = [60, 60, 60];
const GRID: Rgb = [228, 228, 228];
const ERROR_BAR: Rgb = [40, 40, 40];
const REFERENCE: Rgb = [90, 90, 90];

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
    crate::agents::run::write_atomic(path, &line_chart_png(chart)?)
}

/// Draws `chart` and writes it to `path` as a PNG (atomically).
pub fn write_bar_chart(path: &Path, chart: &BarChart) -> io::Result<()> {
    crate::agents::run::write_atomic(path, &bar_chart_png(chart)?)
}

/// The PNG bytes of a line chart.
pub fn line_chart_png(chart: &LineChart) -> io::Result<Vec<u8>> {
    render_line_chart(chart).0.encode_png()
}

/// The PNG bytes of a bar chart.
pub fn bar_chart_png(chart: &BarChart) -> io::Result<Vec<u8>> {
    render_bar_chart(chart).0.encode_png()
}

/// Reads a metrics.csv written by `m3ixup_agents::run::MetricsSink` and returns the `(x, y)`
/// pairs of two named columns, skipping rows where either cell is empty, unreadable or NaN
/// (infinite values are skipped too). An empty file gives no points; a file whose header lacks
/// either column is an `InvalidInput` error naming the columns it has.
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
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else { return Ok(Vec::new()) };
    let header = split_csv_line(header);
    let column = |key: &str| {
        header
            .iter()
            .position(|h| h.trim() == key)
            .ok_or_else(|| format!("no column {key:?} (columns: {})", header.join(", ")))
    };
    let (xi, yi) = (column(x_key)?, column(y_key)?);
    let cell =
        |cells: &[String], i: usize| cells.get(i).and_then(|c| c.trim().parse::<f64>().ok()).filter(|v| v.is_finite());
    Ok(lines
        .filter_map(|line| {
            let cells = split_csv_line(line);
            Some((cell(&cells, xi)?, cell(&cells, yi)?))
        })
        .collect())
}

/// Splits one CSV line into fields (RFC 4180 quoting: `"a,b"`, `""` for a quote).
fn split_csv_line(line: &str) -> Vec<String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

// ---------------------------------------------------------------------------------------------
// Ticks and axes

/// A finite value small enough that ranges and pixel positions computed from it stay finite.
fn usable(v: f64) -> bool {
    v.is_finite() && v.abs() < 1e300
}

/// Axis ticks: `values` run from `lo` to `hi` in steps of `step` (a 1, 2 or 5 times a power of
/// ten), and `lo..hi` covers the data range it was made for.
#[derive(Debug, Clone, PartialEq)]
struct Ticks {
    lo: f64,
    hi: f64,
    step: f64,
    values: Vec<f64>,
}

/// The 1-2-5 step nearest above `raw` (> 0).
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let residual = raw / magnitude;
    let nice = if residual <= 1.0 + 1e-9 {
        1.0
    } else if residual <= 2.0 + 1e-9 {
        2.0
    } else if residual <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Pads a degenerate range (one value, or none) so that it can be drawn.
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

/// About `target` nice ticks (1-2-5 steps) covering `lo..hi`, extended outwards to whole steps.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Ticks {
    let (lo, hi) = padded_range(lo, hi);
    let step = nice_step((hi - lo) / target.max(1) as f64);
    let first = (lo / step + 1e-9).floor() as i64;
    let last = (hi / step - 1e-9).ceil() as i64;
    let values: Vec<f64> = (first..=last).map(|k| k as f64 * step).collect();
    Ticks { lo: first as f64 * step, hi: last as f64 * step, step, values }
}

/// A tick label: short suffixes for large values (`200k`, `1.5M`, `2B`) once the axis reaches
/// ten thousand, and as many decimals as the step needs otherwise.
fn format_tick(v: f64, step: f64, axis_max: f64) -> String {
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

fn tick_labels(ticks: &Ticks) -> Vec<String> {
    let axis_max = ticks.lo.abs().max(ticks.hi.abs());
    ticks.values.iter().map(|&v| format_tick(v, ticks.step, axis_max)).collect()
}

/// Maps values in `lo..hi` linearly onto pixels `p0..p1` (`p1 < p0` for an upward y axis).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    p0: f64,
    p1: f64,
}

impl Axis {
    fn map(&self, v: f64) -> f64 {
        self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)
    }
}

// ---------------------------------------------------------------------------------------------
// Canvas

/// A rectangle of pixels, `x0..x1` by `y0..y1` (ends exclusive).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl Rect {
    fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }
}

struct Canvas {
    w: i64,
    h: i64,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: u32, h: u32) -> Self {
        let px = BACKGROUND.iter().copied().cycle().take(w as usize * h as usize * 3).collect();
        Self { w: w as i64, h: h as i64, px }
    }

    fn bounds(&self) -> Rect {
        Rect { x0: 0, y0: 0, x1: self.w, y1: self.h }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && x < self.w && y < self.h {
            let i = ((y * self.w + x) * 3) as usize;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    #[cfg(test)]
    fn get(&self, x: i64, y: i64) -> Rgb {
        let i = ((y * self.w + x) * 3) as usize;
        [self.px[i], self.px[i + 1], self.px[i + 2]]
    }

    fn fill(&mut self, r: Rect, c: Rgb) {
        for y in r.y0.max(0)..r.y1.min(self.h) {
            for x in r.x0.max(0)..r.x1.min(self.w) {
                self.set(x, y, c);
            }
        }
    }

    /// A 2-pixel-wide line from `a` to `b`, drawn only inside `clip`.
    fn line(&mut self, a: (f64, f64), b: (f64, f64), c: Rgb, clip: Rect) {
        let p = |v: f64| v.round().clamp(-4096.0, 4096.0) as i64;
        let (mut x, mut y, x1, y1) = (p(a.0), p(a.1), p(b.0), p(b.1));
        let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
        let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            // A 2x2 brush: lines come out 2 pixels wide at any slope.
            for (qx, qy) in [(x, y), (x + 1, y), (x, y + 1), (x + 1, y + 1)] {
                if clip.contains(qx, qy) {
                    self.set(qx, qy, c);
                }
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// A square marker of side `size` centred on `p`, drawn only inside `clip`.
    fn marker(&mut self, p: (f64, f64), size: i64, c: Rgb, clip: Rect) {
        let (cx, cy) = (p.0.round().clamp(-4096.0, 4096.0) as i64, p.1.round().clamp(-4096.0, 4096.0) as i64);
        let h = size / 2;
        for y in cy - h..cy - h + size {
            for x in cx - h..cx - h + size {
                if clip.contains(x, y) {
                    self.set(x, y, c);
                }
            }
        }
    }

    /// A 2-pixel-high dashed horizontal line at row `y` from `x0` to `x1`.
    fn dashed_hline(&mut self, x0: i64, x1: i64, y: i64, c: Rgb, clip: Rect) {
        for x in x0..x1 {
            if (x - x0) % 12 < 8 {
                for yy in [y, y + 1] {
                    if clip.contains(x, yy) {
                        self.set(x, yy, c);
                    }
                }
            }
        }
    }

    /// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale` pixels square.
    fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, c: Rgb) {
        for (i, ch) in text.chars().enumerate() {
            let glyph = glyph(ch);
            let gx = x + i as i64 * ADVANCE * scale;
            for (col, bits) in glyph.iter().enumerate() {
                for row in 0..8 {
                    if bits >> row & 1 == 1 {
                        let (px, py) = (gx + col as i64 * scale, y + row * scale);
                        self.fill(Rect { x0: px, y0: py, x1: px + scale, y1: py + scale }, c);
                    }
                }
            }
        }
    }

    /// Draws `text` turned a quarter left (read bottom to top), its glyph tops at column `x` and
    /// its first character at the bottom row `y`.
    fn text_up(&mut self, x: i64, y: i64, text: &str, scale: i64, c: Rgb) {
        for (i, ch) in text.chars().enumerate() {
            let glyph = glyph(ch);
            let gy = y - i as i64 * ADVANCE * scale;
            for (col, bits) in glyph.iter().enumerate() {
                for row in 0..8 {
                    if bits >> row & 1 == 1 {
                        let (px, py) = (x + row * scale, gy - (col as i64 + 1) * scale);
                        self.fill(Rect { x0: px, y0: py, x1: px + scale, y1: py + scale }, c);
                    }
                }
            }
        }
    }

    fn encode_png(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.w as u32, self.h as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(io::Error::other)?;
        writer.write_image_data(&self.px).map_err(io::Error::other)?;
        writer.finish().map_err(io::Error::other)?;
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Text layout

/// Horizontal advance of one character, in font pixels (5 columns and a space).
const ADVANCE: i64 = 6;
/// Height of a line of text in font pixels (7 rows, a descender row, a gap).
const LINE: i64 = 9;
/// Font scale of titles, axis labels, tick labels and legends (10x14-pixel capitals).
const SCALE: i64 = 2;

fn text_width(text: &str, scale: i64) -> i64 {
    let n = text.chars().count() as i64;
    if n == 0 {
        0
    } else {
        (n * ADVANCE - 1) * scale
    }
}

/// `text` cut (with "..") to fit `width` pixels at `scale`.
fn truncate(text: &str, width: i64, scale: i64) -> String {
    if text_width(text, scale) <= width {
        return text.to_string();
    }
    let fit = ((width / scale + 1) / ADVANCE - 2).max(0) as usize;
    let mut s: String = text.chars().take(fit).collect();
    s.push_str("..");
    s
}

/// The largest scale up to `preferred` at which `text` fits `width` (1 if none does).
fn fitting_scale(text: &str, width: i64, preferred: i64) -> i64 {
    (1..=preferred).rev().find(|&s| text_width(text, s) <= width).unwrap_or(1)
}

/// Breaks `text` at spaces into lines of at most `width` pixels at `scale` (a word longer than
/// a line is kept whole; the caller truncates).
fn wrap(text: &str, width: i64, scale: i64) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if text_width(&format!("{line} {word}"), scale) <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// Draws a title centred across the chart, shrunk or cut to fit; returns the height it took.
fn draw_title(canvas: &mut Canvas, title: &str) -> i64 {
    let top = 12;
    if title.trim().is_empty() {
        return top;
    }
    let width = canvas.w - 40;
    let scale = fitting_scale(title, width, SCALE);
    let title = truncate(title, width, scale);
    canvas.text((canvas.w - text_width(&title, scale)) / 2, top, &title, scale, TEXT);
    top + 7 * scale + 14
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Swatch {
    Line,
    Block,
    Dashed,
}

struct LegendEntry {
    swatch: Swatch,
    colour: Rgb,
    label: String,
}

const SWATCH_W: i64 = 22;
const LEGEND_GAP: i64 = 22;
/// At most this many legend rows; entries past them are summed up as "+N more".
const LEGEND_MAX_ROWS: usize = 4;

/// A legend laid out in centred rows across `width` pixels.
struct Legend {
    entries: Vec<LegendEntry>,
    scale: i64,
    rows: Vec<std::ops::Range<usize>>,
    /// Entries that did not fit in [`LEGEND_MAX_ROWS`] rows.
    hidden: usize,
    width: i64,
}

impl Legend {
    /// Lays `entries` out at the normal text size, or the small one when that takes more than
    /// two rows; entries past [`LEGEND_MAX_ROWS`] rows are dropped and counted.
    fn new(entries: Vec<LegendEntry>, width: i64) -> Self {
        let mut rows = legend_rows(&entries, width, SCALE);
        let mut scale = SCALE;
        if rows.len() > 2 {
            scale = 1;
            rows = legend_rows(&entries, width, 1);
        }
        let mut hidden = 0;
        if rows.len() > LEGEND_MAX_ROWS {
            rows.truncate(LEGEND_MAX_ROWS);
            // Make room on the last row for the "+N more" note.
            let note_w = text_width("+999 more", scale) + LEGEND_GAP;
            let last = rows.last_mut().expect("rows");
            while last.len() > 1 {
                let used: i64 =
                    entries[last.clone()].iter().map(|e| legend_entry_width(e, width, scale) + LEGEND_GAP).sum();
                if used + note_w <= width {
                    break;
                }
                last.end -= 1;
            }
            hidden = entries.len() - last.end;
        }
        Self { entries, scale, rows, hidden, width }
    }

    fn row_height(&self) -> i64 {
        LINE * self.scale + 4
    }

    fn height(&self) -> i64 {
        self.rows.len() as i64 * self.row_height()
    }

    /// Draws the rows with their tops at `y`, centred across `x0..x0 + width`.
    fn draw(&self, canvas: &mut Canvas, x0: i64, y: i64) {
        let (scale, width) = (self.scale, self.width);
        for (r, row) in self.rows.iter().enumerate() {
            let mut items: Vec<(Option<&LegendEntry>, i64)> =
                self.entries[row.clone()].iter().map(|e| (Some(e), legend_entry_width(e, width, scale))).collect();
            let note = format!("+{} more", self.hidden);
            if self.hidden > 0 && r + 1 == self.rows.len() {
                items.push((None, text_width(&note, scale)));
            }
            let total: i64 = items.iter().map(|i| i.1).sum::<i64>() + LEGEND_GAP * (items.len() as i64 - 1);
            let mut x = x0 + (width - total).max(0) / 2;
            let top = y + r as i64 * self.row_height();
            let mid = top + 7 * scale / 2;
            for (e, w) in items {
                let Some(e) = e else {
                    canvas.text(x, top, &note, scale, AXIS);
                    continue;
                };
                let all = canvas.bounds();
                let half = 4 * scale - 1;
                match e.swatch {
                    Swatch::Line => canvas.fill(Rect { x0: x, y0: mid - 1, x1: x + SWATCH_W, y1: mid + 1 }, e.colour),
                    Swatch::Block => {
                        canvas.fill(Rect { x0: x + 3, y0: mid - half, x1: x + SWATCH_W - 3, y1: mid + half }, e.colour)
                    }
                    Swatch::Dashed => canvas.dashed_hline(x, x + SWATCH_W, mid - 1, e.colour, all),
                }
                let label = truncate(&e.label, width - SWATCH_W - 6, scale);
                canvas.text(x + SWATCH_W + 6, top, &label, scale, TEXT);
                x += w + LEGEND_GAP;
            }
        }
    }
}

/// Splits legend entries into rows that fit `width`: returns the entry ranges of the rows.
fn legend_rows(entries: &[LegendEntry], width: i64, scale: i64) -> Vec<std::ops::Range<usize>> {
    let mut rows = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, e) in entries.iter().enumerate() {
        let w = legend_entry_width(e, width, scale);
        if i > start && used + LEGEND_GAP + w > width {
            rows.push(start..i);
            start = i;
            used = 0;
        }
        used += if i > start { LEGEND_GAP + w } else { w };
    }
    if start < entries.len() {
        rows.push(start..entries.len());
    }
    rows
}

fn legend_entry_width(e: &LegendEntry, width: i64, scale: i64) -> i64 {
    SWATCH_W + 6 + text_width(&truncate(&e.label, width - SWATCH_W - 6, scale), scale)
}

/// Draws the y axis label turned a quarter left, centred on the plot's rows, left edge at `x`.
fn draw_y_label(canvas: &mut Canvas, label: &str, x: i64, plot: Rect) {
    if label.trim().is_empty() {
        return;
    }
    let height = plot.y1 - plot.y0;
    let scale = fitting_scale(label, height, SCALE);
    let label = truncate(label, height, scale);
    let bottom = (plot.y0 + plot.y1 + text_width(&label, scale)) / 2;
    canvas.text_up(x, bottom, &label, scale, TEXT);
}

const TICK_LEN: i64 = 5;

/// Draws horizontal grid lines and y tick labels (right-aligned left of the plot).
fn draw_y_ticks(canvas: &mut Canvas, ticks: &Ticks, labels: &[String], y: Axis, plot: Rect) {
    for (&v, label) in ticks.values.iter().zip(labels) {
        let py = y.map(v).round() as i64;
        canvas.fill(Rect { x0: plot.x0, y0: py, x1: plot.x1, y1: py + 1 }, GRID);
        canvas.fill(Rect { x0: plot.x0 - TICK_LEN, y0: py, x1: plot.x0, y1: py + 1 }, AXIS);
        let w = text_width(label, SCALE);
        canvas.text(plot.x0 - TICK_LEN - 5 - w, py - 7 * SCALE / 2, label, SCALE, TEXT);
    }
}

/// Draws the left and bottom axes of the plot.
fn draw_axes(canvas: &mut Canvas, plot: Rect) {
    canvas.fill(Rect { x0: plot.x0 - 1, y0: plot.y0, x1: plot.x0, y1: plot.y1 + 1 }, AXIS);
    canvas.fill(Rect { x0: plot.x0 - 1, y0: plot.y1, x1: plot.x1, y1: plot.y1 + 1 }, AXIS);
}

/// Ticks for the y axis of a plot `height` pixels high, and their labels.
fn y_ticks(lo: f64, hi: f64, height: i64) -> (Ticks, Vec<String>) {
    let target = ((height / 55).clamp(2, 8)) as usize;
    let ticks = nice_ticks(lo, hi, target);
    let labels = tick_labels(&ticks);
    (ticks, labels)
}

/// The plot's left edge for y tick labels `labels` (with room for a y axis label when present).
fn plot_left(labels: &[String], y_label: &str) -> i64 {
    let tick_w = labels.iter().map(|l| text_width(l, SCALE)).max().unwrap_or(0);
    let label_w = if y_label.trim().is_empty() { 0 } else { 7 * SCALE + 12 };
    12 + label_w + tick_w + 5 + TICK_LEN
}

const RIGHT_MARGIN: i64 = 24;

// ---------------------------------------------------------------------------------------------
// Line chart

/// Where a line chart's data went (for tests).
#[allow(dead_code)]
struct Frame {
    plot: Rect,
    x: Axis,
    y: Axis,
}

fn render_line_chart(chart: &LineChart) -> (Canvas, Frame) {
    let mut canvas = Canvas::new(WIDTH, HEIGHT);
    let top = draw_title(&mut canvas, chart.title);

    let finite = |s: &Series| s.points.iter().copied().filter(|&(x, y)| usable(x) && usable(y)).collect::<Vec<_>>();
    let all: Vec<(f64, f64)> = chart.series.iter().flat_map(finite).collect();
    let range = |vals: &mut dyn Iterator<Item = f64>| {
        vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let (x_lo, x_hi) = range(&mut all.iter().map(|p| p.0));
    let (y_lo, y_hi) = range(&mut all.iter().map(|p| p.1));

    let entries: Vec<LegendEntry> = chart
        .series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.label.trim().is_empty())
        .map(|(i, s)| LegendEntry { swatch: Swatch::Line, colour: series_colour(i), label: s.label.clone() })
        .collect();
    let legend = Legend::new(entries, canvas.w - 40);
    let legend_h = legend.height();
    let x_label_h = if chart.x_label.trim().is_empty() { 0 } else { 7 * SCALE + 12 };
    let bottom = canvas.h - (10 + legend_h + x_label_h + 7 * SCALE + 8 + TICK_LEN + if legend_h > 0 { 6 } else { 0 });
    let (plot_y0, plot_y1) = (top, bottom);

    let (yt, y_labels) = y_ticks(y_lo, y_hi, plot_y1 - plot_y0);
    let plot_x0 = plot_left(&y_labels, chart.y_label);
    let plot = Rect { x0: plot_x0, y0: plot_y0, x1: canvas.w - RIGHT_MARGIN, y1: plot_y1 };

    // As many x ticks as fit without their labels touching.
    let width = plot.x1 - plot.x0;
    let (xt, x_labels) = (2..=((width / 70).clamp(2, 10) as usize))
        .rev()
        .map(|target| {
            let t = nice_ticks(x_lo, x_hi, target);
            let labels = tick_labels(&t);
            (t, labels)
        })
        .find(|(t, labels)| {
            let spacing = width as f64 / (t.values.len().max(2) - 1) as f64;
            labels.iter().map(|l| text_width(l, SCALE)).max().unwrap_or(0) as f64 + 16.0 <= spacing
        })
        .unwrap_or_else(|| {
            let t = nice_ticks(x_lo, x_hi, 1);
            let labels = tick_labels(&t);
            (t, labels)
        });

    let x = Axis { lo: xt.lo, hi: xt.hi, p0: plot.x0 as f64, p1: (plot.x1 - 1) as f64 };
    let y = Axis { lo: yt.lo, hi: yt.hi, p0: (plot.y1 - 1) as f64, p1: plot.y0 as f64 };

    draw_y_ticks(&mut canvas, &yt, &y_labels, y, plot);
    for (&v, label) in xt.values.iter().zip(&x_labels) {
        let px = x.map(v).round() as i64;
        canvas.fill(Rect { x0: px, y0: plot.y0, x1: px + 1, y1: plot.y1 }, GRID);
        canvas.fill(Rect { x0: px, y0: plot.y1, x1: px + 1, y1: plot.y1 + TICK_LEN }, AXIS);
        let w = text_width(label, SCALE);
        let lx = (px - w / 2).min(canvas.w - 4 - w);
        canvas.text(lx, plot.y1 + TICK_LEN + 5, label, SCALE, TEXT);
    }
    draw_axes(&mut canvas, plot);
    draw_y_label(&mut canvas, chart.y_label, 12, plot);
    let mut next_y = plot.y1 + TICK_LEN + 5 + 7 * SCALE + 8;
    if x_label_h > 0 {
        let label = truncate(chart.x_label, width, SCALE);
        canvas.text((plot.x0 + plot.x1 - text_width(&label, SCALE)) / 2, next_y, &label, SCALE, TEXT);
        next_y += x_label_h;
    }

    // Lines and markers may spill a little past the plot so that points on its edge show whole.
    let clip = Rect { x0: plot.x0 - 3, y0: plot.y0 - 3, x1: plot.x1 + 3, y1: plot.y1 + 3 };
    for (i, s) in chart.series.iter().enumerate() {
        let colour = series_colour(i);
        let pts: Vec<Option<(f64, f64)>> =
            s.points.iter().map(|&(px, py)| (usable(px) && usable(py)).then(|| (x.map(px), y.map(py)))).collect();
        let markers = finite(s).len() <= 30;
        for (j, p) in pts.iter().enumerate() {
            let Some(p) = *p else { continue };
            if let Some(Some(q)) = pts.get(j + 1) {
                canvas.line(p, *q, colour, clip);
            }
            let isolated = (j == 0 || pts[j - 1].is_none()) && pts.get(j + 1).is_none_or(|q| q.is_none());
            if markers || isolated {
                canvas.marker(p, 6, colour, clip);
            }
        }
    }
    if all.is_empty() {
        let msg = "no data";
        canvas.text((plot.x0 + plot.x1 - text_width(msg, SCALE)) / 2, (plot.y0 + plot.y1) / 2 - 7, msg, SCALE, AXIS);
    }
    legend.draw(&mut canvas, 20, next_y + 6);
    (canvas, Frame { plot, x, y })
}

// ---------------------------------------------------------------------------------------------
// Bar chart

/// Where a bar chart's bars went (for tests): `bars[group][series]` is the bar's pixel rect.
#[allow(dead_code)]
struct BarFrame {
    plot: Rect,
    y: Axis,
    bars: Vec<Vec<Option<Rect>>>,
}

/// Lays a group label out in at most two lines within `width` pixels: (lines, scale).
fn group_label_lines(label: &str, width: i64) -> (Vec<String>, i64) {
    for scale in [SCALE, 1] {
        if text_width(label, scale) <= width {
            return (vec![label.to_string()], scale);
        }
        let lines = wrap(label, width, scale);
        if lines.len() <= 2 && lines.iter().all(|l| text_width(l, scale) <= width) {
            return (lines, scale);
        }
    }
    let mut lines = wrap(label, width, 1);
    lines.truncate(2);
    let lines = lines.iter().map(|l| truncate(l, width, 1)).collect();
    (lines, 1)
}

fn render_bar_chart(chart: &BarChart) -> (Canvas, BarFrame) {
    let mut canvas = Canvas::new(WIDTH, HEIGHT);
    let top = draw_title(&mut canvas, chart.title);

    let n_series = chart.groups.iter().map(|g| g.bars.len()).max().unwrap_or(0).max(chart.series_labels.len());
    let bar_ok = |b: &Option<Bar>| b.filter(|b| usable(b.mean));
    let err = |b: &Bar| if usable(b.std) && b.std > 0.0 { b.std } else { 0.0 };
    let mut lo: f64 = 0.0;
    let mut hi: f64 = 0.0;
    let mut any = false;
    for b in chart.groups.iter().flat_map(|g| g.bars.iter().filter_map(bar_ok)) {
        lo = lo.min(b.mean - err(&b));
        hi = hi.max(b.mean + err(&b));
        any = true;
    }
    let reference = chart.reference.filter(|r| usable(r.1));
    if let Some((_, r)) = reference {
        lo = lo.min(r);
        hi = hi.max(r);
    }
    if lo == hi {
        hi = 1.0;
    }

    let mut entries: Vec<LegendEntry> = (0..n_series)
        .map(|i| LegendEntry {
            swatch: Swatch::Block,
            colour: series_colour(i),
            label: chart.series_labels.get(i).cloned().unwrap_or_else(|| format!("series {}", i + 1)),
        })
        .collect();
    if let Some((label, _)) = reference {
        entries.push(LegendEntry { swatch: Swatch::Dashed, colour: REFERENCE, label: label.to_string() });
    }
    let legend = Legend::new(entries, canvas.w - 40);
    let legend_h = legend.height();
    let group_label_h = 2 * LINE * SCALE;
    let bottom = canvas.h - (10 + legend_h + group_label_h + 8 + if legend_h > 0 { 6 } else { 0 });
    let (yt, y_labels) = y_ticks(lo, hi, bottom - top);
    let plot = Rect { x0: plot_left(&y_labels, chart.y_label), y0: top, x1: canvas.w - RIGHT_MARGIN, y1: bottom };
    let y = Axis { lo: yt.lo, hi: yt.hi, p0: (plot.y1 - 1) as f64, p1: plot.y0 as f64 };

    draw_y_ticks(&mut canvas, &yt, &y_labels, y, plot);
    draw_y_label(&mut canvas, chart.y_label, 12, plot);

    let n_groups = chart.groups.len().max(1) as f64;
    let group_w = (plot.x1 - plot.x0) as f64 / n_groups;
    let inner = group_w * 0.8;
    let bar_w = inner / n_series.max(1) as f64;
    let zero = y.map(0.0).round() as i64;
    let mut rects = Vec::with_capacity(chart.groups.len());
    for (g, group) in chart.groups.iter().enumerate() {
        let gx = plot.x0 as f64 + g as f64 * group_w;
        let mut row = Vec::with_capacity(group.bars.len());
        for (s, bar) in group.bars.iter().enumerate() {
            let Some(b) = bar_ok(bar) else {
                row.push(None);
                continue;
            };
            let bx0 = (gx + 0.1 * group_w + s as f64 * bar_w).round() as i64;
            let bx1 = (gx + 0.1 * group_w + (s + 1) as f64 * bar_w).round() as i64 - if bar_w >= 6.0 { 1 } else { 0 };
            let top_px = y.map(b.mean).round() as i64;
            let r = Rect { x0: bx0, y0: top_px.min(zero), x1: bx1.max(bx0 + 1), y1: top_px.max(zero) + 1 };
            canvas.fill(r, series_colour(s));
            row.push(Some(r));
        }
        rects.push(row);
        // Group label, centred under the group.
        let (lines, scale) = group_label_lines(&group.label, group_w as i64 - 6);
        for (l, line) in lines.iter().enumerate() {
            let cx = (gx + group_w / 2.0).round() as i64;
            let ly = plot.y1 + 8 + l as i64 * LINE * scale;
            canvas.text(cx - text_width(line, scale) / 2, ly, line, scale, TEXT);
        }
    }
    // Error bars on top of all bars (a neighbour must not hide one).
    for (g, group) in chart.groups.iter().enumerate() {
        for (s, bar) in group.bars.iter().enumerate() {
            let (Some(b), Some(Some(r))) = (bar_ok(bar), rects[g].get(s)) else { continue };
            let e = err(&b);
            if e <= 0.0 {
                continue;
            }
            let cx = (r.x0 + r.x1) / 2;
            let (ey0, ey1) = (y.map(b.mean + e).round() as i64, y.map(b.mean - e).round() as i64);
            canvas.fill(Rect { x0: cx - 1, y0: ey0, x1: cx + 1, y1: ey1 + 1 }, ERROR_BAR);
            let cap = ((r.x1 - r.x0) / 4).clamp(2, 8);
            canvas.fill(Rect { x0: cx - cap, y0: ey0, x1: cx + cap, y1: ey0 + 2 }, ERROR_BAR);
            canvas.fill(Rect { x0: cx - cap, y0: ey1 - 1, x1: cx + cap, y1: ey1 + 1 }, ERROR_BAR);
        }
    }
    draw_axes(&mut canvas, plot);
    // The zero baseline, when it is not the bottom axis.
    if zero > plot.y0 && zero < plot.y1 {
        canvas.fill(Rect { x0: plot.x0, y0: zero, x1: plot.x1, y1: zero + 1 }, AXIS);
    }
    if let Some((_, r)) = reference {
        let ry = y.map(r).round() as i64;
        canvas.dashed_hline(
            plot.x0,
            plot.x1,
            ry,
            REFERENCE,
            Rect { x0: plot.x0, y0: plot.y0, x1: plot.x1, y1: plot.y1 + 1 },
        );
    }
    if !any {
        let msg = "no data";
        canvas.text((plot.x0 + plot.x1 - text_width(msg, SCALE)) / 2, (plot.y0 + plot.y1) / 2 - 7, msg, SCALE, AXIS);
    }
    legend.draw(&mut canvas, 20, plot.y1 + 8 + group_label_h + 6);
    (canvas, BarFrame { plot, y, bars: rects })
}

// ---------------------------------------------------------------------------------------------
// Font

/// The 5x8 glyph of `c` (column bytes, bit 0 the top row); characters outside printable ASCII
/// draw as '?'.
fn glyph(c: char) -> &'static [u8; 5] {
    let i = c as u32;
    if (32..127).contains(&i) {
        &FONT[(i - 32) as usize]
    } else {
        &FONT[('?' as u32 - 32) as usize]
    }
}

/// A 5x7 ASCII font (with descenders on an eighth row), ' ' to '~', one byte per column.
#[rustfmt::skip]
const FONT: [[u8; 5]; 95] = [
    [0x00, 0x00, 0x00, 0x00, 0x00], // ' '
    [0x00, 0x00, 0x5F, 0x00, 0x00], // !
    [0x00, 0x07, 0x00, 0x07, 0x00], // "
    [0x14, 0x7F, 0x14, 0x7F, 0x14], // #
    [0x24, 0x2A, 0x7F, 0x2A, 0x12], // $
    [0x23, 0x13, 0x08, 0x64, 0x62], // %
    [0x36, 0x49, 0x55, 0x22, 0x50], // &
    [0x00, 0x05, 0x03, 0x00, 0x00], // '
    [0x00, 0x1C, 0x22, 0x41, 0x00], // (
    [0x00, 0x41, 0x22, 0x1C, 0x00], // )
    [0x14, 0x08, 0x3E, 0x08, 0x14], // *
    [0x08, 0x08, 0x3E, 0x08, 0x08], // +
    [0x00, 0x80, 0x60, 0x00, 0x00], // ,
    [0x08, 0x08, 0x08, 0x08, 0x08], // -
    [0x00, 0x60, 0x60, 0x00, 0x00], // .
    [0x20, 0x10, 0x08, 0x04, 0x02], // /
    [0x3E, 0x51, 0x49, 0x45, 0x3E], // 0
    [0x00, 0x42, 0x7F, 0x40, 0x00], // 1
    [0x42, 0x61, 0x51, 0x49, 0x46], // 2
    [0x21, 0x41, 0x45, 0x4B, 0x31], // 3
    [0x18, 0x14, 0x12, 0x7F, 0x10], // 4
    [0x27, 0x45, 0x45, 0x45, 0x39], // 5
    [0x3C, 0x4A, 0x49, 0x49, 0x30], // 6
    [0x01, 0x71, 0x09, 0x05, 0x03], // 7
    [0x36, 0x49, 0x49, 0x49, 0x36], // 8
    [0x06, 0x49, 0x49, 0x29, 0x1E], // 9
    [0x00, 0x36, 0x36, 0x00, 0x00], // :
    [0x00, 0x56, 0x36, 0x00, 0x00], // ;
    [0x08, 0x14, 0x22, 0x41, 0x00], // <
    [0x14, 0x14, 0x14, 0x14, 0x14], // =
    [0x00, 0x41, 0x22, 0x14, 0x08], // >
    [0x02, 0x01, 0x51, 0x09, 0x06], // ?
    [0x32, 0x49, 0x79, 0x41, 0x3E], // @
    [0x7E, 0x11, 0x11, 0x11, 0x7E], // A
    [0x7F, 0x49, 0x49, 0x49, 0x36], // B
    [0x3E, 0x41, 0x41, 0x41, 0x22], // C
    [0x7F, 0x41, 0x41, 0x22, 0x1C], // D
    [0x7F, 0x49, 0x49, 0x49, 0x41], // E
    [0x7F, 0x09, 0x09, 0x09, 0x01], // F
    [0x3E, 0x41, 0x49, 0x49, 0x7A], // G
    [0x7F, 0x08, 0x08, 0x08, 0x7F], // H
    [0x00, 0x41, 0x7F, 0x41, 0x00], // I
    [0x20, 0x40, 0x41, 0x3F, 0x01], // J
    [0x7F, 0x08, 0x14, 0x22, 0x41], // K
    [0x7F, 0x40, 0x40, 0x40, 0x40], // L
    [0x7F, 0x02, 0x0C, 0x02, 0x7F], // M
    [0x7F, 0x04, 0x08, 0x10, 0x7F], // N
    [0x3E, 0x41, 0x41, 0x41, 0x3E], // O
    [0x7F, 0x09, 0x09, 0x09, 0x06], // P
    [0x3E, 0x41, 0x51, 0x21, 0x5E], // Q
    [0x7F, 0x09, 0x19, 0x29, 0x46], // R
    [0x46, 0x49, 0x49, 0x49, 0x31], // S
    [0x01, 0x01, 0x7F, 0x01, 0x01], // T
    [0x3F, 0x40, 0x40, 0x40, 0x3F], // U
    [0x1F, 0x20, 0x40, 0x20, 0x1F], // V
    [0x3F, 0x40, 0x38, 0x40, 0x3F], // W
    [0x63, 0x14, 0x08, 0x14, 0x63], // X
    [0x07, 0x08, 0x70, 0x08, 0x07], // Y
    [0x61, 0x51, 0x49, 0x45, 0x43], // Z
    [0x00, 0x7F, 0x41, 0x41, 0x00], // [
    [0x02, 0x04, 0x08, 0x10, 0x20], // backslash
    [0x00, 0x41, 0x41, 0x7F, 0x00], // ]
    [0x04, 0x02, 0x01, 0x02, 0x04], // ^
    [0x40, 0x40, 0x40, 0x40, 0x40], // _
    [0x00, 0x01, 0x02, 0x04, 0x00], // `
    [0x20, 0x54, 0x54, 0x54, 0x78], // a
    [0x7F, 0x48, 0x44, 0x44, 0x38], // b
    [0x38, 0x44, 0x44, 0x44, 0x20], // c
    [0x38, 0x44, 0x44, 0x48, 0x7F], // d
    [0x38, 0x54, 0x54, 0x54, 0x18], // e
    [0x08, 0x7E, 0x09, 0x01, 0x02], // f
    [0x98, 0xA4, 0xA4, 0xA4, 0x7C], // g
    [0x7F, 0x08, 0x04, 0x04, 0x78], // h
    [0x00, 0x44, 0x7D, 0x40, 0x00], // i
    [0x40, 0x80, 0x84, 0x7D, 0x00], // j
    [0x7F, 0x10, 0x28, 0x44, 0x00], // k
    [0x00, 0x41, 0x7F, 0x40, 0x00], // l
    [0x7C, 0x04, 0x18, 0x04, 0x78], // m
    [0x7C, 0x08, 0x04, 0x04, 0x78], // n
    [0x38, 0x44, 0x44, 0x44, 0x38], // o
    [0xFC, 0x24, 0x24, 0x24, 0x18], // p
    [0x18, 0x24, 0x24, 0x24, 0xFC], // q
    [0x7C, 0x08, 0x04, 0x04, 0x08], // r
    [0x48, 0x54, 0x54, 0x54, 0x20], // s
    [0x04, 0x3F, 0x44, 0x40, 0x20], // t
    [0x3C, 0x40, 0x40, 0x20, 0x7C], // u
    [0x1C, 0x20, 0x40, 0x20, 0x1C], // v
    [0x3C, 0x40, 0x30, 0x40, 0x3C], // w
    [0x44, 0x28, 0x10, 0x28, 0x44], // x
    [0x9C, 0xA0, 0xA0, 0xA0, 0x7C], // y
    [0x44, 0x64, 0x54, 0x4C, 0x44], // z
    [0x08, 0x08, 0x36, 0x41, 0x41], // {
    [0x00, 0x00, 0x7F, 0x00, 0x00], // |
    [0x41, 0x41, 0x36, 0x08, 0x08], // }
    [0x08, 0x04, 0x08, 0x10, 0x08], // ~
];

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

    /// Decodes PNG bytes into (width, height, RGB pixels).
    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight));
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn count(pixels: &[u8], c: Rgb) -> usize {
        pixels.chunks_exact(3).filter(|p| *p == c).count()
    }

    fn bars(means: &[f64]) -> Vec<Option<Bar>> {
        means.iter().map(|&mean| Some(Bar { mean, std: 0.5 })).collect()
    }

    #[test]
    fn steps_are_one_two_five() {
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!(nice_step(1.5), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert!((nice_step(0.03) - 0.05).abs() < 1e-12);
        assert_eq!(nice_step(180_000.0), 200_000.0);
    }

    #[test]
    fn ticks_cover_the_range_in_round_steps() {
        let t = nice_ticks(0.0, 1e6, 5);
        assert_eq!((t.lo, t.hi, t.step), (0.0, 1e6, 2e5));
        assert_eq!(t.values, vec![0.0, 2e5, 4e5, 6e5, 8e5, 1e6]);
        assert_eq!(tick_labels(&t), ["0", "200k", "400k", "600k", "800k", "1M"]);

        let t = nice_ticks(-16.0, 0.0, 4);
        assert_eq!((t.lo, t.hi, t.step), (-20.0, 0.0, 5.0));
        assert_eq!(tick_labels(&t), ["-20", "-15", "-10", "-5", "0"]);

        let t = nice_ticks(0.13, 0.87, 5);
        assert_eq!((t.lo, t.step), (0.0, 0.2));
        assert!((t.hi - 1.0).abs() < 1e-12);
        assert_eq!(tick_labels(&t), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);

        // Extends outwards to whole steps; never fewer than two ticks.
        let t = nice_ticks(3.0, 97.0, 5);
        assert!(t.lo <= 3.0 && t.hi >= 97.0 && t.values.len() >= 2);
        // Degenerate and non-finite ranges are padded, not a panic.
        let t = nice_ticks(5.0, 5.0, 5);
        assert!(t.lo < 5.0 && t.hi > 5.0 && t.values.len() >= 2);
        let t = nice_ticks(f64::NAN, f64::INFINITY, 5);
        assert_eq!((t.lo, t.hi), (0.0, 1.0));
    }

    #[test]
    fn tick_labels_use_suffixes_for_large_values() {
        assert_eq!(format_tick(1.5e6, 5e5, 2e6), "1.5M");
        assert_eq!(format_tick(12_500.0, 500.0, 2e4), "12.5k");
        assert_eq!(format_tick(14_000.0, 2_000.0, 2e4), "14k");
        assert_eq!(format_tick(2e9, 1e9, 5e9), "2B");
        assert_eq!(format_tick(2_500.0, 500.0, 5_000.0), "2500");
        assert_eq!(format_tick(-0.0, 1.0, 10.0), "0");
        assert_eq!(format_tick(1e-17, 0.1, 1.0), "0");
        assert_eq!(format_tick(-2.5, 0.5, 16.0), "-2.5");
        assert_eq!(format_tick(0.05, 0.05, 0.3), "0.05");
    }

    #[test]
    fn ranges_with_one_value_are_padded() {
        assert_eq!(padded_range(0.0, 0.0), (-1.0, 1.0));
        let (lo, hi) = padded_range(-12.0, -12.0);
        assert!((lo + 13.2).abs() < 1e-9 && (hi + 10.8).abs() < 1e-9);
        assert_eq!(padded_range(1.0, 2.0), (1.0, 2.0));
        assert_eq!(padded_range(f64::NAN, 2.0), (0.0, 1.0));
        assert_eq!(padded_range(f64::INFINITY, f64::NEG_INFINITY), (0.0, 1.0));
    }

    #[test]
    fn values_map_linearly_to_pixels() {
        let x = Axis { lo: 0.0, hi: 10.0, p0: 100.0, p1: 600.0 };
        assert_eq!(x.map(0.0), 100.0);
        assert_eq!(x.map(10.0), 600.0);
        assert_eq!(x.map(5.0), 350.0);
        // y grows upwards: the largest value maps to the top row.
        let y = Axis { lo: -20.0, hi: 0.0, p0: 400.0, p1: 50.0 };
        assert_eq!(y.map(-20.0), 400.0);
        assert_eq!(y.map(0.0), 50.0);
        assert_eq!(y.map(-10.0), 225.0);
    }

    #[test]
    fn charts_are_written_as_decodable_pngs_of_the_right_size() {
        let dir = temp_dir("write");
        let series = [Series::new("seed 0", vec![(0.0, -10.0), (1e5, -5.0), (2e5, -2.0)])];
        let line = dir.join("curve.png");
        write_line_chart(&line, &LineChart { title: "t", x_label: "env steps", y_label: "return", series: &series })
            .unwrap();
        let (w, h, px) = decode(&std::fs::read(&line).unwrap());
        assert_eq!((w, h, px.len()), (WIDTH, HEIGHT, (WIDTH * HEIGHT * 3) as usize));

        let labels = ["a".to_string(), "b".to_string()];
        let groups = [BarGroup { label: "all".into(), bars: bars(&[-3.0, -1.0]) }];
        let bar = dir.join("bars.png");
        let chart = BarChart {
            title: "t",
            y_label: "reward",
            series_labels: &labels,
            groups: &groups,
            reference: Some(("random", -8.0)),
        };
        write_bar_chart(&bar, &chart).unwrap();
        let (w, h, _) = decode(&std::fs::read(&bar).unwrap());
        assert_eq!((w, h), (WIDTH, HEIGHT));
        // No temporary files are left beside them.
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["bars.png", "curve.png"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn each_series_is_drawn_in_its_colour_where_its_points_map() {
        let series = [
            Series::new("flat 1", (0..=10).map(|i| (i as f64 * 1e4, 1.0)).collect()),
            Series::new("flat 3", vec![(0.0, 3.0), (1e5, 3.0)]),
        ];
        let chart = LineChart { title: "two lines", x_label: "steps", y_label: "y", series: &series };
        let (canvas, frame) = render_line_chart(&chart);
        for (i, level) in [1.0, 3.0].into_iter().enumerate() {
            let px = frame.x.map(5e4).round() as i64 + 3; // between markers
            let py = frame.y.map(level).round() as i64;
            assert!(frame.plot.contains(px, py));
            assert_eq!(canvas.get(px, py), PALETTE[i], "series {i} at ({px}, {py})");
        }
        // Through the encoder too: both colours present in quantity (lines, markers, legend).
        let (_, _, px) = decode(&line_chart_png(&chart).unwrap());
        assert!(count(&px, PALETTE[0]) > 500, "{}", count(&px, PALETTE[0]));
        assert!(count(&px, PALETTE[1]) > 500, "{}", count(&px, PALETTE[1]));
        assert_eq!(count(&px, PALETTE[2]), 0);
    }

    #[test]
    fn bars_hang_from_zero_in_their_colours_with_error_bars_and_a_reference() {
        let labels = ["agent a".to_string(), "agent b".to_string()];
        let groups = [
            BarGroup {
                label: "all".into(),
                bars: vec![Some(Bar { mean: -4.0, std: 1.0 }), Some(Bar { mean: -2.0, std: 0.0 })],
            },
            BarGroup { label: "sound only".into(), bars: vec![None, Some(Bar { mean: 3.0, std: f64::NAN })] },
        ];
        let chart = BarChart {
            title: "eval",
            y_label: "reward",
            series_labels: &labels,
            groups: &groups,
            reference: Some(("random", -8.0)),
        };
        let (canvas, frame) = render_bar_chart(&chart);
        let zero = frame.y.map(0.0).round() as i64;
        let a = frame.bars[0][0].unwrap();
        assert!(a.y0 >= zero - 1 && a.y1 > zero + 10, "a negative bar hangs below zero: {a:?}");
        assert_eq!(canvas.get(a.x0 + 1, (a.y0 + a.y1) / 2 + 5), PALETTE[0]);
        // The error bar of a runs from -5 to -3 through its centre.
        let cx = (a.x0 + a.x1) / 2;
        assert_eq!(canvas.get(cx, frame.y.map(-4.8).round() as i64), ERROR_BAR);
        assert_eq!(canvas.get(cx, frame.y.map(-3.2).round() as i64), ERROR_BAR);
        let b = frame.bars[1][1].unwrap();
        assert!(b.y1 <= zero + 2 && b.y0 < zero - 10, "a positive bar stands on zero: {b:?}");
        assert_eq!(canvas.get(b.x0 + 1, (b.y0 + b.y1) / 2), PALETTE[1]);
        assert!(frame.bars[1][0].is_none());
        // The dashed reference line crosses the plot at -8 (dashes and gaps).
        let ry = frame.y.map(-8.0).round() as i64;
        let row: Vec<Rgb> = (frame.plot.x0..frame.plot.x1).map(|x| canvas.get(x, ry)).collect();
        let on = row.iter().filter(|&&c| c == REFERENCE).count();
        assert!(on > row.len() / 2 && on < row.len(), "{on} of {}", row.len());
        assert!(frame.y.lo <= -8.0 && frame.y.hi >= 3.0);
    }

    #[test]
    fn empty_nan_single_and_flat_inputs_do_not_panic() {
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        let cases: Vec<Vec<Series>> = vec![
            vec![],
            vec![Series::new("empty", vec![])],
            vec![Series::new("", vec![(nan, nan), (1.0, nan), (nan, 2.0)])],
            vec![Series::new("one", vec![(5.0, 5.0)])],
            vec![Series::new("flat", vec![(0.0, -3.0), (10.0, -3.0), (20.0, -3.0)])],
            vec![Series::new("same x", vec![(7.0, 1.0), (7.0, 2.0)])],
            vec![Series::new("gaps", vec![(0.0, 1.0), (1.0, nan), (2.0, 3.0), (3.0, inf), (4.0, -inf), (5.0, 1e308)])],
            (0..12).map(|i| Series::new(format!("a rather long series label {i}"), vec![(i as f64, 1.0)])).collect(),
        ];
        for series in &cases {
            let chart = LineChart { title: "", x_label: "", y_label: "", series };
            let (w, h, _) = decode(&line_chart_png(&chart).unwrap());
            assert_eq!((w, h), (WIDTH, HEIGHT));
        }
        // A lone point still shows (as a marker).
        let one = [Series::new("one", vec![(5.0, 5.0)])];
        let (canvas, frame) = render_line_chart(&LineChart { title: "", x_label: "", y_label: "", series: &one });
        assert_eq!(canvas.get(frame.x.map(5.0).round() as i64, frame.y.map(5.0).round() as i64), PALETTE[0]);

        let labels = ["only label".to_string()];
        type Case<'a> = (Vec<BarGroup>, Option<(&'a str, f64)>);
        let group_cases: Vec<Case> = vec![
            (vec![], None),
            (vec![], Some(("random", -5.0))),
            (vec![BarGroup { label: "".into(), bars: vec![] }], Some(("nan", nan))),
            (vec![BarGroup { label: "nan".into(), bars: vec![Some(Bar { mean: nan, std: nan }), None] }], None),
            (vec![BarGroup { label: "more bars than labels".into(), bars: bars(&[1.0, 2.0, 3.0]) }], None),
            (vec![BarGroup { label: "zeros".into(), bars: vec![Some(Bar { mean: 0.0, std: -1.0 })] }], None),
            (
                (0..40)
                    .map(|i| BarGroup { label: format!("condition number {i}"), bars: bars(&[-16.0, 0.0]) })
                    .collect(),
                None,
            ),
        ];
        for (groups, reference) in &group_cases {
            let chart = BarChart { title: "t", y_label: "y", series_labels: &labels, groups, reference: *reference };
            let (w, h, _) = decode(&bar_chart_png(&chart).unwrap());
            assert_eq!((w, h), (WIDTH, HEIGHT));
        }
    }

    #[test]
    fn long_legends_shrink_and_are_capped_so_the_plot_keeps_its_room() {
        let series: Vec<Series> = (0..60)
            .map(|i| Series::new(format!("variant {i} with a long name"), vec![(0.0, i as f64), (1.0, 1.0)]))
            .collect();
        let (canvas, frame) =
            render_line_chart(&LineChart { title: "many", x_label: "x", y_label: "y", series: &series });
        assert!(frame.plot.y1 - frame.plot.y0 > 200, "{:?}", frame.plot);
        let legend = Legend::new(
            series
                .iter()
                .enumerate()
                .map(|(i, s)| LegendEntry { swatch: Swatch::Line, colour: series_colour(i), label: s.label.clone() })
                .collect(),
            canvas.w - 40,
        );
        assert_eq!((legend.scale, legend.rows.len()), (1, LEGEND_MAX_ROWS));
        assert_eq!(legend.hidden, 60 - legend.rows.last().unwrap().end);
        assert!(legend.hidden > 0);
        // A short legend stays at the normal size on one row.
        let short = Legend::new(
            vec![LegendEntry { swatch: Swatch::Block, colour: PALETTE[0], label: "a".into() }],
            canvas.w - 40,
        );
        assert_eq!((short.scale, short.rows.len(), short.hidden), (SCALE, 1, 0));
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
    fn csv_lines_split_with_quotes() {
        assert_eq!(split_csv_line("a,\"b,c\",\"d\"\"e\",,f"), ["a", "b,c", "d\"e", "", "f"]);
        assert_eq!(split_csv_line(""), [""]);
    }

    #[test]
    fn moving_average_trails_and_skips_nan() {
        let pts = [(0.0, 1.0), (1.0, 3.0), (2.0, f64::NAN), (3.0, 5.0), (4.0, 7.0)];
        assert_eq!(moving_average(&pts, 2), vec![(0.0, 1.0), (1.0, 2.0), (3.0, 4.0), (4.0, 6.0)]);
        assert_eq!(moving_average(&pts, 0).len(), 4);
    }

    #[test]
    fn text_helpers_fit_wrap_and_cut() {
        assert_eq!(text_width("", 2), 0);
        assert_eq!(text_width("ab", 1), 11);
        assert_eq!(wrap("pixels only p=0.3", 80, 1), ["pixels only", "p=0.3"]);
        let cut = truncate("a very long label indeed", 60, 1);
        assert!(cut.ends_with("..") && text_width(&cut, 1) <= 60, "{cut}");
        assert_eq!(fitting_scale("abc", 100, 2), 2);
        assert_eq!(glyph('\u{3bb}'), glyph('?'));
        // Every printable glyph is non-empty except the space.
        for c in '!'..='~' {
            assert!(glyph(c).iter().any(|&b| b != 0), "{c}");
        }
    }
}
