//! The Helm chart in `charts/datajob-operator` and the manifests in `examples/`.
//!
//! Offline (helm only): the chart's CRDs are the generated ones, `helm lint` is clean, the
//! rendered RBAC grants the operator exactly what it needs and nothing else, the aggregated user
//! roles split read from write, the Deployment runs the operator as documented, and the examples
//! are valid DataJobs and ComputePools.
//!
//! Against the real cluster (`KUBECONFIG`, see tests/support): `helm install` into a fresh
//! namespace under the "restricted" Pod Security Standard, then the API server itself
//! (SubjectAccessReview, and real requests as the users alice and bob) confirms the permissions.
//!
//! Helm is `$HELM`, else `helm` on `PATH` (`eval "$(hack/cluster.sh env)"` puts it there).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datajob_operator::api::{ComputePool, DataJob};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use support::helm::{CHART, helm, helm_ok};
use support::is_forbidden;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
/// `helm template` assumes Kubernetes 1.20 unless told; the chart requires >= 1.32.
const KUBE_VERSION: &str = "1.33.0";
const RELEASE_NAMESPACE: &str = "datajob-system";
/// How long SubjectAccessReviews may take to reflect new roles and bindings.
const RBAC_SETTLE: Duration = Duration::from_secs(60);

/// The chart rendered with `sets` (`key=value`), one YAML value per document.
fn render(sets: &[&str]) -> Vec<serde_yaml::Value> {
    render_with(&[], sets)
}

/// [`render`] with more `helm template` arguments (`extra`).
fn render_with(extra: &[&str], sets: &[&str]) -> Vec<serde_yaml::Value> {
    let mut args = vec![
        "template",
        "rel",
        CHART,
        "--namespace",
        RELEASE_NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend(extra);
    for set in sets {
        args.extend(["--set", set]);
    }
    yaml_documents(&helm_ok(&args))
}

fn yaml_documents(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("helm output is YAML"))
        .filter(|doc: &serde_yaml::Value| !doc.is_null())
        .collect()
}

fn kind_of(doc: &serde_yaml::Value) -> &str {
    doc.get("kind").and_then(|k| k.as_str()).unwrap_or("")
}

/// Every rendered object of kind `kind`, typed.
fn objects<T: DeserializeOwned>(docs: &[serde_yaml::Value], kind: &str) -> Vec<T> {
    docs.iter()
        .filter(|doc| kind_of(doc) == kind)
        .map(|doc| {
            serde_yaml::from_value(doc.clone())
                .unwrap_or_else(|e| panic!("rendered {kind} does not parse: {e}\n{doc:?}"))
        })
        .collect()
}

// --- RBAC as data -----------------------------------------------------------------------------

/// Where a grant applies: `*` for cluster-wide, else a namespace.
type Scope = String;
/// (API group, resource[/subresource]) -> verbs.
type Grants = BTreeMap<(String, String), BTreeSet<String>>;

const CLUSTER_WIDE: &str = "*";

fn add_rules(grants: &mut Grants, rules: &[PolicyRule], role: &str) {
    for rule in rules {
        assert!(
            rule.resource_names.as_ref().is_none_or(Vec::is_empty),
            "{role}: resourceNames were not expected: {rule:?}"
        );
        assert!(
            rule.non_resource_urls.as_ref().is_none_or(Vec::is_empty),
            "{role}: non-resource URLs were not expected: {rule:?}"
        );
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        assert!(
            !groups.is_empty() && !resources.is_empty(),
            "{role}: empty rule {rule:?}"
        );
        for group in &groups {
            for resource in &resources {
                grants
                    .entry((group.clone(), resource.clone()))
                    .or_default()
                    .extend(rule.verbs.iter().cloned());
            }
        }
    }
}

fn grants(entries: &[(&str, &str, &[&str])]) -> Grants {
    entries
        .iter()
        .map(|(group, resource, verbs)| {
            (
                (group.to_string(), resource.to_string()),
                verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect()
}

fn binds_to(subjects: &Option<Vec<Subject>>, namespace: &str, service_account: &str) -> bool {
    subjects.iter().flatten().any(|s| {
        s.kind == "ServiceAccount"
            && s.name == service_account
            && s.namespace.as_deref() == Some(namespace)
    })
}

/// What the rendered bindings grant the ServiceAccount `namespace/service_account`, per scope.
fn granted_to(
    docs: &[serde_yaml::Value],
    namespace: &str,
    service_account: &str,
) -> BTreeMap<Scope, Grants> {
    let cluster_roles: BTreeMap<String, ClusterRole> = objects::<ClusterRole>(docs, "ClusterRole")
        .into_iter()
        .map(|r| (r.name_any(), r))
        .collect();
    let roles: BTreeMap<(String, String), Role> = objects::<Role>(docs, "Role")
        .into_iter()
        .map(|r| ((r.namespace().unwrap_or_default(), r.name_any()), r))
        .collect();
    let cluster_rules = |name: &str| {
        cluster_roles
            .get(name)
            .unwrap_or_else(|| panic!("bound ClusterRole {name} is not part of the chart"))
            .rules
            .clone()
            .unwrap_or_default()
    };
    let mut out: BTreeMap<Scope, Grants> = BTreeMap::new();
    for binding in objects::<ClusterRoleBinding>(docs, "ClusterRoleBinding") {
        if binds_to(&binding.subjects, namespace, service_account) {
            assert_eq!(binding.role_ref.kind, "ClusterRole");
            let name = binding.role_ref.name;
            add_rules(
                out.entry(CLUSTER_WIDE.into()).or_default(),
                &cluster_rules(&name),
                &name,
            );
        }
    }
    for binding in objects::<RoleBinding>(docs, "RoleBinding") {
        if binds_to(&binding.subjects, namespace, service_account) {
            let scope = binding.namespace().expect("a RoleBinding has a namespace");
            let name = binding.role_ref.name;
            let rules = match binding.role_ref.kind.as_str() {
                "Role" => roles
                    .get(&(scope.clone(), name.clone()))
                    .unwrap_or_else(|| panic!("bound Role {scope}/{name} is not part of the chart"))
                    .rules
                    .clone()
                    .unwrap_or_default(),
                _ => cluster_rules(&name),
            };
            add_rules(out.entry(scope).or_default(), &rules, &name);
        }
    }
    out
}

/// The operator's needs on namespaced objects (see docs/rbac.md).
fn namespaced_needs() -> Grants {
    grants(&[
        (
            "datajob.dev",
            "datajobs",
            &["get", "list", "watch", "patch", "update", "delete"],
        ),
        (
            "datajob.dev",
            "datajobs/status",
            &["get", "patch", "update"],
        ),
        ("datajob.dev", "datajobs/finalizers", &["update"]),
        (
            "",
            "pods",
            &["get", "list", "watch", "create", "delete", "patch"],
        ),
        ("", "configmaps", &["get", "create"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ])
}

/// The operator's needs on the cluster-scoped ComputePools.
fn pool_needs() -> Grants {
    grants(&[
        ("datajob.dev", "computepools", &["get", "list", "watch"]),
        ("", "namespaces", &["get"]),
        ("", "nodes", &["get"]),
        (
            "datajob.dev",
            "computepools/status",
            &["get", "patch", "update"],
        ),
    ])
}

fn lease_needs() -> Grants {
    grants(&[(
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    )])
}

fn service_account_name(docs: &[serde_yaml::Value]) -> String {
    let accounts = objects::<ServiceAccount>(docs, "ServiceAccount");
    assert_eq!(accounts.len(), 1, "the chart makes one ServiceAccount");
    let name = accounts[0].name_any();
    let deployment = the_deployment(docs);
    let pod_spec = deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec");
    assert_eq!(
        pod_spec.service_account_name.as_deref(),
        Some(name.as_str()),
        "the operator runs as the chart's ServiceAccount"
    );
    name
}

fn the_deployment(docs: &[serde_yaml::Value]) -> Deployment {
    let mut deployments = objects::<Deployment>(docs, "Deployment");
    assert_eq!(deployments.len(), 1, "the chart makes one Deployment");
    deployments.remove(0)
}

fn cluster_role<'a>(roles: &'a [ClusterRole], name: &str) -> &'a ClusterRole {
    roles
        .iter()
        .find(|r| r.name_any() == name)
        .unwrap_or_else(|| panic!("no ClusterRole {name} in the chart"))
}

fn role_grants(role: &ClusterRole) -> Grants {
    let mut out = Grants::new();
    add_rules(
        &mut out,
        role.rules.as_deref().unwrap_or_default(),
        &role.name_any(),
    );
    out
}

fn allows(grants: &Grants, group: &str, resource: &str, verb: &str) -> bool {
    grants
        .get(&(group.to_string(), resource.to_string()))
        .is_some_and(|verbs| verbs.contains(verb))
}

// --- offline tests ----------------------------------------------------------------------------

/// A rendered CRD without what the chart adds (Helm labels, the keep annotation).
fn without_chart_metadata(mut crd: serde_yaml::Value) -> serde_yaml::Value {
    let metadata = crd
        .get_mut("metadata")
        .and_then(|m| m.as_mapping_mut())
        .expect("metadata");
    metadata.remove("labels");
    metadata.remove("annotations");
    crd
}

fn rendered_crds(sets: &[&str]) -> Vec<serde_yaml::Value> {
    render(sets)
        .into_iter()
        .filter(|d| kind_of(d) == "CustomResourceDefinition")
        .collect()
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let generated = datajob_operator::api::crds_yaml().expect("CRDs render");
    let path = Path::new(CHART).join("files/crds.yaml");
    let in_chart = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        generated == in_chart,
        "charts/datajob-operator/files/crds.yaml is stale; regenerate it with \
         `cargo run -q -- crd > charts/datajob-operator/files/crds.yaml`"
    );
    assert!(
        !Path::new(CHART).join("crds").exists(),
        "the chart's CRDs are templates (templates/crds.yaml), not crds/, which Helm never upgrades"
    );
    // What the templates render is exactly the generated CRDs, plus the chart's metadata
    // (Helm's YAML round trip turns 0.0 into 0: numbers are compared as numbers).
    let rendered: Vec<serde_json::Value> = rendered_crds(&[])
        .into_iter()
        .map(|crd| numbers_as_floats(serde_json::to_value(without_chart_metadata(crd)).unwrap()))
        .collect();
    let generated: Vec<serde_json::Value> = yaml_documents(&generated)
        .into_iter()
        .map(|crd| numbers_as_floats(serde_json::to_value(crd).unwrap()))
        .collect();
    assert!(
        rendered == generated,
        "templates/crds.yaml does not render files/crds.yaml faithfully"
    );
}

fn numbers_as_floats(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => json!(n.as_f64().expect("a finite number")),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, numbers_as_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

#[test]
fn crds_are_kept_on_uninstall_unless_asked_and_can_be_left_out() {
    for crd in rendered_crds(&[]) {
        let annotations = &crd["metadata"]["annotations"];
        assert_eq!(annotations["helm.sh/resource-policy"], "keep", "{crd:?}");
        assert_eq!(
            crd["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
    }
    for crd in rendered_crds(&["crds.keep=false"]) {
        assert!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null(),
            "{crd:?}"
        );
    }
    assert!(rendered_crds(&["crds.enabled=false"]).is_empty());
    assert_eq!(rendered_crds(&["crds.annotations.team=data"]).len(), 2);
    for crd in rendered_crds(&["crds.annotations.team=data"]) {
        assert_eq!(crd["metadata"]["annotations"]["team"], "data");
    }
}

/// Every object schema of values.schema.json is closed: additionalProperties is false, or a
/// schema for the values of a free-form map (labels, annotations, quantities).
#[test]
fn values_schema_rejects_unknown_keys_everywhere() {
    fn walk(path: &str, node: &serde_json::Value, open: &mut Vec<String>) {
        let Some(map) = node.as_object() else { return };
        let is_object = map.get("type") == Some(&json!("object"));
        if is_object && !map.contains_key("additionalProperties") {
            open.push(path.to_string());
        }
        if map.contains_key("properties") && map.get("additionalProperties") != Some(&json!(false))
        {
            open.push(format!("{path} (has properties)"));
        }
        for (key, child) in map
            .get("properties")
            .and_then(|p| p.as_object())
            .into_iter()
            .flatten()
        {
            walk(&format!("{path}.{key}"), child, open);
        }
        if let Some(items) = map.get("items") {
            walk(&format!("{path}[]"), items, open);
        }
        if let Some(values) = map.get("additionalProperties").filter(|v| v.is_object()) {
            walk(&format!("{path}.*"), values, open);
        }
    }
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(CHART).join("values.schema.json")).expect("schema"),
    )
    .expect("JSON");
    let mut open = Vec::new();
    walk("", &schema, &mut open);
    assert!(
        open.is_empty(),
        "open objects in values.schema.json: {open:?}"
    );

    // Each top-level key of values.yaml is in the schema, and the defaults pass it.
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(CHART).join("values.yaml")).expect("values"),
    )
    .expect("YAML");
    for key in values.as_mapping().expect("a mapping").keys() {
        let key = key.as_str().expect("string key");
        assert!(
            schema["properties"].get(key).is_some(),
            "{key} is not in the schema"
        );
    }
    helm_ok(&["lint", "--strict", CHART]);
}

#[test]
fn unknown_and_misspelt_values_fail_and_new_ones_work() {
    for set in [
        "replicaCount=2",
        "image.digset=sha256:0",
        "metrics.service.enable=true",
        "crds.keepp=true",
        "securityContext.runAsUsr=1",
        "podDisruptionBudget.maxUnavailble=1",
        "image.digest=latest",
    ] {
        let out = helm(&["lint", CHART, "--set", set]);
        assert!(
            !out.status.success(),
            "helm lint --set {set} must fail the values schema"
        );
    }
    let digest = format!("sha256:{}", "a".repeat(64));
    let docs = render(&[&format!("image.digest={digest}"), "image.tag=9.9.9"]);
    let image = the_deployment(&docs)
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].image.clone().unwrap_or_default())
        .expect("container image");
    assert_eq!(
        image,
        format!("ghcr.io/datajob-dev/datajob-operator@{digest}")
    );
}

#[test]
fn service_monitor_and_pod_disruption_budget_are_optional() {
    let docs = render(&[]);
    for kind in ["ServiceMonitor", "PodDisruptionBudget"] {
        assert!(
            docs.iter().all(|d| kind_of(d) != kind),
            "{kind} is off by default"
        );
    }
    let docs = render(&[
        "serviceMonitor.enabled=true",
        "serviceMonitor.interval=30s",
        "serviceMonitor.labels.release=prometheus",
        "podDisruptionBudget.enabled=true",
        "replicas=2",
    ]);
    let monitor = docs
        .iter()
        .find(|d| kind_of(d) == "ServiceMonitor")
        .expect("a ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "http-metrics");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "30s");
    // It selects the metrics Service, whose port it names.
    let service = docs
        .iter()
        .find(|d| kind_of(d) == "Service")
        .expect("the metrics Service");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("labels")
    {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key:?}");
    }
    assert_eq!(service["spec"]["ports"][0]["name"], "http-metrics");

    let pdb = docs
        .iter()
        .find(|d| kind_of(d) == "PodDisruptionBudget")
        .expect("a PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let deployment = docs
        .iter()
        .find(|d| kind_of(d) == "Deployment")
        .expect("deployment");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let docs = render(&[
        "podDisruptionBudget.enabled=true",
        "podDisruptionBudget.minAvailable=1",
    ]);
    let pdb = docs
        .iter()
        .find(|d| kind_of(d) == "PodDisruptionBudget")
        .expect("pdb");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(pdb["spec"]["maxUnavailable"].is_null());
    // A ServiceMonitor needs the Service.
    let out = helm(&[
        "template",
        "rel",
        CHART,
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "metrics.service.enabled=false",
    ]);
    assert!(!out.status.success());
}

#[test]
fn helm_test_hook_probes_readyz_through_the_metrics_service() {
    let docs = render(&[]);
    let pods = objects::<k8s_openapi::api::core::v1::Pod>(&docs, "Pod");
    assert_eq!(pods.len(), 1, "one test pod");
    let pod = &pods[0];
    let annotations = pod.annotations();
    assert_eq!(
        annotations.get("helm.sh/hook").map(String::as_str),
        Some("test")
    );
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    let container = &spec.containers[0];
    assert_eq!(
        container.args.as_deref(),
        Some(
            &[
                "probe".to_string(),
                format!("http://rel-datajob-operator-metrics.{RELEASE_NAMESPACE}.svc:8080/readyz"),
            ][..]
        )
    );
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/datajob-dev/datajob-operator:0.1.0"),
        "the operator's own image"
    );
    let security = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert!(
        render(&["tests.enabled=false"])
            .iter()
            .all(|d| kind_of(d) != "Pod")
    );
    assert!(
        render(&["metrics.service.enabled=false"])
            .iter()
            .all(|d| kind_of(d) != "Pod")
    );
}

#[test]
fn finalizer_policy_needs_the_api_and_is_scoped_like_the_operator() {
    let policy_docs = |api: bool, sets: &[&str]| -> Vec<serde_yaml::Value> {
        let extra: &[&str] = if api {
            &[
                "--api-versions",
                "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
            ]
        } else {
            &[]
        };
        render_with(extra, sets)
            .into_iter()
            .filter(|d| kind_of(d).starts_with("MutatingAdmissionPolicy"))
            .collect()
    };
    assert!(
        policy_docs(false, &[]).is_empty(),
        "no policy where the API is not served"
    );
    assert!(policy_docs(true, &["finalizerPolicy.enabled=false"]).is_empty());

    let all = policy_docs(true, &[]);
    let kinds: Vec<&str> = all.iter().map(kind_of).collect();
    assert_eq!(
        kinds,
        ["MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"]
    );
    let policy = &all[0]["spec"];
    assert_eq!(policy["failurePolicy"].as_str(), Some("Ignore"));
    assert_eq!(
        policy["matchConstraints"]["resourceRules"][0]["operations"][0].as_str(),
        Some("CREATE")
    );
    assert!(
        policy["mutations"][0]["applyConfiguration"]["expression"]
            .as_str()
            .is_some_and(|e| e.contains("\"datajob.dev/teardown\"")),
        "{policy:?}"
    );
    assert!(
        policy.get("matchConditions").is_none() && all[1]["spec"].get("matchResources").is_none()
    );

    let scoped = policy_docs(true, &["watchNamespace=team-a", "dataPlane=dp-1"]);
    assert_eq!(
        scoped[0]["spec"]["matchConditions"][0]["expression"].as_str(),
        Some("has(object.spec.dataPlane) && object.spec.dataPlane == 'dp-1'")
    );
    assert_eq!(
        scoped[1]["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
            ["kubernetes.io/metadata.name"]
            .as_str(),
        Some("team-a")
    );
}

#[test]
fn helm_lint_is_clean() {
    for sets in [
        vec![],
        vec!["watchNamespace=team-a", "dataPlane=dp-1", "replicas=2"],
        vec![
            "rbac.aggregatedRoles.create=false",
            "metrics.service.enabled=false",
        ],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let out = helm_ok(&args);
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "helm lint {sets:?} is not clean:\n{out}"
        );
    }
}

#[test]
fn invalid_values_are_rejected() {
    for set in [
        "logFormat=xml",
        "watchNamespace=Not_A_Namespace",
        "concurrency=0",
    ] {
        let out = helm(&["lint", CHART, "--set", set]);
        assert!(
            !out.status.success(),
            "helm lint --set {set} should fail the values schema"
        );
    }
}

#[test]
fn operator_rbac_grants_exactly_what_it_needs_cluster_wide() {
    let docs = render(&[]);
    let account = service_account_name(&docs);
    let granted = granted_to(&docs, RELEASE_NAMESPACE, &account);

    let mut cluster = namespaced_needs();
    cluster.extend(pool_needs());
    let expected = BTreeMap::from([
        (CLUSTER_WIDE.to_string(), cluster),
        (RELEASE_NAMESPACE.to_string(), lease_needs()),
    ]);
    assert_eq!(granted, expected);
}

#[test]
fn operator_rbac_is_namespaced_when_watching_one_namespace() {
    let docs = render(&["watchNamespace=team-a"]);
    let account = service_account_name(&docs);
    let granted = granted_to(&docs, RELEASE_NAMESPACE, &account);
    let expected = BTreeMap::from([
        // ComputePools are cluster-scoped: only a ClusterRole can grant them.
        (CLUSTER_WIDE.to_string(), pool_needs()),
        ("team-a".to_string(), namespaced_needs()),
        (RELEASE_NAMESPACE.to_string(), lease_needs()),
    ]);
    assert_eq!(granted, expected);
}

#[test]
fn no_role_in_the_chart_uses_wildcards_or_touches_secrets() {
    for sets in [vec![], vec!["watchNamespace=team-a"]] {
        let docs = render(&sets);
        let cluster_roles = objects::<ClusterRole>(&docs, "ClusterRole");
        for role in &cluster_roles {
            assert!(
                role.aggregation_rule.is_none(),
                "{}: no aggregation rule",
                role.name_any()
            );
        }
        let roles = objects::<Role>(&docs, "Role");
        let named_rules = (cluster_roles.into_iter())
            .map(|r| (r.name_any(), r.rules))
            .chain(roles.into_iter().map(|r| (r.name_any(), r.rules)));
        let rules: Vec<(String, PolicyRule)> = named_rules
            .flat_map(|(name, rules)| {
                let rules = rules.unwrap_or_default();
                rules.into_iter().map(move |r| (name.clone(), r))
            })
            .collect();
        assert!(!rules.is_empty());
        for (role, rule) in rules {
            let words = rule
                .verbs
                .iter()
                .chain(rule.resources.iter().flatten())
                .chain(rule.api_groups.iter().flatten());
            for word in words {
                assert!(!word.contains('*'), "{role}: wildcard in {rule:?}");
            }
            for resource in rule.resources.iter().flatten() {
                assert!(
                    !["secrets", "serviceaccounts"].contains(&resource.as_str()),
                    "{role}: unexpected access to {resource}"
                );
                // Only a read of the node of a pod stuck terminating.
                if resource == "nodes" {
                    assert_eq!(rule.verbs, ["get"], "{role}: more than get on nodes");
                }
                // Only the job's own query ConfigMap: create it, read one that exists.
                if resource == "configmaps" {
                    assert!(
                        rule.verbs.iter().all(|v| v == "get" || v == "create"),
                        "{role}: more than get/create on configmaps: {rule:?}"
                    );
                }
            }
            for verb in &rule.verbs {
                assert!(
                    !["escalate", "bind", "impersonate"].contains(&verb.as_str()),
                    "{role}: privilege verb {verb}"
                );
            }
        }
    }
}

#[test]
fn datajob_edit_can_cancel_and_datajob_view_can_only_read() {
    let docs = render(&[]);
    let roles = objects::<ClusterRole>(&docs, "ClusterRole");
    let view = cluster_role(&roles, "datajob-view");
    let edit = cluster_role(&roles, "datajob-edit");

    let label = |role: &ClusterRole, key: &str| {
        role.labels()
            .get(&format!("rbac.authorization.k8s.io/{key}"))
            .map(String::as_str)
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(label(view, "aggregate-to-view"), "true");
    assert_eq!(label(edit, "aggregate-to-edit"), "true");
    assert_eq!(label(edit, "aggregate-to-admin"), "true");
    assert_eq!(
        label(edit, "aggregate-to-view"),
        "",
        "write access must not reach `view`"
    );

    let view = role_grants(view);
    let edit = role_grants(edit);
    for verb in ["get", "list", "watch"] {
        for resource in ["datajobs", "computepools"] {
            assert!(
                allows(&view, "datajob.dev", resource, verb),
                "view: {verb} {resource}"
            );
            assert!(
                allows(&edit, "datajob.dev", resource, verb),
                "edit: {verb} {resource}"
            );
        }
    }
    // Cancelling is `kubectl patch dj NAME -p '{"spec":{"cancel":true}}'`.
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            allows(&edit, "datajob.dev", "datajobs", verb),
            "edit: {verb} datajobs"
        );
        assert!(
            !allows(&view, "datajob.dev", "datajobs", verb),
            "view must not {verb} datajobs"
        );
    }
    for (grants, who) in [(&view, "view"), (&edit, "edit")] {
        for verb in ["create", "update", "patch", "delete"] {
            assert!(
                !allows(grants, "datajob.dev", "datajobs/status", verb),
                "{who}: status is the operator's"
            );
            assert!(
                !allows(grants, "datajob.dev", "computepools", verb),
                "{who}: pools are for cluster admins"
            );
        }
    }
}

#[test]
fn aggregated_role_names_are_configurable_and_optional() {
    let docs = render(&[
        "rbac.aggregatedRoles.viewName=team-datajob-view",
        "rbac.aggregatedRoles.editName=team-datajob-edit",
    ]);
    let names: BTreeSet<String> = objects::<ClusterRole>(&docs, "ClusterRole")
        .iter()
        .map(|r| r.name_any())
        .collect();
    assert!(
        names.contains("team-datajob-view") && names.contains("team-datajob-edit"),
        "{names:?}"
    );
    assert!(
        !names.contains("datajob-view") && !names.contains("datajob-edit"),
        "{names:?}"
    );

    let docs = render(&["rbac.aggregatedRoles.create=false"]);
    let names: Vec<String> = objects::<ClusterRole>(&docs, "ClusterRole")
        .iter()
        .map(|r| r.name_any())
        .collect();
    assert_eq!(names, ["rel-datajob-operator"]);
}

#[test]
fn deployment_runs_the_operator_as_documented() {
    let docs = render(&[
        "watchNamespace=team-a",
        "dataPlane=dp-1",
        "executor.image=reg.example/exec:9",
    ]);
    let deployment = the_deployment(&docs);
    let spec = deployment.spec.expect("deployment spec");
    assert_eq!(spec.replicas, Some(1));
    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(pod.containers.len(), 1);
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/datajob-dev/datajob-operator:0.1.0")
    );
    let args = container.args.clone().unwrap_or_default();
    for expected in [
        "--log-format=json",
        "--http-addr=0.0.0.0:8080",
        "--executor-image=reg.example/exec:9",
        "--concurrency=16",
        "--namespace=team-a",
        "--data-plane=dp-1",
        "--leader-election",
        "--lease-name=rel-datajob-operator",
    ] {
        assert!(
            args.iter().any(|a| a == expected),
            "missing {expected} in {args:?}"
        );
    }
    let env = container.env.clone().unwrap_or_default();
    let pod_name = env
        .iter()
        .find(|e| e.name == "POD_NAME")
        .expect("POD_NAME env");
    let field = pod_name
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("POD_NAME comes from a fieldRef");
    assert_eq!(field.field_path, "metadata.name");

    assert_eq!(
        support::helm::http_get_path(&container.liveness_probe).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        support::helm::http_get_path(&container.readiness_probe).as_deref(),
        Some("/readyz")
    );
    let port = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"));
    assert_eq!(port.map(|p| p.container_port), Some(8080));
    assert!(
        container
            .resources
            .as_ref()
            .is_some_and(|r| r.requests.is_some())
    );

    // The "restricted" Pod Security Standard.
    let pod_security = pod.security_context.expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    let seccomp = pod_security.seccomp_profile.expect("pod seccompProfile");
    assert_eq!(seccomp.type_, "RuntimeDefault");
    let security = container
        .security_context
        .clone()
        .expect("container securityContext");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_non_root, Some(true));
    let drop = security
        .capabilities
        .and_then(|c| c.drop)
        .unwrap_or_default();
    assert_eq!(drop, ["ALL"]);

    let services: Vec<k8s_openapi::api::core::v1::Service> = objects(&docs, "Service");
    assert_eq!(services.len(), 1, "the metrics Service");
    let ports = services[0]
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, 8080);
}

#[test]
fn examples_are_valid_datajobs_and_computepools() {
    let mut seen = BTreeMap::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(EXAMPLES)
        .expect("examples/ is readable")
        .map(|e| e.expect("examples/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("example is readable");
        for doc in yaml_documents(&text) {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(
                doc.get("apiVersion").and_then(|v| v.as_str()),
                Some("datajob.dev/v1alpha1"),
                "{file}"
            );
            let name = match kind_of(&doc) {
                "DataJob" => {
                    let job: DataJob = serde_yaml::from_value(doc.clone())
                        .unwrap_or_else(|e| panic!("{file} is not a valid DataJob: {e}"));
                    assert!(
                        !job.spec.cancel,
                        "{file}: an example must not start cancelled"
                    );
                    job.name_any()
                }
                "ComputePool" => {
                    let pool: ComputePool = serde_yaml::from_value(doc.clone())
                        .unwrap_or_else(|e| panic!("{file} is not a valid ComputePool: {e}"));
                    pool.name_any()
                }
                other => panic!("{file}: unexpected kind {other:?}"),
            };
            seen.insert(file, name);
        }
    }
    for file in [
        "computepool-shared.yaml",
        "computepool-dedicated.yaml",
        "datajob-shared.yaml",
        "datajob-dedicated.yaml",
    ] {
        assert!(
            seen.contains_key(file),
            "examples/{file} is missing: {seen:?}"
        );
    }

    let read = |file: &str| std::fs::read_to_string(Path::new(EXAMPLES).join(file)).unwrap();
    let shared: DataJob = serde_yaml::from_str(&read("datajob-shared.yaml")).unwrap();
    assert_eq!(shared.spec.job_type.as_str(), "materialize-view");
    assert_eq!(shared.spec.input.dataset_id, Some(6404));
    assert!(shared.spec.input.stats_enabled);
    assert_eq!(shared.spec.data_plane, "dp-local");
    assert_eq!(shared.spec.compute_pool.as_deref(), Some("shared-pool"));

    let dedicated: DataJob = serde_yaml::from_str(&read("datajob-dedicated.yaml")).unwrap();
    assert_eq!(dedicated.spec.job_type.as_str(), "nql-forecast");
    assert_eq!(
        dedicated.spec.compute_pool.as_deref(),
        Some("dedicated-pool")
    );
    let executor = dedicated.spec.executor.expect("executor settings");
    assert_eq!(executor.workers, Some(2));
    assert_eq!(executor.termination_grace_period_seconds, Some(5));

    let pool: ComputePool = serde_yaml::from_str(&read("computepool-dedicated.yaml")).unwrap();
    assert_eq!(pool.name_any(), "dedicated-pool");
    assert_eq!(pool.spec.cluster_type.as_str(), "dedicated");
    assert_eq!(
        pool.spec
            .node_selector
            .get("datajob.dev/node-group")
            .map(String::as_str),
        Some("b")
    );
    let pool: ComputePool = serde_yaml::from_str(&read("computepool-shared.yaml")).unwrap();
    assert_eq!(pool.name_any(), "shared-pool");
    assert_eq!(pool.spec.cluster_type.as_str(), "shared");
    assert_eq!(pool.spec.max_concurrent_jobs, 0);
}

// --- against the cluster ----------------------------------------------------------------------

/// Uninstalls the release and removes what the test made (bindings, the namespace), also when
/// the test panics.
struct Installed {
    release: String,
    namespace: String,
    cluster_role_bindings: Vec<String>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let out = helm(&[
            "uninstall",
            &self.release,
            "--namespace",
            &self.namespace,
            "--wait",
            "--timeout",
            "60s",
        ]);
        if !out.status.success() {
            eprintln!(
                "warning: helm uninstall {} failed: {}",
                self.release,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if !self.cluster_role_bindings.is_empty() {
            let mut cmd = support::kubectl();
            cmd.args(["delete", "clusterrolebinding", "--ignore-not-found"])
                .args(&self.cluster_role_bindings);
            match cmd.output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "warning: could not delete ClusterRoleBindings {:?}: {}",
                    self.cluster_role_bindings,
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("warning: cannot run kubectl: {e}"),
            }
        }
        let deleted = support::kubectl()
            .args([
                "delete",
                "namespace",
                "--ignore-not-found",
                "--wait=false",
                &self.namespace,
            ])
            .output();
        if !deleted.is_ok_and(|out| out.status.success()) {
            eprintln!("warning: could not delete namespace {}", self.namespace);
        }
    }
}

/// What a subject may and may not do, checked with SubjectAccessReviews. Each entry is
/// `"VERB RESOURCE[.GROUP]"` in kubectl's notation (`patch datajobs.datajob.dev`,
/// `update datajobs/finalizers.datajob.dev`, `get secrets`), in one scope: a namespace, or the
/// whole cluster (`None`).
struct Access<'a> {
    user: String,
    groups: Vec<String>,
    expected: Vec<(&'a str, Option<&'a str>, bool)>,
}

impl<'a> Access<'a> {
    fn of(user: &str, groups: &[String]) -> Self {
        Access {
            user: user.to_string(),
            groups: groups.to_vec(),
            expected: Vec::new(),
        }
    }

    fn can(mut self, scope: Option<&'a str>, asks: &[&'a str]) -> Self {
        self.expected.extend(asks.iter().map(|a| (*a, scope, true)));
        self
    }

    fn cannot(mut self, scope: Option<&'a str>, asks: &[&'a str]) -> Self {
        self.expected
            .extend(asks.iter().map(|a| (*a, scope, false)));
        self
    }

    /// Asserts every answer. With `settle`, keeps asking until then (role aggregation is
    /// asynchronous).
    async fn check(&self, client: &Client, settle: Duration) {
        let deadline = Instant::now() + settle;
        loop {
            let mut wrong = Vec::new();
            for &(ask, scope, expected) in &self.expected {
                if self.allowed(client, ask, scope).await != expected {
                    let verdict = if expected { "CANNOT" } else { "CAN" };
                    let scope = scope.unwrap_or("the cluster");
                    wrong.push(format!("{verdict} {ask} in {scope}"));
                }
            }
            if wrong.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "unexpected access for {}:\n  {}",
                    self.user,
                    wrong.join("\n  ")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn allowed(&self, client: &Client, ask: &str, scope: Option<&str>) -> bool {
        let (verb, target) = ask.split_once(' ').expect("\"VERB RESOURCE[.GROUP]\"");
        let (resource, group) = target.split_once('.').unwrap_or((target, ""));
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (resource, None),
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(self.user.clone()),
                groups: Some(self.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    group: Some(group.to_string()),
                    resource: Some(resource.to_string()),
                    subresource,
                    namespace: scope.map(str::to_string),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .unwrap_or_else(|e| panic!("SubjectAccessReview for {}: {e}", self.user));
        answer.status.is_some_and(|s| s.allowed)
    }
}

async fn bind(
    client: &Client,
    namespace: Option<&str>,
    name: &str,
    cluster_role: &str,
    user: &str,
) {
    let body = json!({
        "metadata": { "name": name, "namespace": namespace },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
    });
    let result = match namespace {
        Some(ns) => Api::<RoleBinding>::namespaced(client.clone(), ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(body).unwrap(),
            )
            .await
            .map(|_| ()),
        None => Api::<ClusterRoleBinding>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(body).unwrap(),
            )
            .await
            .map(|_| ()),
    };
    result.unwrap_or_else(|e| panic!("cannot bind {user} to {cluster_role}: {e}"));
}

#[tokio::test]
async fn helm_install_grants_least_privilege_on_a_real_cluster() {
    let client = support::admin_client().await;
    // Labelled as a test namespace, deleted by `Installed` (the namespace's own cleanup is not
    // needed).
    let namespace = support::TestNamespace::new(&client, "helm")
        .await
        .name()
        .to_string();
    let suffix = namespace.trim_start_matches("helm-").to_string();
    let release = namespace.clone();
    let view_role = format!("datajob-view-{suffix}");
    let edit_role = format!("datajob-edit-{suffix}");
    let carol_binding = format!("helm-test-carol-{suffix}");
    let dave_binding = format!("helm-test-dave-{suffix}");
    let mut installed = Installed {
        release: release.clone(),
        namespace: namespace.clone(),
        cluster_role_bindings: Vec::new(),
    };

    // The operator's pods must be admitted under the "restricted" Pod Security Standard.
    support::enforce_restricted(&client, &namespace).await;

    // Cluster-scoped names are per test run, so parallel runs and other releases never clash.
    helm_ok(&[
        "install",
        &release,
        CHART,
        "--namespace",
        &namespace,
        "--create-namespace",
        // The CRDs are the test suite's (tests install them); the lifecycle test owns the
        // chart's CRD templates.
        "--set",
        "crds.enabled=false",
        // The test's DataJob is deleted with no operator running (kwok does not run the
        // operator's pod): it must not get the teardown finalizer from the release's policy.
        "--set",
        "finalizerPolicy.enabled=false",
        "--set",
        &format!("rbac.aggregatedRoles.viewName={view_role}"),
        "--set",
        &format!("rbac.aggregatedRoles.editName={edit_role}"),
        "--wait",
        "--timeout",
        "120s",
    ]);

    // The CRDs (installed by the test suite) are served.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["datajobs.datajob.dev", "computepools.datajob.dev"] {
        let crd = crds
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name}: {e}"));
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "CRD {name} is not established");
    }

    // The Deployment became available (helm --wait) as the chart's ServiceAccount.
    let fullname = format!("{release}-datajob-operator");
    let deployment = Api::<Deployment>::namespaced(client.clone(), &namespace)
        .get(&fullname)
        .await
        .expect("the operator Deployment");
    let available = deployment
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    assert_eq!(
        available, 1,
        "the operator Deployment is available: {:?}",
        deployment.status
    );
    let account = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.service_account_name)
        .expect("serviceAccountName");
    assert_eq!(account, fullname);
    Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .get(&account)
        .await
        .expect("the chart's ServiceAccount exists");

    // The operator's ServiceAccount, as the API server sees it.
    let sa_user = format!("system:serviceaccount:{namespace}:{account}");
    let sa_groups = vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".to_string(),
    ];
    let elsewhere = Some("default");
    let here = Some(namespace.as_str());
    Access::of(&sa_user, &sa_groups)
        .can(
            elsewhere,
            &[
                "create pods",
                "delete pods",
                "patch pods",
                "create configmaps",
            ],
        )
        .can(None, &["watch pods", "list datajobs.datajob.dev"])
        .can(
            elsewhere,
            &[
                "patch datajobs.datajob.dev",
                "delete datajobs.datajob.dev",
                "patch datajobs/status.datajob.dev",
                "update datajobs/finalizers.datajob.dev",
                "create events.events.k8s.io",
            ],
        )
        .can(
            None,
            &[
                "watch computepools.datajob.dev",
                "patch computepools/status.datajob.dev",
            ],
        )
        .can(
            here,
            &[
                "create leases.coordination.k8s.io",
                "update leases.coordination.k8s.io",
            ],
        )
        .cannot(here, &["get secrets", "create deployments.apps"])
        .cannot(None, &["get secrets"])
        .cannot(
            elsewhere,
            &[
                "list secrets",
                "list configmaps",
                "update configmaps",
                "delete configmaps",
            ],
        )
        .cannot(
            elsewhere,
            &[
                "create datajobs.datajob.dev",
                "update pods",
                "create pods/exec",
                "create events",
            ],
        )
        .cannot(
            None,
            &[
                "patch computepools.datajob.dev",
                "delete computepools.datajob.dev",
                "create clusterrolebindings.rbac.authorization.k8s.io",
            ],
        )
        .cannot(Some("kube-system"), &["update leases.coordination.k8s.io"])
        .check(&client, RBAC_SETTLE)
        .await;

    // Users bound cluster-wide to the aggregated roles: carol may cancel (patch), dave may not.
    bind(&client, None, &carol_binding, &edit_role, "carol").await;
    installed.cluster_role_bindings.push(carol_binding.clone());
    bind(&client, None, &dave_binding, &view_role, "dave").await;
    installed.cluster_role_bindings.push(dave_binding.clone());
    let authenticated = vec!["system:authenticated".to_string()];
    Access::of("carol", &authenticated)
        .can(
            here,
            &["patch datajobs.datajob.dev", "get datajobs.datajob.dev"],
        )
        .can(
            elsewhere,
            &["create datajobs.datajob.dev", "delete datajobs.datajob.dev"],
        )
        .can(None, &["list computepools.datajob.dev"])
        .cannot(here, &["patch datajobs/status.datajob.dev", "get secrets"])
        .cannot(None, &["patch computepools.datajob.dev"])
        .check(&client, RBAC_SETTLE)
        .await;
    let writes = [
        "patch datajobs.datajob.dev",
        "update datajobs.datajob.dev",
        "create datajobs.datajob.dev",
        "delete datajobs.datajob.dev",
    ];
    Access::of("dave", &authenticated)
        .can(here, &["get datajobs.datajob.dev"])
        .can(
            None,
            &[
                "watch datajobs.datajob.dev",
                "list computepools.datajob.dev",
            ],
        )
        .cannot(here, &writes)
        .check(&client, RBAC_SETTLE)
        .await;

    // Aggregation: the built-in `edit` role (bound in this namespace) gains write access to
    // DataJobs, `view` gains read access only. The aggregation controller is asynchronous.
    bind(&client, here, "erin-edit", "edit", "erin").await;
    bind(&client, here, "frank-view", "view", "frank").await;
    let settle = Duration::from_secs(60);
    Access::of("erin", &authenticated)
        .can(
            here,
            &["patch datajobs.datajob.dev", "list datajobs.datajob.dev"],
        )
        .cannot(here, &["patch datajobs/status.datajob.dev"])
        .check(&client, settle)
        .await;
    Access::of("frank", &authenticated)
        .can(here, &["list datajobs.datajob.dev"])
        .cannot(here, &["patch datajobs.datajob.dev"])
        .check(&client, settle)
        .await;

    // Real requests: alice (datajob-edit in this namespace) creates and cancels a job; bob
    // (datajob-view) reads it but cannot cancel it.
    bind(&client, here, "alice-datajob-edit", &edit_role, "alice").await;
    bind(&client, here, "bob-datajob-view", &view_role, "bob").await;
    let alice = support::user_client("alice").await;
    let bob = support::user_client("bob").await;
    let mut job: DataJob = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(EXAMPLES).join("datajob-shared.yaml")).unwrap(),
    )
    .unwrap();
    job.metadata.name = Some(format!("helm-rbac-{suffix}"));
    let job_name = job.name_any();
    let alice_jobs: Api<DataJob> = Api::namespaced(alice, &namespace);
    let bob_jobs: Api<DataJob> = Api::namespaced(bob, &namespace);
    alice_jobs
        .create(&PostParams::default(), &job)
        .await
        .expect("alice (datajob-edit) creates a DataJob");
    let cancel = Patch::Merge(json!({ "spec": { "cancel": true, "cancelReason": "rbac test" } }));
    let by_bob = bob_jobs
        .patch(&job_name, &PatchParams::default(), &cancel)
        .await;
    assert!(
        is_forbidden(&by_bob),
        "bob (datajob-view) must not cancel: {by_bob:?}"
    );
    let read = bob_jobs
        .get(&job_name)
        .await
        .expect("bob (datajob-view) reads the DataJob");
    assert!(!read.spec.cancel);
    let cancelled = alice_jobs
        .patch(&job_name, &PatchParams::default(), &cancel)
        .await
        .expect("alice (datajob-edit) cancels the DataJob");
    assert!(cancelled.spec.cancel);
    let forged = alice_jobs
        .patch_status(
            &job_name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "state": "cancelled" } })),
        )
        .await;
    assert!(
        is_forbidden(&forged),
        "alice must not write status: {forged:?}"
    );

    Api::<DataJob>::namespaced(client.clone(), &namespace)
        .delete(&job_name, &DeleteParams::default())
        .await
        .expect("delete the test DataJob");
    drop(installed);
    // This release did not manage the CRDs: the ones other tests use are still there.
    for name in ["datajobs.datajob.dev", "computepools.datajob.dev"] {
        crds.get(name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name} must survive uninstall: {e}"));
    }
    let roles: Api<ClusterRole> = Api::all(client.clone());
    for name in [&view_role, &edit_role, &fullname] {
        assert!(
            roles
                .get_opt(name)
                .await
                .expect("get ClusterRole")
                .is_none(),
            "ClusterRole {name} must go with the release"
        );
    }
}

// --- the release lifecycle on the cluster -----------------------------------------------------

const CRD_NAMES: [&str; 2] = ["datajobs.datajob.dev", "computepools.datajob.dev"];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The chart as a next version would ship it: chart version `version`, and a DataJob CRD with
/// one more (optional) field and printer column.
fn next_chart_version(version: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("helm-lifecycle")
        .join(format!("chart-{version}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(Path::new(CHART), &dir);
    let chart_yaml = dir.join("Chart.yaml");
    let chart = std::fs::read_to_string(&chart_yaml).expect("Chart.yaml");
    std::fs::write(
        &chart_yaml,
        chart.replace("version: 0.1.0", &format!("version: {version}")),
    )
    .expect("write Chart.yaml");
    let crds_path = dir.join("files/crds.yaml");
    let mut out = String::new();
    for mut crd in yaml_documents(&std::fs::read_to_string(&crds_path).expect("crds")) {
        if crd["metadata"]["name"] == "datajobs.datajob.dev" {
            let version = &mut crd["spec"]["versions"][0];
            version["additionalPrinterColumns"]
                .as_sequence_mut()
                .expect("columns")
                .push(
                    serde_yaml::from_str(
                        "{name: Priority, type: integer, jsonPath: .spec.priority}",
                    )
                    .unwrap(),
                );
            version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                .as_mapping_mut()
                .expect("spec properties")
                .insert(
                    "priority".into(),
                    serde_yaml::from_str(
                        "{type: integer, description: Added by the next chart version.}",
                    )
                    .unwrap(),
                );
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("YAML"));
    }
    std::fs::write(&crds_path, out).expect("write crds");
    dir
}

/// Whether the served DataJob CRD has the field the next chart version adds.
/// Whether the MutatingAdmissionPolicy `name` and its binding exist.
fn finalizer_policy(name: &str) -> [bool; 2] {
    ["mutatingadmissionpolicy", "mutatingadmissionpolicybinding"].map(|kind| {
        let out = support::kubectl()
            .args(["get", kind, name, "--ignore-not-found", "-o", "name"])
            .output()
            .expect("run kubectl");
        assert!(out.status.success(), "kubectl get {kind} {name}: {out:?}");
        !out.stdout.is_empty()
    })
}

async fn crd_has_priority(client: &Client) -> bool {
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get("datajobs.datajob.dev")
        .await
        .expect("the DataJob CRD");
    let version = &crd.spec.versions[0];
    let column = version
        .additional_printer_columns
        .iter()
        .flatten()
        .any(|c| c.name == "Priority");
    let field = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| s.properties.as_ref())
        .and_then(|p| p.get("spec"))
        .and_then(|s| s.properties.as_ref())
        .is_some_and(|p| p.contains_key("priority"));
    assert_eq!(
        column, field,
        "the column and the field come and go together"
    );
    column
}

fn operator_image(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers[0].image.clone())
        .expect("image")
}

/// Marks (or, with `adopt` false, unmarks) the suite's CRDs as the release's, as docs/helm.md
/// tells users who installed them from crds/ before.
fn adopt_crds(release: &str, namespace: &str, adopt: bool) {
    for crd in CRD_NAMES {
        let (annotations, labels): (Vec<String>, Vec<String>) = if adopt {
            (
                vec![
                    format!("meta.helm.sh/release-name={release}"),
                    format!("meta.helm.sh/release-namespace={namespace}"),
                ],
                vec!["app.kubernetes.io/managed-by=Helm".to_string()],
            )
        } else {
            (
                [
                    "meta.helm.sh/release-name",
                    "meta.helm.sh/release-namespace",
                    "helm.sh/resource-policy",
                ]
                .iter()
                .map(|a| format!("{a}-"))
                .collect(),
                [
                    "app.kubernetes.io/managed-by",
                    "app.kubernetes.io/instance",
                    "app.kubernetes.io/name",
                    "app.kubernetes.io/part-of",
                    "app.kubernetes.io/version",
                    "helm.sh/chart",
                ]
                .iter()
                .map(|l| format!("{l}-"))
                .collect(),
            )
        };
        for args in [
            [
                vec!["annotate", "--overwrite", "crd", crd],
                annotations.iter().map(String::as_str).collect(),
            ]
            .concat(),
            [
                vec!["label", "--overwrite", "crd", crd],
                labels.iter().map(String::as_str).collect(),
            ]
            .concat(),
        ] {
            let out = support::kubectl().args(&args).output().expect("kubectl");
            assert!(
                out.status.success(),
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[tokio::test]
async fn helm_install_upgrade_with_a_crd_change_rollback_test_and_uninstall() {
    let client = support::admin_client().await;
    // The suite's CRDs exist (other tests need them all along): this release adopts them.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in CRD_NAMES {
        if crds.get_opt(name).await.expect("get CRD").is_none() {
            let generated = datajob_operator::api::crds_yaml().expect("CRDs");
            support::kubectl_with_input(&["apply", "--server-side", "-f", "-"], &generated);
        }
        support::wait_established(&client, name, Duration::from_secs(60)).await;
    }
    let namespace = support::TestNamespace::new(&client, "helm-life")
        .await
        .name()
        .to_string();
    let release = namespace.clone();
    let _installed = Installed {
        release: release.clone(),
        namespace: namespace.clone(),
        cluster_role_bindings: Vec::new(),
    };
    adopt_crds(&release, &namespace, true);
    // kwok simulates pods: this annotation makes its stage end the test pod with exit code 0.
    let test_pod_exits =
        |code: u8| format!("tests.podAnnotations.sim\\.datajob\\.dev/exit-code={code}");
    // The release's finalizer admission policy is scoped to a data plane no other test uses:
    // kwok does not run the operator's pod, so no DataJob of another test may get a finalizer
    // only this release would remove.
    let common_sets = [
        "rbac.aggregatedRoles.create=false".to_string(),
        "dataPlane=helm-lifecycle".to_string(),
        test_pod_exits(0),
    ];
    let with_sets = |mut args: Vec<String>, extra: &[String]| {
        for set in common_sets.iter().chain(extra) {
            // Annotation values are strings, whatever they look like.
            let flag = if set.starts_with("tests.podAnnotations") {
                "--set-string"
            } else {
                "--set"
            };
            args.push(flag.into());
            args.push(set.clone());
        }
        args
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        helm_ok(&args)
    };
    let ns_args = |verb: &str, chart: Option<&str>| {
        let mut args = vec![verb.to_string(), release.clone()];
        args.extend(chart.map(str::to_string));
        args.extend(["--namespace".into(), namespace.clone()]);
        args
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let fullname = format!("{release}-datajob-operator");

    // 1: install; the CRDs are the release's now, marked keep.
    let mut install = with_sets(ns_args("install", Some(CHART)), &[]);
    install.extend(["--wait".into(), "--timeout".into(), "120s".into()]);
    run(install);
    assert!(!crd_has_priority(&client).await);
    let crd = crds.get("datajobs.datajob.dev").await.expect("CRD");
    assert_eq!(
        crd.annotations()
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep")
    );
    assert_eq!(
        crd.annotations().get("meta.helm.sh/release-name"),
        Some(&release)
    );
    let image = operator_image(&deployments.get(&fullname).await.expect("deployment"));
    assert_eq!(image, "ghcr.io/datajob-dev/datajob-operator:0.1.0");
    // The cluster serves MutatingAdmissionPolicy: the teardown-finalizer policy came too.
    let policy = format!("{fullname}-teardown-finalizer");
    assert_eq!(
        finalizer_policy(&policy),
        [true, true],
        "policy and binding {policy}"
    );

    // helm test: the hook pod runs to completion (on kwok: simulated; see docs/helm.md).
    let mut test = ns_args("test", None);
    test.extend(["--timeout".into(), "120s".into()]);
    let out = run(test.clone());
    assert!(
        out.contains("Phase:          Succeeded") || out.contains("Succeeded"),
        "{out}"
    );

    // 2: upgrade to a chart whose CRD has a new field: helm upgrade changes the served CRD.
    let next = next_chart_version("0.1.1-test");
    let mut upgrade = with_sets(
        ns_args("upgrade", Some(next.to_str().expect("utf-8"))),
        &["image.tag=0.1.1-test".to_string()],
    );
    upgrade.extend(["--wait".into(), "--timeout".into(), "120s".into()]);
    run(upgrade);
    assert!(
        crd_has_priority(&client).await,
        "helm upgrade upgraded the CRD"
    );
    let image = operator_image(&deployments.get(&fullname).await.expect("deployment"));
    assert_eq!(image, "ghcr.io/datajob-dev/datajob-operator:0.1.1-test");
    // The new field is served: kubectl explain knows it, once the API server has published
    // the CRD's new OpenAPI schema (it does so a moment after the CRD changed).
    support::watch::eventually(
        "kubectl explain to know the upgraded CRD's field",
        Duration::from_secs(60),
        async || {
            let explain = support::kubectl()
                .args(["explain", "datajob.spec.priority"])
                .output()
                .expect("kubectl explain");
            String::from_utf8_lossy(&explain.stdout)
                .contains("Added by the next chart version")
                .then_some(())
        },
    )
    .await;

    // 3: rollback to revision 1: the CRD and the Deployment are back.
    let mut rollback = ns_args("rollback", None);
    rollback.extend([
        "1".into(),
        "--wait".into(),
        "--timeout".into(),
        "120s".into(),
    ]);
    run(rollback);
    assert!(
        !crd_has_priority(&client).await,
        "rollback restored the CRD"
    );
    let image = operator_image(&deployments.get(&fullname).await.expect("deployment"));
    assert_eq!(image, "ghcr.io/datajob-dev/datajob-operator:0.1.0");
    // The cluster serves MutatingAdmissionPolicy: the teardown-finalizer policy came too.
    let policy = format!("{fullname}-teardown-finalizer");
    assert_eq!(
        finalizer_policy(&policy),
        [true, true],
        "policy and binding {policy}"
    );

    // 4: a test pod that fails makes `helm test` fail.
    let mut failing = with_sets(ns_args("upgrade", Some(CHART)), &[test_pod_exits(1)]);
    failing.extend(["--wait".into(), "--timeout".into(), "120s".into()]);
    run(failing);
    let test_args: Vec<&str> = test.iter().map(String::as_str).collect();
    let out = helm(&test_args);
    assert!(
        !out.status.success(),
        "helm test must fail when the probe fails: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let history = run(ns_args("history", None));
    assert_eq!(
        history.lines().skip(1).count(),
        4,
        "install, upgrade, rollback, upgrade:\n{history}"
    );

    // uninstall: the operator goes, the CRDs (keep) and so every DataJob stay.
    let mut uninstall = ns_args("uninstall", None);
    uninstall.extend(["--wait".into(), "--timeout".into(), "120s".into()]);
    run(uninstall);
    assert!(
        deployments.get_opt(&fullname).await.expect("get").is_none(),
        "the Deployment goes with the release"
    );
    for name in CRD_NAMES {
        crds.get(name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name} must be kept on uninstall: {e}"));
    }
    assert_eq!(
        finalizer_policy(&policy),
        [false, false],
        "policy and binding go"
    );
    // Give the CRDs back to the test suite.
    adopt_crds(&release, &namespace, false);
}
