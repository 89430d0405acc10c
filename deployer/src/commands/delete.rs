//! `delete`: everything `apply` created, gone.

use std::time::Instant;

use crate::cli::cluster::DeleteArgs;
use crate::error::Error;
use crate::kube::cluster::Cluster;
use crate::kube::{apply, manifests};
use crate::progress::Terminal;

/// What `delete` reports.
#[derive(Debug, serde::Serialize)]
pub struct DeleteReport {
    pub command: &'static str,
    pub namespace: String,
    pub objects: Vec<Deleted>,
    pub seconds: f64,
}

/// One object: deleted now, or already absent.
#[derive(Debug, serde::Serialize)]
pub struct Deleted {
    pub object: String,
    pub deleted: bool,
}

impl DeleteReport {
    pub fn text(&self) -> String {
        let n = self.objects.iter().filter(|d| d.deleted).count();
        format!(
            "deleted {n} object(s), {} already absent, all gone after {:.1}s",
            self.objects.len() - n,
            self.seconds
        )
    }
}

/// `deployer delete`.
pub async fn run(c: &DeleteArgs) -> Result<DeleteReport, Error> {
    let manifests = manifests::load(&c.manifests.paths())?;
    let cluster = Cluster::connect(&c.cluster.connection()).await?;
    let start = Instant::now();
    let mut progress = Terminal::new();
    let deleted = apply::delete_all(&cluster, &manifests, c.timeout, &mut progress).await?;
    drop(progress);
    Ok(DeleteReport {
        command: "delete",
        namespace: cluster.namespace,
        objects: deleted
            .into_iter()
            .map(|(object, deleted)| Deleted { object, deleted })
            .collect(),
        seconds: start.elapsed().as_secs_f64(),
    })
}
