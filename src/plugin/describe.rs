//! `kubectl datajob describe NAME`: the job, a timeline merged from its status and its
//! events, its conditions, its executor pods, and its result or failures.

use std::fmt::Write;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::format::{age, table};
use super::{Failure, Target, exit, job_error, namespace};
use crate::api::DataJob;
use crate::executor::{LABEL_JOB_UID, LABEL_ROLE};

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moment {
    /// When.
    pub time: Timestamp,
    /// What, for example `Normal Running: the driver is running` or `started`.
    pub what: String,
}

fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
}

/// The job's history, oldest first: the times its status records, then every event.
pub fn timeline(job: &DataJob, events: &[Event]) -> Vec<Moment> {
    let mut out = Vec::new();
    if let Some(created) = &job.metadata.creation_timestamp {
        out.push(Moment {
            time: created.0,
            what: "created".to_string(),
        });
    }
    if let Some(status) = &job.status {
        if let Some(t) = &status.started_at {
            out.push(Moment {
                time: t.0,
                what: "driver started".to_string(),
            });
        }
        if let Some(c) = &status.cancellation {
            out.push(Moment {
                time: c.requested_at.0,
                what: match &c.reason {
                    Some(r) => format!("cancellation requested: {r}"),
                    None => "cancellation requested".to_string(),
                },
            });
        }
        for f in &status.failures {
            out.push(Moment {
                time: f.time.0,
                what: format!("failure {}: {}", f.reason, f.message),
            });
        }
        if let (Some(t), Some(state)) = (&status.completed_at, status.state) {
            out.push(Moment {
                time: t.0,
                what: format!("finished: {state}"),
            });
        }
    }
    for event in events {
        if let Some(time) = event_time(event) {
            let count = event
                .series
                .as_ref()
                .and_then(|s| s.count)
                .or(event.count)
                .filter(|c| *c > 1)
                .map(|c| format!(" (x{c})"))
                .unwrap_or_default();
            out.push(Moment {
                time,
                what: format!(
                    "{} {}: {}{count}",
                    event.type_.as_deref().unwrap_or("Normal"),
                    event.reason.as_deref().unwrap_or(""),
                    event.message.as_deref().unwrap_or("")
                ),
            });
        }
    }
    out.sort_by_key(|m| m.time);
    out
}

/// The whole description as text.
pub fn render(job: &DataJob, events: &[Event], pods: &[Pod], now: Timestamp) -> String {
    let status = job.status.clone().unwrap_or_default();
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    let mut out = String::new();
    let fields = [
        ("Name", job.name_any()),
        ("Namespace", job.namespace().unwrap_or_default()),
        ("State", dash(status.state.map(|s| s.to_string()))),
        ("Type", job.spec.job_type.to_string()),
        ("Data plane", job.spec.data_plane.clone()),
        ("Compute pool", dash(job.spec.compute_pool.clone())),
        (
            "Cluster type",
            dash(status.cluster_type.map(|c| c.to_string())),
        ),
        ("Executor", dash(status.executor.clone())),
        ("Job ID", dash(status.job_id.clone())),
        (
            "Generation",
            format!(
                "{} (observed {})",
                job.metadata.generation.unwrap_or_default(),
                status
                    .observed_generation
                    .map_or("-".to_string(), |g| g.to_string())
            ),
        ),
        ("Cancel", job.spec.cancel.to_string()),
    ];
    for (key, value) in fields {
        let _ = writeln!(out, "{:<14}{value}", format!("{key}:"));
    }
    let indent = |text: String| -> String { text.lines().map(|l| format!("  {l}\n")).collect() };
    let _ = writeln!(out, "\nTimeline:");
    let moments: Vec<Vec<String>> = timeline(job, events)
        .into_iter()
        .map(|m| vec![m.time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), m.what])
        .collect();
    out.push_str(&indent(table(&["TIME", "WHAT"], &moments)));
    if !status.conditions.is_empty() {
        let _ = writeln!(out, "\nConditions:");
        let rows: Vec<Vec<String>> = status
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect();
        out.push_str(&indent(table(
            &["TYPE", "STATUS", "REASON", "MESSAGE"],
            &rows,
        )));
    }
    let _ = writeln!(out, "\nPods:");
    if pods.is_empty() {
        let _ = writeln!(out, "  <none>");
    } else {
        let rows: Vec<Vec<String>> = pods
            .iter()
            .map(|p| {
                vec![
                    p.name_any(),
                    p.labels().get(LABEL_ROLE).cloned().unwrap_or_default(),
                    p.status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_else(|| "-".into()),
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_else(|| "-".into()),
                    age(p.metadata.creation_timestamp.as_ref(), now),
                ]
            })
            .collect();
        out.push_str(&indent(table(
            &["NAME", "ROLE", "PHASE", "NODE", "AGE"],
            &rows,
        )));
    }
    if let Some(result) = &status.result {
        let _ = writeln!(out, "\nResult:");
        let json = serde_json::to_string_pretty(result).unwrap_or_default();
        out.push_str(&indent(json));
    }
    if !status.failures.is_empty() {
        let _ = writeln!(out, "\nFailures:");
        let rows: Vec<Vec<String>> = status
            .failures
            .iter()
            .map(|f| {
                vec![
                    f.reason.clone(),
                    f.message.clone(),
                    f.time.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                ]
            })
            .collect();
        out.push_str(&indent(table(&["REASON", "MESSAGE", "TIME"], &rows)));
    }
    out
}

pub async fn run(target: &Target, name: &str) -> Result<u8, Failure> {
    let ns = namespace(target);
    let jobs: Api<DataJob> = Api::namespaced(target.client.clone(), ns);
    let job = jobs.get(name).await.map_err(|e| job_error(name, ns, e))?;
    let uid = job.uid().unwrap_or_default();
    let events: Api<Event> = Api::namespaced(target.client.clone(), ns);
    let events = events
        .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await
        .map_err(|e| Failure(format!("cannot list the events of datajob {name}: {e}")))?
        .items;
    let pods: Api<Pod> = Api::namespaced(target.client.clone(), ns);
    let mut pods = pods
        .list(&ListParams::default().labels(&format!("{LABEL_JOB_UID}={uid}")))
        .await
        .map_err(|e| Failure(format!("cannot list the pods of datajob {name}: {e}")))?
        .items;
    pods.sort_by_key(|p| p.name_any());
    print!("{}", render(&job, &events, &pods, Timestamp::now()));
    Ok(exit::OK)
}
