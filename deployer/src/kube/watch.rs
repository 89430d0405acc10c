//! Following objects through the API server's watches (kube's runtime) instead of polling. A
//! watch re-establishes itself, with backoff, after a dropped connection or an API server restart:
//! the wait goes on (and says so on the progress line) instead of failing. Only answers that a
//! retry cannot change (401, 403, 404) end it.

use std::fmt::Debug;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::wait::Condition;
use kube::runtime::watcher::{self, Event, watch_object};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::error::{ApplyError, api_error, credential_problem};
use crate::progress::Progress;
use crate::support::error_chain;

/// The states of the object `name`: `Some` on every change, `None` once it is gone (or when it
/// does not exist). Errors are passed on (see [`check`]); the stream does not end.
pub fn object<K>(
    api: Api<K>,
    name: &str,
) -> impl Stream<Item = watcher::Result<Option<K>>> + Send + use<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watch_object(api, name).default_backoff()
}

/// A signal on every change of the objects `selector` matches, keeping `store` up to date.
pub fn changes<K>(
    api: Api<K>,
    selector: &str,
    writer: kube::runtime::reflector::store::Writer<K>,
) -> impl Stream<Item = watcher::Result<()>> + Send + use<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let config = watcher::Config::default().labels(selector);
    kube::runtime::reflector(writer, kube::runtime::watcher(api, config))
        .default_backoff()
        .map(|event: watcher::Result<Event<K>>| event.map(|_| ()))
}

/// A watch error: `Ok(message)` when the watch will re-establish itself (the message says so),
/// `Err` when retrying cannot help (the API server refused the credentials, the kubeconfig's exec
/// plugin failed, or the API server does not know the resource).
pub fn check(e: watcher::Error, object: &str) -> Result<String, ApplyError> {
    let inner = match e {
        watcher::Error::InitialListFailed(k)
        | watcher::Error::WatchStartFailed(k)
        | watcher::Error::WatchFailed(k) => k,
        other => {
            return Ok(format!(
                "{object}: watch interrupted ({other}); re-establishing it"
            ));
        }
    };
    match &inner {
        kube::Error::Api(s) if matches!(s.code, 401 | 403 | 404) => {
            Err(api_error(object, "watch", inner, ""))
        }
        // the kubeconfig's exec plugin failed to refresh the token: retrying will not fix it
        _ if credential_problem(&inner, None).is_some() => {
            Err(api_error(object, "watch", inner, ""))
        }
        _ => Ok(format!(
            "{object}: watch interrupted ({}); re-establishing it",
            error_chain(&inner)
        )),
    }
}

/// Waits until the object `name` (`object` in messages) meets `condition` (kube's
/// [`Condition`], e.g. `conditions::is_deleted`): `Ok(true)` when it does, `Ok(false)` at
/// `deadline`.
pub async fn until<K>(
    api: Api<K>,
    name: &str,
    object: &str,
    condition: impl Condition<K>,
    deadline: Instant,
    progress: &mut dyn Progress,
) -> Result<bool, ApplyError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut states = std::pin::pin!(self::object(api, name));
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, states.next()).await else {
            return Ok(false);
        };
        match next.expect("a watch does not end") {
            Ok(state) if condition.matches_object(state.as_ref()) => return Ok(true),
            Ok(_) => {}
            Err(e) => progress.set(&check(e, object)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: format!("HTTP {code}"),
            ..Default::default()
        }))
    }

    #[test]
    fn refusals_end_a_watch_and_outages_do_not() {
        for code in [401, 403, 404] {
            let e = watcher::Error::InitialListFailed(api(code));
            assert!(check(e, "Deployment/d").is_err(), "{code}");
        }
        for e in [
            watcher::Error::InitialListFailed(api(500)),
            watcher::Error::WatchStartFailed(api(503)),
            watcher::Error::WatchFailed(api(429)),
            watcher::Error::NoResourceVersion,
        ] {
            let msg = check(e, "Deployment/d").unwrap();
            assert!(
                msg.starts_with("Deployment/d: watch interrupted (")
                    && msg.ends_with("re-establishing it"),
                "{msg}"
            );
        }
    }
}
