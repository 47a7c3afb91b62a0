//! SVG to PNG with resvg, using the embedded DejaVu Sans so text renders on machines without fonts.

use std::sync::{Arc, OnceLock};

/// DejaVu Sans (Bitstream Vera derivative, free license in `fonts/LICENSE_DEJAVU`), taken from
/// the matplotlib wheel on PyPI.
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

fn options() -> &'static resvg::usvg::Options<'static> {
    static OPTS: OnceLock<resvg::usvg::Options<'static>> = OnceLock::new();
    OPTS.get_or_init(|| {
        let mut db = resvg::usvg::fontdb::Database::new();
        db.load_font_data(FONT.to_vec());
        db.set_sans_serif_family("DejaVu Sans");
        resvg::usvg::Options {
            font_family: "DejaVu Sans".into(),
            fontdb: Arc::new(db),
            ..Default::default()
        }
    })
}

/// Rasterise an SVG document at `scale` × its size.
pub fn svg_to_png(svg: &str, scale: f32) -> Result<Vec<u8>, crate::Error> {
    let tree = resvg::usvg::Tree::from_str(svg, options())
        .map_err(|e| crate::Error::Png(format!("parsing SVG: {e}")))?;
    let size = tree
        .size()
        .to_int_size()
        .scale_by(scale)
        .ok_or_else(|| crate::Error::Png("empty or too large image".into()))?;
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| crate::Error::Png("could not allocate the image".into()))?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| crate::Error::Png(e.to_string()))
}

#[cfg(test)]
mod tests {
    use crate::{ColorScale, Figure, Heatmap};

    #[test]
    fn heatmap_renders_to_a_png_of_twice_its_svg_size() {
        let fig = Figure::Heatmap(Heatmap {
            title: "t <&>".into(),
            x_label: "position".into(),
            y_label: "layer".into(),
            x_ticks: vec!["a".into(), "b".into()],
            y_ticks: vec!["0".into()],
            values: vec![vec![-1.0, f64::NAN]],
            scale: ColorScale::Diverging,
            range: None,
            colorbar_label: "effect".into(),
        });
        let svg = fig.to_svg();
        let tree = resvg::usvg::Tree::from_str(&svg, super::options()).unwrap();
        let png = fig.to_png(2.0).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR width and height, big-endian, at bytes 16..24.
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!(w, (tree.size().width() * 2.0).round() as u32);
        assert_eq!(h, (tree.size().height() * 2.0).round() as u32);
    }

    #[test]
    fn every_figure_type_is_well_formed_svg_with_escaped_text() {
        use crate::{BarChart, LinePlot, Series, SeriesStyle};
        let line = Figure::Line(LinePlot {
            title: "loss <&> \"q\"".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            log_x: true,
            log_y: true,
            series: vec![Series {
                name: "a&b".into(),
                points: vec![(1.0, 10.0), (10.0, 1.0), (1000.0, 0.01)],
                style: SeriesStyle::LineAndMarkers,
            }],
            vlines: vec![(100.0, "<phase>".into())],
            hlines: vec![(0.1, "floor".into())],
            bands: vec![(2.0, 20.0, "memorise".into())],
        });
        let bars = |horizontal| {
            Figure::Bar(BarChart {
                title: "bars".into(),
                x_label: "feature".into(),
                y_label: "norm".into(),
                labels: (0..50).map(|i| format!("feature <{i}>")).collect(),
                values: (0..50).map(|i| i as f64 - 20.0).collect(),
                errors: Some(vec![0.5; 50]),
                colors: Some((0..50).map(|i| i as f64 / 49.0).collect()),
                color_label: "superposition".into(),
                horizontal,
                intervals: None,
            })
        };
        let grid = Figure::Grid {
            title: "grid".into(),
            columns: 2,
            figures: vec![line.clone(), bars(false), bars(true)],
        };
        for fig in [line, bars(false), bars(true), grid] {
            let svg = fig.to_svg();
            assert!(
                !svg.contains("<&>") && !svg.contains("<phase>"),
                "unescaped text"
            );
            let tree = resvg::usvg::Tree::from_str(&svg, super::options()).unwrap();
            assert!(tree.size().width() > 100.0 && tree.size().height() > 100.0);
        }
    }
}
