//! Figure types and their rendering to SVG (and PNG).

/// How values map to colours in a heat map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorScale {
    /// Low to high on one hue ramp (scores, probabilities).
    Sequential,
    /// Blue–white–red, white at zero, symmetric about the largest |value| (signed effects).
    Diverging,
}

/// A grid of values: rows are the y axis (top row first), columns the x axis.
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesStyle {
    Line,
    Markers,
    LineAndMarkers,
}

/// One named series of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub style: SeriesStyle,
}

/// Line or scatter plot with optional log axes, reference lines and shaded x-bands.
#[derive(Debug, Clone, Default)]
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
#[derive(Debug, Clone, Default)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub labels: Vec<String>,
    pub values: Vec<f64>,
    /// Half-widths of error bars (e.g. one standard error), one per bar.
    pub errors: Option<Vec<f64>>,
    /// Values in [0, 1] mapped to a sequential colour scale, one per bar.
    pub colors: Option<Vec<f64>>,
    /// What the bar colour means.
    pub color_label: String,
    /// Draw horizontal bars (labels on the y axis), for long lists of features.
    pub horizontal: bool,
}

/// A figure: one plot, or several laid out in a grid.
#[derive(Debug, Clone)]
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
        // Placeholder until the renderer lands (report helper owns this file).
        String::from("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"></svg>")
    }

    /// The figure rasterised to PNG at `scale` × its SVG size.
    pub fn to_png(&self, _scale: f32) -> Result<Vec<u8>, crate::Error> {
        Err(crate::Error::Png(
            "PNG rendering not implemented yet".into(),
        ))
    }
}
