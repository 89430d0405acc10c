//! The one place results and errors are rendered: as text (result on stdout, error on stderr) or
//! as one JSON document on stdout with `ok` and `exit_code` (and, for a failed rollout, its reason
//! and what the rollback did).

use serde_json::{Value, json};

use crate::commands::Report;
use crate::error::Error;
use crate::exit::ExitCode;
use crate::kube::rollout::RolloutError;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// What to print, where, and the exit code.
#[derive(Debug, PartialEq)]
pub struct Rendered {
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub code: ExitCode,
}

/// Renders a command's result.
pub fn render(result: &Result<Report, Error>, format: Format) -> Rendered {
    let (stdout, stderr, code) = match (result, format) {
        (Ok(report), Format::Text) => (
            Some(report.text().trim_end().to_string()),
            None,
            ExitCode::Success,
        ),
        (Ok(report), Format::Json) => {
            let mut j = serde_json::to_value(report).expect("reports serialize to JSON");
            j["ok"] = json!(true);
            j["exit_code"] = json!(0);
            (Some(pretty(&j)), None, ExitCode::Success)
        }
        (Err(e), Format::Text) => (None, Some(format!("error: {e}")), e.exit_code()),
        (Err(e), Format::Json) => (Some(pretty(&error_json(e))), None, e.exit_code()),
    };
    Rendered {
        stdout,
        stderr,
        code,
    }
}

fn error_json(e: &Error) -> Value {
    let code = e.exit_code();
    let mut j =
        json!({"ok": false, "error": e.to_string(), "exit_code": code.code(), "category": code});
    match e {
        Error::Rollout(RolloutError::Failed {
            reason, rollback, ..
        }) => {
            j["reason"] = json!(reason);
            j["rollback"] = json!(rollback);
        }
        Error::Rollout(RolloutError::Timeout { rollback, .. }) => {
            j["rollback"] = json!(rollback);
        }
        Error::SmokeRolledBack { rollback, .. } | Error::RollbackFailed { rollback, .. } => {
            j["rollback"] = json!(rollback);
        }
        Error::Refused(report) => {
            j["evaluation"] = json!(report);
        }
        Error::Aborted(report) => {
            j["canary"] = json!(report);
        }
        Error::Interrupted(i) => {
            j["interrupted"] = json!(i);
        }
        _ => {}
    }
    j
}

fn pretty(j: &Value) -> String {
    serde_json::to_string_pretty(j).expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::delete::{DeleteReport, Deleted};
    use crate::kube::rollout::Rollback;

    fn delete_report() -> Report {
        Report::Delete(DeleteReport {
            command: "delete",
            namespace: "ns".into(),
            objects: vec![
                Deleted {
                    object: "Deployment/d".into(),
                    deleted: true,
                },
                Deleted {
                    object: "Service/s".into(),
                    deleted: false,
                },
            ],
            seconds: 1.25,
        })
    }

    #[test]
    fn results_as_text_and_json() {
        let text = render(&Ok(delete_report()), Format::Text);
        assert_eq!(
            text.stdout.as_deref(),
            Some("deleted 1 object(s), 1 already absent, all gone after 1.2s")
        );
        assert_eq!((text.stderr, text.code), (None, ExitCode::Success));
        let j: Value =
            serde_json::from_str(&render(&Ok(delete_report()), Format::Json).stdout.unwrap())
                .unwrap();
        assert_eq!(
            j,
            json!({"command": "delete", "namespace": "ns", "seconds": 1.25, "ok": true, "exit_code": 0,
                "objects": [{"object": "Deployment/d", "deleted": true}, {"object": "Service/s", "deleted": false}]})
        );
    }

    #[test]
    fn errors_as_text_and_json() {
        let failed: Result<Report, Error> = Err(Error::Rollout(RolloutError::Failed {
            deployment: "d".into(),
            reason: "ImagePullBackOff".into(),
            message: "pod p: back-off".into(),
            rollback: Some(Rollback {
                restored: true,
                image: Some("img".into()),
                message: "restored".into(),
            }),
        }));
        let text = render(&failed, Format::Text);
        assert_eq!(text.code, ExitCode::Rollout);
        assert!(text.stdout.is_none());
        assert!(
            text.stderr
                .unwrap()
                .starts_with("error: rollout of Deployment/d failed: ImagePullBackOff")
        );
        let j: Value =
            serde_json::from_str(&render(&failed, Format::Json).stdout.unwrap()).unwrap();
        assert_eq!(j["ok"], false);
        assert_eq!(j["exit_code"], 4);
        assert_eq!(j["category"], "rollout");
        assert_eq!(j["reason"], "ImagePullBackOff");
        assert_eq!(j["rollback"]["restored"], true);
        let usage: Result<Report, Error> = Err(Error::Usage("bad".into()));
        let j: Value = serde_json::from_str(&render(&usage, Format::Json).stdout.unwrap()).unwrap();
        assert_eq!(
            j,
            json!({"ok": false, "error": "bad", "exit_code": 2, "category": "usage"})
        );
    }
}
