//! Figure types and their rendering to SVG (and PNG). Every type serialises (serde) to the
//! JSON the web workbench draws interactively: `{"kind": "heatmap" | "line" | "bar" | "grid", …}`
//! with the fields below; NaN cells become `null`.

use serde::Serialize;

/// How values map to colours in a heat map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorScale {
    /// Low to high on one hue ramp (scores, probabilities).
    Sequential,
    /// Blue–white–red, white at zero, symmetric about the largest |value| (signed effects).
    Diverging,
}

/// A grid of values: rows are the y axis (top row first), columns the x axis.
#[derive(Debug, Clone, Serialize)]
pub struct Heatmap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// One label per column (token strings, head indices, ...).
    pub x_ticks: Vec<String>,
    /// One label per row (layers, ...).
    pub y_ticks: Vec<String>,
    /// `values[row][col]`; NaN cells are drawn grey (masked).
    pub values: Vec<Vec<f64>>,
    pub scale: ColorScale,
    /// Colour range; `None` takes it from the data (symmetric about 0 when diverging).
    pub range: Option<(f64, f64)>,
    /// What the colour means, shown beside the colour bar.
    pub colorbar_label: String,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesStyle {
    Line,
    Markers,
    LineAndMarkers,
}

/// One named series of (x, y) points.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub style: SeriesStyle,
}

/// Line or scatter plot with optional log axes, reference lines and shaded x-bands.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// Vertical reference lines at x, with a label.
    pub vlines: Vec<(f64, String)>,
    /// Horizontal reference lines at y, with a label.
    pub hlines: Vec<(f64, String)>,
    /// Shaded x intervals (start, end, label), e.g. the phases of grokking.
    pub bands: Vec<(f64, f64, String)>,
}

/// Bars with labels, optional error bars and optional per-bar colour values.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub labels: Vec<String>,
    pub values: Vec<f64>,
    /// Half-widths of error bars (e.g. one standard error), one per bar.
    pub errors: Option<Vec<f64>>,
    /// Error bars as (low, high) values, one per bar, for intervals that are not symmetric
    /// (a Wilson interval of a rate); drawn instead of `errors` where given.
    pub intervals: Option<Vec<(f64, f64)>>,
    /// Values in [0, 1] mapped to a sequential colour scale, one per bar.
    pub colors: Option<Vec<f64>>,
    /// What the bar colour means.
    pub color_label: String,
    /// Draw horizontal bars (labels on the y axis), for long lists of features.
    pub horizontal: bool,
}

/// A figure: one plot, or several laid out in a grid.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Figure {
    Heatmap(Heatmap),
    Line(LinePlot),
    Bar(BarChart),
    /// Small multiples, row-major with `columns` per row.
    Grid {
        title: String,
        columns: usize,
        figures: Vec<Figure>,
    },
}

impl Figure {
    /// The figure as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let (body, w, h) = self.render();
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" \
             viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"DejaVu Sans, sans-serif\" font-size=\"11\">\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>{body}</svg>\n"
        )
    }

    /// The figure rasterised to PNG at `scale` × its SVG size, with the embedded DejaVu Sans font.
    pub fn to_png(&self, scale: f32) -> Result<Vec<u8>, crate::Error> {
        crate::png::svg_to_png(&self.to_svg(), scale)
    }

    /// SVG elements (without the outer `<svg>`), and the width and height they occupy.
    fn render(&self) -> (String, f64, f64) {
        match self {
            Figure::Heatmap(h) => h.render(),
            Figure::Line(l) => l.render(),
            Figure::Bar(b) => b.render(),
            Figure::Grid {
                title,
                columns,
                figures,
            } => {
                let cols = (*columns).max(1);
                let parts: Vec<(String, f64, f64)> = figures.iter().map(|f| f.render()).collect();
                let cw = parts.iter().map(|p| p.1).fold(0.0, f64::max);
                let top = if title.is_empty() { 0.0 } else { 30.0 };
                // Each row is as tall as its tallest figure (small multiples of different
                // heights, e.g. 1- to 4-layer head grids, leave no gaps).
                let row_h: Vec<f64> = parts
                    .chunks(cols)
                    .map(|row| row.iter().map(|p| p.2).fold(0.0, f64::max))
                    .collect();
                let row_y: Vec<f64> = row_h
                    .iter()
                    .scan(top, |y, h| {
                        let here = *y;
                        *y += h;
                        Some(here)
                    })
                    .collect();
                let w = cw * cols.min(parts.len().max(1)) as f64;
                let h = top + row_h.iter().sum::<f64>();
                let mut s = String::new();
                if !title.is_empty() {
                    s += &text(w / 2.0, 20.0, title, "middle", 14.0, "bold");
                }
                for (i, (body, pw, ph)) in parts.iter().enumerate() {
                    let x = cw * (i % cols) as f64;
                    let y = row_y[i / cols];
                    s += &format!(
                        "<svg x=\"{x:.1}\" y=\"{y:.1}\" width=\"{pw:.1}\" height=\"{ph:.1}\">{body}</svg>"
                    );
                }
                (s, w, h)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Colours

/// viridis, sampled at 9 evenly spaced stops (matplotlib's perceptually uniform map).
const VIRIDIS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
];

/// Blue–white–red with white exactly in the middle (ColorBrewer RdBu, reversed).
const DIVERGING: [(u8, u8, u8); 7] = [
    (33, 102, 172),
    (103, 169, 207),
    (209, 229, 240),
    (255, 255, 255),
    (253, 219, 199),
    (239, 138, 98),
    (178, 24, 43),
];

fn ramp(stops: &[(u8, u8, u8)], t: f64) -> (u8, u8, u8) {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let x = t * (stops.len() - 1) as f64;
    let i = (x.floor() as usize).min(stops.len() - 2);
    let f = x - i as f64;
    let (a, b) = (stops[i], stops[i + 1]);
    let mix = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * f).round() as u8;
    (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The colour of `v` under `scale` with colour range `(lo, hi)`; NaN is grey.
pub fn color_of(scale: ColorScale, v: f64, lo: f64, hi: f64) -> String {
    if v.is_nan() {
        return "#bbbbbb".into();
    }
    let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
    let (r, g, b) = match scale {
        ColorScale::Sequential => ramp(&VIRIDIS, t),
        ColorScale::Diverging => ramp(&DIVERGING, t),
    };
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// The colour range of a heat map: given, or from the data (symmetric about 0 when diverging).
fn color_range(scale: ColorScale, range: Option<(f64, f64)>, values: &[Vec<f64>]) -> (f64, f64) {
    if let Some(r) = range {
        return r;
    }
    let finite = values.iter().flatten().copied().filter(|v| v.is_finite());
    match scale {
        ColorScale::Diverging => {
            let m = finite.fold(0.0f64, |a, v| a.max(v.abs()));
            let m = if m > 0.0 { m } else { 1.0 };
            (-m, m)
        }
        ColorScale::Sequential => {
            let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
            if lo.is_finite() && hi > lo {
                (lo, hi)
            } else if lo.is_finite() {
                (lo - 0.5, lo + 0.5)
            } else {
                (0.0, 1.0)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Text and numbers

/// Escape text for SVG.
fn esc(s: &str) -> String {
    crate::html::escape(s)
}

/// Rough width in pixels of `s` at `size` px in DejaVu Sans (average advance ≈ 0.6 em).
fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * 0.6
}

fn text(x: f64, y: f64, s: &str, anchor: &str, size: f64, weight: &str) -> String {
    format!(
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" font-size=\"{size}\" \
         font-weight=\"{weight}\">{}</text>",
        esc(s)
    )
}

fn rotated_text(x: f64, y: f64, s: &str, anchor: &str, angle: f64) -> String {
    format!(
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" \
         transform=\"rotate({angle} {x:.1} {y:.1})\">{}</text>",
        esc(s)
    )
}

/// A number formatted compactly for a tick or a colour bar.
pub fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.0e}");
    }
    let s = if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Labels for ticks in increasing order: [`fmt_num`] of each, or, where that would print two
/// neighbours alike (ticks 0.0005 apart near 0.013), the fewest decimals that tell them apart.
pub fn tick_labels(ticks: &[f64]) -> Vec<String> {
    let distinct = |l: &[String]| l.windows(2).all(|w| w[0] != w[1]);
    let labels: Vec<String> = ticks.iter().map(|&t| fmt_num(t)).collect();
    if distinct(&labels) {
        return labels;
    }
    for d in 1..=12 {
        let l: Vec<String> = ticks
            .iter()
            .map(|&t| {
                let s = format!("{t:.d$}");
                let s = s.trim_end_matches('0').trim_end_matches('.');
                if s == "-0" {
                    "0".to_string()
                } else {
                    s.to_string()
                }
            })
            .collect();
        if distinct(&l) {
            return l;
        }
    }
    labels
}

/// "Nice" tick positions covering [lo, hi] (1, 2, 5 × 10^k steps, about `n` of them).
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).ceil() as i64;
    let end = (hi / step).floor() as i64;
    (start..=end).map(|i| i as f64 * step).collect()
}

/// Decades 10^k within [lo, hi] (both > 0).
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if lo <= 0.0 || hi <= lo {
        return vec![];
    }
    let (a, b) = (lo.log10().ceil() as i32, hi.log10().floor() as i32);
    (a..=b).map(|k| 10f64.powi(k)).collect()
}

/// Show at most `max` of `n` labels: every k-th.
fn label_stride(n: usize, max: usize) -> usize {
    n.div_ceil(max.max(1)).max(1)
}

/// A vertical colour bar at (x, y) of height `h`, with ticks and a label.
fn colorbar(x: f64, y: f64, h: f64, scale: ColorScale, lo: f64, hi: f64, label: &str) -> String {
    let mut s = String::new();
    let steps = 64;
    for i in 0..steps {
        let t = i as f64 / steps as f64;
        let v = hi - (hi - lo) * (t + 0.5 / steps as f64);
        s += &format!(
            "<rect x=\"{x:.1}\" y=\"{:.2}\" width=\"14\" height=\"{:.2}\" fill=\"{}\"/>",
            y + h * t,
            h / steps as f64 + 0.5,
            color_of(scale, v, lo, hi)
        );
    }
    s += &format!(
        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"14\" height=\"{h:.1}\" fill=\"none\" stroke=\"#444\"/>"
    );
    for t in nice_ticks(lo, hi, 5) {
        let ty = y + h * (hi - t) / (hi - lo);
        s += &format!(
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\" stroke=\"#444\"/>",
            x + 14.0,
            x + 18.0
        );
        s += &text(x + 20.0, ty + 4.0, &fmt_num(t), "start", 10.0, "normal");
    }
    if !label.is_empty() {
        s += &rotated_text(x + 62.0, y + h / 2.0, label, "middle", 90.0);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Heat map

impl Heatmap {
    fn render(&self) -> (String, f64, f64) {
        let rows = self.values.len().max(1);
        let cols = self
            .values
            .iter()
            .map(|r| r.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let cw = (640.0 / cols as f64).clamp(6.0, 42.0);
        let ch = (480.0 / rows as f64).clamp(6.0, 30.0);
        let show_x = label_stride(cols, (640.0 / 14.0) as usize);
        let show_y = label_stride(rows, (480.0 / 13.0) as usize);
        let ytick_w = self
            .y_ticks
            .iter()
            .map(|t| text_width(t, 10.0))
            .fold(0.0, f64::max);
        let xtick_w = self
            .x_ticks
            .iter()
            .map(|t| text_width(t, 10.0))
            .fold(0.0, f64::max);
        let rotate = xtick_w > cw * show_x as f64 - 2.0;
        let left = 30.0 + ytick_w.min(160.0) + 8.0;
        let top = 36.0;
        let pw = cw * cols as f64;
        let ph = ch * rows as f64;
        let xlab_h = if rotate {
            xtick_w.min(140.0) * 0.75 + 10.0
        } else {
            16.0
        };
        let bottom = xlab_h + 30.0;
        let w = left + pw + 100.0;
        let h = top + ph + bottom;
        let (lo, hi) = color_range(self.scale, self.range, &self.values);
        let mut s = text(left + pw / 2.0, 20.0, &self.title, "middle", 13.0, "bold");
        for (r, row) in self.values.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                s += &format!(
                    "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"{}\"><title>{} {}: {}</title></rect>",
                    left + cw * c as f64,
                    top + ch * r as f64,
                    cw + 0.3,
                    ch + 0.3,
                    color_of(self.scale, v, lo, hi),
                    esc(self.y_ticks.get(r).map(String::as_str).unwrap_or("")),
                    esc(self.x_ticks.get(c).map(String::as_str).unwrap_or("")),
                    fmt_num(v)
                );
            }
        }
        s += &format!(
            "<rect x=\"{left:.1}\" y=\"{top:.1}\" width=\"{pw:.1}\" height=\"{ph:.1}\" fill=\"none\" stroke=\"#444\"/>"
        );
        for (c, t) in self.x_ticks.iter().enumerate().take(cols) {
            if c % show_x != 0 {
                continue;
            }
            let x = left + cw * (c as f64 + 0.5);
            let y = top + ph + 12.0;
            s += &if rotate {
                rotated_text(x + 3.0, y - 4.0, &truncate(t, 22), "end", -50.0)
            } else {
                text(x, y, t, "middle", 10.0, "normal")
            };
        }
        for (r, t) in self.y_ticks.iter().enumerate().take(rows) {
            if r % show_y != 0 {
                continue;
            }
            let y = top + ch * (r as f64 + 0.5) + 3.5;
            s += &text(left - 4.0, y, &truncate(t, 26), "end", 10.0, "normal");
        }
        s += &text(
            left + pw / 2.0,
            h - 8.0,
            &self.x_label,
            "middle",
            11.0,
            "normal",
        );
        s += &rotated_text(12.0, top + ph / 2.0, &self.y_label, "middle", -90.0);
        s += &colorbar(
            left + pw + 12.0,
            top,
            ph.max(80.0),
            self.scale,
            lo,
            hi,
            &self.colorbar_label,
        );
        (s, w, h.max(top + 80.0 + bottom))
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

// ---------------------------------------------------------------------------------------------
// Axes shared by line plots and bar charts

/// A linear or log axis mapping data to pixels.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    p0: f64,
    p1: f64,
}

impl Axis {
    fn new(mut lo: f64, mut hi: f64, log: bool, p0: f64, p1: f64) -> Axis {
        if log {
            lo = lo.max(f64::MIN_POSITIVE);
            hi = hi.max(lo * 10.0);
            (lo, hi) = (
                10f64.powf(lo.log10().floor()),
                10f64.powf(hi.log10().ceil()),
            );
            if hi <= lo {
                hi = lo * 10.0;
            }
        } else {
            if !(lo.is_finite() && hi.is_finite()) {
                (lo, hi) = (0.0, 1.0);
            }
            if hi <= lo {
                (lo, hi) = (lo - 0.5, hi + 0.5);
            }
            let pad = (hi - lo) * 0.04;
            (lo, hi) = (lo - pad, hi + pad);
        }
        Axis {
            lo,
            hi,
            log,
            p0,
            p1,
        }
    }

    fn map(&self, v: f64) -> f64 {
        let t = if self.log {
            (v.max(f64::MIN_POSITIVE).log10() - self.lo.log10())
                / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        self.p0 + (self.p1 - self.p0) * t
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            log_ticks(self.lo, self.hi)
        } else {
            nice_ticks(self.lo, self.hi, 6)
        }
    }

    fn contains(&self, v: f64) -> bool {
        v.is_finite() && v >= self.lo && v <= self.hi && (!self.log || v > 0.0)
    }
}

const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

// ---------------------------------------------------------------------------------------------
// Line plot

impl LinePlot {
    fn render(&self) -> (String, f64, f64) {
        let (w, h) = (680.0, 420.0);
        let (left, right, top, bottom) = (70.0, 150.0, 36.0, 50.0);
        let pts = self.series.iter().flat_map(|s| s.points.iter());
        let ok = |v: f64, log: bool| v.is_finite() && (!log || v > 0.0);
        let mut xs: Vec<f64> = pts
            .clone()
            .map(|p| p.0)
            .filter(|&v| ok(v, self.log_x))
            .collect();
        let mut ys: Vec<f64> = pts.map(|p| p.1).filter(|&v| ok(v, self.log_y)).collect();
        xs.extend(
            self.vlines
                .iter()
                .map(|v| v.0)
                .filter(|&v| ok(v, self.log_x)),
        );
        ys.extend(
            self.hlines
                .iter()
                .map(|v| v.0)
                .filter(|&v| ok(v, self.log_y)),
        );
        let ext = |v: &[f64]| {
            v.iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                })
        };
        let (x0, x1) = ext(&xs);
        let (y0, y1) = ext(&ys);
        let ax = Axis::new(x0, x1, self.log_x, left, w - right);
        let ay = Axis::new(y0, y1, self.log_y, h - bottom, top);
        let mut s = text(
            (left + w - right) / 2.0,
            20.0,
            &self.title,
            "middle",
            13.0,
            "bold",
        );
        for (a, b, label) in &self.bands {
            let (pa, pb) = (ax.map(a.max(ax.lo)), ax.map(b.min(ax.hi)));
            if pb > pa {
                s += &format!(
                    "<rect x=\"{pa:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f0e6c8\" opacity=\"0.6\"/>",
                    pb - pa,
                    h - bottom - top
                );
                s += &text((pa + pb) / 2.0, top + 12.0, label, "middle", 10.0, "normal");
            }
        }
        s += &axes_frame(Some(&ax), Some(&ay), left, w - right, top, h - bottom);
        for (v, label) in &self.hlines {
            if ay.contains(*v) {
                let y = ay.map(*v);
                s += &format!("<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>", w - right);
                s += &text(w - right - 3.0, y - 3.0, label, "end", 9.0, "normal");
            }
        }
        for (v, label) in &self.vlines {
            if ax.contains(*v) {
                let x = ax.map(*v);
                s += &format!("<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>", h - bottom);
                s += &rotated_text(x - 3.0, top + 4.0, label, "end", -90.0);
            }
        }
        for (i, ser) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let p: Vec<(f64, f64)> = ser
                .points
                .iter()
                .filter(|(x, y)| ax.contains(*x) && ay.contains(*y))
                .map(|&(x, y)| (ax.map(x), ay.map(y)))
                .collect();
            if ser.style != SeriesStyle::Markers && p.len() > 1 {
                let d: Vec<String> = p.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                s += &format!(
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\"/>",
                    d.join(" ")
                );
            }
            if ser.style != SeriesStyle::Line {
                for (x, y) in &p {
                    s += &format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.6\" fill=\"{color}\" fill-opacity=\"0.75\"/>");
                }
            }
            let ly = top + 10.0 + 16.0 * i as f64;
            let lx = w - right + 12.0;
            s += &format!(
                "<rect x=\"{lx}\" y=\"{:.1}\" width=\"12\" height=\"4\" fill=\"{color}\"/>",
                ly - 4.0
            );
            s += &text(
                lx + 16.0,
                ly + 1.0,
                &truncate(&ser.name, 20),
                "start",
                10.0,
                "normal",
            );
        }
        s += &text(
            (left + w - right) / 2.0,
            h - 10.0,
            &self.x_label,
            "middle",
            11.0,
            "normal",
        );
        s += &rotated_text(
            14.0,
            (top + h - bottom) / 2.0,
            &self.y_label,
            "middle",
            -90.0,
        );
        (s, w, h)
    }
}

/// The plot frame, grid lines and tick labels of both axes.
fn axes_frame(ax: Option<&Axis>, ay: Option<&Axis>, x0: f64, x1: f64, y0: f64, y1: f64) -> String {
    let mut s = String::new();
    if let Some(ax) = ax {
        let ticks = ax.ticks();
        for (&t, label) in ticks.iter().zip(tick_labels(&ticks)) {
            let x = ax.map(t);
            s += &format!(
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y0}\" y2=\"{y1}\" stroke=\"#eee\"/>"
            );
            s += &text(x, y1 + 14.0, &label, "middle", 10.0, "normal");
        }
    }
    if let Some(ay) = ay {
        let ticks = ay.ticks();
        for (&t, label) in ticks.iter().zip(tick_labels(&ticks)) {
            let y = ay.map(t);
            s += &format!(
                "<line x1=\"{x0}\" x2=\"{x1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>"
            );
            s += &text(x0 - 5.0, y + 3.5, &label, "end", 10.0, "normal");
        }
    }
    s += &format!(
        "<rect x=\"{x0}\" y=\"{y0}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#444\"/>",
        x1 - x0,
        y1 - y0
    );
    s
}

// ---------------------------------------------------------------------------------------------
// Bar chart

impl BarChart {
    fn render(&self) -> (String, f64, f64) {
        let n = self.values.len().max(1);
        let label_w = self
            .labels
            .iter()
            .map(|t| text_width(t, 10.0))
            .fold(0.0, f64::max)
            .min(150.0);
        let lo = self
            .values
            .iter()
            .zip(0..)
            .map(|(&v, i)| self.span(i, v).0)
            .fold(0.0, f64::min);
        let hi = self
            .values
            .iter()
            .zip(0..)
            .map(|(&v, i)| self.span(i, v).1)
            .fold(0.0, f64::max);
        let legend = if self.colors.is_some() { 100.0 } else { 20.0 };
        let mut s = String::new();
        let (w, h);
        if self.horizontal {
            let bh = (420.0 / n as f64).clamp(4.0, 22.0);
            let left = 30.0 + label_w + 8.0;
            let (top, bottom) = (36.0, 46.0);
            w = left + 460.0 + legend;
            h = top + bh * n as f64 + bottom;
            let ax = Axis::new(lo, hi, false, left, left + 460.0);
            let stride = label_stride(n, (420.0 / 11.0) as usize);
            s += &text(left + 230.0, 20.0, &self.title, "middle", 13.0, "bold");
            s += &axes_frame(Some(&ax), None, left, left + 460.0, top, h - bottom);
            let zero = ax.map(0.0);
            for (i, &v) in self.values.iter().enumerate() {
                let y = top + bh * i as f64;
                let (a, b) = (ax.map(v.min(0.0)), ax.map(v.max(0.0)));
                s += &format!(
                    "<rect x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {}</title></rect>",
                    y + bh * 0.1,
                    (b - a).max(0.5),
                    bh * 0.8,
                    self.bar_color(i),
                    esc(self.labels.get(i).map(String::as_str).unwrap_or("")),
                    fmt_num(v)
                );
                let (lo, hi) = self.span(i, v);
                if hi > lo {
                    let (ea, eb, ym) = (ax.map(lo), ax.map(hi), y + bh / 2.0);
                    s += &format!("<line x1=\"{ea:.1}\" x2=\"{eb:.1}\" y1=\"{ym:.1}\" y2=\"{ym:.1}\" stroke=\"#222\"/>");
                }
                if i % stride == 0 {
                    if let Some(l) = self.labels.get(i) {
                        s += &text(
                            left - 4.0,
                            y + bh / 2.0 + 3.5,
                            &truncate(l, 24),
                            "end",
                            10.0,
                            "normal",
                        );
                    }
                }
            }
            s += &format!("<line x1=\"{zero:.1}\" x2=\"{zero:.1}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"#444\"/>", h - bottom);
            s += &text(
                left + 230.0,
                h - 10.0,
                &self.y_label,
                "middle",
                11.0,
                "normal",
            );
            s += &rotated_text(
                12.0,
                (top + h - bottom) / 2.0,
                &self.x_label,
                "middle",
                -90.0,
            );
            if self.colors.is_some() {
                s += &colorbar(
                    left + 470.0,
                    top,
                    (h - top - bottom).max(60.0),
                    ColorScale::Sequential,
                    0.0,
                    1.0,
                    &self.color_label,
                );
            }
        } else {
            let bw = (600.0 / n as f64).clamp(3.0, 40.0);
            let stride = label_stride(n, (600.0 / 12.0) as usize);
            let rotate = label_w > bw * stride as f64 - 2.0;
            let (left, top) = (70.0, 36.0);
            let bottom = if rotate { label_w * 0.75 + 36.0 } else { 46.0 };
            let pw = bw * n as f64;
            w = left + pw.max(200.0) + legend;
            h = top + 300.0 + bottom;
            let ay = Axis::new(lo, hi, false, top + 300.0, top);
            s += &text(left + pw / 2.0, 20.0, &self.title, "middle", 13.0, "bold");
            s += &axes_frame(
                None,
                Some(&ay),
                left,
                left + pw.max(200.0),
                top,
                top + 300.0,
            );
            for (i, &v) in self.values.iter().enumerate() {
                let x = left + bw * i as f64;
                let (a, b) = (ay.map(v.max(0.0)), ay.map(v.min(0.0)));
                s += &format!(
                    "<rect x=\"{:.1}\" y=\"{a:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {}</title></rect>",
                    x + bw * 0.1,
                    bw * 0.8,
                    (b - a).max(0.5),
                    self.bar_color(i),
                    esc(self.labels.get(i).map(String::as_str).unwrap_or("")),
                    fmt_num(v)
                );
                let (lo, hi) = self.span(i, v);
                if hi > lo {
                    let (ea, eb, xm) = (ay.map(lo), ay.map(hi), x + bw / 2.0);
                    s += &format!("<line x1=\"{xm:.1}\" x2=\"{xm:.1}\" y1=\"{ea:.1}\" y2=\"{eb:.1}\" stroke=\"#222\"/>");
                }
                if i % stride == 0 {
                    if let Some(l) = self.labels.get(i) {
                        let (lx, ly) = (x + bw / 2.0, top + 300.0 + 13.0);
                        s += &if rotate {
                            rotated_text(lx + 3.0, ly - 4.0, &truncate(l, 22), "end", -50.0)
                        } else {
                            text(lx, ly, l, "middle", 10.0, "normal")
                        };
                    }
                }
            }
            let zero = ay.map(0.0);
            s += &format!("<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{zero:.1}\" y2=\"{zero:.1}\" stroke=\"#444\"/>", left + pw.max(200.0));
            s += &text(
                left + pw / 2.0,
                h - 8.0,
                &self.x_label,
                "middle",
                11.0,
                "normal",
            );
            s += &rotated_text(14.0, top + 150.0, &self.y_label, "middle", -90.0);
            if self.colors.is_some() {
                s += &colorbar(
                    left + pw.max(200.0) + 10.0,
                    top,
                    300.0,
                    ColorScale::Sequential,
                    0.0,
                    1.0,
                    &self.color_label,
                );
            }
        }
        (s, w, h)
    }

    /// The error bar of bar `i` (value `v`): its interval, else `v ± error`, else `(v, v)`.
    fn span(&self, i: usize, v: f64) -> (f64, f64) {
        if let Some(&(lo, hi)) = self.intervals.as_ref().and_then(|x| x.get(i)) {
            if lo.is_finite() && hi.is_finite() {
                return (lo, hi);
            }
        }
        let e = self
            .errors
            .as_ref()
            .and_then(|e| e.get(i))
            .copied()
            .filter(|e| e.is_finite())
            .unwrap_or(0.0);
        (v - e, v + e)
    }

    fn bar_color(&self, i: usize) -> String {
        match self.colors.as_ref().and_then(|c| c.get(i)) {
            Some(&c) => color_of(ColorScale::Sequential, c, 0.0, 1.0),
            None => PALETTE[0].to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverging_scale_is_white_at_zero_and_saturated_at_the_ends() {
        assert_eq!(color_of(ColorScale::Diverging, 0.0, -2.0, 2.0), "#ffffff");
        assert_eq!(color_of(ColorScale::Diverging, -2.0, -2.0, 2.0), "#2166ac");
        assert_eq!(color_of(ColorScale::Diverging, 2.0, -2.0, 2.0), "#b2182b");
        assert_eq!(
            color_of(ColorScale::Sequential, f64::NAN, 0.0, 1.0),
            "#bbbbbb"
        );
        // Data range is symmetric about zero when diverging.
        let r = color_range(ColorScale::Diverging, None, &[vec![-0.5, 3.0]]);
        assert_eq!(r, (-3.0, 3.0));
    }

    #[test]
    fn ticks_are_nice_and_log_ticks_are_decades() {
        assert_eq!(
            nice_ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(log_ticks(1.0, 1000.0), vec![1.0, 10.0, 100.0, 1000.0]);
        assert_eq!(log_ticks(0.05, 20.0), vec![0.1, 1.0, 10.0]);
        assert_eq!(fmt_num(0.25), "0.25");
        assert_eq!(fmt_num(1500.0), "1500");
        // Close ticks keep the decimals that tell them apart.
        let t = nice_ticks(0.01155, 0.01385, 6);
        assert_eq!(tick_labels(&t), vec!["0.012", "0.0125", "0.013", "0.0135"]);
        assert_eq!(tick_labels(&[0.0, 0.5, 1.0]), vec!["0", "0.5", "1"]);
    }
}
