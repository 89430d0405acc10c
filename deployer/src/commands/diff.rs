//! `diff` (and `apply --dry-run`): a server-side dry run of every manifest, with a unified diff
//! per object of what `apply` would change. Changes nothing.

use super::monitoring::{self, Monitoring, MonitoringReport};
use crate::cli::cluster::{DiffArgs, ManifestArgs};
use crate::error::Error;
use crate::kube::apply::{self, Action, Applied};
use crate::kube::cluster::Cluster;
use crate::kube::manifests::{self, Manifest, ManifestError};
use crate::progress::{Progress, Quiet, Terminal};

/// What `diff` reports.
#[derive(Debug, serde::Serialize)]
pub struct DiffReport {
    /// `diff`, or `apply` for `apply --dry-run`.
    pub command: &'static str,
    pub dry_run: bool,
    pub namespace: String,
    pub changes: usize,
    pub objects: Vec<ObjectReport>,
    /// `--monitoring`: the monitoring objects among `objects`, and those the cluster cannot take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringReport>,
}

/// One applied (or dry-run applied) object.
#[derive(Debug, serde::Serialize)]
pub struct ObjectReport {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub action: Action,
    /// The unified diff (dry runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl ObjectReport {
    /// The object as applied; with its diff on a dry run.
    pub fn new(a: &Applied, diff: Option<String>) -> ObjectReport {
        ObjectReport {
            kind: a.kind.clone(),
            name: a.name.clone(),
            namespace: a.namespace.clone(),
            action: a.action,
            diff,
        }
    }
}

impl DiffReport {
    pub fn text(&self) -> String {
        let mut text = String::new();
        for o in &self.objects {
            text.push_str(&format!(
                "{}/{}: {}\n",
                o.kind,
                o.name,
                o.action.conditional()
            ));
            if o.action != Action::Unchanged {
                text.push_str(o.diff.as_deref().unwrap_or_default());
            }
        }
        text.push_str(&format!(
            "{} of {} object(s) would change (server-side dry run; nothing was applied)\n",
            self.changes,
            self.objects.len()
        ));
        if let Some(m) = &self.monitoring {
            text.push_str(&m.text());
        }
        text
    }
}

/// The manifests with the server image set to `image` (when given), and the server image they
/// will run.
pub fn load_manifests(
    m: &ManifestArgs,
    image: Option<&str>,
) -> Result<(Vec<Manifest>, Option<String>), ManifestError> {
    let mut manifests = manifests::load(&m.paths())?;
    if let Some(img) = image {
        manifests::set_image(&mut manifests, img, m.container.as_deref())?;
    }
    let server_image = manifests::current_image(&manifests, m.container.as_deref());
    Ok((manifests, server_image))
}

/// `deployer diff`.
pub async fn run(c: &DiffArgs) -> Result<DiffReport, Error> {
    let (manifests, _) = load_manifests(&c.manifests, c.image.as_deref())?;
    let fitted = c
        .monitoring
        .then(|| monitoring::fitted(&manifests))
        .transpose()?;
    let cluster = Cluster::connect(&c.cluster.connection()).await?;
    let monitoring = match fitted {
        Some(fitted) => Some(monitoring::plan(&cluster, fitted, None).await?),
        None => None,
    };
    let warnings = &mut Terminal::new();
    dry_run(&cluster, &manifests, monitoring, false, "diff", warnings).await
}

/// The server-side dry run of `manifests` and `monitoring`'s objects (`force` takes over
/// conflicting fields; `command` is the command reported). What `--monitoring` cannot apply is
/// said on `warnings`.
pub async fn dry_run(
    cluster: &Cluster,
    manifests: &[Manifest],
    monitoring: Option<Monitoring>,
    force: bool,
    command: &'static str,
    warnings: &mut dyn Progress,
) -> Result<DiffReport, Error> {
    if let Some(m) = &monitoring {
        m.warn(warnings);
    }
    let all = monitoring::with(manifests, monitoring.as_ref());
    let mut applied = Vec::new();
    apply::apply_all(cluster, &all, force, true, &mut Quiet, &mut applied).await?;
    let objects: Vec<ObjectReport> = applied
        .iter()
        .map(|o| {
            let diff = apply::diff_text(&o.display_name(), o.before.as_ref(), &o.after);
            ObjectReport::new(o, Some(diff))
        })
        .collect();
    Ok(DiffReport {
        command,
        dry_run: true,
        namespace: cluster.namespace.clone(),
        changes: objects
            .iter()
            .filter(|o| o.action != Action::Unchanged)
            .count(),
        objects,
        monitoring: monitoring.map(|m| m.report),
    })
}
