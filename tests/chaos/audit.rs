//! Writes by a leader after it lost the Lease, judged from the API server's audit log (one
//! clock: the API server's). Every operator request carries the user agent
//! `datajob-operator/<version> (<instance>)`; the audit policy (hack/cluster.sh --audit) logs
//! every write at Metadata level and the Lease's writes with their response.
//!
//! A successful write by instance X, completed by the API server at time t (its
//! `stageTimestamp`), is a write after losing the Lease when the last successful write of the
//! Lease completed at or before t
//! - names another holder (another replica took over, or X released it), or
//! - is X's own renewal, but more than `leaseDurationSeconds` before t (X's lease expired).

use std::collections::BTreeMap;
use std::path::Path;

use jiff::Timestamp;
use serde_json::Value;

/// One successful write of the Lease.
#[derive(Clone, Debug)]
struct LeaseWrite {
    at: Timestamp,
    holder: Option<String>,
    duration_seconds: i64,
}

/// One successful write by an operator instance.
#[derive(Clone, Debug)]
pub struct OperatorWrite {
    /// The instance (from the user agent).
    pub instance: String,
    /// When the API server completed it.
    pub at: Timestamp,
    /// verb resource/namespace/name[/subresource].
    pub what: String,
}

/// What the audit log shows.
#[derive(Debug, Default)]
pub struct Findings {
    /// Successful operator writes seen (besides the Lease).
    pub operator_writes: usize,
    /// Successful writes of the Lease seen.
    pub lease_writes: usize,
    /// Writes by an instance after it lost the Lease, with why.
    pub stale: Vec<(OperatorWrite, String)>,
}

fn instance_of(user_agent: &str) -> Option<String> {
    let rest = user_agent.strip_prefix("datajob-operator/")?;
    let open = rest.find('(')?;
    let close = rest.rfind(')')?;
    Some(rest[open + 1..close].to_string())
}

fn timestamp(event: &Value, field: &str) -> Option<Timestamp> {
    event[field].as_str()?.parse().ok()
}

/// Reads `log` (JSON lines) and checks every operator write against the Lease `namespace/name`.
pub fn analyse(log: &Path, namespace: &str, lease: &str) -> Findings {
    let text = std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("cannot read the audit log {}: {e}", log.display()));
    let mut leases: Vec<LeaseWrite> = Vec::new();
    let mut writes: Vec<OperatorWrite> = Vec::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if event["stage"] != "ResponseComplete" {
            continue;
        }
        let code = event["responseStatus"]["code"].as_i64().unwrap_or(0);
        if !(200..300).contains(&code) {
            continue;
        }
        let verb = event["verb"].as_str().unwrap_or_default();
        if !matches!(
            verb,
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) {
            continue;
        }
        let Some(at) = timestamp(&event, "stageTimestamp") else {
            continue;
        };
        let object = &event["objectRef"];
        let resource = object["resource"].as_str().unwrap_or_default();
        if resource == "leases" && object["namespace"] == namespace && object["name"] == lease {
            let spec = &event["responseObject"]["spec"];
            leases.push(LeaseWrite {
                at,
                holder: spec["holderIdentity"]
                    .as_str()
                    .filter(|h| !h.is_empty())
                    .map(str::to_string),
                duration_seconds: spec["leaseDurationSeconds"].as_i64().unwrap_or(0),
            });
            continue;
        }
        let Some(instance) = event["userAgent"].as_str().and_then(instance_of) else {
            continue;
        };
        let mut what = format!(
            "{verb} {resource}/{}/{}",
            object["namespace"].as_str().unwrap_or("-"),
            object["name"].as_str().unwrap_or("-")
        );
        if let Some(sub) = object["subresource"].as_str() {
            what.push('/');
            what.push_str(sub);
        }
        writes.push(OperatorWrite { instance, at, what });
    }
    leases.sort_by_key(|l| l.at);
    // Lease history as a map from completion time to the write, for "last write at or before".
    let history: BTreeMap<Timestamp, Vec<LeaseWrite>> =
        leases.iter().fold(BTreeMap::new(), |mut map, write| {
            map.entry(write.at)
                .or_insert_with(Vec::new)
                .push(write.clone());
            map
        });
    let mut findings = Findings {
        operator_writes: writes.len(),
        lease_writes: leases.len(),
        stale: Vec::new(),
    };
    for write in writes {
        let last = history
            .range(..=write.at)
            .next_back()
            .and_then(|(_, ws)| ws.last());
        let why = match last {
            None => Some("before any holder wrote the Lease".to_string()),
            Some(l) if l.holder.as_deref() != Some(write.instance.as_str()) => Some(format!(
                "the Lease was held by {:?} since {}",
                l.holder, l.at
            )),
            Some(l) => {
                let expiry = l.at + jiff::SignedDuration::from_secs(l.duration_seconds);
                (write.at > expiry)
                    .then(|| format!("its own lease, last renewed {}, expired at {expiry}", l.at))
            }
        };
        if let Some(why) = why {
            findings.stale.push((write, why));
        }
    }
    findings
}
