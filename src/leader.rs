//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one of several operator
//! replicas writes to the cluster. The rules follow client-go's leader election, which is
//! safe against clock skew and hung connections:
//!
//! - **Expiry is judged locally.** A candidate never compares the holder's `renewTime` with its
//!   own wall clock. It remembers when (on its own monotonic clock) it last saw the Lease
//!   change (its resourceVersion); the Lease is free once it has not changed for a whole
//!   `leaseDurationSeconds` since then. A holder whose clock is off therefore cannot make a
//!   candidate take over early.
//! - **Every request is bounded.** A renewal attempt may take the time left until the renew
//!   deadline and no more (an acquisition, the renew deadline), so a hung connection cannot
//!   keep a leader believing it leads, and a slow API server is not mistaken for a lost one.
//! - **The leader fences itself.** [`Fence::allows_writes`] turns false at `renew deadline`
//!   after the start of the last successful renewal, a deadline shorter than the lease
//!   duration, and it is checked against the clock on every write (see [`crate::client`]). A
//!   standby can take over only a full lease duration after it saw that renewal, so no write
//!   of the old leader is sent once another replica may lead, even when the old leader was
//!   frozen (SIGSTOP, a paused VM) and its timers fire late.
//! - Writes to the Lease are replaces guarded by its resourceVersion: of two candidates that
//!   saw the same Lease, only one can win.
//!
//! Why not kube-lease-manager (0.13, which supports kube 5): it judges expiry as the holder's
//! `renewTime` plus the duration against the local wall clock (the rule above avoids), bounds
//! no request with a timeout, and renews with an unconditional patch. See docs/resilience.md.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;
use tracing::{info, warn};

/// Errors of the election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, creating or updating the Lease failed.
    #[error("failed to {action} lease {lease}: {source}")]
    Lease {
        /// What was attempted.
        action: &'static str,
        /// namespace/name of the Lease.
        lease: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A request to the API server did not answer in time.
    #[error("failed to {action} lease {lease}: no answer within {timeout:?}")]
    Timeout {
        /// What was attempted.
        action: &'static str,
        /// namespace/name of the Lease.
        lease: String,
        /// The request's timeout.
        timeout: Duration,
    },
    /// The leader could not renew before its renew deadline, or another replica took over.
    #[error("lost lease {lease}: {why}")]
    Lost {
        /// namespace/name of the Lease.
        lease: String,
        /// What happened.
        why: String,
    },
}

/// Timing of the election (client-go's names and, by default, its proportions 15/10/2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease that does not change stays held (written as `leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How long the leader keeps writing after the start of its last successful renewal.
    /// Shorter than `lease_duration`; the difference is the margin for writes in flight.
    pub renew_deadline: Duration,
    /// Pause between the starts of two attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Timing {
    /// The timing for a lease duration: renew deadline 2/3 of it, retry period 2/15 of it.
    pub fn for_lease_duration(lease_duration: Duration) -> Self {
        let lease_duration = lease_duration.max(Duration::from_secs(2));
        Timing {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: (lease_duration * 2 / 15).max(Duration::from_millis(100)),
        }
    }
}

/// Whether this process may write to the cluster now. Cloned into the API client (which checks
/// it on every write) and shared with the elector (which extends it on every renewal).
#[derive(Clone, Debug)]
pub struct Fence {
    /// None: never leads; Some(None): always allowed (no election); Some(Some(t)): until t.
    until: Arc<Mutex<Until>>,
}

#[derive(Clone, Copy, Debug)]
enum Until {
    Never,
    Always,
    Instant(Instant),
}

impl Fence {
    /// A fence that always allows writes (a single replica, no election).
    pub fn open() -> Self {
        Fence {
            until: Arc::new(Mutex::new(Until::Always)),
        }
    }

    /// A fence that allows no writes until the elector extends it.
    pub fn closed() -> Self {
        Fence {
            until: Arc::new(Mutex::new(Until::Never)),
        }
    }

    /// Whether a write may be sent now.
    pub fn allows_writes(&self) -> bool {
        match *self.until.lock().unwrap_or_else(|e| e.into_inner()) {
            Until::Never => false,
            Until::Always => true,
            Until::Instant(until) => Instant::now() < until,
        }
    }

    fn extend_to(&self, until: Instant) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Until::Instant(until);
    }

    fn close(&self) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Until::Never;
    }

    /// When writes stop being allowed, if they are allowed until a deadline.
    fn deadline(&self) -> Option<Instant> {
        match *self.until.lock().unwrap_or_else(|e| e.into_inner()) {
            Until::Instant(until) => Some(until),
            _ => None,
        }
    }
}

/// What a candidate last saw of the Lease, and when (monotonic clock).
#[derive(Clone, Debug)]
struct Observed {
    resource_version: Option<String>,
    holder: Option<String>,
    duration: Duration,
    at: Instant,
}

/// The outcome of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This candidate holds the Lease (acquired or renewed).
    Held,
    /// Another candidate holds it, and it has not expired by this candidate's observation.
    HeldBy(String),
    /// Another candidate wrote the Lease first; try again.
    Raced,
}

/// One candidate in the election.
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timing: Timing,
    fence: Fence,
    observed: Mutex<Option<Observed>>,
}

impl LeaderElector {
    /// A candidate `identity` for the Lease `namespace/name`. `fence` is closed until this
    /// candidate acquires the Lease; `client` must not be fenced by it.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
        fence: Fence,
    ) -> Self {
        fence.close();
        LeaderElector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            fence,
            observed: Mutex::new(None),
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Runs one API request with a timeout.
    async fn bounded<T>(
        &self,
        action: &'static str,
        timeout: Duration,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(Error::Lease {
                action,
                lease: self.lease(),
                source,
            }),
            Err(_) => Err(Error::Timeout {
                action,
                lease: self.lease(),
                timeout,
            }),
        }
    }

    /// Remembers what was read; the observation time moves only when the Lease changed.
    fn observe(&self, lease: &Lease, now: Instant) -> Observed {
        let spec = lease.spec.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(self.timing.lease_duration);
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        let version = lease.metadata.resource_version.clone();
        let at = match observed.as_ref() {
            Some(o) if o.resource_version == version => o.at,
            _ => now,
        };
        let current = Observed {
            resource_version: version,
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            duration,
            at,
        };
        *observed = Some(current.clone());
        current
    }

    /// Tries once to acquire or renew the Lease. `timeout` bounds each request.
    pub async fn try_acquire_or_renew(&self, timeout: Duration) -> Result<Attempt, Error> {
        let started = Instant::now();
        let existing = self
            .bounded("read", timeout, self.api.get_opt(&self.name))
            .await?;
        let now_wall = Timestamp::now();
        let Some(mut lease) = existing else {
            return self.create(now_wall, started, timeout).await;
        };
        let observed = self.observe(&lease, Instant::now());
        let spec = lease.spec.clone().unwrap_or_default();
        let held_by_me = observed.holder.as_deref() == Some(self.identity.as_str());
        if !held_by_me
            && let Some(holder) = &observed.holder
            && observed.at + observed.duration > Instant::now()
        {
            return Ok(Attempt::HeldBy(holder.clone()));
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(if held_by_me {
            self.spec(
                spec.acquire_time.map(|t| t.0).unwrap_or(now_wall),
                now_wall,
                transitions,
            )
        } else {
            self.spec(now_wall, now_wall, transitions + 1)
        });
        // The replace carries the resourceVersion just read: a concurrent candidate loses.
        let params = PostParams::default();
        let replace = self.api.replace(&self.name, &params, &lease);
        let written = self.bounded("update", timeout, replace).await;
        self.settle(written, started)
    }

    /// Creates the Lease, held by this candidate.
    async fn create(
        &self,
        now_wall: Timestamp,
        started: Instant,
        timeout: Duration,
    ) -> Result<Attempt, Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(self.spec(now_wall, now_wall, 0)),
        };
        let params = PostParams::default();
        let create = self.api.create(&params, &lease);
        let written = self.bounded("create", timeout, create).await;
        self.settle(written, started)
    }

    /// The outcome of a Lease write that began at `started`: held, or raced (409).
    fn settle(&self, written: Result<Lease, Error>, started: Instant) -> Result<Attempt, Error> {
        match written {
            Ok(written) => {
                self.observe(&written, started);
                Ok(Attempt::Held)
            }
            Err(Error::Lease {
                source: kube::Error::Api(status),
                ..
            }) if status.code == 409 => Ok(Attempt::Raced),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(15),
            ),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Waits until this candidate holds the Lease, then opens the fence until the renew
    /// deadline. `standing_by` is called with the holder's identity whenever it changes.
    pub async fn acquire(&self, mut standing_by: impl FnMut(&str)) {
        let mut last_holder = String::new();
        loop {
            let started = Instant::now();
            match self.try_acquire_or_renew(self.timing.renew_deadline).await {
                Ok(Attempt::Held) => {
                    self.fence.extend_to(started + self.timing.renew_deadline);
                    info!(lease = %self.lease(), identity = %self.identity, "acquired leadership; leading");
                    return;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if holder != last_holder {
                        info!(lease = %self.lease(), identity = %self.identity, leader = %holder, "standing by: another replica leads");
                        standing_by(&holder);
                        last_holder = holder;
                    }
                }
                Ok(Attempt::Raced) => {}
                Err(error) => warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep_until(started + self.timing.retry_period).await;
        }
    }

    /// Renews the Lease every retry period; returns (and closes the fence) when a renewal did
    /// not succeed before the renew deadline or another replica holds the Lease.
    pub async fn keep(&self) -> Error {
        loop {
            let started = Instant::now();
            let Some(deadline) = self.fence.deadline().filter(|d| *d > started) else {
                return self.lost("not renewed before the renew deadline".to_string());
            };
            // One attempt may use all the time left before the deadline (as client-go's renew
            // does), but never more: a hung request cannot outlive the fence.
            match self.try_acquire_or_renew(deadline - started).await {
                Ok(Attempt::Held) => self.fence.extend_to(started + self.timing.renew_deadline),
                Ok(Attempt::HeldBy(holder)) => {
                    return self.lost(format!("{holder} holds it"));
                }
                Ok(Attempt::Raced) => {
                    return self.lost("another replica updated it".to_string());
                }
                Err(error) => warn!(%error, "failed to renew the lease; retrying"),
            }
            tokio::time::sleep_until(started + self.timing.retry_period).await;
        }
    }

    fn lost(&self, why: String) -> Error {
        self.fence.close();
        Error::Lost {
            lease: self.lease(),
            why,
        }
    }

    /// Gives the Lease up (on clean shutdown) so another replica takes over at once. Closes
    /// the fence first: nothing is written after the release.
    pub async fn release(&self) {
        self.fence.close();
        let timeout = self.timing.retry_period;
        let Ok(Some(mut lease)) = self
            .bounded("read", timeout, self.api.get_opt(&self.name))
            .await
        else {
            return;
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        lease.spec = Some(spec);
        match self
            .bounded(
                "release",
                timeout,
                self.api.replace(&self.name, &PostParams::default(), &lease),
            )
            .await
        {
            Ok(_) => info!(lease = %self.lease(), "released leadership"),
            Err(error) => warn!(%error, "failed to release the lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_keeps_client_go_proportions() {
        let t = Timing::for_lease_duration(Duration::from_secs(15));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period, Duration::from_secs(2));
        assert!(t.retry_period < t.renew_deadline && t.renew_deadline < t.lease_duration);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fence_closes_at_its_deadline_even_if_nobody_looks() {
        let fence = Fence::closed();
        assert!(!fence.allows_writes());
        fence.extend_to(Instant::now() + Duration::from_secs(2));
        assert!(fence.allows_writes());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            !fence.allows_writes(),
            "no renewal: writes stop at the deadline"
        );
        assert!(Fence::open().allows_writes());
    }
}
