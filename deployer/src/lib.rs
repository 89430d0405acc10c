//! `deployer`: builds and pushes the celestial-server image without a Docker daemon, server-side
//! applies the Kubernetes manifests, waits for the rollout and the load balancer, smoke-tests the
//! public URL, and reports in text or JSON with documented exit codes (see [`error::ExitCode`]).
//!
//! Layers: [`cli`] (flags) -> commands in this module -> [`manifests`], [`cluster`], [`apply`],
//! [`rollout`], [`smoke`] (Kubernetes side) and [`image`], [`archive`], [`registry`], [`glibc`]
//! (image side). Each layer has its own error enum; [`error::Error`] maps them to exit codes.

pub mod apply;
pub mod cli;
pub mod cluster;
pub mod error;
pub mod exit;
pub mod manifests;
pub mod oci;
pub mod options;
pub mod progress;
pub mod rollout;
pub mod smoke;
pub mod support;

use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use crate::apply::{Action, Applied};
use crate::cli::{Cli, OutputFormat};
use crate::cluster::Cluster;
use crate::error::Error;
use crate::exit::ExitCode;
use crate::oci::publish::Pushed;
use crate::oci::registry::CredentialSource;
use crate::options::{ApplyCommand, ClusterOptions, Command, ManifestOptions};
use crate::progress::{Progress, Terminal};

/// A command's result: the text for humans and the JSON for CI.
#[derive(Debug)]
pub struct Report {
    pub text: String,
    pub json: Value,
}

/// Runs the parsed command line and returns the process exit code (prints the result or the error).
pub fn main_with(cli: Cli) -> std::process::ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli::DEFAULT_LOG)),
        )
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(ExitCode::Internal.code());
        }
    };
    let output = cli.output;
    let result = runtime.block_on(run(cli.into_command()));
    match result {
        Ok(report) => {
            match output {
                OutputFormat::Text => println!("{}", report.text.trim_end()),
                OutputFormat::Json => {
                    let mut j = report.json;
                    j["ok"] = json!(true);
                    j["exit_code"] = json!(0);
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&j).expect("JSON serializes")
                    );
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            let code = e.exit_code();
            match output {
                OutputFormat::Text => eprintln!("error: {e}"),
                OutputFormat::Json => {
                    let mut j = json!({"ok": false, "error": e.to_string(), "exit_code": code.code(), "category": code});
                    if let Error::Rollout(rollout::RolloutError::Failed {
                        reason, rollback, ..
                    }) = &e
                    {
                        j["reason"] = json!(reason);
                        j["rollback"] = json!(rollback);
                    }
                    if let Error::Rollout(rollout::RolloutError::Timeout { rollback, .. }) = &e {
                        j["rollback"] = json!(rollback);
                    }
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&j).expect("JSON serializes")
                    );
                }
            }
            std::process::ExitCode::from(code.code())
        }
    }
}

/// Runs one command.
pub async fn run(command: Command) -> Result<Report, Error> {
    match command {
        Command::Build(a) => {
            let creds = CredentialSource::from_options(&a.registry)?;
            let mut p = Terminal::new();
            let pushed =
                oci::publish::build_and_push(&a.image, &a.build, &a.registry, &creds, &mut p)
                    .await?;
            drop(p);
            Ok(Report {
                text: pushed.image.clone(),
                json: json!({"command": "build", "image": pushed}),
            })
        }
        Command::Push(a) => {
            let creds = CredentialSource::from_options(&a.registry)?;
            let mut p = Terminal::new();
            let pushed = oci::archive::push_archive(
                &a.archive,
                &a.image,
                &a.platform,
                &a.registry,
                &creds,
                &mut p,
            )
            .await?;
            drop(p);
            Ok(Report {
                text: pushed.image.clone(),
                json: json!({"command": "push", "image": pushed}),
            })
        }
        Command::Apply(a) => apply_command(&a, None).await,
        Command::Release(a) => {
            let b = &a.build;
            let creds = CredentialSource::from_options(&b.registry)?;
            let mut p = Terminal::new();
            let pushed =
                oci::publish::build_and_push(&b.image, &b.build, &b.registry, &creds, &mut p)
                    .await?;
            p.line(&format!("pushed {}", pushed.image));
            drop(p);
            let mut apply = a.apply.clone();
            apply.image = Some(pushed.image.clone());
            let mut r = apply_command(&apply, Some(&pushed)).await?;
            r.json["command"] = json!("release");
            Ok(r)
        }
        Command::Diff(a) => {
            let (manifests, _) = load_manifests(&a.manifests, a.image.as_deref())?;
            let mut r = diff_command(&a.cluster, &manifests, false).await?;
            r.json["command"] = json!("diff");
            Ok(r)
        }
        Command::Status(a) => status_command(&a.cluster, &a.manifests).await,
        Command::Delete(a) => {
            let manifests = manifests::load(&a.manifests.paths())?;
            let cluster = Cluster::connect(&a.cluster).await?;
            let start = Instant::now();
            let mut p = Terminal::new();
            let deleted = apply::delete_all(&cluster, &manifests, a.timeout, |m| p.line(m)).await?;
            drop(p);
            let secs = start.elapsed().as_secs_f64();
            let n = deleted.iter().filter(|d| d.1).count();
            let text = format!(
                "deleted {n} object(s), {} already absent, all gone after {secs:.1}s",
                deleted.len() - n
            );
            let objects: Vec<Value> = deleted
                .iter()
                .map(|(o, d)| json!({"object": o, "deleted": d}))
                .collect();
            Ok(Report {
                text,
                json: json!({"command": "delete", "namespace": cluster.namespace, "objects": objects, "seconds": secs}),
            })
        }
    }
}

fn object_json(a: &Applied) -> Value {
    json!({"kind": a.kind, "name": a.name, "namespace": a.namespace, "action": a.action})
}

/// The server image the manifests will run, after setting `image` (when given) in them.
fn load_manifests(
    m: &ManifestOptions,
    image: Option<&str>,
) -> Result<(Vec<manifests::Manifest>, Option<String>), manifests::ManifestError> {
    let mut manifests = manifests::load(&m.paths())?;
    if let Some(img) = image {
        manifests::set_image(&mut manifests, img, m.container.as_deref())?;
    }
    let server_image = manifests::current_image(&manifests, m.container.as_deref());
    Ok((manifests, server_image))
}

/// `diff` and `apply --dry-run`: a server-side dry run of every manifest and its diff.
async fn diff_command(
    c: &ClusterOptions,
    manifests: &[manifests::Manifest],
    force: bool,
) -> Result<Report, Error> {
    let cluster = Cluster::connect(c).await?;
    let applied = apply::apply_all(&cluster, manifests, force, true, |_| {}).await?;
    let mut text = String::new();
    let mut objects = Vec::new();
    for o in &applied {
        let diff = apply::diff_text(&o.display_name(), o.before.as_ref(), &o.after);
        let verb = match o.action {
            Action::Created => "would be created",
            Action::Configured => "would change",
            Action::Unchanged => "unchanged",
        };
        text.push_str(&format!("{}: {verb}\n", o.display_name()));
        if o.action != Action::Unchanged {
            text.push_str(&diff);
        }
        let mut j = object_json(o);
        j["diff"] = json!(diff);
        objects.push(j);
    }
    let changes = applied
        .iter()
        .filter(|o| o.action != Action::Unchanged)
        .count();
    text.push_str(&format!(
        "{changes} of {} object(s) would change (server-side dry run; nothing was applied)\n",
        applied.len()
    ));
    Ok(Report {
        text,
        json: json!({"command": "apply", "dry_run": true, "namespace": cluster.namespace, "changes": changes, "objects": objects}),
    })
}

/// `apply` (and the apply half of `release`, and `diff` as a dry run).
async fn apply_command(a: &ApplyCommand, pushed: Option<&Pushed>) -> Result<Report, Error> {
    let (manifests, server_image) = load_manifests(&a.manifests, a.image.as_deref())?;
    if let Some(s) = &a.wait.smoke_image
        && !s.is_file()
    {
        return Err(Error::Usage(format!(
            "--smoke-image {}: no such file",
            s.display()
        )));
    }
    if a.dry_run {
        return diff_command(&a.cluster, &manifests, a.force_conflicts).await;
    }
    let cluster = Cluster::connect(&a.cluster).await?;
    let start = Instant::now();
    let mut p = Terminal::new();
    let applied = apply::apply_all(&cluster, &manifests, a.force_conflicts, false, |o| {
        let verb = match o.action {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
        };
        p.line(&format!("{}: {verb}", o.display_name()));
    })
    .await?;
    let apply_secs = start.elapsed().as_secs_f64();

    let mut rollouts = Vec::new();
    for o in applied.iter().filter(|o| o.kind == "Deployment") {
        let ns = o
            .namespace
            .clone()
            .unwrap_or_else(|| cluster.namespace.clone());
        match rollout::wait_rollout(&cluster, &ns, &o.name, a.wait.timeout, &mut p).await {
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
            Err(e) if e.is_rollout_failure() && a.wait.rollback_on_failure => {
                p.line(&format!("Deployment/{}: rollout failed: {e}", o.name));
                let target =
                    rollout::rollback_spec(&cluster, &ns, &o.name, o.before.as_ref(), &o.after)
                        .await;
                let rb = match target {
                    Ok(Some(spec)) => {
                        rollout::rollback(&cluster, &ns, &o.name, &spec, a.wait.timeout, &mut p).await
                    }
                    Ok(None) => rollout::Rollback {
                        restored: false,
                        image: None,
                        message: "nothing to roll back to: no earlier revision of the Deployment (delete it with `deployer delete`)".into(),
                    },
                    Err(e) => rollout::Rollback {
                        restored: false,
                        image: None,
                        message: format!("cannot find the previous revision: {e}"),
                    },
                };
                p.line(&format!("rollback: {}", rb.message));
                return Err(e.with_rollback(rb).into());
            }
            Err(e) => return Err(e.into()),
        }
    }

    let mut urls = Vec::new();
    if !a.wait.no_wait_lb {
        for o in applied.iter().filter(|o| o.kind == "Service") {
            if o.after.pointer("/spec/type").and_then(Value::as_str) != Some("LoadBalancer") {
                continue;
            }
            let ns = o
                .namespace
                .clone()
                .unwrap_or_else(|| cluster.namespace.clone());
            let url =
                rollout::wait_load_balancer(&cluster, &ns, &o.name, a.wait.lb_timeout, &mut p)
                    .await?;
            p.line(&format!("Service/{}: {url}", o.name));
            urls.push(url);
        }
    }

    let mut smoke_report = None;
    if a.wait.smoke
        && !a.wait.no_wait_lb
        && let Some(url) = urls.first()
    {
        p.set(&format!("smoke test: {url}readyz and one prediction"));
        let r = smoke::smoke(url, a.wait.smoke_image.as_deref(), a.wait.smoke_timeout).await?;
        p.line(&format!(
            "smoke test passed: prediction {} (p={:.3}) in {:.0} ms",
            r.prediction, r.probability, r.latency_ms
        ));
        smoke_report = Some(r);
    }
    drop(p);
    let total = start.elapsed().as_secs_f64();
    let changed = applied
        .iter()
        .filter(|o| o.action != Action::Unchanged)
        .count();
    let mut text = format!(
        "applied {} object(s) to namespace {} ({changed} changed) in {apply_secs:.1}s; ready after {total:.1}s\n",
        applied.len(),
        cluster.namespace
    );
    if let Some(img) = &server_image {
        text.push_str(&format!("image: {img}\n"));
    }
    if let Some(r) = &smoke_report {
        text.push_str(&format!(
            "smoke: {} (p={:.3})\n",
            r.prediction, r.probability
        ));
    }
    for u in &urls {
        text.push_str(&format!("URL: {u}\n"));
    }
    Ok(Report {
        text,
        json: json!({
            "command": "apply",
            "namespace": cluster.namespace,
            "image": server_image,
            "pushed": pushed,
            "objects": applied.iter().map(object_json).collect::<Vec<_>>(),
            "changed": changed,
            "rollouts": rollouts,
            "url": urls.first(),
            "urls": urls,
            "smoke": smoke_report,
            "apply_seconds": apply_secs,
            "seconds": total,
        }),
    })
}

fn pod_state(pod: &Pod) -> (String, bool, i32, Option<String>) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let restarts = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    let reason = rollout::pod_failure(pod).map(|(r, _)| r).or_else(|| {
        status
            .container_statuses
            .iter()
            .flatten()
            .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
    });
    let phase = if pod.metadata.deletion_timestamp.is_some() {
        "Terminating".to_string()
    } else {
        status.phase.unwrap_or_else(|| "Unknown".into())
    };
    (format!("{name} {phase}"), ready, restarts, reason)
}

/// `status`: the deployed image, replicas, pods and the URL.
async fn status_command(c: &ClusterOptions, m: &ManifestOptions) -> Result<Report, Error> {
    let manifests = manifests::load(&m.paths())?;
    let cluster = Cluster::connect(c).await?;
    let mut text = String::new();
    let mut deployments = Vec::new();
    let mut services = Vec::new();
    for d in manifests.iter().filter(|x| x.kind == "Deployment") {
        let ns = d
            .namespace
            .clone()
            .unwrap_or_else(|| cluster.namespace.clone());
        let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
        let live = api
            .get_opt(&d.name)
            .await
            .map_err(|e| apply::api_error(&d.display_name(), "get", e, ""))?;
        let Some(live) = live else {
            text.push_str(&format!(
                "Deployment/{}: not deployed in namespace {ns}\n",
                d.name
            ));
            deployments.push(json!({"name": d.name, "namespace": ns, "deployed": false}));
            continue;
        };
        let counts = rollout::counts(&live);
        let (state, desc) = rollout::rollout_state(&live);
        let images: Vec<String> = live
            .spec
            .as_ref()
            .map(|s| {
                s.template
                    .spec
                    .iter()
                    .flat_map(|p| p.containers.iter().filter_map(|c| c.image.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let rollout_state = match state {
            Ok(true) => "complete".to_string(),
            Ok(false) => format!("in progress: {desc}"),
            Err((r, m)) => format!("failed: {r}: {m}"),
        };
        text.push_str(&format!(
            "Deployment/{} ({ns}): image {}\n  replicas: desired {} / updated {} / ready {} / available {} (total {}); rollout {rollout_state}\n",
            d.name, images.join(", "), counts.desired, counts.updated, counts.ready, counts.available, counts.current
        ));
        let mut pods_json = Vec::new();
        if let Some(labels) = live
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
        {
            let sel = labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
            let list = pods
                .list(&ListParams::default().labels(&sel))
                .await
                .map_err(|e| apply::api_error(&d.display_name(), "list pods", e, ""))?;
            for pod in &list.items {
                let (desc, ready, restarts, reason) = pod_state(pod);
                text.push_str(&format!(
                    "  pod {desc}{} restarts {restarts}{}\n",
                    if ready { " ready" } else { " not-ready" },
                    reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
                pods_json.push(json!({"pod": desc, "ready": ready, "restarts": restarts, "reason": reason, "node": pod.spec.as_ref().and_then(|s| s.node_name.clone())}));
            }
        }
        deployments.push(json!({"name": d.name, "namespace": ns, "deployed": true, "images": images, "replicas": counts, "rollout": rollout_state, "pods": pods_json}));
    }
    for s in manifests.iter().filter(|x| x.kind == "Service") {
        let ns = s
            .namespace
            .clone()
            .unwrap_or_else(|| cluster.namespace.clone());
        let api: Api<Service> = Api::namespaced(cluster.client.clone(), &ns);
        match api
            .get_opt(&s.name)
            .await
            .map_err(|e| apply::api_error(&s.display_name(), "get", e, ""))?
        {
            None => {
                text.push_str(&format!("Service/{}: not deployed\n", s.name));
                services.push(json!({"name": s.name, "deployed": false}));
            }
            Some(svc) => {
                let url = rollout::service_url(&svc);
                text.push_str(&format!(
                    "Service/{}: {}\n",
                    s.name,
                    url.clone()
                        .map(|u| format!("URL: {u}"))
                        .unwrap_or_else(|| "no load-balancer address (yet)".into())
                ));
                services.push(json!({"name": s.name, "deployed": true, "url": url}));
            }
        }
    }
    Ok(Report {
        text,
        json: json!({"command": "status", "namespace": cluster.namespace, "deployments": deployments, "services": services}),
    })
}
