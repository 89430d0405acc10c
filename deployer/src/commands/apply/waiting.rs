//! What `apply` waits for after applying: every Deployment's rollout (rolling back on request),
//! every LoadBalancer's address, the smoke test; and the state of them all after a signal.

use serde_json::Value;

use crate::cli::apply::WaitArgs;
use crate::error::Error;
use crate::kube::apply::Applied;
use crate::kube::cluster::Cluster;
use crate::kube::rollout::{self, Rollback, RolloutError, RolloutReport};
use crate::kube::{rollback, service};
use crate::progress::Progress;
use crate::smoke::{self, SmokeReport};

/// How long reading the cluster's state after a signal may take, per object.
const STATE_READ: std::time::Duration = std::time::Duration::from_secs(5);

/// What `apply` waits for after applying: the objects, where, and how long.
pub(super) struct Waiting<'a> {
    pub cluster: &'a Cluster,
    pub applied: &'a [Applied],
    pub wait: &'a WaitArgs,
}

impl Waiting<'_> {
    /// The applied objects of `kind`, each with its namespace.
    pub(super) fn of_kind(&self, kind: &'static str) -> impl Iterator<Item = (&Applied, String)> {
        self.applied
            .iter()
            .filter(move |o| o.kind == kind)
            .map(|o| {
                let ns = o.namespace.clone();
                (o, ns.unwrap_or_else(|| self.cluster.namespace.clone()))
            })
    }

    /// Waits for every applied Deployment's rollout; on a failure, rolls back when asked to, and
    /// always when the server refused its model (the previous model is the one that should serve).
    pub async fn rollouts(&self, p: &mut dyn Progress) -> Result<Vec<RolloutReport>, Error> {
        let (cluster, wait) = (self.cluster, self.wait);
        let mut rollouts = Vec::new();
        for (o, ns) in self.of_kind("Deployment") {
            match rollout::wait_rollout(cluster, &ns, &o.name, wait.limits(), p).await {
                Ok(r) => {
                    p.line(&format!(
                        "Deployment/{}: rolled out (revision {}, {} replicas, {:.1}s)",
                        o.name,
                        r.revision.as_deref().unwrap_or("?"),
                        r.replicas,
                        r.seconds
                    ));
                    rollouts.push(r);
                }
                Err(e)
                    if e.is_rollout_failure()
                        && (wait.rollback_on_failure || e.is_model_check()) =>
                {
                    p.line(&format!("Deployment/{}: rollout failed: {e}", o.name));
                    let rb = roll_back(cluster, &ns, o, wait, p).await;
                    p.line(&format!("rollback: {}", rb.message));
                    return Err(e.with_rollback(rb).into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(rollouts)
    }

    /// The applied Deployments' rollout states and Services' addresses, read now (a line each;
    /// bounded in time: this runs after a signal, when the user wants to be done).
    pub async fn state(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (o, ns) in self.of_kind("Deployment") {
            let read = rollout::describe(self.cluster, &ns, &o.name);
            lines.push(match tokio::time::timeout(STATE_READ, read).await {
                Ok(line) => line,
                Err(_) => format!("Deployment/{}: cannot read its state in time", o.name),
            });
        }
        for (o, ns) in self.of_kind("Service") {
            let read = service::describe(self.cluster, &ns, &o.name);
            lines.push(match tokio::time::timeout(STATE_READ, read).await {
                Ok(line) => line,
                Err(_) => format!("Service/{}: cannot read its state in time", o.name),
            });
        }
        lines
    }

    /// Waits for every applied LoadBalancer Service's address; returns their URLs.
    pub async fn urls(&self, p: &mut dyn Progress) -> Result<Vec<String>, RolloutError> {
        let mut urls = Vec::new();
        if self.wait.no_wait_lb {
            return Ok(urls);
        }
        for (o, ns) in self.of_kind("Service") {
            if o.after.pointer("/spec/type").and_then(Value::as_str) != Some("LoadBalancer") {
                continue;
            }
            let (cluster, timeout) = (self.cluster, self.wait.lb_timeout);
            let url = service::wait_load_balancer(cluster, &ns, &o.name, timeout, p).await?;
            p.line(&format!("Service/{}: {url}", o.name));
            urls.push(url);
        }
        Ok(urls)
    }
}

/// Rolls back every applied Deployment whose pod template this apply changed (after a failed
/// smoke test), and says what came of it, as one rollback. A template that was already live is
/// left alone: what failed was serving before this apply, and an older one is no better known.
pub(super) async fn roll_back_changed(waiting: &Waiting<'_>, p: &mut dyn Progress) -> Rollback {
    let mut done = Vec::new();
    for (o, ns) in waiting.of_kind("Deployment") {
        let template = |v: Option<&Value>| v.and_then(|v| v.pointer("/spec/template")).cloned();
        if o.before.is_none() || template(o.before.as_ref()) == template(Some(&o.after)) {
            continue;
        }
        let rb = roll_back(waiting.cluster, &ns, o, waiting.wait, p).await;
        p.line(&format!("rollback: {}", rb.message));
        done.push(rb);
    }
    if done.is_empty() {
        return Rollback {
            restored: false,
            image: None,
            message: "not rolled back: this apply created the Deployments or did not change their pod template, so no earlier version of what failed is known to serve".into(),
        };
    }
    Rollback {
        restored: done.iter().all(|r| r.restored),
        image: done.iter().find_map(|r| r.image.clone()),
        message: done
            .into_iter()
            .map(|r| r.message)
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// Restores the Deployment's previous spec, and says what came of it.
async fn roll_back(
    cluster: &Cluster,
    ns: &str,
    o: &Applied,
    wait: &WaitArgs,
    p: &mut dyn Progress,
) -> Rollback {
    let not_restored = |message: String| Rollback {
        restored: false,
        image: None,
        message,
    };
    match rollback::rollback_spec(cluster, ns, &o.name, o.before.as_ref(), &o.after).await {
        Ok(Some(spec)) => {
            let target = (&spec, "the previous spec");
            rollback::rollback(cluster, ns, &o.name, target, wait.limits(), p).await
        }
        Ok(None) => not_restored(
            "nothing to roll back to: no earlier revision of the Deployment (delete it with `deployer delete`)".into(),
        ),
        Err(e) => not_restored(format!("cannot find the previous revision: {e}")),
    }
}

/// The smoke test through the first URL, unless it is switched off. When it fails, with
/// `--rollback-on-failure`, what this apply changed is rolled back.
pub(super) async fn smoke_test(
    waiting: &Waiting<'_>,
    url: Option<&String>,
    access: &smoke::Access,
    p: &mut dyn Progress,
) -> Result<Option<SmokeReport>, Error> {
    let wait = waiting.wait;
    let Some(url) = url.filter(|_| wait.smoke && !wait.no_wait_lb) else {
        return Ok(None);
    };
    p.set(&format!("smoke test: {url}readyz and one prediction"));
    let smoked = smoke::smoke(url, wait.smoke_image.as_deref(), wait.smoke_timeout, access).await;
    let r = match smoked {
        Ok(r) => r,
        Err(error) if wait.rollback_on_failure => {
            p.line(&format!("smoke test failed: {error}"));
            let rollback = roll_back_changed(waiting, p).await;
            return Err(Error::SmokeRolledBack { error, rollback });
        }
        Err(e) => return Err(e.into()),
    };
    p.line(&format!(
        "smoke test passed: prediction {} (p={:.3}) in {:.0} ms",
        r.prediction, r.probability, r.latency_ms
    ));
    Ok(Some(r))
}
