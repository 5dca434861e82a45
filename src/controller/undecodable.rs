//! Objects the operator cannot decode (a field of the wrong type, a number beyond its Rust
//! type: written through an older or looser schema). The DataJob and ComputePool watches read
//! through kube's `DeserializeGuard`, so one such object does not fail the watch for all the
//! others: [`split`] takes it out of the stream and hands its metadata here, where it gets a
//! Warning event and `Stalled=True` with reason `InvalidSpec`; a deleted DataJob among them still
//! has its executor pods torn down (by its uid label, their result finalizer removed) before its
//! finalizer is released.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
};
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::json;
use tracing::{info, warn};

use crate::api::{ComputePool, DataJob};
use crate::domain::{EventKind, Reason};
use crate::executor::{self, RESULT_FINALIZER, result::clean};

use super::FINALIZER;
use super::events::{Note, Publisher};
use super::result_finalizer::release;

/// How often a deleted undecodable job's teardown is looked at.
const TEARDOWN_POLL: Duration = Duration::from_secs(2);

/// One object that failed to decode.
#[derive(Debug)]
pub struct Undecodable {
    /// DataJob or ComputePool.
    pub resource: ApiResource,
    /// Its metadata and the decoder's error.
    pub object: InvalidObject,
}

/// Takes undecodable objects out of a guarded watch event, reporting them to `report`; the
/// decodable rest goes on to the cache. An object that stops decoding is removed from the cache
/// (a `Delete` of a stand-in with its name, made by `stand_in`), so no controller acts on its
/// last decodable version.
pub fn split<K>(
    event: watcher::Event<DeserializeGuard<K>>,
    report: &UnboundedSender<Undecodable>,
    stand_in: fn(ObjectMeta) -> Option<K>,
) -> Option<watcher::Event<K>>
where
    K: Resource<DynamicType = ()>,
{
    let send = |object: InvalidObject| {
        // A closed channel means the operator is shutting down.
        let _ = report.unbounded_send(Undecodable {
            resource: ApiResource::erase::<K>(&()),
            object,
        });
    };
    match event {
        watcher::Event::Apply(g) => match g.0 {
            Ok(object) => Some(watcher::Event::Apply(object)),
            Err(object) => {
                let forget = stand_in(object.metadata.clone()).map(watcher::Event::Delete);
                send(object);
                forget
            }
        },
        watcher::Event::InitApply(g) => match g.0 {
            Ok(object) => Some(watcher::Event::InitApply(object)),
            Err(object) => {
                send(object);
                None
            }
        },
        watcher::Event::Delete(g) => match g.0 {
            Ok(object) => Some(watcher::Event::Delete(object)),
            Err(object) => stand_in(object.metadata).map(watcher::Event::Delete),
        },
        watcher::Event::Init => Some(watcher::Event::Init),
        watcher::Event::InitDone => Some(watcher::Event::InitDone),
    }
}

/// A DataJob with `metadata` and a placeholder spec: only its name reaches the cache, to remove
/// the entry.
pub fn job_stand_in(metadata: ObjectMeta) -> Option<DataJob> {
    let spec = json!({ "type": "nql-forecast", "input": { "nql": "-" }, "dataPlane": "-" });
    let mut job = DataJob::new("", serde_json::from_value(spec).ok()?);
    job.metadata = metadata;
    Some(job)
}

/// A ComputePool with `metadata` and an empty spec (see [`job_stand_in`]).
pub fn pool_stand_in(metadata: ObjectMeta) -> Option<ComputePool> {
    let mut pool = ComputePool::new("", serde_json::from_value(json!({})).ok()?);
    pool.metadata = metadata;
    Some(pool)
}

/// Handles undecodable objects until the stream ends.
pub async fn run(
    client: Client,
    instance: Option<String>,
    reports: UnboundedReceiver<Undecodable>,
) {
    let publisher = Publisher::new(client.clone(), crate::OPERATOR_NAME, instance.as_deref());
    let state = Arc::new(State::default());
    reports
        .for_each(|report| {
            let (client, publisher, state) = (client.clone(), publisher.clone(), state.clone());
            async move {
                let meta = report.object.metadata.clone();
                if meta.deletion_timestamp.is_some() {
                    if report.resource.kind == DataJob::kind(&())
                        && meta.finalizers.iter().flatten().any(|f| f == FINALIZER)
                        && state.start_teardown(&meta)
                    {
                        tokio::spawn(tear_down(client, report, state));
                    }
                    return;
                }
                if state.first_report(&meta) {
                    report_stalled(&client, &publisher, &report).await;
                }
            }
        })
        .await;
}

#[derive(Default)]
struct State {
    /// Generation last reported per uid.
    reported: Mutex<HashMap<String, i64>>,
    /// uids whose teardown runs.
    tearing_down: Mutex<BTreeSet<String>>,
}

impl State {
    fn first_report(&self, meta: &ObjectMeta) -> bool {
        let uid = meta.uid.clone().unwrap_or_default();
        let generation = meta.generation.unwrap_or(0);
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        reported.insert(uid, generation) != Some(generation)
    }

    fn start_teardown(&self, meta: &ObjectMeta) -> bool {
        let uid = meta.uid.clone().unwrap_or_default();
        let mut running = self
            .tearing_down
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        running.insert(uid)
    }

    fn end_teardown(&self, uid: &str) {
        let mut running = self
            .tearing_down
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        running.remove(uid);
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        reported.remove(uid);
    }
}

fn api(client: &Client, report: &Undecodable) -> Api<DynamicObject> {
    match &report.object.metadata.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &report.resource),
        None => Api::all_with(client.clone(), &report.resource),
    }
}

fn key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// A Warning event and `Stalled=True`/`Ready=False` with reason `InvalidSpec`.
async fn report_stalled(client: &Client, publisher: &Publisher, report: &Undecodable) {
    let meta = &report.object.metadata;
    let kind = &report.resource.kind;
    let message = format!(
        "the operator cannot read this {kind}: {}; fix the object (or delete it: its executor pods are still torn down)",
        clean(&report.object.error, 512)
    );
    warn!(object = %key(meta), %kind, error = %report.object.error, "undecodable object");
    let reference = ObjectReference {
        api_version: Some(report.resource.api_version.clone()),
        kind: Some(kind.clone()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectReference::default()
    };
    let note = Note {
        kind: EventKind::Warning,
        reason: Reason::InvalidSpec.as_str(),
        action: "Decode",
        message: &message,
    };
    if let Err(error) = publisher.publish(&reference, &note).await {
        warn!(object = %key(meta), %error, "failed to publish the InvalidSpec event");
    }
    let now = Time(jiff::Timestamp::now());
    let condition = |type_: &str, status: &str| {
        json!({
            "type": type_, "status": status, "reason": Reason::InvalidSpec.as_str(),
            "message": message, "lastTransitionTime": now,
            "observedGeneration": meta.generation,
        })
    };
    let patch = json!({ "status": { "conditions": [
        condition("Ready", "False"),
        condition("Reconciling", "False"),
        condition("Stalled", "True"),
    ]}});
    let name = meta.name.clone().unwrap_or_default();
    if let Err(error) = api(client, report)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        warn!(object = %key(meta), %error, "failed to record InvalidSpec in status");
    }
}

/// Deletes `listed` executor pods (those not already terminating) and removes their result
/// finalizer; a failure is logged and the next round tries again.
async fn delete_and_release(pods: &Api<Pod>, namespace: &str, listed: &[Pod]) {
    for pod in listed {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_none()
            && let Err(error) = pods.delete(&name, &DeleteParams::default()).await
        {
            warn!(pod = %name, %error, "failed to delete an executor pod");
            continue;
        }
        let finalizers = pod.metadata.finalizers.clone().unwrap_or_default();
        if finalizers.iter().any(|f| f == RESULT_FINALIZER)
            && let Err(error) = release(pods, namespace, &name, Some(finalizers)).await
        {
            warn!(%error, "an executor pod of an undecodable DataJob keeps its result finalizer");
        }
    }
}

/// Deletes a deleted undecodable job's executor pods (removing their result finalizer), then
/// releases its finalizer.
async fn tear_down(client: Client, report: Undecodable, state: Arc<State>) {
    let meta = report.object.metadata.clone();
    let uid = meta.uid.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector = executor::job_pods_selector(&uid);
    loop {
        match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) if list.items.is_empty() => break,
            Ok(list) => delete_and_release(&pods, &namespace, &list.items).await,
            Err(error) => warn!(job = %key(&meta), %error, "failed to list executor pods"),
        }
        tokio::time::sleep(TEARDOWN_POLL).await;
    }
    let finalizers: Vec<&String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch = json!({ "metadata": {
        "finalizers": finalizers, "resourceVersion": meta.resource_version,
    }});
    let name = meta.name.clone().unwrap_or_default();
    match api(&client, &report)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => info!(job = %key(&meta), "executor pods of an undecodable DataJob gone; released"),
        // A newer version exists: the watch reports it and the teardown starts again.
        Err(error) => warn!(job = %key(&meta), %error, "failed to release an undecodable DataJob"),
    }
    state.end_teardown(&uid);
}
