//! Waiting on the API server: watches until an object meets a condition or is gone, and
//! bounded polling for what a watch cannot express. Never a bare sleep.

use std::fmt::{Debug, Display};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::watcher::watch_object;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

/// How long a test waits for one expected change.
pub const STEP: Duration = Duration::from_secs(90);

/// How often [`eventually`] asks again.
const POLL: Duration = Duration::from_millis(250);

/// Watches the object `name` of `api` until `cond` holds for it, and returns it. Panics after
/// `timeout`, showing the last state seen (or that the object did not exist).
pub async fn wait_for<K, F>(api: &Api<K>, name: &str, timeout: Duration, cond: F) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
    F: Fn(&K) -> bool,
{
    match watch_until(api, name, timeout, |obj: Option<&K>| obj.is_some_and(&cond)).await {
        Ok(obj) => obj.expect("condition holds only for an existing object"),
        Err(last) => panic!(
            "timed out after {timeout:?} waiting for {} {name} to meet the condition; last seen: {last}",
            K::kind(&Default::default())
        ),
    }
}

/// Watches the object `name` of `api` until it does not exist. Panics after `timeout`, showing
/// the last state seen.
pub async fn wait_deleted<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    if let Err(last) = watch_until(api, name, timeout, |obj: Option<&K>| obj.is_none()).await {
        panic!(
            "timed out after {timeout:?} waiting for {} {name} to be deleted; last seen: {last}",
            K::kind(&Default::default())
        );
    }
}

/// Ok(the object) once `done` holds, Err(description of the last state) on timeout.
async fn watch_until<K, D>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    done: D,
) -> Result<Option<K>, String>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    D: Fn(Option<&K>) -> bool,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = Box::pin(watch_object(api.clone(), name));
    let mut last = String::from("nothing (no answer from the watch yet)");
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(last),
            Ok(None) => return Err(format!("the watch ended; before that: {last}")),
            Ok(Some(Ok(obj))) => {
                if done(obj.as_ref()) {
                    return Ok(obj);
                }
                last = match &obj {
                    Some(o) => format!("{o:#?}"),
                    None => "the object does not exist".to_string(),
                };
            }
            Ok(Some(Err(e))) => {
                last = format!("watch error: {e}; before that: {last}");
                // The watcher restarts by itself; do not spin on a persistent error.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Waits until the CustomResourceDefinition `name` is Established (its API is served).
pub async fn wait_established(client: &Client, name: &str, timeout: Duration) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_for(&crds, name, timeout, |crd: &CustomResourceDefinition| {
        let conditions = crd.status.as_ref().and_then(|s| s.conditions.as_ref());
        condition_is_true!(conditions, "Established")
    })
    .await;
}

/// Asks `probe` every 250 ms until it answers `Some`, and returns that. Panics after `timeout`
/// with "timed out after ... waiting for `what`". For what a single-object watch cannot
/// express: lists, events, permissions that take effect asynchronously.
pub async fn eventually<T>(
    what: impl Display,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
