//! What both controllers need from the API server beyond plain calls: status written by
//! server-side apply under the operator's one field manager (optionally guarded by the
//! observed resourceVersion), the API error checks, object keys for messages, and backoff.

use std::fmt::Debug;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::OPERATOR_NAME;
use crate::domain::Cause;

/// Whether a status write must fail when the object changed since it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Send the observed resourceVersion: a write decided from a stale read gets 409 Conflict.
    ObservedVersion,
    /// Write whatever the object's current version is.
    None,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusPatch<'a, S> {
    api_version: String,
    kind: String,
    metadata: PatchMetadata,
    status: &'a S,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PatchMetadata {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_version: Option<String>,
}

/// Writes `status` on `obj`'s status subresource by server-side apply, as the field manager
/// `datajob-operator` (forcing ownership of the fields it sets). Returns the object's
/// resourceVersion after the write (unchanged when the write changed nothing).
pub async fn apply_status<K, S>(
    api: &Api<K>,
    obj: &K,
    status: &S,
    guard: Guard,
) -> kube::Result<Option<String>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + Debug,
{
    let name = obj.name_any();
    let patch = StatusPatch {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        metadata: PatchMetadata {
            name: name.clone(),
            namespace: obj.namespace(),
            resource_version: match guard {
                Guard::ObservedVersion => obj.resource_version(),
                Guard::None => None,
            },
        },
        status,
    };
    let params = PatchParams::apply(OPERATOR_NAME).force();
    let written = api
        .patch_status(&name, &params, &Patch::Apply(&patch))
        .await?;
    Ok(written.resource_version())
}

/// Whether an API error is a 409 Conflict (a stale read lost an optimistic-concurrency race,
/// or a create found the name taken).
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Whether an API error is a 404 Not Found.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// The API server's message when it refused an object as invalid (422), else None.
pub fn invalid_message(error: &kube::Error) -> Option<&str> {
    match error {
        kube::Error::Api(status) if status.code == 422 => Some(status.message.as_str()),
        _ => None,
    }
}

/// The cause of a 403 Forbidden (a ResourceQuota that is used up, an admission policy): the
/// API server refused a request for a reason that may pass. None for every other error.
pub fn refusal(error: &kube::Error) -> Option<Cause> {
    match error {
        kube::Error::Api(status) if status.code == 403 => Some(Cause {
            reason: if status.reason.is_empty() {
                "Forbidden".to_string()
            } else {
                status.reason.clone()
            },
            message: crate::executor::result::clean(&status.message, 512),
        }),
        _ => None,
    }
}

/// `namespace/name` of an object, for messages and as a key of per-object tables.
pub fn object_key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

/// Exponential backoff from 1 s, capped at 5 minutes.
pub fn backoff(attempt: u32) -> Duration {
    let secs = 1u64 << attempt.min(8);
    Duration::from_secs(secs.min(300))
}
