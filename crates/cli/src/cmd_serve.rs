//! `interplab serve`: parse the flags, bind, print the URL, serve until interrupted.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The directory whose runs are served (every run below it, tours included).
    #[arg(default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Port (0 picks a free one; the URL printed says which).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Address to bind. Anything but loopback needs --allow-remote.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Allow a non-loopback --host; every request then needs the token printed at start.
    #[arg(long)]
    pub allow_remote: bool,
    /// The token remote clients present (at least 16 characters; random when not given).
    #[arg(long)]
    pub token: Option<String>,
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let cfg = interplab_server::Config {
        runs_dir: a.runs_dir,
        addr: SocketAddr::new(a.host, a.port),
        allow_remote: a.allow_remote,
        token: a.token,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()?;
    rt.block_on(async {
        let bound = interplab_server::bind(cfg).await?;
        // The one line a script (or the browser tests) reads to find the server.
        println!("serving {} on {}", bound.runs_dir_display(), bound.url());
        bound.run().await
    })
}
