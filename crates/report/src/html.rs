//! The self-contained HTML report of a run: one file, inline SVG figures, no scripts fetched.

use serde::Serialize;

use crate::figure::Figure;

/// One block of the report, in order. Serialised as `{"kind": "heading", "data": …}` in the
/// `report.json` the web workbench renders with interactive figures.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
enum Block {
    Heading(String),
    Paragraph(String),
    Table {
        headers: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    Figure {
        caption: String,
        figure: Figure,
    },
    KeyValues(Vec<(String, String)>),
    Pre(String),
    Tokens {
        label: String,
        tokens: Vec<(String, f64)>,
        max: f64,
        focus: Option<usize>,
    },
}

/// A report under construction; [`Report::to_html`] renders it. It serialises (serde) to
/// `{"title": …, "blocks": [{"kind": "heading" | "paragraph" | "table" | "figure" | …, "data": …}]}`,
/// figures as their numbers: the `report.json` of a run directory.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    title: String,
    blocks: Vec<Block>,
}

impl Report {
    /// An empty report with a page title.
    pub fn new(title: impl Into<String>) -> Report {
        Report {
            title: title.into(),
            blocks: Vec::new(),
        }
    }

    /// A section heading.
    pub fn heading(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Heading(text.into()));
        self
    }

    /// A paragraph of plain text (escaped).
    pub fn paragraph(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Paragraph(text.into()));
        self
    }

    /// A table of strings.
    pub fn table(&mut self, headers: &[&str], rows: Vec<Vec<String>>) -> &mut Self {
        self.blocks.push(Block::Table {
            headers: headers.iter().map(|s| s.to_string()).collect(),
            rows,
        });
        self
    }

    /// A figure, inlined as SVG, with a caption.
    pub fn figure(&mut self, caption: impl Into<String>, fig: &Figure) -> &mut Self {
        self.blocks.push(Block::Figure {
            caption: caption.into(),
            figure: fig.clone(),
        });
        self
    }

    /// A two-column list of settings or results.
    pub fn key_values(&mut self, kv: &[(&str, String)]) -> &mut Self {
        self.blocks.push(Block::KeyValues(
            kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        ));
        self
    }

    /// Preformatted text (a command line, a sample).
    pub fn pre(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Pre(text.into()));
        self
    }

    /// A run of tokens, each shaded by its value (0 → white, `max` → full orange) and showing
    /// the value on hover; `focus` is outlined. For an SAE latent's activating contexts.
    pub fn tokens(
        &mut self,
        label: impl Into<String>,
        tokens: Vec<(String, f64)>,
        max: f64,
        focus: Option<usize>,
    ) -> &mut Self {
        self.blocks.push(Block::Tokens {
            label: label.into(),
            tokens,
            max,
            focus,
        });
        self
    }

    /// The whole page.
    pub fn to_html(&self) -> String {
        let mut s = String::new();
        s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>");
        s.push_str(&escape(&self.title));
        s.push_str("</title>\n<style>\n");
        s.push_str(STYLE);
        s.push_str("</style></head><body>\n<h1>");
        s.push_str(&escape(&self.title));
        s.push_str("</h1>\n");
        for b in &self.blocks {
            match b {
                Block::Heading(t) => s.push_str(&format!("<h2>{}</h2>\n", escape(t))),
                Block::Paragraph(t) => s.push_str(&format!("<p>{}</p>\n", escape(t))),
                Block::Pre(t) => s.push_str(&format!("<pre>{}</pre>\n", escape(t))),
                Block::Table { headers, rows } => {
                    s.push_str("<table><thead><tr>");
                    for h in headers {
                        s.push_str(&format!("<th>{}</th>", escape(h)));
                    }
                    s.push_str("</tr></thead><tbody>\n");
                    for r in rows {
                        s.push_str("<tr>");
                        for c in r {
                            s.push_str(&format!("<td>{}</td>", escape(c)));
                        }
                        s.push_str("</tr>\n");
                    }
                    s.push_str("</tbody></table>\n");
                }
                Block::KeyValues(kv) => {
                    s.push_str("<table class=\"kv\"><tbody>\n");
                    for (k, v) in kv {
                        s.push_str(&format!(
                            "<tr><th>{}</th><td>{}</td></tr>\n",
                            escape(k),
                            escape(v)
                        ));
                    }
                    s.push_str("</tbody></table>\n");
                }
                Block::Tokens {
                    label,
                    tokens,
                    max,
                    focus,
                } => {
                    s.push_str(&format!(
                        "<div class=\"ctx\"><span class=\"lbl\">{}</span>",
                        escape(label)
                    ));
                    for (i, (t, v)) in tokens.iter().enumerate() {
                        let a = if *max > 0.0 {
                            (v / max).clamp(0.0, 1.0)
                        } else {
                            0.0
                        };
                        let class = if Some(i) == *focus {
                            " class=\"focus\""
                        } else {
                            ""
                        };
                        s.push_str(&format!(
                            "<span{class} style=\"background:rgba(255,140,0,{a:.3})\" title=\"{}\">{}</span>",
                            escape(&format!("{t:?}: {v:.4}")),
                            escape(&t.replace('\n', "↵"))
                        ));
                    }
                    s.push_str("</div>\n");
                }
                Block::Figure { caption, figure } => {
                    s.push_str("<figure>");
                    s.push_str(&figure.to_svg());
                    s.push_str(&format!(
                        "<figcaption>{}</figcaption></figure>\n",
                        escape(caption)
                    ));
                }
            }
        }
        s.push_str("</body></html>\n");
        s
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}
table.kv th{width:14em}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}figcaption{color:#555;font-size:0.9em}
pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}
div.ctx{font-family:ui-monospace,monospace;font-size:0.85em;white-space:pre-wrap;margin:2px 0;line-height:1.6}
div.ctx span.lbl{color:#777;display:inline-block;min-width:5.5em}
div.ctx span.focus{outline:1px solid #c40}
";

/// Escape text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figure::{ColorScale, Heatmap};

    #[test]
    fn report_serialises_blocks_and_figures_as_data() {
        let mut r = Report::new("t");
        r.heading("h").figure(
            "cap",
            &Figure::Heatmap(Heatmap {
                title: "hm".into(),
                x_label: "x".into(),
                y_label: "y".into(),
                x_ticks: vec!["a".into(), "b".into()],
                y_ticks: vec!["0".into()],
                values: vec![vec![1.5, f64::NAN]],
                scale: ColorScale::Diverging,
                range: None,
                colorbar_label: "v".into(),
            }),
        );
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(v["title"], "t");
        assert_eq!(v["blocks"][0]["kind"], "heading");
        assert_eq!(v["blocks"][0]["data"], "h");
        let fig = &v["blocks"][1]["data"]["figure"];
        assert_eq!(v["blocks"][1]["data"]["caption"], "cap");
        assert_eq!(fig["kind"], "heatmap");
        assert_eq!(fig["scale"], "diverging");
        assert_eq!(fig["values"][0][0], 1.5);
        assert!(fig["values"][0][1].is_null(), "NaN becomes null");
    }
}
