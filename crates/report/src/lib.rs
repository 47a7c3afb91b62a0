//! Interplab report: figures as SVG and PNG, and the self-contained `report.html` of a run.
//!
//! Where things live:
//! - [`figure`]: the figure types (heat maps, line and scatter plots, bar charts, grids) and
//!   their SVG/PNG rendering.
//! - [`html`]: the HTML report writer (headings, text, tables, inline figures).
//!
//! The crate knows nothing about models: callers fill plain structs with numbers and labels.

pub mod figure;
pub mod html;
mod png;

pub use figure::{BarChart, ColorScale, Figure, Heatmap, LinePlot, Series, SeriesStyle};
pub use html::Report;

/// What can go wrong while rendering.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SVG could not be rasterised.
    #[error("rendering PNG: {0}")]
    Png(String),
}
