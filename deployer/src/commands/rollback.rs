//! `rollback`: restores an earlier release of the server's Deployment: the revision before the
//! current one, `--to-revision N` (its ReplicaSet's template, else the one the release history
//! recorded), or `--to-model VERSION` (the newest promoted release of that model version, from
//! the history). It applies the live spec with that pod template (image included), waits until it
//! is available, and records the rollback in the history with the model its pods report.

use std::time::Instant;

use serde_json::Value;

use super::history::{Recorded, deployment_of, now, record};
use crate::cli::history::RollbackArgs;
use crate::error::Error;
use crate::kube::cluster::Cluster;
use crate::kube::history::{self, Entry, Outcome};
use crate::kube::model::{self, ModelInfo, Serving};
use crate::kube::rollback::{self, Revisions, first_image};
use crate::kube::{secrets, secure};
use crate::progress::{Progress, Terminal};

/// What `rollback` reports.
#[derive(Debug, serde::Serialize)]
pub struct RollbackReport {
    pub command: &'static str,
    pub namespace: String,
    pub deployment: String,
    /// What was restored, in words ("revision 3", "model 1.2.0 (released ..., revision 3)").
    pub target: String,
    /// The image that ran before.
    pub from_image: Option<String>,
    pub image: Option<String>,
    pub digest: Option<String>,
    /// The Deployment's revision now.
    pub revision: Option<String>,
    pub model: Option<ModelInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_error: Option<String>,
    pub history: Option<Recorded>,
    pub seconds: f64,
}

impl RollbackReport {
    pub fn text(&self) -> String {
        let mut text = format!(
            "rolled Deployment/{} (namespace {}) back to {} in {:.1}s\n",
            self.deployment, self.namespace, self.target, self.seconds
        );
        if let Some(from) = &self.from_image {
            text.push_str(&format!("from image: {from}\n"));
        }
        if let Some(image) = &self.image {
            text.push_str(&format!("image: {image}\n"));
        }
        if let Some(r) = &self.revision {
            text.push_str(&format!("revision: {r}\n"));
        }
        match (&self.model, &self.model_error) {
            (Some(m), _) => text.push_str(&format!("model: {}\n", m.describe())),
            (None, Some(e)) => text.push_str(&format!("model: unknown ({e})\n")),
            (None, None) => {}
        }
        if let Some(h) = &self.history {
            text.push_str(&h.text());
        }
        text
    }
}

/// `deployer rollback`.
pub async fn run(c: &RollbackArgs) -> Result<RollbackReport, Error> {
    let cluster = Cluster::connect(&c.cluster.connection()).await?;
    let (ns, name) = deployment_of(&c.manifests, &cluster)?;
    let start = Instant::now();
    let mut p = Terminal::new();
    rollback(&cluster, &ns, &name, c, &mut p)
        .await
        .map(|mut r| {
            r.seconds = start.elapsed().as_secs_f64();
            r
        })
}

/// Rolls Deployment `name` in `ns` back as `c` asks.
pub async fn rollback(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    c: &RollbackArgs,
    p: &mut dyn Progress,
) -> Result<RollbackReport, Error> {
    let revisions = rollback::revisions(cluster, ns, name).await?;
    let (template, target) = choose(cluster, ns, name, c, &revisions).await?;
    let live = serde_json::to_value(revisions.deployment.spec.as_ref());
    let from_image = live.ok().and_then(|spec| first_image(&spec));
    let spec = revisions.spec_with(&template);
    let rb = rollback::rollback(cluster, ns, name, (&spec, &target), c.limits(), p).await;
    p.line(&format!("rollback: {}", rb.message));
    let mut entry = Entry {
        time: now(),
        command: "rollback".into(),
        deployment: name.into(),
        image: rb.image.clone(),
        digest: rb.image.as_deref().and_then(model::digest_of),
        model: None,
        revision: None,
        outcome: Outcome::Failed,
        reason: Some(format!("rollback to {target}: {}", rb.message)),
        template: None,
    };
    if !rb.restored {
        record(cluster, ns, entry, c.record.history_limit, p).await;
        return Err(Error::RollbackFailed {
            deployment: name.into(),
            rollback: rb,
        });
    }
    let serving = serving(cluster, ns, name, &template, c).await?;
    entry.outcome = Outcome::Promoted;
    entry.revision.clone_from(&serving.revision);
    entry.image = serving.image.clone().or(entry.image);
    entry.digest = serving.digest.clone().or(entry.digest);
    entry.model.clone_from(&serving.model);
    entry.template = serving.template;
    let recorded = record(cluster, ns, entry, c.record.history_limit, p).await;
    Ok(RollbackReport {
        command: "rollback",
        namespace: ns.into(),
        deployment: name.into(),
        target,
        from_image,
        image: serving.image,
        digest: serving.digest,
        revision: serving.revision,
        model: serving.model,
        model_error: serving.model_error,
        history: recorded,
        seconds: 0.0,
    })
}

/// What the Deployment serves after the rollback, its server asked with the API key its
/// restored template mounts (if any).
async fn serving(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    template: &Value,
    c: &RollbackArgs,
) -> Result<Serving, Error> {
    let key = match secure::api_key_secret_of(template) {
        Some(secret) => secrets::api_key(cluster, ns, secret, true)
            .await?
            .map(|k| k.key),
        None => None,
    };
    let container = c.manifests.container.as_deref();
    Ok(model::serving(cluster, ns, name, container, key.as_deref()).await?)
}

/// The pod template to restore and what it is, in words; a usage error when there is none.
async fn choose(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    c: &RollbackArgs,
    revisions: &Revisions,
) -> Result<(Value, String), Error> {
    let kept = || {
        let list: Vec<String> = revisions
            .templates
            .iter()
            .map(|(r, _)| r.to_string())
            .collect();
        format!(
            "Deployment/{name} is at revision {} and keeps revisions [{}]",
            revisions.current.map_or("?".into(), |r| r.to_string()),
            list.join(", ")
        )
    };
    if let Some(version) = &c.to_model {
        let entries = history::read(cluster, ns).await?;
        let Some(e) = history::promoted_model(&entries, name, version) else {
            return Err(Error::Usage(no_model(&entries, name, ns, version)));
        };
        let target = format!(
            "model {version} (released {}, revision {})",
            e.time,
            e.revision.as_deref().unwrap_or("?")
        );
        return Ok((e.template.clone().unwrap_or_default(), target));
    }
    let Some(n) = c.to_revision else {
        return match revisions.previous() {
            Some((r, t)) => Ok((t.clone(), format!("the previous revision ({r})"))),
            None => Err(Error::Usage(format!("nothing to roll back to: {}", kept()))),
        };
    };
    if revisions.current == Some(n) {
        return Err(Error::Usage(format!(
            "--to-revision {n}: Deployment/{name} runs revision {n} already"
        )));
    }
    if let Some(t) = revisions.get(n) {
        return Ok((t.clone(), format!("revision {n}")));
    }
    let entries = history::read(cluster, ns).await?;
    match history::promoted_revision(&entries, name, n) {
        Some(e) => Ok((
            e.template.clone().unwrap_or_default(),
            format!(
                "revision {n} (from the release history, released {})",
                e.time
            ),
        )),
        None => Err(Error::Usage(format!(
            "--to-revision {n}: no such revision: {}, and the release history has no promoted release of revision {n}",
            kept()
        ))),
    }
}

/// Why `--to-model VERSION` found nothing, with the versions it could restore.
fn no_model(entries: &[Entry], name: &str, ns: &str, version: &str) -> String {
    let mut versions: Vec<&str> = entries
        .iter()
        .filter(|e| e.deployment == name && e.outcome == Outcome::Promoted && e.template.is_some())
        .filter_map(|e| e.model.as_ref().map(|m| m.version.as_str()))
        .collect();
    versions.sort_unstable();
    versions.dedup();
    format!(
        "--to-model {version}: the release history (ConfigMap/{} in namespace {ns}) has no promoted release of model version {version:?} for Deployment/{name}; it has: [{}]",
        history::CONFIGMAP,
        versions.join(", ")
    )
}

#[cfg(test)]
mod tests {
    //! The rollback against the scripted API server (`crate::kube::tests`): which template each
    //! way of choosing restores, what it records, and each refusal with its exit code.

    use clap::Parser;
    use http::Method;
    use serde_json::{Value, json};

    use super::*;
    use crate::cli::Cli;
    use crate::cli::command::Command;
    use crate::commands::apply::tests::{expect_rollback_apply, restored_image};
    use crate::exit::ExitCode;
    use crate::kube::tests::api_server::{Scenario, status};
    use crate::kube::tests::history::{
        expect_serving, history_configmap, history_path, promoted, written,
    };
    use crate::kube::tests::objects::*;
    use crate::progress::Recorded as Lines;

    fn args(flags: &[&str]) -> RollbackArgs {
        let mut argv = vec!["deployer", "rollback", "--unschedulable-grace", "0s"];
        argv.extend(flags);
        let Command::Rollback(a) = Cli::try_parse_from(argv).expect("valid flags").command else {
            panic!("not rollback")
        };
        a
    }

    /// Expects what the choice reads: the Deployment at revision 2 and its ReplicaSets `sets`.
    fn expect_revisions(s: &mut Scenario, sets: Vec<Value>) {
        s.get(&one(DEPLOYMENTS, NAME))
            .reply(200, deployment(rolled_out()));
        s.get(REPLICASETS).reply(200, list("ReplicaSet", sets));
    }

    /// Expects the restoring apply (answered `code`) and, when it is taken, the wait until the
    /// restored revision is available and the apply that sets its strategy back.
    fn expect_restore(s: &mut Scenario, code: u16) {
        if code != 200 {
            let refusal = status(code, "Invalid", "spec.template: Invalid value");
            expect_rollback_apply(s).reply(code, refusal);
            return;
        }
        expect_rollback_apply(s).reply(200, deployment(rolling()));
        let mut r = Rollout::rolling();
        let done = event("MODIFIED", deployment(rolled_out()), "30");
        r.deployment_events = vec![(secs(7), done)];
        r.script(s);
        expect_rollback_apply(s).reply(200, deployment(rolled_out()));
    }

    /// Expects the history written once (it had `before`).
    fn expect_recorded(s: &mut Scenario, before: Option<&[Entry]>) {
        match before {
            Some(entries) => {
                s.get(&history_path())
                    .reply(200, history_configmap(entries, "5"));
                s.on(Method::PUT, &history_path())
                    .reply(200, history_configmap(&[], "6"));
            }
            None => {
                let absent = status(404, "NotFound", "not found");
                s.get(&history_path()).reply(404, absent);
                s.on(Method::POST, CONFIGMAPS)
                    .reply(201, history_configmap(&[], "1"));
            }
        }
    }

    /// What a rollback came to: its result, the restoring apply's body, the entry recorded.
    struct RolledBack {
        result: Result<RollbackReport, Error>,
        applied: Option<Value>,
        recorded: Option<Entry>,
    }

    async fn roll_back(s: Scenario, flags: &[&str]) -> RolledBack {
        let (cluster, server) = s.serve();
        let result = rollback(&cluster, NS, NAME, &args(flags), &mut Lines::default()).await;
        server.verify();
        let patches = server.requests(Method::PATCH, &one(DEPLOYMENTS, NAME));
        let writes = [
            server.requests(Method::POST, CONFIGMAPS),
            server.requests(Method::PUT, &history_path()),
        ]
        .concat();
        RolledBack {
            result,
            applied: patches.first().map(|p| p.body.clone()),
            recorded: writes.first().and_then(|w| written(&w.body).pop()),
        }
    }

    /// Without a choice: the revision before the current one, from its ReplicaSet; the rollback is
    /// recorded as a promoted release with the model its pods report.
    #[tokio::test(start_paused = true)]
    async fn a_plain_rollback_restores_the_previous_revision_and_records_it() {
        let mut s = Scenario::new();
        expect_revisions(&mut s, both_sets());
        expect_restore(&mut s, 200);
        expect_serving(&mut s, Some((200, model_document("1.1.0"))));
        expect_recorded(&mut s, None);
        let r = roll_back(s, &[]).await;
        let report = r.result.expect("rolled back");
        assert_eq!(report.target, "the previous revision (1)");
        assert_eq!(report.from_image.as_deref(), Some(IMAGE));
        let applied = r.applied.expect("applied");
        assert_eq!(applied["spec"]["template"], template(PREVIOUS_IMAGE));
        assert_eq!(
            applied["spec"]["replicas"], 2,
            "the live spec, its template replaced"
        );
        let entry = r.recorded.expect("recorded");
        assert_eq!(
            (entry.command.as_str(), entry.outcome),
            ("rollback", Outcome::Promoted)
        );
        assert_eq!(entry.model.unwrap().version, "1.1.0");
        assert!(entry.template.is_some());
        let reason = entry.reason.unwrap();
        assert!(
            reason.starts_with("rollback to the previous revision (1): restored the previous revision (1) (image registry.invalid/server:1)"),
            "{reason}"
        );
    }

    /// `--to-model`: the newest promoted release of that version, from the history alone (its
    /// ReplicaSet is long gone), its recorded template applied.
    #[tokio::test(start_paused = true)]
    async fn to_model_restores_the_template_the_history_recorded_for_that_version() {
        let old = "registry.invalid/server:0";
        let entries = vec![
            promoted("1.0.0", 1, "registry.invalid/server:stale"),
            promoted("1.0.0", 3, old),
            promoted("1.1.0", 4, IMAGE),
        ];
        let mut s = Scenario::new();
        expect_revisions(&mut s, vec![replica_set("h2", 2, IMAGE)]);
        s.get(&history_path())
            .reply(200, history_configmap(&entries, "5"));
        expect_restore(&mut s, 200);
        expect_serving(&mut s, Some((200, model_document("1.0.0"))));
        expect_recorded(&mut s, Some(&entries));
        let r = roll_back(s, &["--to-model", "1.0.0"]).await;
        let report = r.result.expect("rolled back");
        assert_eq!(
            report.target,
            "model 1.0.0 (released 2026-01-03T10:00:00Z, revision 3)"
        );
        assert_eq!(restored_image(&r.applied.expect("applied")), old);
        assert_eq!(r.recorded.unwrap().model.unwrap().version, "1.0.0");
    }

    /// `--to-revision N`: the ReplicaSet of revision N when the Deployment keeps it, else the
    /// template the history recorded for N.
    #[tokio::test(start_paused = true)]
    async fn to_revision_takes_the_replica_set_else_the_history() {
        let mut s = Scenario::new();
        expect_revisions(&mut s, both_sets());
        expect_restore(&mut s, 200);
        expect_serving(&mut s, Some((200, model_document("1.0.0"))));
        let r = roll_back(s, &["--to-revision", "1", "--history-limit", "0"]).await;
        let report = r.result.expect("rolled back");
        assert_eq!(report.target, "revision 1");
        assert_eq!(
            report.model.unwrap().version,
            "1.0.0",
            "read, although not recorded"
        );
        assert_eq!(restored_image(&r.applied.unwrap()), PREVIOUS_IMAGE);
        assert!(r.recorded.is_none(), "--history-limit 0 records nothing");

        let entries = vec![promoted("0.9.0", 1, "registry.invalid/server:0")];
        let mut s = Scenario::new();
        expect_revisions(&mut s, vec![replica_set("h2", 2, IMAGE)]);
        s.get(&history_path())
            .reply(200, history_configmap(&entries, "5"));
        expect_restore(&mut s, 200);
        expect_serving(
            &mut s,
            Some((503, status(503, "ServiceUnavailable", "no endpoints"))),
        );
        let r = roll_back(s, &["--to-revision", "1", "--history-limit", "0"]).await;
        let target = r.result.expect("rolled back").target;
        assert!(
            target.starts_with("revision 1 (from the release history"),
            "{target}"
        );
        assert_eq!(
            restored_image(&r.applied.unwrap()),
            "registry.invalid/server:0"
        );
    }

    /// Nothing to restore: a usage error (exit 2) that lists what there is, and nothing applied.
    #[tokio::test(start_paused = true)]
    async fn an_unknown_model_or_revision_is_a_usage_error_that_lists_what_there_is() {
        let entries = vec![
            promoted("1.0.0", 1, PREVIOUS_IMAGE),
            promoted("1.1.0", 2, IMAGE),
        ];
        let mut s = Scenario::new();
        expect_revisions(&mut s, both_sets());
        s.get(&history_path())
            .reply(200, history_configmap(&entries, "5"));
        let r = roll_back(s, &["--to-model", "9.9.9"]).await;
        let e = r.result.unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Usage);
        assert!(e.to_string().ends_with("it has: [1.0.0, 1.1.0]"), "{e}");
        assert!(r.applied.is_none());

        let mut s = Scenario::new();
        expect_revisions(&mut s, both_sets());
        s.get(&history_path())
            .reply(200, history_configmap(&entries, "5"));
        let e = roll_back(s, &["--to-revision", "7"])
            .await
            .result
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--to-revision 7: no such revision: Deployment/d is at revision 2 and keeps revisions [1, 2], and the release history has no promoted release of revision 7"
        );
        let mut s = Scenario::new();
        expect_revisions(&mut s, vec![replica_set("h2", 2, IMAGE)]);
        let e = roll_back(s, &[]).await.result.unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Usage);
        assert!(
            e.to_string().starts_with("nothing to roll back to: "),
            "{e}"
        );
    }

    /// A restore the API server refuses: exit 4, and the history says it failed.
    #[tokio::test(start_paused = true)]
    async fn a_refused_restore_is_exit_4_and_recorded_as_failed() {
        let mut s = Scenario::new();
        expect_revisions(&mut s, both_sets());
        expect_restore(&mut s, 422);
        expect_recorded(&mut s, None);
        let r = roll_back(s, &[]).await;
        let e = r.result.unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Rollout);
        assert!(
            e.to_string().starts_with(
                "rollback of Deployment/d: restoring the previous revision (1) failed"
            ),
            "{e}"
        );
        let entry = r.recorded.expect("recorded");
        assert_eq!(entry.outcome, Outcome::Failed);
        let j = serde_json::to_value(&entry).unwrap();
        assert_eq!(j["outcome"], json!("failed"));
    }
}
