//! Finding the runs under RUNS_DIR and summarising each for the index.
//!
//! A run is a directory holding `manifest.json` (complete), `progress.json` without a manifest
//! (running, or interrupted when its process is gone) or `results.json`/`report.html` without
//! a manifest (partial). A directory whose JSON does not parse is listed as `malformed` with
//! the parser's message, never dropped. Tours nest runs one level down; the walk goes
//! [`MAX_DEPTH`] levels deep and never follows symlinks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use serde::Serialize;
use serde_json::Value;

/// How deep below RUNS_DIR runs are looked for.
pub const MAX_DEPTH: usize = 4;
/// How long one scan of the directory tree is reused.
pub const SCAN_TTL: Duration = Duration::from_millis(1000);

/// One run as the index shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The path relative to RUNS_DIR, `/`-separated: the run's id in URLs.
    pub id: String,
    /// `complete`, `running`, `interrupted`, `partial` or `malformed`.
    pub status: String,
    /// The experiment's name (`heads`, `sae-train`…), or "" when unknown.
    pub experiment: String,
    /// Model sources, in order.
    pub models: Vec<String>,
    /// When the run started (UTC, ISO 8601), or "".
    pub started: String,
    /// Wall seconds, when complete.
    pub seconds: Option<f64>,
    /// A few headline numbers from `results.json`, as `name = value`.
    pub key: Vec<String>,
    /// What was wrong, for a malformed run.
    pub error: Option<String>,
}

/// A cached scan: summaries plus the index JSON, rebuilt at most every [`SCAN_TTL`].
pub struct Index {
    root: PathBuf,
    state: Mutex<State>,
}

struct State {
    at: Option<Instant>,
    json: Bytes,
    runs: Vec<Summary>,
    /// Per run directory: the newest mtime of its summary files and the summary made then.
    by_dir: HashMap<PathBuf, (SystemTime, Summary)>,
}

impl Index {
    /// An index of `root` (canonical).
    pub fn new(root: PathBuf) -> Self {
        Index {
            root,
            state: Mutex::new(State {
                at: None,
                json: Default::default(),
                runs: Vec::new(),
                by_dir: HashMap::new(),
            }),
        }
    }

    /// The index as JSON bytes (`{"runs": [...]}`), newest first (shared, not copied).
    pub fn json(&self) -> Bytes {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh(&mut st);
        st.json.clone()
    }

    /// Every run's summary, newest first.
    pub fn runs(&self) -> Vec<Summary> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh(&mut st);
        st.runs.clone()
    }

    fn refresh(&self, st: &mut State) {
        if st.at.is_some_and(|t| t.elapsed() < SCAN_TTL) {
            return;
        }
        let mut dirs = Vec::new();
        find_runs(&self.root, 0, &mut dirs);
        let mut by_dir = HashMap::with_capacity(dirs.len());
        let mut runs = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let stamp = newest_mtime(&dir);
            let summary = match st.by_dir.remove(&dir) {
                Some((t, s)) if t == stamp && s.status != "running" => s,
                _ => summarise(&self.root, &dir),
            };
            runs.push(summary.clone());
            by_dir.insert(dir, (stamp, summary));
        }
        runs.sort_by(|a, b| b.started.cmp(&a.started).then(a.id.cmp(&b.id)));
        let json = serde_json::to_vec(&serde_json::json!({ "runs": runs })).unwrap_or_default();
        *st = State {
            at: Some(Instant::now()),
            json: Bytes::from(json),
            runs,
            by_dir,
        };
    }
}

const MARKERS: [&str; 4] = [
    "manifest.json",
    "progress.json",
    "results.json",
    "report.html",
];

fn is_run(dir: &Path) -> bool {
    MARKERS.iter().any(|m| dir.join(m).is_file())
}

fn find_runs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 0 && is_run(dir) {
        out.push(dir.to_path_buf());
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subdirs: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    subdirs.sort();
    for d in subdirs {
        find_runs(&d, depth + 1, out);
    }
}

fn newest_mtime(dir: &Path) -> SystemTime {
    MARKERS
        .iter()
        .filter_map(|m| {
            std::fs::metadata(dir.join(m))
                .and_then(|md| md.modified())
                .ok()
        })
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The id of `dir` under `root`.
pub fn id_of(root: &Path, dir: &Path) -> String {
    dir.strip_prefix(root)
        .unwrap_or(dir)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Read and parse a JSON file: `Ok(None)` when absent, `Err(message)` when unreadable.
pub fn read_json(path: &Path) -> Result<Option<Value>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            format!(
                "{}: {e}",
                path.file_name().unwrap_or_default().to_string_lossy()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Whether process `pid` is alive (Linux: `kill(pid, 0)`).
pub fn pid_alive(pid: i64) -> bool {
    if pid <= 0 || pid > i32::MAX as i64 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The status of a run directory from its progress file (when no manifest).
pub fn progress_status(progress: &Value) -> &'static str {
    match progress.get("pid").and_then(Value::as_i64) {
        Some(pid) if pid_alive(pid) => "running",
        _ => "interrupted",
    }
}

/// Summarise one run directory.
pub fn summarise(root: &Path, dir: &Path) -> Summary {
    summary_of(
        root,
        dir,
        &read_json(&dir.join("manifest.json")),
        &read_json(&dir.join("results.json")),
        &read_json(&dir.join("progress.json")),
    )
}

/// Summarise a run directory from its files as already read (see [`read_json`]).
pub fn summary_of(
    root: &Path,
    dir: &Path,
    manifest: &Result<Option<Value>, String>,
    results: &Result<Option<Value>, String>,
    progress: &Result<Option<Value>, String>,
) -> Summary {
    let mut s = Summary {
        id: id_of(root, dir),
        status: String::new(),
        experiment: String::new(),
        models: Vec::new(),
        started: String::new(),
        seconds: None,
        key: Vec::new(),
        error: None,
    };
    let mut errors = Vec::new();
    for r in [manifest, results, progress] {
        if let Err(e) = r {
            errors.push(e.clone());
        }
    }
    if !errors.is_empty() {
        s.status = "malformed".into();
        s.error = Some(errors.join("; "));
    }
    if let Ok(Some(m)) = manifest {
        s.experiment = str_at(m, "experiment");
        s.started = str_at(m, "started_utc");
        s.seconds = m.get("total_seconds").and_then(Value::as_f64);
        s.models = m
            .get("models")
            .and_then(Value::as_array)
            .map(|ms| ms.iter().map(|x| str_at(x, "source")).collect())
            .unwrap_or_default();
        if m.get("experiment").is_none() && s.error.is_none() {
            s.status = "malformed".into();
            s.error = Some("manifest.json has no `experiment`".into());
        }
    } else if let Ok(Some(p)) = progress {
        s.experiment = str_at(p, "experiment");
        s.started = str_at(p, "started_utc");
        s.models = p
            .get("models")
            .and_then(Value::as_array)
            .map(|ms| {
                ms.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
    }
    if s.status.is_empty() {
        s.status = match (manifest, progress) {
            (Ok(Some(_)), _) => "complete".into(),
            (_, Ok(Some(p))) => progress_status(p).into(),
            _ => "partial".into(),
        };
    }
    if let Ok(Some(r)) = results {
        s.key = key_results(r);
    }
    s
}

fn str_at(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// Up to four headline numbers: each eval condition's first metric
/// (`variants[i].aggregates[0]`), the first two SAEs' L0 and FVU (`saes[i].eval.metrics`),
/// each ranked field's top entry (`FIELD.top[0]` =
/// `[layer, head, score]`, as the head scores give), then the top-level scalar fields of
/// `results.json` (numbers rounded to four significant digits), then scalars one level down.
pub fn key_results(results: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(obj) = results.as_object() else {
        return out;
    };
    if let Some(vs) = obj.get("variants").and_then(Value::as_array) {
        for (i, v) in vs.iter().enumerate().take(4) {
            let a = &v["aggregates"][0];
            if let (Some(m), Some(x)) = (a["metric"].as_str(), a["value"].as_f64()) {
                out.push(format!("{m} #{i} = {}", significant(x, 4)));
            }
        }
    }
    if let Some(saes) = obj.get("saes").and_then(Value::as_array) {
        for (i, sae) in saes.iter().enumerate().take(2) {
            let m = &sae["eval"]["metrics"];
            if let (Some(l0), Some(fvu)) = (m["l0"].as_f64(), m["fvu"].as_f64()) {
                let name = sae["name"].as_str().map_or(format!("#{i}"), String::from);
                out.push(format!(
                    "{name} L0 = {}, FVU = {}",
                    significant(l0, 4),
                    significant(fvu, 4)
                ));
            }
        }
    }
    for (k, v) in obj {
        if let Some([l, h, score]) = v["top"][0].as_array().map(Vec::as_slice) {
            if let (Some(l), Some(h), Some(score)) = (l.as_u64(), h.as_u64(), score.as_f64()) {
                if out.len() < 4 {
                    out.push(format!("{k} L{l}H{h} = {}", significant(score, 4)));
                }
            }
        }
    }
    // Then scalars: fractions before counts before short strings, top level before nested;
    // yes/no flags are settings rather than results and are left out.
    let rank = |v: &Value| match v {
        Value::Number(n) if n.is_f64() => Some(0),
        Value::Number(_) => Some(1),
        Value::String(s) if s.len() <= 24 => Some(2),
        _ => None,
    };
    let mut cands: Vec<(usize, String, &Value)> = Vec::new();
    for (k, v) in obj {
        if let Some(r) = rank(v) {
            cands.push((r, k.clone(), v));
        }
        if let Some(inner) = v.as_object() {
            for (k2, v2) in inner {
                if let Some(r) = rank(v2) {
                    cands.push((r + 3, format!("{k}.{k2}"), v2));
                }
            }
        }
    }
    cands.sort_by_key(|c| c.0);
    for (_, name, v) in cands {
        if out.len() >= 4 {
            break;
        }
        if let Some(text) = scalar(v) {
            out.push(format!("{name} = {text}"));
        }
    }
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => {
            let x = n.as_f64()?;
            Some(if n.is_f64() {
                format!("{}", significant(x, 4))
            } else {
                n.to_string()
            })
        }
        Value::String(s) if s.len() <= 40 => Some(s.clone()),
        _ => None,
    }
}

fn significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_results_name_eval_metrics_and_top_heads() {
        let v = serde_json::json!({
            "variants": [{"aggregates": [{"metric": "acc", "value": 0.30001}]}],
            "induction_head": {"top": [[17, 5, 0.28719], [1, 2, 0.1]]},
            "saes": [{"name": "topk-k16", "eval": {"metrics": {"l0": 16.0, "fvu": 0.40801}}}],
            "task": "bbq"
        });
        assert_eq!(
            key_results(&v),
            vec![
                "acc #0 = 0.3",
                "topk-k16 L0 = 16, FVU = 0.408",
                "induction_head L17H5 = 0.2872",
                "task = bbq"
            ]
        );
    }

    #[test]
    fn key_results_take_scalars_first() {
        let v = serde_json::json!({"a": [1, 2], "b": 0.123456, "c": {"d": 3}, "e": "x", "f": true, "n": 7});
        assert_eq!(
            key_results(&v),
            vec!["b = 0.1235", "n = 7", "e = x", "c.d = 3"]
        );
    }

    #[test]
    fn malformed_json_is_listed_with_its_error() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("bad");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("manifest.json"), "{ not json").unwrap();
        let s = summarise(root.path(), &dir);
        assert_eq!(s.status, "malformed");
        assert!(s.error.unwrap().starts_with("manifest.json: "));
        assert_eq!(s.id, "bad");
    }
}
