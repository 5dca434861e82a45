//! `kubectl datajob logs NAME [--role driver|worker] [--tail N]`: the logs of a job's
//! executor pods, each line prefixed with the pod when there are several.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, LogParams};

use super::{Failure, Target, exit, job_error, namespace};
use crate::api::DataJob;
use crate::executor::{LABEL_JOB_UID, LABEL_ROLE};

/// The label selector of a job's pods, optionally of one role.
pub fn selector(uid: &str, role: Option<&str>) -> String {
    match role {
        Some(role) => format!("{LABEL_JOB_UID}={uid},{LABEL_ROLE}={role}"),
        None => format!("{LABEL_JOB_UID}={uid}"),
    }
}

pub async fn run(
    target: &Target,
    name: &str,
    role: Option<&str>,
    tail: Option<i64>,
) -> Result<u8, Failure> {
    let ns = namespace(target);
    let jobs: Api<DataJob> = Api::namespaced(target.client.clone(), ns);
    let job = jobs.get(name).await.map_err(|e| job_error(name, ns, e))?;
    let pods: Api<Pod> = Api::namespaced(target.client.clone(), ns);
    let uid = job.uid().unwrap_or_default();
    let mut list = pods
        .list(&ListParams::default().labels(&selector(&uid, role)))
        .await
        .map_err(|e| Failure(format!("cannot list the pods of datajob {name}: {e}")))?
        .items;
    if list.is_empty() {
        let which = role.map_or(String::new(), |r| format!("{r} "));
        return Err(Failure(format!(
            "datajob {name} has no {which}pods (executor pods exist while the job runs or is \
             being torn down; see `kubectl datajob describe {name}`)"
        )));
    }
    // Driver first, then workers, by name.
    list.sort_by_key(|p| {
        (
            p.labels().get(LABEL_ROLE).map(|r| r != "driver"),
            p.name_any(),
        )
    });
    let prefix = list.len() > 1;
    let mut code = exit::OK;
    for pod in &list {
        let pod_name = pod.name_any();
        let params = LogParams {
            tail_lines: tail,
            ..LogParams::default()
        };
        match pods.logs(&pod_name, &params).await {
            Ok(text) => {
                for line in text.lines() {
                    if prefix {
                        println!("[{pod_name}] {line}");
                    } else {
                        println!("{line}");
                    }
                }
            }
            Err(e) => {
                eprintln!("error: cannot read the logs of pod {pod_name}: {e}");
                code = exit::ERROR;
            }
        }
    }
    Ok(code)
}
