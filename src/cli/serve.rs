//! `fabric serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{Globals, UsageError};
use fabric_core::diagnostic::Diagnostic;
use fabric_core::manifest::find_root;
use fabric_ingest::Config;

/// Arguments of `fabric serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port). Anything but
    /// loopback requires a token.
    #[arg(long, default_value = "127.0.0.1:8787")]
    bind: SocketAddr,
    /// The path snapshots are posted to.
    #[arg(long, default_value = "/v1/snapshots")]
    path: String,
    /// Where snapshots land (relative to the workspace root, when in one).
    #[arg(long, default_value = "snapshots/raw")]
    dir: PathBuf,
    /// A browser origin allowed to post (repeatable), e.g. http://localhost:5173.
    #[arg(long = "origin", value_name = "ORIGIN")]
    origins: Vec<String>,
    /// Require this token (`Authorization: Bearer …` or `?token=`); default:
    /// the FABRIC_INGEST_TOKEN environment variable.
    #[arg(long)]
    token: Option<String>,
    /// Largest accepted body, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    max_body: usize,
    /// Seconds a request may take once its headers are in, before it gets 408.
    #[arg(long, default_value_t = 30)]
    request_timeout: u64,
    /// Seconds a connection may take to send its request headers before it
    /// is closed (half-sent requests cannot hold sockets).
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
}

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    if !args.path.starts_with('/') {
        return Err(UsageError::from(Diagnostic::new(format!("--path `{}` must start with `/`", args.path))).into());
    }
    let start = globals.start_dir()?;
    let base = find_root(&start).unwrap_or(start);
    let token = args
        .token
        .or_else(|| std::env::var("FABRIC_INGEST_TOKEN").ok())
        .filter(|t| !t.is_empty());
    if !args.bind.ip().is_loopback() && token.is_none() {
        return Err(UsageError::from(
            Diagnostic::new(format!("binding {} (not loopback) requires a token", args.bind.ip()))
                .hint("pass --token or set FABRIC_INGEST_TOKEN"),
        )
        .into());
    }
    let key = prime_brain::pseudonym::PseudonymKey::for_workspace(&base)?;
    let config = Config {
        key,
        bind: args.bind,
        path: args.path.clone(),
        dir: base.join(&args.dir),
        origins: args.origins,
        token,
        max_body: args.max_body,
        request_timeout: Duration::from_secs(args.request_timeout),
        header_timeout: Duration::from_secs(args.header_timeout),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let shutdown = async {
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler can be installed");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        };
        let path = args.path;
        fabric_ingest::serve(
            config,
            |address| {
                println!("listening on http://{address}{path}");
                let _ = std::io::stdout().flush();
            },
            shutdown,
        )
        .await
    })?;
    eprintln!("stopped; every acknowledged snapshot is on disk");
    Ok(ExitCode::SUCCESS)
}
