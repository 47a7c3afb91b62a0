//! `interplab tour`: the catalog as a guided tour. Each chosen experiment runs into its own
//! run directory under one tour directory, and `index.html` there links every report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use interplab_core::loader::WeightStorage;
use interplab_core::source::FetchEvent;
use interplab_report::html::escape;

use crate::catalog::ExperimentConfig;
use crate::progress::Progress;
use crate::rerun::run_to_dir;
use crate::writer::{Existing, RunWriter};

/// The model experiments run on when a config names none: the project's default model.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// Every experiment of the catalog with its question, in catalog order.
pub fn catalog() -> Vec<(&'static str, &'static str)> {
    ExperimentConfig::all_quick()
        .iter()
        .map(|c| (c.name(), c.question()))
        .collect()
}

/// The configs of the named experiments (`all` for every one): the quick presets, or the
/// full defaults on [`DEFAULT_MODEL`].
pub fn configs(names: &[String], quick: bool) -> anyhow::Result<Vec<ExperimentConfig>> {
    let all = ExperimentConfig::all_quick();
    let known: Vec<&str> = all.iter().map(|c| c.name()).collect();
    let wanted: Vec<&str> = if names.iter().any(|n| n == "all") {
        known.clone()
    } else {
        names.iter().map(String::as_str).collect()
    };
    let mut out = Vec::new();
    for n in wanted {
        let Some(c) = all.iter().find(|c| c.name() == n) else {
            anyhow::bail!("no experiment {n:?} in the catalog ({})", known.join(", "));
        };
        out.push(if quick { c.clone() } else { full(n)? });
    }
    Ok(out)
}

/// An experiment's default config with [`DEFAULT_MODEL`] for every model it leaves empty.
fn full(name: &str) -> anyhow::Result<ExperimentConfig> {
    let cfg: ExperimentConfig = serde_json::from_value(serde_json::json!({ "experiment": name }))?;
    let mut v = serde_json::to_value(&cfg)?;
    if let Some(obj) = v.as_object_mut() {
        for key in ["model", "model_a", "model_b", "weak", "strong"] {
            if obj.get(key).is_some_and(|m| m == "") {
                obj.insert(key.into(), DEFAULT_MODEL.into());
            }
        }
        if obj
            .get("models")
            .is_some_and(|m| m.as_array().is_some_and(Vec::is_empty))
        {
            obj.insert("models".into(), serde_json::json!([DEFAULT_MODEL]));
        }
    }
    Ok(serde_json::from_value(v)?)
}

/// How one experiment of a tour went.
#[derive(Debug, Clone)]
pub struct Stop {
    /// The experiment's catalog name.
    pub name: &'static str,
    /// Its run directory, relative to the tour directory.
    pub dir: PathBuf,
    /// Wall time, seconds.
    pub seconds: f64,
    /// The error, when it failed.
    pub error: Option<String>,
    /// The first figure the run wrote, relative to the tour directory.
    pub thumbnail: Option<PathBuf>,
}

/// Run every config into `<out>/<name>/` (`out`: default `runs/tour-<time>`, refused when
/// not empty), carrying on past failures, then write `<out>/index.html`. `on_stop` sees each
/// experiment as it finishes.
pub fn run(
    configs: &[ExperimentConfig],
    out: Option<&Path>,
    storage: WeightStorage,
    fetch: &mut dyn FnMut(FetchEvent),
    progress: &mut dyn Progress,
    on_stop: &mut dyn FnMut(&Stop),
) -> anyhow::Result<(PathBuf, Vec<Stop>)> {
    for c in configs {
        c.validate()?;
    }
    let tour = RunWriter::create(out, "tour", Existing::Refuse)?;
    let mut stops = Vec::new();
    for cfg in configs {
        progress.phase(cfg.name());
        let t0 = Instant::now();
        let dir = PathBuf::from(cfg.name());
        let result = run_to_dir(
            cfg,
            Some(&tour.path().join(&dir)),
            Existing::Refuse,
            storage,
            fetch,
            progress,
        );
        let stop = Stop {
            name: cfg.name(),
            seconds: t0.elapsed().as_secs_f64(),
            error: result.as_ref().err().map(|e| format!("{e:#}")),
            thumbnail: result.ok().and_then(|w| {
                w.outcome
                    .figures
                    .first()
                    .map(|(n, _)| dir.join(format!("{n}.png")))
            }),
            dir,
        };
        on_stop(&stop);
        stops.push(stop);
        tour.write("index.html", index_html(&stops).as_bytes())?;
    }
    tour.write("index.html", index_html(&stops).as_bytes())?;
    Ok((tour.path().to_path_buf(), stops))
}

/// The tour's index page: one card per experiment with its question, outcome and a link to
/// its report. Self-contained (no scripts, no network).
pub fn index_html(stops: &[Stop]) -> String {
    let questions = catalog();
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <title>Interplab tour</title>\n<style>\n\
         body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\n\
         .cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1em}\n\
         .card{border:1px solid #ccc;border-radius:6px;padding:0.8em}\n\
         .card h2{font-size:1.1em;margin:0 0 0.3em}.card p{margin:0.3em 0;font-size:0.92em}\n\
         .card img{width:100%;height:180px;object-fit:contain;background:#fafafa;border:1px solid #eee}\n\
         .ok{color:#1a7f37}.failed{color:#b42318}.meta{color:#666;font-size:0.85em}\n\
         </style></head><body>\n<h1>Interplab tour</h1>\n",
    );
    let ok = stops.iter().filter(|x| x.error.is_none()).count();
    s.push_str(&format!(
        "<p>{ok} of {} experiments ran. Each card links the experiment's own report.</p>\n<div class=\"cards\">\n",
        stops.len()
    ));
    for st in stops {
        let q = questions
            .iter()
            .find(|(n, _)| *n == st.name)
            .map_or("", |(_, q)| q);
        let report = st.dir.join("report.html");
        s.push_str("<div class=\"card\">");
        let title = match st.error {
            None => format!(
                "<a href=\"{}\">{}</a>",
                escape(&report.display().to_string()),
                escape(st.name)
            ),
            Some(_) => escape(st.name),
        };
        s.push_str(&format!("<h2>{title}</h2><p>{}</p>", escape(q)));
        if let Some(t) = &st.thumbnail {
            s.push_str(&format!(
                "<a href=\"{}\"><img src=\"{}\" alt=\"first figure of {}\"></a>",
                escape(&report.display().to_string()),
                escape(&t.display().to_string()),
                escape(st.name)
            ));
        }
        match &st.error {
            None => s.push_str(&format!(
                "<p class=\"meta\"><span class=\"ok\">done</span> in {:.1} s</p>",
                st.seconds
            )),
            Some(e) => s.push_str(&format!(
                "<p class=\"meta\"><span class=\"failed\">failed</span>: {}</p>",
                escape(e)
            )),
        }
        s.push_str("</div>\n");
    }
    s.push_str("</div>\n</body></html>\n");
    s
}
