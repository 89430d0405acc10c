//! The stand-in's main loop: a watch on every Service, each event reconciled in turn.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;

use super::reconcile::reconcile;
use super::state::{State, key_of};
use super::{LbConfig, LbError, READY_LINE};

/// Runs the stand-in until `shutdown` resolves or the watch fails for good.
pub async fn run(
    client: Client,
    cfg: LbConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LbError> {
    let api: Api<Service> = Api::all(client.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "testenv-lb".into(),
            instance: None,
        },
    );
    let mut state = State::default();
    // Services seen during a (re)list, to drop the ones that disappeared meanwhile.
    let mut relisting: Option<Vec<String>> = None;
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    tokio::pin!(shutdown);
    let mut announced = false;
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            ev = stream.try_next() => ev,
        };
        let event = match event {
            Ok(Some(ev)) => ev,
            Ok(None) => return Ok(()),
            Err(e) => {
                // the watcher re-lists by itself on the next poll; back off a little
                tracing::warn!(error = %e, "watch error; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match event {
            watcher::Event::Init => relisting = Some(Vec::new()),
            watcher::Event::InitApply(svc) => {
                if let Some(seen) = relisting.as_mut() {
                    seen.push(key_of(&svc));
                }
                reconcile(&client, &recorder, &cfg, &mut state, &svc).await;
            }
            watcher::Event::InitDone => {
                if let Some(seen) = relisting.take() {
                    let gone: Vec<String> = state
                        .addresses
                        .keys()
                        .filter(|k| !seen.contains(k))
                        .cloned()
                        .collect();
                    for k in gone {
                        state.release(&k);
                    }
                }
                if !announced {
                    tracing::info!("{READY_LINE}");
                    announced = true;
                }
            }
            watcher::Event::Apply(svc) => {
                reconcile(&client, &recorder, &cfg, &mut state, &svc).await
            }
            watcher::Event::Delete(svc) => state.release(&key_of(&svc)),
        }
    }
}
