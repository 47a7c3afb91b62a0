//! The server over real sockets: path rules (`..`, encoded separators, symlinks), binding and
//! token rules, malformed and running runs, and a bounded load of 10,000 requests.
//!
//! Requests are written by hand on a `TcpStream` so that a path reaches the server exactly as
//! written (a client library would normalise `..` or re-encode `%2f`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use interplab_server::{bind, Config};

const SECRET: &str = "the secret outside RUNS_DIR";

/// Start a server on `cfg` in a background thread; returns its address and token.
fn start(cfg: Config) -> (SocketAddr, Option<String>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            match bind(cfg).await {
                Ok(b) => {
                    tx.send(Ok((b.addr, b.token.clone()))).unwrap();
                    b.run().await.unwrap();
                }
                Err(e) => tx.send(Err(format!("{e:#}"))).unwrap(),
            }
        });
    });
    rx.recv().unwrap().unwrap()
}

struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close`; `extra` are header lines.
fn request(addr: SocketAddr, method: &str, path: &str, extra: &[&str], body: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !extra
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        req.push_str(&format!("Host: 127.0.0.1:{}\r\n", addr.port()));
    }
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers: head,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + n]);
        b = &b[line_end + 2 + n + 2..];
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], "")
}

fn write_run(dir: &Path, experiment: &str, started: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        format!(
            r#"{{"experiment": "{experiment}", "started_utc": "{started}", "total_seconds": 1.5,
               "models": [{{"source": "smollm2-135m"}}], "config": {{"experiment": "{experiment}"}}}}"#
        ),
    )
    .unwrap();
    std::fs::write(dir.join("results.json"), r#"{"loss": 2.5, "steps": 10}"#).unwrap();
    std::fs::write(
        dir.join("report.json"),
        r#"{"title": "t", "blocks": [{"kind": "heading", "data": "h"}]}"#,
    )
    .unwrap();
}

/// RUNS_DIR with a complete run, a malformed one, a running one, symlinks out of it; and a
/// secret file beside it.
fn fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(tmp.path().join("secret.txt"), SECRET).unwrap();
    std::fs::create_dir(tmp.path().join("outside")).unwrap();
    std::fs::write(tmp.path().join("outside/secret.txt"), SECRET).unwrap();
    write_run(&root.join("heads-1"), "heads", "2026-12-01T10:00:00Z");
    write_run(&root.join("tour/patch"), "patch", "2026-12-02T10:00:00Z");
    std::fs::create_dir(root.join("bad")).unwrap();
    std::fs::write(root.join("bad/manifest.json"), "{ \"experiment\": ").unwrap();
    std::fs::create_dir(root.join("live")).unwrap();
    std::fs::write(
        root.join("live/progress.json"),
        format!(
            r#"{{"pid": {}, "experiment": "sae-train", "models": ["smollm2-135m"], "started_utc": "2026-12-03T10:00:00Z",
               "updated_utc": "2026-12-03T10:00:01Z", "phase": "train", "done": 3, "total": 10, "unit": "steps",
               "message": "", "notes": []}}"#,
            std::process::id()
        ),
    )
    .unwrap();
    std::fs::create_dir(root.join("dead")).unwrap();
    std::fs::write(
        root.join("dead/progress.json"),
        r#"{"pid": 2147483000, "experiment": "heads", "models": [], "started_utc": "", "updated_utc": "",
           "phase": "", "done": 0, "total": 0, "unit": "", "message": "", "notes": []}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("link")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret.txt"), root.join("heads-1/leak.txt"))
        .unwrap();
    (tmp, root)
}

fn loopback(root: &Path) -> Config {
    Config {
        runs_dir: root.to_path_buf(),
        addr: "127.0.0.1:0".parse().unwrap(),
        allow_remote: false,
        token: None,
    }
}

#[test]
fn no_path_outside_runs_dir_is_served() {
    let (_tmp, root) = fixture();
    let (addr, _) = start(loopback(&root));
    let ok = get(addr, "/files/heads-1/results.json");
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("\"loss\""));
    assert!(ok
        .headers
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let attempts = [
        "/files/../secret.txt",
        "/files/heads-1/../../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/heads-1/%2e%2e/%2e%2e/secret.txt",
        "/files/heads-1%2f..%2f..%2fsecret.txt",
        "/files/..%2fsecret.txt",
        "/files/..%5csecret.txt",
        "/files/%252e%252e/secret.txt",
        "/files/link/secret.txt",
        "/files/heads-1/leak.txt",
        "/files//etc/passwd",
        "/files/heads-1/results.json%00.png",
        "/api/run?id=../outside",
        "/api/run?id=link",
        "/api/run?id=%2e%2e",
        "/api/run?id=",
    ];
    for path in attempts {
        let r = get(addr, path);
        assert_eq!(r.status, 404, "{path} answered {}", r.status);
        assert!(!r.text().contains(SECRET), "{path} leaked the secret");
        assert!(!r.text().contains("root:"), "{path} leaked /etc/passwd");
    }
}

#[test]
fn the_index_lists_every_run_with_its_status() {
    let (_tmp, root) = fixture();
    let (addr, _) = start(loopback(&root));
    let r = get(addr, "/api/runs");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let runs = v["runs"].as_array().unwrap();
    let status = |id: &str| {
        runs.iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing from {runs:?}"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("heads-1"), "complete");
    assert_eq!(status("tour/patch"), "complete");
    assert_eq!(status("bad"), "malformed");
    assert_eq!(status("live"), "running");
    assert_eq!(status("dead"), "interrupted");
    assert_eq!(
        runs.len(),
        5,
        "the symlinked directory is not walked: {runs:?}"
    );
    // Newest first.
    assert_eq!(runs[0]["id"], "live");
    let bad = runs.iter().find(|r| r["id"] == "bad").unwrap();
    assert!(bad["error"]
        .as_str()
        .unwrap()
        .starts_with("manifest.json: "));
    let heads = runs.iter().find(|r| r["id"] == "heads-1").unwrap();
    assert_eq!(heads["key"][0], "loss = 2.5");
    assert_eq!(heads["models"][0], "smollm2-135m");
}

#[test]
fn a_malformed_run_gives_an_error_not_a_crash() {
    let (_tmp, root) = fixture();
    let (addr, _) = start(loopback(&root));
    let r = get(addr, "/api/run?id=bad");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["summary"]["status"], "malformed");
    assert!(v["errors"][0].as_str().unwrap().contains("manifest.json"));
    // The server is still up and the good run still opens.
    let ok: serde_json::Value =
        serde_json::from_slice(&get(addr, "/api/run?id=tour/patch").body).unwrap();
    assert_eq!(ok["results"]["steps"], 10);
    assert_eq!(ok["report"]["blocks"][0]["kind"], "heading");
    let live: serde_json::Value =
        serde_json::from_slice(&get(addr, "/api/run?id=live").body).unwrap();
    assert_eq!(live["progress"]["done"], 3);
    // Bad JSON to the attention endpoint, an unknown model: errors, not crashes.
    let r = request(addr, "POST", "/api/attention", &[], "{\"model\": 3}");
    assert!((400..500).contains(&r.status), "{}", r.status);
    let r = request(
        addr,
        "POST",
        "/api/attention",
        &[],
        r#"{"model": "/etc/passwd", "prompt": "x"}"#,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("is not used by any run here"),
        "{}",
        r.text()
    );
    assert_eq!(get(addr, "/api/runs").status, 200);
}

#[test]
fn loopback_answers_only_loopback_host_names() {
    let (_tmp, root) = fixture();
    let (addr, token) = start(loopback(&root));
    assert_eq!(token, None);
    assert_eq!(get(addr, "/").status, 200);
    let r = request(addr, "GET", "/api/runs", &["Host: evil.example:80"], "");
    assert_eq!(r.status, 403, "a rebinding host name is refused");
    let r = request(
        addr,
        "GET",
        "/api/runs",
        &[&format!("Host: localhost:{}", addr.port())],
        "",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn a_non_loopback_address_needs_the_flag_and_then_the_token() {
    let (_tmp, root) = fixture();
    let mut cfg = loopback(&root);
    cfg.addr = "0.0.0.0:0".parse().unwrap();
    let err = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bind(cfg.clone()))
        .err()
        .expect("refused without --allow-remote");
    assert!(format!("{err:#}").contains("--allow-remote"), "{err:#}");

    cfg.allow_remote = true;
    let (addr, token) = start(cfg);
    let token = token.expect("a token is made");
    assert_eq!(token.len(), 32);
    let addr: SocketAddr = format!("127.0.0.1:{}", addr.port()).parse().unwrap();
    assert_eq!(get(addr, "/api/runs").status, 401);
    assert_eq!(get(addr, "/files/heads-1/results.json").status, 401);
    assert_eq!(
        get(addr, "/api/runs?token=wrong-token-of-no-use").status,
        401
    );
    let r = get(addr, &format!("/?token={token}"));
    assert_eq!(r.status, 200);
    assert!(
        r.headers.contains(&format!("interplab_token={token}")),
        "{}",
        r.headers
    );
    let bearer = format!("Authorization: Bearer {token}");
    assert_eq!(
        request(addr, "GET", "/api/runs", &[&bearer], "").status,
        200
    );
    let cookie = format!("Cookie: a=b; interplab_token={token}");
    assert_eq!(
        request(addr, "GET", "/api/runs", &[&cookie], "").status,
        200
    );
    // Remote mode takes any Host (the token guards it).
    assert_eq!(
        request(
            addr,
            "GET",
            "/api/runs",
            &[&bearer, "Host: lab.example"],
            ""
        )
        .status,
        200
    );
}

#[test]
fn a_short_token_is_refused() {
    let (_tmp, root) = fixture();
    let mut cfg = loopback(&root);
    cfg.token = Some("short".into());
    let err = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bind(cfg))
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("at least 16"));
}

/// 1,000 runs, 10,000 requests from 8 client threads (index, run pages, files, assets,
/// refused paths): every answer is the expected one. Latency is measured by the
/// `load` example, not asserted here.
#[test]
fn ten_thousand_requests_without_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..1000 {
        write_run(
            &tmp.path().join(format!("run-{i:04}")),
            if i % 2 == 0 { "heads" } else { "sae-train" },
            &format!("2026-12-01T10:{:02}:{:02}Z", i / 60, i % 60),
        );
    }
    let (addr, _) = start(loopback(tmp.path()));
    let first: serde_json::Value = serde_json::from_slice(&get(addr, "/api/runs").body).unwrap();
    assert_eq!(first["runs"].as_array().unwrap().len(), 1000);
    let failures = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let failures = &failures;
            s.spawn(move || {
                for i in 0..1250 {
                    let n = (t * 1250 + i) % 1000;
                    let (path, want) = match i % 5 {
                        0 => ("/api/runs".to_string(), 200),
                        1 => (format!("/api/run?id=run-{n:04}"), 200),
                        2 => (format!("/files/run-{n:04}/results.json"), 200),
                        3 => ("/assets/app.css".to_string(), 200),
                        _ => (format!("/files/run-{n:04}/../../etc/passwd"), 404),
                    };
                    if get(addr, &path).status != want {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(failures.into_inner(), 0);
}

#[test]
fn a_file_too_large_to_send_is_refused_not_read() {
    let (_tmp, root) = fixture();
    // Sparse: 300 MB long, nothing written.
    let f = std::fs::File::create(root.join("heads-1/activations.safetensors")).unwrap();
    f.set_len(300 << 20).unwrap();
    let (addr, _) = start(loopback(&root));
    let r = get(addr, "/files/heads-1/activations.safetensors");
    assert_eq!(r.status, 413);
    assert!(r.text().contains("over 256 MB"), "{}", r.text());
    assert_eq!(get(addr, "/files/heads-1/results.json").status, 200);
}

/// An experiment started through the API runs into a new directory under RUNS_DIR, shows in
/// the index and completes; a bad config is refused with its message; a remote server refuses.
#[test]
fn an_experiment_starts_from_the_page_on_loopback_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (addr, _) = start(loopback(tmp.path()));
    let cat: serde_json::Value =
        serde_json::from_slice(&get(addr, "/api/experiments").body).unwrap();
    let toy = cat
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "toy-superposition")
        .expect("in the catalog");
    let mut bad = toy["quick"].clone();
    bad["batch"] = serde_json::json!(0);
    let r = request(
        addr,
        "POST",
        "/api/start",
        &[],
        &serde_json::json!({ "config": bad }).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("batch"), "{}", r.text());
    let r = request(
        addr,
        "POST",
        "/api/start",
        &[],
        r#"{"config": {"experiment": "no-such"}}"#,
    );
    assert_eq!(r.status, 400);

    let body = serde_json::json!({ "config": toy["quick"] }).to_string();
    let r = request(addr, "POST", "/api/start", &[], &body);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("toy-superposition-"), "{id}");
    let t0 = std::time::Instant::now();
    loop {
        let started: serde_json::Value =
            serde_json::from_slice(&get(addr, "/api/started").body).unwrap();
        let state = started[0]["state"].as_str().unwrap().to_string();
        if state != "running" {
            assert_eq!(state, "complete", "{started}");
            break;
        }
        assert!(t0.elapsed().as_secs() < 300, "the toy run did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(tmp.path().join(&id).join("manifest.json").is_file());
    assert!(!tmp.path().join(&id).join("progress.json").exists());
    std::thread::sleep(Duration::from_millis(1100)); // the index's scan is reused for a second
    let runs: serde_json::Value = serde_json::from_slice(&get(addr, "/api/runs").body).unwrap();
    assert_eq!(runs["runs"][0]["id"], id.as_str());
    assert_eq!(runs["runs"][0]["status"], "complete");

    let mut cfg = loopback(tmp.path());
    cfg.addr = "0.0.0.0:0".parse().unwrap();
    cfg.allow_remote = true;
    let (remote, token) = start(cfg);
    let remote: SocketAddr = format!("127.0.0.1:{}", remote.port()).parse().unwrap();
    let bearer = format!("Authorization: Bearer {}", token.unwrap());
    let r = request(remote, "POST", "/api/start", &[&bearer], &body);
    assert_eq!(r.status, 403);
}
