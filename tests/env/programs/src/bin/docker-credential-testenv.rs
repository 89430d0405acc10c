//! A Docker credential helper for tests, speaking the real protocol the way
//! `docker-credential-gcloud` does (the `credHelpers` entry `gcloud auth configure-docker` writes):
//! `docker-credential-testenv get` reads the registry's server URL on stdin and prints
//! `{"ServerURL", "Username", "Secret"}`, or `credentials not found in native keychain` (exit 1)
//! for a registry it has nothing for.
//!
//! What it knows comes from the environment: `TESTENV_CREDENTIALS`, a JSON file
//! `{"REGISTRY": {"Username": "...", "Secret": "..."}}`. Every call is appended to
//! `TESTENV_CREDENTIALS_LOG` (the server URL asked for). `TESTENV_CREDENTIALS_FAIL` set makes every
//! call fail like an expired gcloud login.

use std::io::{Read, Write};

fn main() {
    let op = std::env::args().nth(1).unwrap_or_default();
    match op.as_str() {
        "get" => match get() {
            Ok(answer) => println!("{answer}"),
            Err(e) => {
                // the helper protocol: the message on stdout, exit 1
                println!("{e}");
                std::process::exit(1);
            }
        },
        "store" | "erase" | "list" => {
            println!("docker-credential-testenv: {op} is not supported (read-only test helper)");
            std::process::exit(1);
        }
        _ => {
            eprintln!("usage: docker-credential-testenv get|store|erase|list");
            std::process::exit(1);
        }
    }
}

fn get() -> Result<serde_json::Value, String> {
    let mut server = String::new();
    std::io::stdin()
        .read_to_string(&mut server)
        .map_err(|e| format!("cannot read the server URL from stdin: {e}"))?;
    let server = server.trim().to_string();
    if let Ok(path) = std::env::var("TESTENV_CREDENTIALS_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {path}: {e}"))?;
        writeln!(f, "get {server}").map_err(|e| e.to_string())?;
    }
    if std::env::var_os("TESTENV_CREDENTIALS_FAIL").is_some() {
        return Err("error getting credentials: the login has expired; run `gcloud auth login` (failed on purpose)".into());
    }
    let path = std::env::var("TESTENV_CREDENTIALS")
        .map_err(|_| "TESTENV_CREDENTIALS is not set".to_string())?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let all: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{path} is not JSON: {e}"))?;
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    match all.get(host) {
        Some(c) => Ok(serde_json::json!({
            "ServerURL": server,
            "Username": c["Username"],
            "Secret": c["Secret"],
        })),
        None => Err("credentials not found in native keychain".into()),
    }
}
