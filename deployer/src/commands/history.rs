//! `history`: the release history of the server's namespace (the ConfigMap
//! [`history::CONFIGMAP`]), newest first; and how `apply`, `release` and `rollback` add to it.

use crate::cli::cluster::ManifestArgs;
use crate::cli::history::HistoryArgs;
use crate::error::Error;
use crate::kube::cluster::Cluster;
use crate::kube::history::{self, Entry};
use crate::kube::manifests::{self, ManifestError};
use crate::progress::Progress;

/// What `history` reports.
#[derive(Debug, serde::Serialize)]
pub struct HistoryReport {
    pub command: &'static str,
    pub namespace: String,
    pub configmap: &'static str,
    /// Newest first, without the recorded pod templates.
    pub entries: Vec<Entry>,
}

/// Where a command recorded its release, or why it could not.
#[derive(Debug, serde::Serialize)]
pub struct Recorded {
    pub configmap: &'static str,
    pub namespace: String,
    /// How many entries the history holds now (when the write worked).
    pub entries: Option<usize>,
    /// Why the release could not be recorded (it is in place all the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Recorded {
    /// A line for the text report.
    pub fn text(&self) -> String {
        match (&self.error, self.entries) {
            (Some(e), _) => format!("history: NOT recorded: {e}\n"),
            (None, n) => format!(
                "history: recorded in ConfigMap/{} (namespace {}, {} release(s); `deployer history` shows them)\n",
                self.configmap,
                self.namespace,
                n.unwrap_or_default()
            ),
        }
    }
}

/// Appends `entry` to the history in `ns` keeping `limit` entries (none when `limit` is 0). A
/// write that fails is said (progress and report) but does not fail the command: what it
/// recorded is in place.
pub async fn record(
    cluster: &Cluster,
    ns: &str,
    entry: Entry,
    limit: usize,
    p: &mut dyn Progress,
) -> Option<Recorded> {
    if limit == 0 {
        return None;
    }
    let result = history::append(cluster, ns, entry, limit).await;
    if let Err(e) = &result {
        p.line(&format!(
            "warning: the release history was not recorded: {e}"
        ));
    }
    Some(Recorded {
        configmap: history::CONFIGMAP,
        namespace: ns.into(),
        entries: result.as_ref().ok().copied(),
        error: result.err().map(|e| e.to_string()),
    })
}

/// Now, as the history records times (RFC 3339, UTC, whole seconds).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The namespace and name of the manifests' (first) Deployment, which the history is about.
pub fn deployment_of(
    m: &ManifestArgs,
    cluster: &Cluster,
) -> Result<(String, String), ManifestError> {
    let manifests = manifests::load(&m.paths())?;
    let d = manifests
        .iter()
        .find(|m| m.kind == "Deployment")
        .ok_or(ManifestError::NoDeployment)?;
    let ns = d
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.namespace.clone());
    Ok((ns, d.name.clone()))
}

/// `deployer history`.
pub async fn run(c: &HistoryArgs) -> Result<HistoryReport, Error> {
    let cluster = Cluster::connect(&c.cluster.connection()).await?;
    let (ns, _) = deployment_of(&c.manifests, &cluster)?;
    let mut entries = history::read(&cluster, &ns).await?;
    entries.reverse();
    for e in &mut entries {
        e.template = None;
    }
    Ok(HistoryReport {
        command: "history",
        namespace: ns,
        configmap: history::CONFIGMAP,
        entries,
    })
}

/// An image reference shortened for a table: a digest to its first 12 hex digits.
pub fn short_image(image: &str) -> String {
    match image.split_once("@sha256:") {
        Some((repo, hex)) => format!("{repo}@sha256:{}", &hex[..hex.len().min(12)]),
        None => image.to_string(),
    }
}

impl HistoryReport {
    pub fn text(&self) -> String {
        if self.entries.is_empty() {
            return format!(
                "no release recorded in namespace {} (ConfigMap/{} is absent or empty)\n",
                self.namespace, self.configmap
            );
        }
        let several = self
            .entries
            .iter()
            .any(|e| e.deployment != self.entries[0].deployment);
        let mut rows = vec![
            [
                "TIME", "REVISION", "OUTCOME", "MODEL", "VERSION", "ACCURACY", "IMAGE", "COMMAND",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for e in &self.entries {
            let model = e.model.as_ref();
            let mut row = vec![
                e.time.clone(),
                e.revision.clone().unwrap_or_else(|| "-".into()),
                e.outcome.as_str().into(),
                model.map_or("?".into(), |m| m.name.clone()),
                model.map_or("?".into(), |m| m.version.clone()),
                model
                    .and_then(|m| m.validation_accuracy)
                    .map_or("-".into(), |a| format!("{a:.4}")),
                e.image.as_deref().map_or("?".into(), short_image),
                e.command.clone(),
            ];
            if several {
                row.push(e.deployment.clone());
            }
            rows.push(row);
        }
        if several {
            rows[0].push("DEPLOYMENT".into());
        }
        let mut text = format!(
            "release history of namespace {} (ConfigMap/{}), newest first:\n",
            self.namespace, self.configmap
        );
        text.push_str(&table(&rows));
        for e in self.entries.iter().filter(|e| e.reason.is_some()) {
            let reason = e.reason.as_deref().unwrap_or_default();
            text.push_str(&format!("{} {}: {reason}\n", e.time, e.outcome.as_str()));
        }
        text
    }
}

/// Rows as columns padded to their widest cell.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::history::Outcome;
    use crate::kube::model::ModelInfo;

    fn entry(time: &str, outcome: Outcome, version: Option<&str>) -> Entry {
        Entry {
            time: time.into(),
            command: "release".into(),
            deployment: "d".into(),
            image: Some(format!("r.io/server@sha256:{}", "ab".repeat(32))),
            digest: None,
            model: version.map(|v| ModelInfo {
                name: "celestial-bodies".into(),
                version: v.into(),
                sha256: None,
                validation_accuracy: Some(0.99333),
            }),
            revision: (outcome == Outcome::Promoted).then(|| "3".into()),
            outcome,
            reason: (outcome != Outcome::Promoted).then(|| "ModelCheckFailed: x".into()),
            template: None,
        }
    }

    #[test]
    fn the_history_table_has_a_row_per_release_and_the_reasons_below() {
        let report = HistoryReport {
            command: "history",
            namespace: "ns".into(),
            configmap: history::CONFIGMAP,
            entries: vec![
                entry("2026-01-02T10:00:00Z", Outcome::RolledBack, None),
                entry("2026-01-01T10:00:00Z", Outcome::Promoted, Some("1.2.0")),
            ],
        };
        let text = report.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "TIME                  REVISION  OUTCOME      MODEL             VERSION  ACCURACY  IMAGE                            COMMAND"
        );
        assert_eq!(
            lines[2],
            "2026-01-02T10:00:00Z  -         rolled-back  ?                 ?        -         r.io/server@sha256:abababababab  release"
        );
        assert!(lines[3].starts_with(
            "2026-01-01T10:00:00Z  3         promoted     celestial-bodies  1.2.0    0.9933"
        ));
        assert_eq!(
            lines[4],
            "2026-01-02T10:00:00Z rolled-back: ModelCheckFailed: x"
        );
        let empty = HistoryReport {
            entries: vec![],
            ..report
        };
        assert!(
            empty
                .text()
                .starts_with("no release recorded in namespace ns")
        );
    }
}
