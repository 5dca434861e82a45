//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one of several operator
//! replicas reconciles. The holder renews the Lease every `lease_duration / 3`; a candidate
//! takes it over once the holder has not renewed for a whole `lease_duration`. Every write is
//! a replace guarded by the Lease's resourceVersion, so two candidates cannot both win. A leader
//! that fails to renew in time stops leading (the binary then exits, and its replacement starts
//! as a candidate), which keeps two leaders from ever reconciling at once.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

/// Errors of the election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, creating or updating the Lease failed.
    #[error("failed to {action} lease {namespace}/{name}: {source}")]
    Lease {
        /// What was attempted.
        action: &'static str,
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The leader could not renew within its lease duration.
    #[error("lost lease {namespace}/{name}: not renewed within {seconds}s")]
    Lost {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The lease duration.
        seconds: u64,
    },
}

/// One candidate in the election.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElector {
    /// A candidate `identity` for the Lease `namespace/name`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    fn error(&self, action: &'static str, source: kube::Error) -> Error {
        Error::Lease {
            action,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// Tries once to acquire or renew the Lease; true when this candidate holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error("read", e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(self.error("create", e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let held_by_me = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let renewed = spec.renew_time.map(|t| t.0);
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.duration);
        let expired = renewed.is_none_or(|t| t + duration <= now) || spec.holder_identity.is_none();
        if !held_by_me && !expired {
            return Ok(false);
        }
        let (acquired, transitions) = if held_by_me {
            (
                spec.acquire_time.map(|t| t.0).unwrap_or(now),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now, spec.lease_transitions.unwrap_or(0) + 1)
        };
        lease.spec = Some(self.spec(acquired, now, transitions));
        // The replace carries the resourceVersion just read: a concurrent candidate loses.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(self.error("update", e)),
        }
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.duration.as_secs()).unwrap_or(15)),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) {
        let retry = self.duration / 3;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "acquired leadership");
                    return;
                }
                Ok(false) => {}
                Err(error) => warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews the Lease until renewal fails for a whole lease duration; returns why leadership
    /// was lost.
    pub async fn keep(&self) -> Error {
        let every = self.duration / 3;
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    return Error::Lost {
                        namespace: self.namespace.clone(),
                        name: self.name.clone(),
                        seconds: self.duration.as_secs(),
                    };
                }
                Err(error) => warn!(%error, "failed to renew the lease; retrying"),
            }
            // Stop before another candidate may take over: a leader that cannot renew in time
            // must not keep reconciling.
            if last_renewed.elapsed() + every >= self.duration {
                return Error::Lost {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    seconds: self.duration.as_secs(),
                };
            }
        }
    }

    /// Gives the Lease up (on clean shutdown) so another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        lease.spec = Some(spec);
        if let Err(error) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            warn!(%error, "failed to release the lease");
        }
    }
}
