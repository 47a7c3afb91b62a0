//! Render one of each figure type into a directory, to look at: `cargo run -p interplab-report --example gallery -- DIR`.

use interplab_report::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "gallery".into()));
    std::fs::create_dir_all(&dir)?;
    let toks: Vec<String> = [
        "<s>", "When", " Mary", " and", " John", " went", " to", " the", " store", ",", " John",
        " gave", " a", " drink", " to",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let heat = Figure::Heatmap(Heatmap {
        title: "resid_pre patching".into(),
        x_label: "position".into(),
        y_label: "layer".into(),
        x_ticks: toks.clone(),
        y_ticks: (0..30).map(|l| l.to_string()).collect(),
        values: (0..30)
            .map(|l| {
                (0..15)
                    .map(|p| ((l as f64 - 15.0) * (p as f64 - 7.0)).sin())
                    .collect()
            })
            .collect(),
        scale: ColorScale::Diverging,
        range: None,
        colorbar_label: "normalised logit diff".into(),
    });
    let line = Figure::Line(LinePlot {
        title: "loss".into(),
        x_label: "epoch".into(),
        y_label: "loss".into(),
        log_x: true,
        log_y: true,
        series: vec![
            Series {
                name: "train".into(),
                points: (1..200)
                    .map(|i| (i as f64 * 50.0, 5.0 / i as f64))
                    .collect(),
                style: SeriesStyle::Line,
            },
            Series {
                name: "test".into(),
                points: (1..200)
                    .map(|i| (i as f64 * 50.0, 5.0 / (1.0 + (i as f64 / 100.0).powi(4))))
                    .collect(),
                style: SeriesStyle::LineAndMarkers,
            },
        ],
        vlines: vec![(1000.0, "memorised".into())],
        hlines: vec![(0.1, "0.1".into())],
        bands: vec![
            (100.0, 1000.0, "memorisation".into()),
            (1000.0, 5000.0, "circuit formation".into()),
        ],
    });
    let bar = Figure::Bar(BarChart {
        title: "loss increase".into(),
        x_label: "head".into(),
        y_label: "Δ loss (nats)".into(),
        labels: (0..30).map(|i| format!("{}.{}", i / 9, i % 9)).collect(),
        values: (0..30)
            .map(|i| ((i * 7 % 11) as f64 - 3.0) / 10.0)
            .collect(),
        errors: Some(vec![0.03; 30]),
        colors: Some((0..30).map(|i| i as f64 / 29.0).collect()),
        color_label: "induction score".into(),
        horizontal: false,
        intervals: None,
    });
    let mut hbar = match &bar {
        Figure::Bar(b) => b.clone(),
        _ => unreachable!(),
    };
    hbar.horizontal = true;
    let grid = Figure::Grid {
        title: "grid".into(),
        columns: 2,
        figures: vec![heat.clone(), Figure::Bar(hbar)],
    };
    // Stress cases: an attention pattern with 48 long token labels (rotated, thinned) and a
    // masked (NaN) upper triangle; bars with long labels.
    let words: Vec<String> = (0..48).map(|i| format!(" token_number_{i}")).collect();
    let pattern = Figure::Heatmap(Heatmap {
        title: "blocks.1.attn.hook_pattern head 3".into(),
        x_label: "key".into(),
        y_label: "query".into(),
        x_ticks: words.clone(),
        y_ticks: words.clone(),
        values: (0..48)
            .map(|q| {
                (0..48)
                    .map(|k| {
                        if k > q {
                            f64::NAN
                        } else if k + 1 == q || (k == 0 && q == 0) {
                            0.9
                        } else {
                            0.1 / (q as f64 + 1.0)
                        }
                    })
                    .collect()
            })
            .collect(),
        scale: ColorScale::Sequential,
        range: Some((0.0, 1.0)),
        colorbar_label: "attention".into(),
    });
    let long_bar = Figure::Bar(BarChart {
        title: "top tokens".into(),
        x_label: "token".into(),
        y_label: "count".into(),
        labels: words[..12].to_vec(),
        values: (0..12).map(|i| (12 - i) as f64 * 3.0).collect(),
        ..Default::default()
    });
    let mut report = Report::new("Gallery");
    for (name, f) in [
        ("heatmap", &heat),
        ("line", &line),
        ("bar", &bar),
        ("grid", &grid),
        ("pattern", &pattern),
        ("long_bar", &long_bar),
    ] {
        std::fs::write(dir.join(format!("{name}.svg")), f.to_svg())?;
        std::fs::write(dir.join(format!("{name}.png")), f.to_png(1.5)?)?;
        report.heading(name).figure(name, f);
    }
    std::fs::write(dir.join("report.html"), report.to_html())?;
    Ok(())
}
