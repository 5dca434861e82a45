//! API writes counted from the API server's audit log (`hack/cluster.sh --audit`): every write
//! request between two marks, in one namespace, attributed to who made it (the operator by its
//! user agent, the Job controller by kube-controller-manager's, everything else by user name).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The audit log of the benchmark's cluster, when it has one.
pub struct AuditLog {
    path: Option<PathBuf>,
}

/// Write requests counted per (actor, verb, resource, response code).
#[derive(Clone, Debug, Default)]
pub struct Writes {
    pub counts: BTreeMap<Key, u64>,
}

/// One kind of write: who, what verb, on which resource (`pods`, `datajobs/status`), and the
/// response code.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub actor: String,
    pub verb: String,
    pub resource: String,
    pub code: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    stage: String,
    verb: String,
    #[serde(default)]
    user_agent: String,
    user: User,
    object_ref: Option<ObjectRef>,
    response_status: Option<ResponseStatus>,
}

#[derive(Deserialize)]
struct User {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    namespace: String,
}

#[derive(Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: u16,
}

/// The operator, as the audit log names it here.
pub const OPERATOR: &str = "datajob-operator";

fn actor(entry: &Entry) -> String {
    if entry.user_agent.starts_with("datajob-operator/") {
        OPERATOR.to_string()
    } else if entry.user_agent.starts_with("kube-controller-manager/") {
        // kube-controller-manager appends the controller's name (or its service account,
        // `system:serviceaccount:kube-system:job-controller`) to its user agent.
        let suffix = entry.user_agent.rsplit('/').next().unwrap_or_default();
        suffix.rsplit(':').next().unwrap_or(suffix).to_string()
    } else {
        entry.user.username.clone()
    }
}

impl AuditLog {
    /// The log named by `DATAJOB_AUDIT_LOG` (exported by `hack/cluster.sh env` for a cluster
    /// started with `--audit`).
    pub fn from_env() -> Self {
        AuditLog {
            path: std::env::var_os("DATAJOB_AUDIT_LOG").map(PathBuf::from),
        }
    }

    /// Where the log ends now.
    pub fn mark(&self) -> u64 {
        self.path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The writes in `namespace` logged since `mark` (after a moment for the log to catch up).
    pub async fn writes_since(&self, mark: u64, namespace: &str) -> Writes {
        let mut writes = Writes::default();
        let Some(path) = &self.path else {
            return writes;
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(path) {
            let _ = file.seek(SeekFrom::Start(mark));
            let _ = file.read_to_string(&mut text);
        }
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<Entry>(line) else {
                continue;
            };
            let Some(object) = &entry.object_ref else {
                continue;
            };
            if entry.stage != "ResponseComplete" || object.namespace != namespace {
                continue;
            }
            let resource = if object.subresource.is_empty() {
                object.resource.clone()
            } else {
                format!("{}/{}", object.resource, object.subresource)
            };
            let key = Key {
                actor: actor(&entry),
                verb: entry.verb.clone(),
                resource,
                code: entry.response_status.as_ref().map_or(0, |s| s.code),
            };
            *writes.counts.entry(key).or_default() += 1;
        }
        writes
    }
}

impl Writes {
    /// Every write made by `actor`.
    pub fn total(&self, actor: &str) -> u64 {
        self.counts
            .iter()
            .filter(|(k, _)| k.actor == actor)
            .map(|(_, n)| n)
            .sum()
    }

    /// `actor`'s writes rejected with 409 Conflict.
    pub fn conflicts(&self, actor: &str) -> u64 {
        self.counts
            .iter()
            .filter(|(k, _)| k.actor == actor && k.code == 409)
            .map(|(_, n)| n)
            .sum()
    }

    /// Adds another phase's writes.
    pub fn add(&mut self, other: &Writes) {
        for (k, n) in &other.counts {
            *self.counts.entry(k.clone()).or_default() += n;
        }
    }

    /// One line per kind of write of the actors named, per job: `verb resource [code]: n`.
    pub fn breakdown(&self, actors: &[&str], jobs: usize) -> Vec<String> {
        self.counts
            .iter()
            .filter(|(k, _)| actors.contains(&k.actor.as_str()))
            .map(|(k, n)| {
                let code = if k.code / 100 == 2 {
                    String::new()
                } else {
                    format!(" ({})", k.code)
                };
                format!(
                    "{} {} {}{code}: {:.2}/job",
                    k.actor,
                    k.verb,
                    k.resource,
                    *n as f64 / jobs as f64
                )
            })
            .collect()
    }
}
