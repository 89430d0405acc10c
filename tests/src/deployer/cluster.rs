//! The server's objects as the cluster has them: its Deployment, ReplicaSets and Pods.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::DEPLOYMENT;
use crate::TestEnv;

/// The server's Deployment in the namespace.
pub async fn deployment(env: &TestEnv, ns: &str) -> Deployment {
    Api::<Deployment>::namespaced(env.client().await.unwrap(), ns)
        .get(DEPLOYMENT)
        .await
        .unwrap()
}

/// The image of the Deployment's (first) container.
pub fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

/// The server's objects of kind `K` (ReplicaSets, Pods) in the namespace, by the app label.
pub async fn server_objects<K>(env: &TestEnv, ns: &str) -> Vec<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(env.client().await.unwrap(), ns)
        .list(&ListParams::default().labels("app=celestial-bodies-classifier"))
        .await
        .unwrap()
        .items
}

/// The server's ReplicaSets of the namespace.
pub async fn replica_sets(env: &TestEnv, ns: &str) -> Vec<ReplicaSet> {
    server_objects(env, ns).await
}

/// The server's pods of the namespace.
pub async fn server_pods(env: &TestEnv, ns: &str) -> Vec<Pod> {
    server_objects(env, ns).await
}

/// A pod that is not terminating and whose containers are all ready.
pub fn serving(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs.iter().all(|c| c.ready))
}
