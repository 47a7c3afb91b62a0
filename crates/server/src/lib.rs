//! `interplab serve`: a local web workbench over every run directory under RUNS_DIR.
//!
//! Where things live:
//! - this file: the router, the access rules (loopback by default; any other address only
//!   with `allow_remote`, and then every request carries the token), [`serve`].
//! - [`runs`]: finding runs and summarising them for the index (cached, rebuilt at most once a
//!   second).
//! - [`files`]: mapping a URL onto a file inside RUNS_DIR and nothing outside it.
//! - [`attention`]: attention patterns on demand for a typed prompt.
//! - `assets/`: the single-page front end (`app.js`, `app.css`) and the vendored charting
//!   library (Apache ECharts, `assets/vendor/`, see its README), compiled into the binary.
//!
//! HTTP API (all JSON): `GET /api/runs` the index; `GET /api/run?id=ID` one run (manifest,
//! config, results, report blocks, figures, progress, files); `GET /files/ID/NAME` a file of a
//! run; `POST /api/attention {"model", "prompt"}` patterns for a prompt;
//! `GET /api/cached-attention?id=ID` the patterns a run cached; `GET /api/experiments` the
//! catalog with each quick config; `POST /api/start {"config"}` (loopback only) runs an
//! experiment into a new run directory under RUNS_DIR; `GET /api/started` how those went.

pub mod attention;
pub mod files;
pub mod runs;
pub mod start;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// Largest `results.json`/`report.json` sent inline with a run (bigger ones are linked).
pub const MAX_INLINE_BYTES: u64 = 32 << 20;
/// Largest file `/files/` sends (it is read whole into memory); bigger ones answer 413.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// How the server is started.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory whose runs are served.
    pub runs_dir: PathBuf,
    /// Address to bind (`127.0.0.1:8765` by default; port 0 picks a free one).
    pub addr: SocketAddr,
    /// Needed to bind anything but a loopback address.
    pub allow_remote: bool,
    /// The token remote clients must present; made at random when `None` and remote.
    pub token: Option<String>,
}

/// Shared state of the handlers.
pub struct AppState {
    root: PathBuf,
    index: runs::Index,
    models: attention::Models,
    started: start::Started,
    token: Option<String>,
    /// Host names a loopback-only server answers to (against DNS rebinding).
    loopback_only: bool,
}

/// What [`bind`] made: the bound address, the token remote clients need, and the server.
pub struct Bound {
    pub addr: SocketAddr,
    pub token: Option<String>,
    runs_dir: PathBuf,
    listener: tokio::net::TcpListener,
    app: Router,
}

impl Bound {
    /// Serve until the process ends.
    pub async fn run(self) -> anyhow::Result<()> {
        axum::serve(self.listener, self.app).await?;
        Ok(())
    }

    /// The served directory, for messages.
    pub fn runs_dir_display(&self) -> String {
        self.runs_dir.display().to_string()
    }

    /// The URL to open (with the token when one is needed).
    pub fn url(&self) -> String {
        match &self.token {
            Some(t) => format!("http://{}/?token={t}", self.addr),
            None => format!("http://{}/", self.addr),
        }
    }
}

/// Check the config, bind the socket and build the app (nothing is served until
/// [`Bound::run`]).
pub async fn bind(cfg: Config) -> anyhow::Result<Bound> {
    let root = std::fs::canonicalize(&cfg.runs_dir)
        .map_err(|e| anyhow::anyhow!("runs directory {}: {e}", cfg.runs_dir.display()))?;
    if !root.is_dir() {
        anyhow::bail!("{} is not a directory", cfg.runs_dir.display());
    }
    let loopback = cfg.addr.ip().is_loopback();
    if !loopback && !cfg.allow_remote {
        anyhow::bail!(
            "binding {} would serve runs to the network; pass --allow-remote to do it (every \
             request then needs the token printed at start)",
            cfg.addr.ip()
        );
    }
    let token = match (&cfg.token, loopback) {
        (Some(t), _) if t.len() < 16 => anyhow::bail!("--token must have at least 16 characters"),
        (Some(t), _) => Some(t.clone()),
        (None, false) => Some(random_token()?),
        (None, true) => None,
    };
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", cfg.addr))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        index: runs::Index::new(root.clone()),
        root,
        models: Default::default(),
        started: Default::default(),
        token: token.clone(),
        loopback_only: loopback,
    });
    Ok(Bound {
        addr,
        token,
        runs_dir: cfg.runs_dir.clone(),
        listener,
        app: router(state),
    })
}

/// The app's routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/assets/{name}", get(asset))
        .route("/api/runs", get(api_runs))
        .route("/api/run", get(api_run))
        .route("/api/attention", post(api_attention))
        .route("/api/cached-attention", get(api_cached_attention))
        .route("/api/experiments", get(|| async { Json(start::catalog()) }))
        .route("/api/start", post(api_start))
        .route("/api/started", get(api_started))
        .route("/files/{*rest}", get(file))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| anyhow::anyhow!("reading /dev/urandom for a token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// Access rules, before every handler: a loopback-only server answers only requests whose
/// `Host` is a loopback name; with a token, the request must carry it (query `token=`,
/// `Authorization: Bearer`, or the cookie the first tokened request sets).
async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if st.loopback_only {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !matches!(name, "127.0.0.1" | "localhost" | "[::1]") {
            return error(
                StatusCode::FORBIDDEN,
                "this server answers only on loopback names",
            );
        }
    }
    let Some(token) = &st.token else {
        return next.run(req).await;
    };
    let from_query = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
        .map(String::from);
    let presented = from_query
        .clone()
        .or_else(|| bearer(req.headers()))
        .or_else(|| cookie(req.headers()));
    if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
        return error(
            StatusCode::UNAUTHORIZED,
            "this server needs its token (?token=…)",
        );
    }
    let mut resp = next.run(req).await;
    if from_query.is_some() {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "interplab_token={token}; HttpOnly; SameSite=Strict; Path=/"
        )) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    resp
}

fn bearer(h: &HeaderMap) -> Option<String> {
    h.get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(String::from)
}

fn cookie(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix("interplab_token="))
        .map(String::from)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const ECHARTS_JS: &str = include_str!("../assets/vendor/echarts.min.js");

async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, ty) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "echarts.min.js" => (ECHARTS_JS, "text/javascript; charset=utf-8"),
        _ => return error(StatusCode::NOT_FOUND, "no such asset"),
    };
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn api_runs(State(st): State<Arc<AppState>>) -> Response {
    let st2 = st.clone();
    match tokio::task::spawn_blocking(move || st2.index.json()).await {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(bytes),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct RunQuery {
    id: String,
}

/// The directory of run `id` (a path under RUNS_DIR, by the same rules as files).
fn run_dir(st: &AppState, id: &str) -> Option<PathBuf> {
    let encoded: String = id
        .split('/')
        .map(|s| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        })
        .collect::<Vec<_>>()
        .join("/");
    match files::resolve(&st.root, &encoded) {
        Ok(d) if d.is_dir() && d != st.root => Some(d),
        _ => None,
    }
}

async fn api_cached_attention(
    State(st): State<Arc<AppState>>,
    Query(q): Query<RunQuery>,
) -> Response {
    let Some(dir) = run_dir(&st, &q.id) else {
        return error(StatusCode::NOT_FOUND, "no such run");
    };
    match tokio::task::spawn_blocking(move || attention::cached(&dir)).await {
        Ok(Ok(p)) => Json(p).into_response(),
        Ok(Err(e)) => error(StatusCode::NOT_FOUND, &format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn api_run(State(st): State<Arc<AppState>>, Query(q): Query<RunQuery>) -> Response {
    let Some(dir) = run_dir(&st, &q.id) else {
        return error(StatusCode::NOT_FOUND, "no such run");
    };
    let root = st.root.clone();
    match tokio::task::spawn_blocking(move || run_detail(&root, &dir)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Everything the run page shows. A file that does not parse becomes an `errors` entry, and
/// the rest of the run is still shown.
fn run_detail(root: &Path, dir: &Path) -> Value {
    // Each file is read once; the summary is made from the same values. A file too large to
    // send is left out (and said), not taken for malformed.
    let mut errors = Vec::new();
    let mut load = |name: &str| -> Result<Option<Value>, String> {
        let path = dir.join(name);
        match std::fs::metadata(&path) {
            Ok(md) if md.len() > MAX_INLINE_BYTES => {
                errors.push(format!(
                    "{name} is {} MB; open it from the files list",
                    md.len() >> 20
                ));
                Ok(None)
            }
            _ => runs::read_json(&path),
        }
    };
    let files_read = [
        load("manifest.json"),
        load("results.json"),
        load("progress.json"),
        load("report.json"),
        load("figures.json"),
    ];
    let summary = runs::summary_of(root, dir, &files_read[0], &files_read[1], &files_read[2]);
    let [manifest, results, progress, report, figures] = files_read.map(|r| match r {
        Ok(v) => v.unwrap_or(Value::Null),
        Err(e) => {
            errors.push(e);
            Value::Null
        }
    });
    let mut files: Vec<Value> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let md = e.metadata().ok()?;
                    Some(json!({
                        "name": e.file_name().to_string_lossy(),
                        "size": md.len(),
                        "dir": md.is_dir(),
                    }))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({
        "summary": summary,
        "manifest": manifest,
        "config": manifest.get("config").cloned().unwrap_or(Value::Null),
        "results": results,
        "report": report,
        "figures": figures,
        "progress": progress,
        "files": files,
        "errors": errors,
    })
}

#[derive(Deserialize)]
struct AttentionRequest {
    model: String,
    prompt: String,
}

async fn api_attention(
    State(st): State<Arc<AppState>>,
    Json(req): Json<AttentionRequest>,
) -> Response {
    let known = req.model == DEFAULT_MODEL
        || st
            .index
            .runs()
            .iter()
            .any(|r| r.models.contains(&req.model));
    if !known {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "model `{}` is not used by any run here (nor the default {DEFAULT_MODEL})",
                req.model
            ),
        );
    }
    let st2 = st.clone();
    match tokio::task::spawn_blocking(move || st2.models.patterns(&req.model, &req.prompt)).await {
        Ok(Ok(p)) => Json(p).into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, &format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct StartRequest {
    config: Value,
}

async fn api_start(State(st): State<Arc<AppState>>, Json(req): Json<StartRequest>) -> Response {
    if !st.loopback_only {
        return error(
            StatusCode::FORBIDDEN,
            "experiments start from the page only when the server is bound to loopback",
        );
    }
    match st.started.start(&st.root, req.config) {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({ "id": id }))).into_response(),
        Err(start::Refusal::Busy(msg)) => error(StatusCode::CONFLICT, &msg),
        Err(start::Refusal::Invalid(msg)) => error(StatusCode::BAD_REQUEST, &msg),
    }
}

async fn api_started(State(st): State<Arc<AppState>>) -> Response {
    Json(st.started.list()).into_response()
}

/// The model the attention view offers when no run names one.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

async fn file(State(st): State<Arc<AppState>>, uri: Uri) -> Response {
    // The raw (still percent-encoded) path: an encoded `/` must not become a separator.
    let raw = uri.path().strip_prefix("/files/").unwrap_or("");
    let path = match files::resolve(&st.root, raw) {
        Ok(p) if p.is_file() => p,
        _ => return error(StatusCode::NOT_FOUND, "no such file"),
    };
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > MAX_FILE_BYTES) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "this file is over 256 MB; open it from the run directory on disk",
        );
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, files::content_type(&path)),
                // A run directory's HTML runs no scripts with this server's origin.
                (header::CONTENT_SECURITY_POLICY, "sandbox"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => error(StatusCode::NOT_FOUND, "no such file"),
    }
}
