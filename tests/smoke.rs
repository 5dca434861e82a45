//! Smoke tests proving that the local control plane (`hack/cluster.sh up`) is a real Kubernetes:
//! scheduling onto kwok's fake nodes, the simulated kubelet (graceful deletion, the
//! `sim.datajob.dev/*` termination contract), RBAC, CEL validation, garbage collection and the
//! Job controller. Each test works in a namespace of its own; all fail when no cluster answers.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStateTerminated, Node, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{
    MATERIALIZE_RESULT, MATERIALIZE_SNAPSHOT_ID, TestNamespace, admin_client, annotate_pod,
    condition_is_true, eventually, exit_annotations, is_forbidden, kubectl, node_of, user_client,
    wait_deleted, wait_established, wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn pod_manifest(name: &str, annotations: Value, extra_spec: Value) -> Pod {
    let mut spec = json!({
        "restartPolicy": "Never",
        "containers": [{ "name": "main", "image": "example.invalid/smoke:1" }],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "annotations": annotations },
        "spec": spec,
    }))
    .expect("pod manifest")
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn is_ready(pod: &Pod) -> bool {
    condition_is_true!(
        pod.status.as_ref().and_then(|s| s.conditions.as_ref()),
        "Ready"
    )
}

fn terminated(pod: &Pod) -> Vec<ContainerStateTerminated> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.state.as_ref()?.terminated.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Creates the pod and waits until it is in `phase` (and Ready, for `Running`).
async fn create_pod_until(api: &Api<Pod>, pod: Pod, wanted: &str) -> Pod {
    let name = pod.name_any();
    api.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
    wait_for(api, &name, TIMEOUT, |p| {
        phase(p) == wanted && (wanted != "Running" || is_ready(p))
    })
    .await
}

async fn create_running_pod(api: &Api<Pod>, pod: Pod) -> Pod {
    create_pod_until(api, pod, "Running").await
}

/// A namespace of its own for a smoke test, and the pods API in it.
async fn pods_in_new_namespace(prefix: &str) -> (Client, TestNamespace, Api<Pod>) {
    let client = admin_client().await;
    let ns = TestNamespace::new(&client, prefix).await;
    let pods = Api::namespaced(client.clone(), ns.name());
    (client, ns, pods)
}

/// Deletes the pod with a grace period of `seconds`.
async fn delete_gracefully(pods: &Api<Pod>, name: &str, seconds: u32) {
    let params = DeleteParams {
        grace_period_seconds: Some(seconds),
        ..Default::default()
    };
    pods.delete(name, &params)
        .await
        .unwrap_or_else(|e| panic!("delete pod {name}: {e}"));
}

/// Asserts that every one of `count` containers terminated with `exit_code`, `reason` and
/// `message`.
fn assert_terminated(pod: &Pod, count: usize, exit_code: i32, reason: &str, message: Option<&str>) {
    let states = terminated(pod);
    assert_eq!(states.len(), count, "{:?}", pod.status);
    for t in &states {
        assert_eq!(t.exit_code, exit_code);
        assert_eq!(t.reason.as_deref(), Some(reason));
        assert_eq!(t.message.as_deref(), message);
    }
}

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.annotations().get(key).map(String::as_str)
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.labels().get(key).map(String::as_str)
}

#[tokio::test]
async fn fake_nodes_are_ready_grouped_and_untainted() {
    let client = admin_client().await;
    let nodes: Api<Node> = Api::all(client);
    let list = nodes
        .list(&ListParams::default().labels("type=kwok"))
        .await
        .expect("list nodes");
    let mut groups = BTreeMap::<String, usize>::new();
    for node in &list.items {
        let name = node.name_any();
        assert_eq!(
            annotation(node, "kwok.x-k8s.io/node"),
            Some("fake"),
            "node {name} is not a kwok node"
        );
        let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
        let ready = condition_is_true!(conditions, "Ready");
        assert!(ready, "node {name} is not Ready: {:?}", node.status);
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        assert!(taints.is_empty(), "node {name} has taints {taints:?}");
        let capacity = node
            .status
            .as_ref()
            .and_then(|s| s.capacity.clone())
            .unwrap_or_default();
        if name.starts_with("kwok-node-") {
            for (resource, amount) in [("cpu", "16"), ("memory", "64Gi"), ("pods", "110")] {
                let have = capacity.get(resource).map(|q| q.0.as_str());
                assert_eq!(have, Some(amount), "{name}: {resource}");
            }
        }
        if let Some(g) = label(node, "datajob.dev/node-group") {
            *groups.entry(g.to_string()).or_default() += 1;
        }
    }
    println!("{} kwok nodes, groups {groups:?}", list.items.len());
    assert!(
        list.items.len() >= 6,
        "expected at least 6 kwok nodes, got {}",
        list.items.len()
    );
    for group in ["a", "b"] {
        assert!(
            groups.get(group).copied().unwrap_or(0) >= 3,
            "node group {group}: {groups:?}"
        );
    }
}

#[tokio::test]
async fn pod_is_scheduled_onto_a_fake_node_and_runs() {
    let (client, ns, pods) = pods_in_new_namespace("smoke-pod").await;

    let started = Instant::now();
    let pod = create_running_pod(&pods, pod_manifest("runner", json!({}), json!({}))).await;
    println!("pod Running and Ready after {:?}", started.elapsed());
    let node = node_of(&client, &pod).await;
    assert_eq!(
        annotation(&node, "kwok.x-k8s.io/node"),
        Some("fake"),
        "pod landed on {}, which is not a kwok node",
        node.name_any()
    );
    let status = pod.status.as_ref().expect("status");
    assert!(status.pod_ip.is_some(), "no pod IP: {status:?}");
    let running = status
        .container_statuses
        .as_ref()
        .expect("container statuses")
        .iter()
        .all(|c| c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some()));
    assert!(running, "containers not all running: {status:?}");

    // Node groups can be targeted with a node selector.
    let pinned = pod_manifest(
        "pinned-to-b",
        json!({}),
        json!({ "nodeSelector": { "datajob.dev/node-group": "b" } }),
    );
    let pod = create_running_pod(&pods, pinned).await;
    let node = node_of(&client, &pod).await;
    assert_eq!(label(&node, "datajob.dev/node-group"), Some("b"));
    ns.cleanup().await;
}

#[tokio::test]
async fn graceful_delete_honours_the_grace_period() {
    let (_, ns, pods) = pods_in_new_namespace("smoke-grace").await;
    create_running_pod(&pods, pod_manifest("slow-to-stop", json!({}), json!({}))).await;

    let started = Instant::now();
    delete_gracefully(&pods, "slow-to-stop", 3).await;
    let terminating = pods
        .get_opt("slow-to-stop")
        .await
        .expect("get")
        .expect("the pod must still exist right after a graceful delete");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(3));
    assert_eq!(
        phase(&terminating),
        "Running",
        "still running during its grace period"
    );

    // After the grace period the simulated kubelet kills the containers (137), then the pod goes.
    let killed = wait_for(&pods, "slow-to-stop", Duration::from_secs(15), |p| {
        phase(p) == "Failed"
    })
    .await;
    let killed_after = started.elapsed();
    let states = terminated(&killed);
    assert!(
        !states.is_empty() && states.iter().all(|t| t.exit_code == 137),
        "{states:?}"
    );
    wait_deleted(&pods, "slow-to-stop", Duration::from_secs(15)).await;
    let gone_after = started.elapsed();
    println!(
        "grace period 3s: containers killed after {killed_after:?}, pod gone after {gone_after:?}"
    );
    assert!(
        killed_after >= Duration::from_secs(3),
        "containers were killed after {killed_after:?}, before the 3 s grace period ended"
    );
    assert!(
        gone_after <= Duration::from_secs(15),
        "pod took {gone_after:?} to go"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_terminating_pod_that_exits_is_removed_before_its_grace_period_ends() {
    let (_, ns, pods) = pods_in_new_namespace("smoke-sigterm").await;
    create_running_pod(
        &pods,
        pod_manifest("exits-on-sigterm", json!({}), json!({})),
    )
    .await;

    let started = Instant::now();
    delete_gracefully(&pods, "exits-on-sigterm", 60).await;
    // The process handles SIGTERM and exits 143: the test plays that by annotating the pod.
    annotate_pod(
        &pods,
        "exits-on-sigterm",
        json!({ "sim.datajob.dev/exit-code": "143" }),
    )
    .await;
    wait_deleted(&pods, "exits-on-sigterm", Duration::from_secs(15)).await;
    println!(
        "terminating pod that exited was gone after {:?} (grace period 60 s)",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    ns.cleanup().await;
}

#[tokio::test]
async fn annotated_pods_terminate_with_the_requested_exit_code_reason_and_message() {
    let (_, ns, pods) = pods_in_new_namespace("smoke-exit").await;

    // 1. Exit 0 with a JSON termination message holding a 64-bit id; annotated at creation.
    let result = MATERIALIZE_RESULT;
    let ok = pod_manifest("driver-ok", exit_annotations(0, result), json!({}));
    let pod = create_pod_until(&pods, ok, "Succeeded").await;
    assert_terminated(&pod, 1, 0, "Completed", Some(result));
    let message = terminated(&pod)[0].message.clone().unwrap();
    let parsed: Value = serde_json::from_str(&message).unwrap();
    assert_eq!(parsed["snapshotId"].as_u64(), Some(MATERIALIZE_SNAPSHOT_ID));
    assert!(!is_ready(&pod));

    // 2. A running pod annotated later exits non-zero; reason defaults to "Error".
    create_running_pod(&pods, pod_manifest("driver-fails", json!({}), json!({}))).await;
    let failure = r#"{"reason": "InvalidQuery", "message": "table t does not exist"}"#;
    annotate_pod(&pods, "driver-fails", exit_annotations(3, failure)).await;
    let pod = wait_for(&pods, "driver-fails", TIMEOUT, |p| phase(p) == "Failed").await;
    assert_terminated(&pod, 1, 3, "Error", Some(failure));

    // 3. An explicit reason, on every container of a two-container pod.
    let two = pod_manifest(
        "oom",
        json!({ "sim.datajob.dev/exit-code": "137", "sim.datajob.dev/reason": "OOMKilled" }),
        json!({ "containers": [
            { "name": "a", "image": "example.invalid/smoke:1" },
            { "name": "b", "image": "example.invalid/smoke:1" },
        ]}),
    );
    let pod = create_pod_until(&pods, two, "Failed").await;
    assert_terminated(&pod, 2, 137, "OOMKilled", None);
    ns.cleanup().await;
}

#[tokio::test]
async fn rbac_denies_a_user_without_a_grant_and_allows_after_a_role_binding() {
    let admin = admin_client().await;
    let ns = TestNamespace::new(&admin, "smoke-rbac").await;
    let alice_pods: Api<Pod> = Api::namespaced(user_client("alice").await, ns.name());
    let bob_pods: Api<Pod> = Api::namespaced(user_client("bob").await, ns.name());

    let denied = alice_pods.list(&ListParams::default()).await;
    assert!(is_forbidden(&denied), "alice without a grant: {denied:?}");

    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "pod-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"] }],
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "alice-reads-pods" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice" }],
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), ns.name())
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    Api::<RoleBinding>::namespaced(admin.clone(), ns.name())
        .create(&PostParams::default(), &binding)
        .await
        .expect("create role binding");

    // The RBAC authorizer reads roles from an informer: poll (bounded) until the grant is seen.
    let what = "alice to be allowed to list pods after the role binding";
    let list = eventually(what, Duration::from_secs(15), async || {
        let listed = alice_pods.list(&ListParams::default()).await;
        assert!(listed.is_ok() || is_forbidden(&listed), "{listed:?}");
        listed.ok()
    })
    .await;
    println!("alice may list pods ({} found)", list.items.len());
    let still_denied = bob_pods.list(&ListParams::default()).await;
    assert!(
        is_forbidden(&still_denied),
        "bob has no grant: {still_denied:?}"
    );
    ns.cleanup().await;
}

const CEL_MESSAGE: &str = "field is immutable; create a new object instead";

async fn ensure_widget_crd(client: &Client) -> ApiResource {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.smoke.datajob.dev" },
        "spec": {
            "group": "smoke.datajob.dev",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "properties": {
                            "size": {
                                "type": "integer",
                                "x-kubernetes-validations": [{ "rule": "self == oldSelf", "message": CEL_MESSAGE }],
                            },
                            "note": { "type": "string" },
                        },
                    }},
                }},
            }],
        },
    }))
    .unwrap();
    crds.patch(
        "widgets.smoke.datajob.dev",
        &PatchParams::apply("datajob-smoke").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply the Widget CRD");
    wait_established(client, "widgets.smoke.datajob.dev", TIMEOUT).await;
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("smoke.datajob.dev", "v1", "Widget"),
        "widgets",
    )
}

#[tokio::test]
async fn cel_transition_rule_rejects_a_forbidden_update_also_through_kubectl() {
    let client = admin_client().await;
    let ns = TestNamespace::new(&client, "smoke-cel").await;
    let ar = ensure_widget_crd(&client).await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &ar);
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "smoke.datajob.dev/v1",
        "kind": "Widget",
        "metadata": { "name": "w" },
        "spec": { "size": 1, "note": "first" },
    }))
    .unwrap();
    // An Established CRD may take a moment to be served everywhere: retry on 404 (bounded).
    let what = "the Widget API to be served";
    eventually(what, Duration::from_secs(15), async || {
        match widgets.create(&PostParams::default(), &widget).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => panic!("create widget: {e}"),
        }
    })
    .await;

    // A mutable field may change; the guarded one may not.
    widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "note": "second" } })),
        )
        .await
        .expect("changing spec.note is allowed");
    let rejected = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "size": 2 } })),
        )
        .await;
    match rejected {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(s.message.contains(CEL_MESSAGE), "message: {}", s.message);
        }
        other => panic!("changing spec.size must be rejected, got {other:?}"),
    }

    let version = kubectl()
        .arg("version")
        .arg("--client")
        .output()
        .expect("run kubectl");
    println!(
        "kubectl: {}",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    let out = kubectl()
        .args([
            "-n",
            ns.name(),
            "patch",
            "widgets.smoke.datajob.dev",
            "w",
            "--type=merge",
        ])
        .args(["-p", r#"{"spec":{"size":3}}"#])
        .output()
        .expect("run kubectl (put the cluster's kubectl on PATH: eval \"$(hack/cluster.sh env)\")");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "kubectl patch: exit {:?}, stderr: {}",
        out.status.code(),
        stderr.trim()
    );
    assert!(!out.status.success(), "kubectl patch must fail");
    assert!(
        stderr.contains(CEL_MESSAGE),
        "kubectl's error must show the rule's message: {stderr}"
    );
    let current = widgets.get("w").await.expect("get widget");
    assert_eq!(current.data["spec"]["size"], json!(1));
    ns.cleanup().await;
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_of_a_deleted_owner() {
    let client = admin_client().await;
    let ns = TestNamespace::new(&client, "smoke-gc").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let owner: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "owner" }, "data": { "k": "v" } }))
            .unwrap();
    let owner = cms
        .create(&PostParams::default(), &owner)
        .await
        .expect("create owner");
    let dependent: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap(),
            }],
        },
    }))
    .unwrap();
    cms.create(&PostParams::default(), &dependent)
        .await
        .expect("create dependent");

    let started = Instant::now();
    cms.delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    wait_deleted(&cms, "dependent", TIMEOUT).await;
    println!(
        "dependent collected {:?} after its owner was deleted",
        started.elapsed()
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn job_controller_creates_the_pod_of_a_job_and_completes_it() {
    let (client, ns, pods) = pods_in_new_namespace("smoke-job").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns.name());
    let job: Job = serde_json::from_value(json!({
        "metadata": { "name": "once" },
        "spec": {
            "backoffLimit": 0,
            "template": {
                // The simulated kubelet makes the pod exit 0 (see hack/kwok/pod-exit.yaml).
                "metadata": { "annotations": { "sim.datajob.dev/exit-code": "0" } },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{ "name": "main", "image": "example.invalid/smoke:1" }],
                },
            },
        },
    }))
    .unwrap();
    let job = jobs
        .create(&PostParams::default(), &job)
        .await
        .expect("create job");
    let job_uid = job.uid().expect("uid");

    // The Job controller (kube-controller-manager) creates the pod; poll the list (bounded).
    let pod = eventually("a pod for job 'once'", TIMEOUT, async || {
        let list = pods
            .list(&ListParams::default().labels("batch.kubernetes.io/job-name=once"))
            .await
            .expect("list pods");
        list.items.into_iter().next()
    })
    .await;
    let owner = pod
        .owner_references()
        .first()
        .cloned()
        .expect("owner reference");
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Job", job_uid.as_str())
    );
    println!("job pod {} created by the job controller", pod.name_any());

    let done = wait_for(&jobs, "once", TIMEOUT, |j| {
        condition_is_true!(
            j.status.as_ref().and_then(|s| s.conditions.as_ref()),
            "Complete"
        )
    })
    .await;
    assert_eq!(done.status.as_ref().and_then(|s| s.succeeded), Some(1));
    ns.cleanup().await;
}
