//! The driver pod's result finalizer (`executor::RESULT_FINALIZER`) in the glue: removing it
//! ([`release`]), and the orphans nobody else releases ([`release_orphans`]).
//!
//! When it may go is decided in the pure core (`domain::release`); the job controller removes it
//! in apply, after the status write of the pass, and during a DataJob's deletion; the
//! undecodable-job teardown removes it from the pods it deletes. What no DataJob pass can reach
//! is a pod whose DataJob is gone (someone removed the DataJob's `datajob.dev/teardown`
//! finalizer by hand, then garbage collection deleted the pod): it would stay `Terminating` for
//! ever. That check lives here, beside the pod cache that sees such a pod (`controller::caches`),
//! and runs on the leader with the controllers: every change of a cached pod, and every DataJob
//! that leaves the cache, is looked at; a terminating pod with the finalizer whose owning DataJob
//! is neither cached nor on the API server (one metadata GET, which also finds an undecodable
//! DataJob) is released.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Stream, StreamExt, stream};
use json_patch::jsonptr::PointerBuf;
use json_patch::{PatchOperation, RemoveOperation, TestOperation};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use super::datajob::Stores;
use super::kube_util::is_not_found;
use crate::api::DataJob;
use crate::domain;
use crate::executor::{self, RESULT_FINALIZER};

/// How long to wait before an orphan whose release failed is looked at again.
const ORPHAN_RETRY: Duration = Duration::from_secs(10);

/// Removing a pod's result finalizer failed.
#[derive(Debug, thiserror::Error)]
#[error("failed to remove the result finalizer of executor pod {pod}: {source}")]
pub struct ReleaseError {
    /// namespace/name of the pod.
    pub pod: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

/// Removes the result finalizer of pod `name`, whose finalizers are `known` (as cached or
/// listed; None reads them). One JSON patch tests the finalizer at its index and removes it,
/// so other finalizers are never touched, and a stale index fails instead of removing
/// another one: the pod is then read once and the patch sent again. Returns whether a patch
/// removed it (false: the pod is gone or no longer carries it).
pub async fn release(
    pods: &Api<Pod>,
    namespace: &str,
    name: &str,
    known: Option<Vec<String>>,
) -> Result<bool, ReleaseError> {
    let failed = |source| ReleaseError {
        pod: format!("{namespace}/{name}"),
        source,
    };
    let mut known = known;
    for attempt in 0..2 {
        let finalizers = match known.take() {
            Some(finalizers) => finalizers,
            None => match pods.get_opt(name).await.map_err(failed)? {
                Some(pod) => pod.finalizers().to_vec(),
                None => return Ok(false),
            },
        };
        let Some(index) = finalizers.iter().position(|f| f == RESULT_FINALIZER) else {
            return Ok(false);
        };
        let patch: Patch<()> = Patch::Json(remove_at(index));
        match pods.patch(name, &PatchParams::default(), &patch).await {
            Ok(_) => return Ok(true),
            Err(source) if is_not_found(&source) => return Ok(false),
            // The index was stale (the test failed) or the request failed: read the pod again.
            Err(_) if attempt == 0 => continue,
            Err(source) => return Err(failed(source)),
        }
    }
    Ok(false)
}

/// The JSON patch that removes the result finalizer at `index`, if it is still there.
fn remove_at(index: usize) -> json_patch::Patch {
    let path = PointerBuf::from_tokens([
        "metadata".to_string(),
        "finalizers".to_string(),
        index.to_string(),
    ]);
    json_patch::Patch(vec![
        PatchOperation::Test(TestOperation {
            path: path.clone(),
            value: serde_json::Value::String(RESULT_FINALIZER.to_string()),
        }),
        PatchOperation::Remove(RemoveOperation { path }),
    ])
}

/// What makes an orphan check look at pods.
enum Look {
    /// A pod changed (or is looked at again after a failed release).
    Pod(Arc<Pod>),
    /// A DataJob changed or left the cache.
    Job(Arc<DataJob>),
}

/// Releases terminating pods with the result finalizer whose DataJob is gone, from the pod
/// and DataJob changes of the caches (`pods`, `jobs`), until the streams end.
pub async fn release_orphans(
    client: Client,
    stores: Stores,
    pods: impl Stream<Item = Arc<Pod>> + Send + 'static,
    jobs: impl Stream<Item = Arc<DataJob>> + Send + 'static,
) {
    let (retry, retries) = mpsc::unbounded::<Arc<Pod>>();
    let looks = stream::select_all([
        pods.map(Look::Pod).boxed(),
        jobs.map(Look::Job).boxed(),
        retries.map(Look::Pod).boxed(),
    ]);
    looks
        .for_each(|look| {
            let (client, stores, retry) = (client.clone(), stores.clone(), retry.clone());
            async move {
                let pods = match look {
                    Look::Pod(pod) => vec![pod],
                    Look::Job(job) => left_pods(&stores, &job),
                };
                for pod in pods {
                    if let Err(error) = check(&client, &stores, &pod).await {
                        warn!(%error, "an orphaned executor pod keeps its result finalizer; retrying");
                        let retry = retry.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(ORPHAN_RETRY).await;
                            // A closed channel means the operator is shutting down.
                            let _ = retry.unbounded_send(pod);
                        });
                    }
                }
            }
        })
        .await;
}

/// The cached pods of `job` when it is no longer in the cache (it was deleted), found by their
/// deterministic names; none while it is cached.
fn left_pods(stores: &Stores, job: &DataJob) -> Vec<Arc<Pod>> {
    let cached = stores.jobs.get(&ObjectRef::from_obj(job));
    if cached.is_some_and(|c| c.uid() == job.uid()) {
        return Vec::new();
    }
    let (Some(namespace), Some(status)) = (job.namespace(), job.status.as_ref()) else {
        return Vec::new();
    };
    let Some(executor) = &status.executor else {
        return Vec::new();
    };
    let cluster_type = status.cluster_type.unwrap_or_default();
    executor::pod_slots(executor, cluster_type, domain::workers(&job.spec))
        .iter()
        .filter_map(|slot| {
            stores
                .pods
                .get(&ObjectRef::new(&slot.name).within(&namespace))
        })
        .collect()
}

/// Releases `pod` when it is terminating, carries the result finalizer and its DataJob is gone.
async fn check(client: &Client, stores: &Stores, pod: &Pod) -> Result<(), ReleaseError> {
    let holds = pod.finalizers().iter().any(|f| f == RESULT_FINALIZER);
    if pod.metadata.deletion_timestamp.is_none() || !holds {
        return Ok(());
    }
    let (Some(namespace), name) = (pod.namespace(), pod.name_any()) else {
        return Ok(());
    };
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.kind == "DataJob" && o.controller == Some(true));
    if let Some(owner) = owner {
        let key = ObjectRef::<DataJob>::new(&owner.name).within(&namespace);
        if stores
            .jobs
            .get(&key)
            .is_some_and(|j| j.uid().as_deref() == Some(&owner.uid))
        {
            // The job controller releases it.
            return Ok(());
        }
        let jobs: Api<DataJob> = Api::namespaced(client.clone(), &namespace);
        let live = jobs
            .get_metadata_opt(&owner.name)
            .await
            .map_err(|source| ReleaseError {
                pod: format!("{namespace}/{name}"),
                source,
            })?;
        if live.is_some_and(|j| j.uid().as_deref() == Some(&owner.uid)) {
            // The job exists (an undecodable one is torn down by its own handler).
            return Ok(());
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    if release(&pods, &namespace, &name, Some(pod.finalizers().to_vec())).await? {
        info!(pod = %format!("{namespace}/{name}"), "released an executor pod whose DataJob is gone");
    }
    Ok(())
}
