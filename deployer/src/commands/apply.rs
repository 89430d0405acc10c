//! `apply` and `release`: server-side apply, wait for each rollout (rolling back on request) and
//! each load balancer's address, smoke-test the public URL.

use std::time::Instant;

use serde_json::Value;

use super::diff::{self, DiffReport, ObjectReport, load_manifests};
use super::image::build_and_push;
use crate::error::{Error, Interrupted};
use crate::interrupt::{Interrupt, Signal};
use crate::kube::apply::{self, Action, Applied};
use crate::kube::cluster::Cluster;
use crate::kube::manifests::Manifest;
use crate::kube::rollout::{self, Rollback, RolloutError, RolloutReport};
use crate::kube::secrets::{self, ApiKeySecret, TlsSecret};
use crate::kube::{rollback, secure, service};
use crate::oci::publish::Pushed;
use crate::options::{ApplyCommand, ReleaseCommand, SecurityOptions, WaitOptions};
use crate::progress::{Progress, Terminal};
use crate::smoke::{self, SmokeReport};

/// How long reading the cluster's state after a signal may take, per object.
const STATE_READ: std::time::Duration = std::time::Duration::from_secs(5);

/// What `apply` and `release` report.
#[derive(Debug, serde::Serialize)]
pub struct ApplyReport {
    pub command: &'static str,
    pub namespace: String,
    /// The server image the manifests run.
    pub image: Option<String>,
    /// The image `release` built and pushed.
    pub pushed: Option<Pushed>,
    pub objects: Vec<ObjectReport>,
    pub changed: usize,
    pub rollouts: Vec<RolloutReport>,
    pub url: Option<String>,
    pub urls: Vec<String>,
    pub smoke: Option<SmokeReport>,
    /// `--api-key-secret`: the Secret, and the key only with `--show-api-key`.
    pub api_key: Option<ApiKeyReport>,
    /// `--tls-secret`: the Secret the server serves HTTPS with.
    pub tls_secret: Option<String>,
    pub apply_seconds: f64,
    pub seconds: f64,
}

/// Where the API key is, and how to read it.
#[derive(Debug, serde::Serialize)]
pub struct ApiKeyReport {
    pub secret: String,
    /// Created by this run with a generated key (else it was there).
    pub created: bool,
    /// The command that prints the keys file.
    pub read_with: String,
    /// The key the smoke test sent (only with `--show-api-key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What `apply` did: applied and waited, or (`--dry-run`) only showed what would change.
#[derive(Debug)]
pub enum Outcome {
    Done(Box<ApplyReport>),
    DryRun(DiffReport),
}

impl ApplyReport {
    pub fn text(&self) -> String {
        let mut text = format!(
            "applied {} object(s) to namespace {} ({} changed) in {:.1}s; ready after {:.1}s\n",
            self.objects.len(),
            self.namespace,
            self.changed,
            self.apply_seconds,
            self.seconds
        );
        if let Some(img) = &self.image {
            text.push_str(&format!("image: {img}\n"));
        }
        if let Some(r) = &self.smoke {
            text.push_str(&format!(
                "smoke: {} (p={:.3})\n",
                r.prediction, r.probability
            ));
        }
        if let Some(k) = &self.api_key {
            let how = if k.created {
                "created with a generated key"
            } else {
                "existing"
            };
            text.push_str(&format!(
                "API key: Secret/{} ({how}); read it with: {}\n",
                k.secret, k.read_with
            ));
            if let Some(key) = &k.key {
                text.push_str(&format!("API key: {key}\n"));
            }
        }
        if let Some(t) = &self.tls_secret {
            text.push_str(&format!("TLS: Secret/{t}\n"));
        }
        for u in &self.urls {
            text.push_str(&format!("URL: {u}\n"));
        }
        text
    }
}

/// The Secrets `--api-key-secret` and `--tls-secret` name, read (the API-key one created when
/// absent) before anything is applied, so a missing TLS Secret leaves the cluster untouched.
#[derive(Debug, Default)]
pub struct Secrets {
    namespace: String,
    api_key: Option<ApiKeySecret>,
    tls: Option<TlsSecret>,
}

impl Secrets {
    async fn prepare(cluster: &Cluster, ns: &str, s: &SecurityOptions) -> Result<Secrets, Error> {
        let tls = match &s.tls_secret {
            Some(name) => Some(secrets::tls(cluster, ns, name).await?),
            None => None,
        };
        let api_key = match &s.api_key_secret {
            Some(name) => secrets::api_key(cluster, ns, name, false).await?,
            None => None,
        };
        Ok(Secrets {
            namespace: ns.into(),
            api_key,
            tls,
        })
    }

    /// What the smoke test needs to get in.
    fn access(&self, s: &SecurityOptions) -> smoke::Access {
        smoke::Access {
            api_key: self.api_key.as_ref().map(|k| k.key.clone()),
            trust_pem: self.tls.as_ref().map(|t| t.trust_pem.clone()),
            server_name: s.tls_server_name.clone(),
        }
    }

    fn api_key_report(&self, s: &SecurityOptions) -> Option<ApiKeyReport> {
        self.api_key.as_ref().map(|k| ApiKeyReport {
            secret: k.name.clone(),
            created: k.created,
            read_with: format!(
                "kubectl get secret {} -n {} -o jsonpath='{{.data.{}}}' | base64 -d",
                k.name,
                self.namespace,
                secure::API_KEYS_DATA_KEY
            ),
            key: s.show_api_key.then(|| k.key.clone()),
        })
    }
}

/// The namespace of the server's objects: the first Deployment's own, else the command's.
fn server_namespace(manifests: &[Manifest], cluster: &Cluster) -> String {
    manifests
        .iter()
        .find(|m| m.kind == "Deployment")
        .and_then(|m| m.namespace.clone())
        .unwrap_or_else(|| cluster.namespace.clone())
}

/// Turns on what `--api-key-secret` and `--tls-secret` ask for in the manifests.
fn secure_manifests(
    manifests: &mut [Manifest],
    c: &ApplyCommand,
) -> Result<(), crate::kube::manifests::ManifestError> {
    let container = c.manifests.container.as_deref();
    if let Some(name) = &c.security.api_key_secret {
        secure::mount_api_keys(manifests, name, container)?;
    }
    if let Some(name) = &c.security.tls_secret {
        secure::enable_tls(manifests, name, container)?;
    }
    Ok(())
}

/// `deployer release`: build and push, then apply with the pushed digest. The manifests are read
/// and the cluster is reached (its credentials checked) first, so a release that cannot apply
/// says so before it spends a build and a push.
pub async fn release(c: &ReleaseCommand, interrupt: &Interrupt) -> Result<Outcome, Error> {
    let (mut manifests, _) = load_manifests(&c.apply.manifests, Some(&c.build.image))?;
    secure_manifests(&mut manifests, &c.apply)?;
    let prepared = match c.apply.dry_run {
        true => None,
        false => {
            let cluster = Cluster::connect(&c.apply.cluster).await?;
            let ns = server_namespace(&manifests, &cluster);
            let secrets = Secrets::prepare(&cluster, &ns, &c.apply.security).await?;
            Some((cluster, secrets))
        }
    };
    let mut progress = Terminal::new();
    let pushed = match interrupt.run(build_and_push(&c.build, &mut progress)).await {
        Ok(pushed) => pushed?,
        Err(signal) => {
            return Err(Error::Interrupted(Interrupted {
                signal,
                during: "building and pushing the image".into(),
                state: vec![
                    "nothing was applied to the cluster".into(),
                    "blobs already pushed stay in the registry".into(),
                ],
                resume: "run the same `deployer release` again: it sends only what the registry still lacks".into(),
            }));
        }
    };
    progress.line(&format!("pushed {}", pushed.image));
    drop(progress);
    let mut apply = c.apply.clone();
    apply.image = Some(pushed.image.clone());
    run(&apply, Some(pushed), prepared, "release", interrupt).await
}

/// `deployer apply` (a dry run reports like `diff`). A signal stops it where it stands: between or
/// during the server-side applies, or while waiting; the error says what the cluster holds then.
/// `prepared` is the connection and the Secrets when the caller has made them already.
pub async fn run(
    c: &ApplyCommand,
    pushed: Option<Pushed>,
    prepared: Option<(Cluster, Secrets)>,
    command: &'static str,
    interrupt: &Interrupt,
) -> Result<Outcome, Error> {
    let (mut manifests, server_image) = load_manifests(&c.manifests, c.image.as_deref())?;
    secure_manifests(&mut manifests, c)?;
    if let Some(s) = &c.wait.smoke_image
        && !s.is_file()
    {
        return Err(Error::Usage(format!(
            "--smoke-image {}: no such file",
            s.display()
        )));
    }
    if c.dry_run {
        let r = diff::dry_run(&c.cluster, &manifests, c.force_conflicts, command).await?;
        return Ok(Outcome::DryRun(r));
    }
    let (cluster, secrets) = match prepared {
        Some(prepared) => prepared,
        None => {
            let cluster = Cluster::connect(&c.cluster).await?;
            let ns = server_namespace(&manifests, &cluster);
            let secrets = Secrets::prepare(&cluster, &ns, &c.security).await?;
            (cluster, secrets)
        }
    };
    let start = Instant::now();
    let mut p = Terminal::new();
    let applied = apply_step(&cluster, &manifests, c, &mut p, command, interrupt).await?;
    let apply_seconds = start.elapsed().as_secs_f64();
    let waiting = Waiting {
        cluster: &cluster,
        applied: &applied,
        wait: &c.wait,
    };
    let step = std::cell::Cell::new("waiting for the rollout");
    let waited = interrupt
        .run(async {
            let rollouts = waiting.rollouts(&mut p).await?;
            step.set("waiting for the load balancer's address");
            let urls = waiting.urls(&mut p).await?;
            step.set("smoke-testing the public URL");
            let access = secrets.access(&c.security);
            let smoke = smoke_test(urls.first(), &c.wait, &access, &mut p).await?;
            Ok::<_, Error>((rollouts, urls, smoke))
        })
        .await;
    drop(p);
    let (rollouts, urls, smoke) = match waited {
        Ok(done) => done?,
        Err(signal) => {
            let state = waiting.state().await;
            let rollback = c.wait.rollback_on_failure;
            return Err(interrupted_waiting(signal, step.get(), state, command, rollback).into());
        }
    };
    Ok(Outcome::Done(Box::new(ApplyReport {
        command,
        namespace: cluster.namespace,
        image: server_image,
        pushed,
        objects: applied.iter().map(|o| ObjectReport::new(o, None)).collect(),
        changed: applied
            .iter()
            .filter(|o| o.action != Action::Unchanged)
            .count(),
        rollouts,
        url: urls.first().cloned(),
        urls,
        smoke,
        api_key: secrets.api_key_report(&c.security),
        tls_secret: c.security.tls_secret.clone(),
        apply_seconds,
        seconds: start.elapsed().as_secs_f64(),
    })))
}

/// What `apply` waits for after applying: the objects, where, and how long.
struct Waiting<'a> {
    cluster: &'a Cluster,
    applied: &'a [Applied],
    wait: &'a WaitOptions,
}

impl Waiting<'_> {
    /// The applied objects of `kind`, each with its namespace.
    fn of_kind(&self, kind: &'static str) -> impl Iterator<Item = (&Applied, String)> {
        self.applied
            .iter()
            .filter(move |o| o.kind == kind)
            .map(|o| {
                let ns = o.namespace.clone();
                (o, ns.unwrap_or_else(|| self.cluster.namespace.clone()))
            })
    }

    /// Waits for every applied Deployment's rollout; on a failure, rolls back when asked to.
    async fn rollouts(&self, p: &mut dyn Progress) -> Result<Vec<RolloutReport>, Error> {
        let (cluster, wait) = (self.cluster, self.wait);
        let mut rollouts = Vec::new();
        for (o, ns) in self.of_kind("Deployment") {
            match rollout::wait_rollout(cluster, &ns, &o.name, limits(wait), p).await {
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
                Err(e) if e.is_rollout_failure() && wait.rollback_on_failure => {
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
    async fn state(&self) -> Vec<String> {
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
    async fn urls(&self, p: &mut dyn Progress) -> Result<Vec<String>, RolloutError> {
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

/// Server-side applies the manifests, unless a signal comes first.
async fn apply_step(
    cluster: &Cluster,
    manifests: &[Manifest],
    c: &ApplyCommand,
    p: &mut dyn Progress,
    command: &str,
    interrupt: &Interrupt,
) -> Result<Vec<Applied>, Error> {
    let mut applied = Vec::new();
    let force = c.force_conflicts;
    let applying = apply::apply_all(cluster, manifests, force, false, p, &mut applied);
    match interrupt.run(applying).await {
        Ok(r) => r.map(|()| applied).map_err(Error::from),
        Err(signal) => Err(interrupted_applying(signal, manifests, &applied, command).into()),
    }
}

/// A signal during the server-side applies: which objects were applied, which one may or may not
/// have been (its request was in flight), which were not.
fn interrupted_applying(
    signal: Signal,
    manifests: &[Manifest],
    applied: &[Applied],
    command: &str,
) -> Interrupted {
    let mut state: Vec<String> = applied
        .iter()
        .map(|o| format!("{}: {}", o.display_name(), o.action.past()))
        .collect();
    for (i, m) in manifests.iter().enumerate().skip(applied.len()) {
        let what = if i == applied.len() {
            "interrupted while being applied: it may or may not have been"
        } else {
            "not applied"
        };
        state.push(format!("{}: {what}", m.display_name()));
    }
    Interrupted {
        signal,
        during: "applying the manifests".into(),
        state,
        resume: format!(
            "run the same `deployer {command}` again: server-side apply converges (objects already applied stay unchanged)"
        ),
    }
}

/// A signal while waiting: the objects are applied and the cluster goes on without deployer.
fn interrupted_waiting(
    signal: Signal,
    during: &str,
    state: Vec<String>,
    command: &str,
    rollback_on_failure: bool,
) -> Interrupted {
    let mut resume = format!(
        "the objects are applied and the cluster goes on rolling them out without deployer; run the same `deployer {command}` again to wait for it (nothing is re-applied), or `deployer status` to look"
    );
    if rollback_on_failure {
        resume.push_str(
            "; no rollback was done (--rollback-on-failure acts on failures, not on interrupts)",
        );
    }
    Interrupted {
        signal,
        during: during.into(),
        state,
        resume,
    }
}

/// How long a rollout (or a rollback's) may take.
fn limits(wait: &WaitOptions) -> rollout::Limits {
    rollout::Limits {
        timeout: wait.timeout,
        unschedulable_grace: wait.unschedulable_grace,
    }
}

/// Restores the Deployment's previous spec, and says what came of it.
async fn roll_back(
    cluster: &Cluster,
    ns: &str,
    o: &Applied,
    wait: &WaitOptions,
    p: &mut dyn Progress,
) -> Rollback {
    let not_restored = |message: String| Rollback {
        restored: false,
        image: None,
        message,
    };
    match rollback::rollback_spec(cluster, ns, &o.name, o.before.as_ref(), &o.after).await {
        Ok(Some(spec)) => rollback::rollback(cluster, ns, &o.name, &spec, limits(wait), p).await,
        Ok(None) => not_restored(
            "nothing to roll back to: no earlier revision of the Deployment (delete it with `deployer delete`)".into(),
        ),
        Err(e) => not_restored(format!("cannot find the previous revision: {e}")),
    }
}

/// The smoke test through the first URL, unless it is switched off.
async fn smoke_test(
    url: Option<&String>,
    wait: &WaitOptions,
    access: &smoke::Access,
    p: &mut dyn Progress,
) -> Result<Option<SmokeReport>, Error> {
    let Some(url) = url.filter(|_| wait.smoke && !wait.no_wait_lb) else {
        return Ok(None);
    };
    p.set(&format!("smoke test: {url}readyz and one prediction"));
    let r = smoke::smoke(url, wait.smoke_image.as_deref(), wait.smoke_timeout, access).await?;
    p.line(&format!(
        "smoke test passed: prediction {} (p={:.3}) in {:.0} ms",
        r.prediction, r.probability, r.latency_ms
    ));
    Ok(Some(r))
}
