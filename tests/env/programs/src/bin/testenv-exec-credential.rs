//! A kubeconfig `exec` credential plugin for tests, speaking the real protocol the way
//! `gke-gcloud-auth-plugin` does: client-go (or kube-rs) runs it with `KUBERNETES_EXEC_INFO` set to
//! an `ExecCredential` request of `client.authentication.k8s.io/v1`, and it prints an
//! `ExecCredential` whose `status` carries a bearer token and its `expirationTimestamp`.
//!
//! The token is read from `--token-file` (the test apiserver's token, so the apiserver accepts it).
//! Every call is appended to `--log` (one line: the call's number and the token kind), so a test can
//! count how often the client ran the plugin.
//!
//! Modes for tests:
//! - `--expire-first`: the first call answers a token the apiserver does NOT accept, with an
//!   `expirationTimestamp` already in the past; later calls answer the real token valid for
//!   `--valid-for`. A client that honours `expirationTimestamp` runs the plugin again before its
//!   first request and never sends the stale token; one that does not gets 401.
//! - `--fail-after N`: calls after the N-th fail like an expired gcloud login (exit 1, a message on
//!   stderr), as a plugin whose refresh fails during a long run.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

const API_VERSION: &str = "client.authentication.k8s.io/v1";

#[derive(Parser, Debug)]
#[command(about = "kubeconfig exec credential plugin for tests (client.authentication.k8s.io/v1)")]
struct Args {
    /// File holding the bearer token to hand out.
    #[arg(long)]
    token_file: PathBuf,
    /// Append one line per call here.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Lifetime of a handed-out token, in seconds.
    #[arg(long, default_value_t = 3600)]
    valid_for: i64,
    /// The first call answers a stale token that has already expired.
    #[arg(long)]
    expire_first: bool,
    /// Fail every call after this many.
    #[arg(long)]
    fail_after: Option<usize>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("testenv-exec-credential: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    // The request the client sends: the protocol says KUBERNETES_EXEC_INFO carries it.
    let info = std::env::var("KUBERNETES_EXEC_INFO").map_err(|_| {
        "KUBERNETES_EXEC_INFO is not set: not run as a kubeconfig exec plugin".to_string()
    })?;
    let request: serde_json::Value = serde_json::from_str(&info)
        .map_err(|e| format!("KUBERNETES_EXEC_INFO is not JSON: {e}"))?;
    if request["apiVersion"] != API_VERSION || request["kind"] != "ExecCredential" {
        return Err(format!(
            "expected an ExecCredential of {API_VERSION} in KUBERNETES_EXEC_INFO, got {info}"
        ));
    }
    let call = previous_calls(args) + 1;
    if args.fail_after.is_some_and(|n| call > n) {
        log(args, call, "failed")?;
        return Err(
            "the login has expired; run `gcloud auth login` (refresh failed on purpose)".into(),
        );
    }
    let now = Timestamp::now();
    let (token, expires, kind) = if args.expire_first && call == 1 {
        let stale = format!("stale-token-{}", std::process::id());
        (stale, now - SignedDuration::from_secs(60), "stale")
    } else {
        let token = std::fs::read_to_string(&args.token_file)
            .map_err(|e| format!("cannot read {}: {e}", args.token_file.display()))?;
        let expires = now + SignedDuration::from_secs(args.valid_for);
        (token.trim().to_string(), expires, "valid")
    };
    log(args, call, kind)?;
    let answer = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "ExecCredential",
        "status": {
            "token": token,
            "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        },
    });
    println!("{answer}");
    Ok(())
}

fn previous_calls(args: &Args) -> usize {
    args.log
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map_or(0, |s| s.lines().count())
}

fn log(args: &Args, call: usize, kind: &str) -> Result<(), String> {
    let Some(path) = &args.log else {
        return Ok(());
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    writeln!(f, "{call} {kind}").map_err(|e| e.to_string())
}
