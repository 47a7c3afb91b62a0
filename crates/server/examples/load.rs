//! Latency of the index under load: RUNS_DIR with N runs (default 1,000), R requests
//! (default 10,000) to `GET /api/runs` from C client threads (default 4), each a fresh
//! loopback connection; prints p50, p90, p99 and max, and exits non-zero on any error.
//!
//! `cargo run --release -p interplab-server --example load [N] [R] [C]`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let n_runs = args.first().copied().unwrap_or(1000);
    let n_req = args.get(1).copied().unwrap_or(10_000);
    let clients = args.get(2).copied().unwrap_or(4).max(1);
    let tmp = tempfile::tempdir()?;
    for i in 0..n_runs {
        let dir = tmp.path().join(format!("run-{i:04}"));
        std::fs::create_dir(&dir)?;
        std::fs::write(
            dir.join("manifest.json"),
            format!(
                r#"{{"experiment": "heads", "started_utc": "2026-12-01T{:02}:{:02}:00Z", "total_seconds": 1.0,
                   "models": [{{"source": "smollm2-135m"}}], "config": {{}}}}"#,
                i / 60 % 24,
                i % 60
            ),
        )?;
        std::fs::write(
            dir.join("results.json"),
            r#"{"loss": 2.5, "accuracy": 0.75}"#,
        )?;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let root = tmp.path().to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let b = interplab_server::bind(interplab_server::Config {
                runs_dir: root,
                addr: "127.0.0.1:0".parse().expect("addr"),
                allow_remote: false,
                token: None,
            })
            .await
            .expect("bind");
            tx.send(b.addr).expect("send");
            b.run().await.expect("serve");
        });
    });
    let addr: SocketAddr = rx.recv()?;
    let per = n_req.div_ceil(clients);
    let t0 = Instant::now();
    let results: Vec<(Vec<f64>, usize, usize)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(per);
                    let (mut errors, mut bytes) = (0, 0);
                    for _ in 0..per {
                        let t = Instant::now();
                        match fetch(addr) {
                            Ok((200, n)) => bytes = n,
                            _ => errors += 1,
                        }
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    (lat, errors, bytes)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("client")).collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    let errors: usize = results.iter().map(|r| r.1).sum();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "{} requests of GET /api/runs ({} runs, {} KB each) from {clients} clients in {wall:.2} s: \
         {:.0} req/s; latency ms p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}; errors {errors}",
        lat.len(),
        n_runs,
        results[0].2 / 1024,
        lat.len() as f64 / wall,
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    if errors > 0 {
        anyhow::bail!("{errors} requests failed");
    }
    Ok(())
}

fn fetch(addr: SocketAddr) -> std::io::Result<(u16, usize)> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let status = std::str::from_utf8(&buf[9..12])
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    Ok((status, buf.len()))
}
