//! The recorder: watches every DataJob and executor pod of the run's namespace and keeps what
//! the invariants need. State changes are checked against the state table of the contract
//! (DESIGN.md section 3, with `pending -> failed` from docs/design.md); a change seen across a
//! re-list of the watch (events may have been skipped) only needs to be reachable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use datajob_operator::api::DataJob;
use datajob_operator::executor::{self, LABEL_JOB_UID};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

pub use crate::table::{is_edge, is_reachable, is_terminal};

/// What the recorder knows of one job.
#[derive(Clone, Debug, Default)]
pub struct JobRecord {
    /// uid.
    pub uid: String,
    /// Current state.
    pub state: String,
    /// status.executor, once recorded.
    pub executor: Option<String>,
    /// Every executor name ever recorded in status.
    pub executors: BTreeSet<String>,
    /// Transitions that break the table.
    pub illegal: Vec<String>,
    /// Whether the object is gone.
    pub deleted: bool,
}

/// What the recorder knows of one pod.
#[derive(Clone, Debug)]
pub struct PodRecord {
    /// Phase.
    pub phase: String,
    /// Whether it is gone.
    pub deleted: bool,
}

/// Everything recorded.
#[derive(Default)]
pub struct Record {
    /// Jobs by name.
    pub jobs: BTreeMap<String, JobRecord>,
    /// Pods by name (the last object with that name).
    pub pods: BTreeMap<String, PodRecord>,
    /// Distinct pod uids seen per pod name.
    pub pod_uids: HashMap<String, BTreeSet<String>>,
    /// Executor names (pod name without its role suffix) seen per job uid.
    pub pod_executors: HashMap<String, BTreeSet<String>>,
    /// Jobs seen `cancelled`, or gone after a delete, while one of their pods still existed
    /// (a fresh list after).
    pub cancelled_with_pods: BTreeSet<String>,
    /// Times a watch re-listed after the first list.
    pub relists: usize,
}

/// The shared record.
pub type Shared = Arc<Mutex<Record>>;

fn executor_of(pod_name: &str) -> String {
    if let Some(stripped) = pod_name.strip_suffix("-driver") {
        return stripped.to_string();
    }
    match pod_name.rfind("-worker-") {
        Some(i) => pod_name[..i].to_string(),
        None => pod_name.to_string(),
    }
}

fn state_of(job: &DataJob) -> String {
    job.status
        .as_ref()
        .and_then(|s| s.state)
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

/// Starts the watches; returns the shared record.
pub fn start(client: &Client, namespace: &str) -> Shared {
    let record: Shared = Arc::new(Mutex::new(Record::default()));
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    tokio::spawn(watch_jobs(jobs, pods.clone(), record.clone()));
    tokio::spawn(watch_pods(pods, record.clone()));
    record
}

async fn watch_jobs(jobs: Api<DataJob>, pods: Api<Pod>, record: Shared) {
    let mut lists = 0;
    let mut events = watcher(jobs, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let (job, deleted, across_relist) = match event {
            watcher::Event::Init => {
                lists += 1;
                if lists > 1 {
                    record.lock().expect("record").relists += 1;
                }
                continue;
            }
            watcher::Event::InitDone => continue,
            // Seen in a re-list: the changes since the watch broke were not seen one by one.
            watcher::Event::InitApply(job) => (job, false, lists > 1),
            watcher::Event::Apply(job) => (job, false, false),
            watcher::Event::Delete(job) => (job, true, false),
        };
        let name = job.name_any();
        let state = state_of(&job);
        let executor = job.status.as_ref().and_then(|s| s.executor.clone());
        let became_cancelled = {
            let mut r = record.lock().expect("record");
            let entry = r.jobs.entry(name.clone()).or_default();
            entry.uid = job.uid().unwrap_or_default();
            entry.deleted = deleted;
            let previous = entry.state.clone();
            let mut became_cancelled = false;
            if state != previous && !(state.is_empty() && deleted) {
                let legal = if across_relist {
                    is_reachable(&previous, &state)
                } else {
                    is_edge(&previous, &state)
                };
                if !legal {
                    entry.illegal.push(format!("{previous:?} -> {state:?}"));
                }
                became_cancelled = state == "cancelled";
                entry.state = state;
            }
            if let Some(executor) = executor {
                entry.executors.insert(executor.clone());
                entry.executor = Some(executor);
            }
            // A deleted job is released by its finalizer only once its pods are gone.
            (became_cancelled || deleted).then(|| entry.uid.clone())
        };
        if let Some(uid) = became_cancelled {
            let pods = pods.clone();
            let record = record.clone();
            tokio::spawn(async move {
                // A quorum read after `cancelled` was written: any pod found existed then (or
                // was created after, which is as wrong).
                let selector = executor::job_pods_selector(&uid);
                loop {
                    match pods.list(&ListParams::default().labels(&selector)).await {
                        Ok(list) => {
                            if !list.items.is_empty() {
                                record
                                    .lock()
                                    .expect("record")
                                    .cancelled_with_pods
                                    .insert(name);
                            }
                            return;
                        }
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
                    }
                }
            });
        }
    }
}

async fn watch_pods(pods: Api<Pod>, record: Shared) {
    let config = watcher::Config::default().labels(&executor::managed_pods_selector());
    let mut events = watcher(pods, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let (pod, deleted) = match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => (pod, false),
            watcher::Event::Delete(pod) => (pod, true),
            watcher::Event::Init | watcher::Event::InitDone => continue,
        };
        let name = pod.name_any();
        let job_uid = pod.labels().get(LABEL_JOB_UID).cloned().unwrap_or_default();
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let mut r = record.lock().expect("record");
        r.pod_uids
            .entry(name.clone())
            .or_default()
            .insert(pod.uid().unwrap_or_default());
        r.pod_executors
            .entry(job_uid)
            .or_default()
            .insert(executor_of(&name));
        r.pods.insert(name, PodRecord { phase, deleted });
    }
}
