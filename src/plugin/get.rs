//! `kubectl datajob get|list`: DataJobs as a table, names or JSON, filtered by state.

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::format::{age, table};
use super::{Failure, Target, exit, job_error};
use crate::api::{DataJob, JobState};

/// The state column of a job: its state, or `-` before the operator wrote one.
pub fn state_of(job: &DataJob) -> Option<JobState> {
    job.status.as_ref().and_then(|s| s.state)
}

/// Whether `job` passes the state filter (empty: every job).
pub fn matches(job: &DataJob, states: &[JobState]) -> bool {
    states.is_empty() || state_of(job).is_some_and(|s| states.contains(&s))
}

/// One table row; `namespace` adds the namespace column, `wide` the executor and reason.
pub fn row(job: &DataJob, namespace: bool, wide: bool, now: Timestamp) -> Vec<String> {
    let status = job.status.clone().unwrap_or_default();
    let mut row = Vec::new();
    if namespace {
        row.push(job.namespace().unwrap_or_default());
    }
    row.extend([
        job.name_any(),
        state_of(job).map_or("-".to_string(), |s| s.to_string()),
        job.spec.job_type.to_string(),
        status
            .cluster_type
            .map_or("-".to_string(), |c| c.to_string()),
        job.spec.compute_pool.clone().unwrap_or_else(|| "-".into()),
        job.spec.data_plane.clone(),
        age(job.metadata.creation_timestamp.as_ref(), now),
    ]);
    if wide {
        row.push(status.executor.unwrap_or_else(|| "-".into()));
        let reason = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.reason.clone());
        row.push(reason.unwrap_or_else(|| "-".into()));
    }
    row
}

/// The header matching [`row`].
pub fn header(namespace: bool, wide: bool) -> Vec<&'static str> {
    let mut header = Vec::new();
    if namespace {
        header.push("NAMESPACE");
    }
    header.extend([
        "NAME",
        "STATE",
        "TYPE",
        "CLUSTER",
        "POOL",
        "DATA-PLANE",
        "AGE",
    ]);
    if wide {
        header.extend(["EXECUTOR", "REASON"]);
    }
    header
}

pub async fn run(
    target: &Target,
    names: &[String],
    states: &[JobState],
    output: &str,
) -> Result<u8, Failure> {
    let api: Api<DataJob> = match &target.namespace {
        Some(ns) => Api::namespaced(target.client.clone(), ns),
        None => Api::all(target.client.clone()),
    };
    let mut jobs = Vec::new();
    if names.is_empty() {
        jobs = api.list(&ListParams::default()).await?.items;
    } else {
        if target.namespace.is_none() {
            return Err(Failure(
                "a name cannot be used with -A; name the namespace with -n".into(),
            ));
        }
        let namespace = target.namespace.clone().unwrap_or_default();
        for name in names {
            jobs.push(
                api.get(name)
                    .await
                    .map_err(|e| job_error(name, &namespace, e))?,
            );
        }
    }
    jobs.retain(|job| matches(job, states));
    jobs.sort_by_key(|j| (j.namespace(), j.name_any()));
    match output {
        "name" => {
            for job in &jobs {
                println!("datajob.datajob.dev/{}", job.name_any());
            }
        }
        "json" => {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": jobs,
            });
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        _ => {
            if jobs.is_empty() {
                match &target.namespace {
                    Some(ns) => eprintln!("No datajobs found in {ns} namespace."),
                    None => eprintln!("No datajobs found."),
                }
                return Ok(exit::OK);
            }
            let all = target.namespace.is_none();
            let wide = output == "wide";
            let now = Timestamp::now();
            let rows: Vec<Vec<String>> = jobs.iter().map(|j| row(j, all, wide, now)).collect();
            print!("{}", table(&header(all, wide), &rows));
        }
    }
    Ok(exit::OK)
}
