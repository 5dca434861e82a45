//! An index the DataJob cache keeps beside its store, updated by the same watch: the jobs of
//! each compute pool (so admitting a job or waking a pool's queue reads that pool's jobs, not
//! every cached job) and when the watch first delivered each job (its arrival, which orders a
//! pool's queue within one second of `creationTimestamp`).
//!
//! The store stays the truth: the index holds references, and [`JobIndex::jobs_in_pool`] reads
//! the objects from the store, skipping a reference the store no longer backs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::DataJob;
use crate::domain::admission::Arrivals;

/// Receives a cache's changes after they reached its store.
pub trait CacheIndex<K>: Send + Sync {
    /// `obj` was created or changed; `new` says that the store did not hold it before (this
    /// incarnation: same name and uid).
    fn applied(&self, obj: &K, new: bool);
    /// `obj` was deleted.
    fn deleted(&self, obj: &K);
    /// The watch listed its objects again: the store now holds exactly `objects`.
    fn relisted(&self, objects: &[Arc<K>]);
}

/// The DataJob cache's index: jobs by pool, arrivals by uid.
#[derive(Default)]
pub struct JobIndex {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_pool: HashMap<String, HashSet<ObjectRef<DataJob>>>,
    pool_of: HashMap<ObjectRef<DataJob>, String>,
    /// Arrivals not yet recorded in the job's status.
    arrivals: HashMap<String, Timestamp>,
    last_arrival: Option<Timestamp>,
}

impl Inner {
    fn place(&mut self, job: &DataJob) {
        let key = ObjectRef::from_obj(job);
        let pool = job.spec.compute_pool.clone();
        if self.pool_of.get(&key) == pool.as_ref() {
            return;
        }
        self.remove(&key);
        if let Some(pool) = pool {
            self.by_pool
                .entry(pool.clone())
                .or_default()
                .insert(key.clone());
            self.pool_of.insert(key, pool);
        }
    }

    fn remove(&mut self, key: &ObjectRef<DataJob>) {
        let Some(pool) = self.pool_of.remove(key) else {
            return;
        };
        if let Some(jobs) = self.by_pool.get_mut(&pool) {
            jobs.remove(key);
            if jobs.is_empty() {
                self.by_pool.remove(&pool);
            }
        }
    }

    /// Now, or just after the last arrival: arrivals are strictly increasing, in watch order.
    /// They are whole microseconds, the precision of the `status.arrivedAt` that records them:
    /// a recorded arrival compares with a noted one as it did before it was recorded (two
    /// arrivals in one microsecond would otherwise tie, or swap, once one of them is recorded).
    fn next_arrival(&mut self) -> Timestamp {
        let now = Timestamp::now();
        let now = Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now);
        let at = match self.last_arrival {
            Some(last) if now <= last => last
                .checked_add(SignedDuration::from_micros(1))
                .unwrap_or(last),
            _ => now,
        };
        self.last_arrival = Some(at);
        at
    }
}

impl JobIndex {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The jobs of `pool` that `store` holds.
    pub fn jobs_in_pool(&self, pool: &str, store: &Store<DataJob>) -> Vec<Arc<DataJob>> {
        let keys: Vec<ObjectRef<DataJob>> = self.with(|inner| {
            inner
                .by_pool
                .get(pool)
                .map(|jobs| jobs.iter().cloned().collect())
                .unwrap_or_default()
        });
        keys.iter()
            .filter_map(|key| store.get(key))
            .filter(|job| job.spec.compute_pool.as_deref() == Some(pool))
            .collect()
    }

    /// When the watch first delivered the job with `uid`, if it did (not a list) and the job's
    /// status does not record it yet.
    pub fn arrival(&self, uid: &str) -> Option<Timestamp> {
        self.with(|inner| inner.arrivals.get(uid).copied())
    }

    /// The arrivals of `jobs` that their statuses do not record yet, for the pool queue.
    pub fn arrivals_of(&self, jobs: &[Arc<DataJob>]) -> Arrivals {
        self.with(|inner| {
            jobs.iter()
                .filter_map(|job| {
                    let uid = job.metadata.uid.as_deref()?;
                    Some((uid.to_string(), *inner.arrivals.get(uid)?))
                })
                .collect()
        })
    }
}

impl CacheIndex<DataJob> for JobIndex {
    fn applied(&self, job: &DataJob, new: bool) {
        let uid = job.uid().unwrap_or_default();
        let recorded = job.status.as_ref().is_some_and(|s| s.arrived_at.is_some());
        self.with(|inner| {
            inner.place(job);
            if recorded {
                inner.arrivals.remove(&uid);
            } else if new {
                let at = inner.next_arrival();
                inner.arrivals.insert(uid, at);
            }
        });
    }

    fn deleted(&self, job: &DataJob) {
        self.with(|inner| {
            inner.remove(&ObjectRef::from_obj(job));
            inner.arrivals.remove(&job.uid().unwrap_or_default());
        });
    }

    /// Listed jobs were created before the list was read, so before any job the watch
    /// delivers next: each listed job that has no arrival yet gets one now, in the order of
    /// `creationTimestamp`, namespace and name (the best a list tells).
    fn relisted(&self, jobs: &[Arc<DataJob>]) {
        let mut unnoted: Vec<&Arc<DataJob>> = Vec::new();
        self.with(|inner| {
            let uids: HashSet<String> = jobs.iter().filter_map(|j| j.uid()).collect();
            inner.arrivals.retain(|uid, _| uids.contains(uid));
            inner.by_pool.clear();
            inner.pool_of.clear();
            for job in jobs {
                inner.place(job);
                let recorded = job.status.as_ref().is_some_and(|s| s.arrived_at.is_some());
                let noted = job
                    .metadata
                    .uid
                    .as_ref()
                    .is_some_and(|uid| inner.arrivals.contains_key(uid));
                if !recorded && !noted {
                    unnoted.push(job);
                }
            }
            unnoted.sort_by(|a, b| {
                let key = |j: &DataJob| {
                    (
                        j.metadata.creation_timestamp.as_ref().map(|t| t.0),
                        j.metadata.namespace.clone(),
                        j.metadata.name.clone(),
                    )
                };
                key(a).cmp(&key(b))
            });
            for job in unnoted {
                let at = inner.next_arrival();
                inner.arrivals.insert(job.uid().unwrap_or_default(), at);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;
    use serde_json::json;

    use super::*;

    fn job(name: &str, uid: &str, pool: Option<&str>) -> DataJob {
        serde_json::from_value(json!({
            "apiVersion": "datajob.dev/v1alpha1", "kind": "DataJob",
            "metadata": { "name": name, "namespace": "ns", "uid": uid },
            "spec": { "type": "nql-forecast", "input": { "nql": "x" }, "dataPlane": "dp",
                      "computePool": pool },
        }))
        .expect("job")
    }

    fn names(jobs: Vec<Arc<DataJob>>) -> Vec<String> {
        let mut names: Vec<String> = jobs.iter().map(|j| j.name_any()).collect();
        names.sort();
        names
    }

    #[test]
    fn jobs_are_found_by_pool_and_follow_deletes_moves_and_relists() {
        let mut writer: Writer<DataJob> = Writer::default();
        let store = writer.as_reader();
        let index = JobIndex::default();
        for j in [
            job("a", "1", Some("p")),
            job("b", "2", Some("p")),
            job("c", "3", Some("q")),
            job("d", "4", None),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(j.clone()));
            index.applied(&j, true);
        }
        assert_eq!(names(index.jobs_in_pool("p", &store)), ["a", "b"]);
        assert_eq!(names(index.jobs_in_pool("q", &store)), ["c"]);
        let gone = job("a", "1", Some("p"));
        writer.apply_watcher_event(&watcher::Event::Delete(gone.clone()));
        index.deleted(&gone);
        let moved = job("b", "2", Some("q"));
        writer.apply_watcher_event(&watcher::Event::Apply(moved.clone()));
        index.applied(&moved, false);
        assert!(index.jobs_in_pool("p", &store).is_empty());
        assert_eq!(names(index.jobs_in_pool("q", &store)), ["b", "c"]);
        index.relisted(&[Arc::new(job("c", "3", Some("q")))]);
        assert_eq!(names(index.jobs_in_pool("q", &store)), ["c"]);
    }

    #[test]
    fn arrivals_increase_in_watch_order_and_are_forgotten_once_recorded() {
        let index = JobIndex::default();
        let uids: Vec<String> = (0..50).map(|i| format!("uid-{i}")).collect();
        for uid in &uids {
            index.applied(&job(uid, uid, Some("p")), true);
        }
        let arrivals: Vec<Timestamp> = uids
            .iter()
            .map(|uid| index.arrival(uid).expect("arrived"))
            .collect();
        assert!(arrivals.windows(2).all(|w| w[0] < w[1]), "{arrivals:?}");
        for arrival in &arrivals {
            let recorded: MicroTime =
                serde_json::from_value(serde_json::to_value(MicroTime(*arrival)).expect("encode"))
                    .expect("decode");
            assert_eq!(recorded.0, *arrival, "recording an arrival keeps it exact");
        }
        index.applied(&job("known", "known", Some("p")), false);
        assert_eq!(
            index.arrival("known"),
            None,
            "a change to a known job is no arrival"
        );
        let mut recorded = job("uid-0", "uid-0", Some("p"));
        recorded.status = Some(crate::api::DataJobStatus {
            arrived_at: Some(MicroTime(arrivals[0])),
            ..Default::default()
        });
        index.applied(&recorded, false);
        assert_eq!(index.arrival("uid-0"), None);
    }

    #[test]
    fn listed_jobs_arrive_before_the_jobs_the_watch_delivers_next() {
        let index = JobIndex::default();
        let created = |name: &str, second: i64| {
            let mut j = job(name, name, Some("p"));
            j.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    Timestamp::from_second(second).expect("time"),
                ));
            Arc::new(j)
        };
        index.relisted(&[created("b", 7), created("a", 7), created("c", 6)]);
        index.applied(&job("d", "d", Some("p")), true);
        let order: Vec<Timestamp> = ["c", "a", "b", "d"]
            .iter()
            .map(|uid| index.arrival(uid).expect("noted"))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        let before = index.arrival("a");
        index.relisted(&[created("a", 7)]);
        assert_eq!(index.arrival("a"), before, "a relist keeps a noted arrival");
        assert_eq!(
            index.arrival("d"),
            None,
            "a job gone from the list is forgotten"
        );
    }
}
