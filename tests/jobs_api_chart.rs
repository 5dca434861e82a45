//! The chart's Jobs API (`api.enabled`), rendered offline with helm (`$HELM`, else `helm` on
//! `PATH`; `eval "$(hack/cluster.sh env)"` puts it there): off by default; when on, a
//! Deployment running `datajob-operator api` with probes, a Service, a ServiceAccount bound to
//! no role (the API acts with the callers' tokens), optional HTTPS and NetworkPolicy.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use serde::de::DeserializeOwned;

use support::helm::{CHART, helm, http_get_path};

const API: &str = "rel-datajob-operator-api";

fn render(sets: &[&str]) -> Vec<serde_yaml::Value> {
    let mut args = vec![
        "template",
        "rel",
        CHART,
        "--namespace",
        "datajob-system",
        "--kube-version",
        "1.33.0",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helm template {sets:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::Deserializer::from_str(&stdout)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML"))
        .filter(|doc: &serde_yaml::Value| !doc.is_null())
        .collect()
}

fn objects<T: DeserializeOwned>(docs: &[serde_yaml::Value], kind: &str) -> Vec<T> {
    docs.iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some(kind))
        .map(|d| serde_yaml::from_value(d.clone()).expect(kind))
        .collect()
}

fn named<T: DeserializeOwned + kube::Resource>(
    docs: &[serde_yaml::Value],
    kind: &str,
    name: &str,
) -> Option<T> {
    objects::<T>(docs, kind)
        .into_iter()
        .find(|o| o.meta().name.as_deref() == Some(name))
}

fn api_pod(docs: &[serde_yaml::Value]) -> k8s_openapi::api::core::v1::PodSpec {
    let deployment: Deployment = named(docs, "Deployment", API).expect("the API Deployment");
    deployment
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec")
}

fn api_args(docs: &[serde_yaml::Value]) -> Vec<String> {
    api_pod(docs).containers[0].args.clone().unwrap_or_default()
}

#[test]
fn the_api_is_off_by_default() {
    let docs = render(&[]);
    assert!(named::<Deployment>(&docs, "Deployment", API).is_none());
    assert!(named::<Service>(&docs, "Service", API).is_none());
}

#[test]
fn enabled_it_runs_the_api_subcommand_with_probes_a_service_and_no_rbac() {
    let docs = render(&["api.enabled=true"]);
    let deployment: Deployment = named(&docs, "Deployment", API).expect("the API Deployment");
    let spec = deployment.spec.expect("spec");
    let pod = spec.template.spec.clone().expect("pod spec");
    let container = &pod.containers[0];
    assert_eq!(
        container.args.clone().unwrap_or_default(),
        [
            "api",
            "--log-format=json",
            "--http-addr=0.0.0.0:8080",
            "--namespace=datajob-system",
            "--max-wait-seconds=60"
        ]
    );
    assert_eq!(
        http_get_path(&container.liveness_probe).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        http_get_path(&container.readiness_probe).as_deref(),
        Some("/readyz")
    );
    assert_eq!(pod.service_account_name.as_deref(), Some(API));

    // Its pods are selected by the API's Deployment and Service only, not the operator's.
    let selector = spec.selector.match_labels.expect("selector");
    let service: Service = named(&docs, "Service", API).expect("the API Service");
    assert_eq!(
        service.spec.expect("spec").selector.expect("selector"),
        selector
    );
    let operator: Deployment =
        named(&docs, "Deployment", "rel-datajob-operator").expect("operator");
    let operator_selector = operator
        .spec
        .expect("spec")
        .selector
        .match_labels
        .expect("selector");
    let api_labels = spec
        .template
        .metadata
        .expect("metadata")
        .labels
        .expect("labels");
    assert!(
        !operator_selector
            .iter()
            .all(|(k, v)| api_labels.get(k) == Some(v)),
        "the operator's Deployment must not select the API's pods"
    );

    // The API's ServiceAccount is bound to nothing: every call uses the caller's token.
    let bound = |name: &str, subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| s.name == name)
    };
    assert!(
        objects::<RoleBinding>(&docs, "RoleBinding")
            .iter()
            .all(|b| !bound(API, &b.subjects))
    );
    assert!(
        objects::<ClusterRoleBinding>(&docs, "ClusterRoleBinding")
            .iter()
            .all(|b| !bound(API, &b.subjects))
    );
    assert!(objects::<NetworkPolicy>(&docs, "NetworkPolicy").is_empty());
}

#[test]
fn the_api_serves_the_watched_namespace_or_the_one_given() {
    assert!(
        api_args(&render(&["api.enabled=true", "watchNamespace=team-a"]))
            .contains(&"--namespace=team-a".to_string())
    );
    assert!(
        api_args(&render(&[
            "api.enabled=true",
            "watchNamespace=team-a",
            "api.namespace=team-b"
        ]))
        .contains(&"--namespace=team-b".to_string())
    );
}

#[test]
fn tls_mounts_the_secret_and_probes_over_https() {
    let docs = render(&["api.enabled=true", "api.tls.secretName=api-tls"]);
    let args = api_args(&docs);
    assert!(
        args.contains(&"--tls-cert=/etc/datajob-api/tls/tls.crt".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--tls-key=/etc/datajob-api/tls/tls.key".to_string()),
        "{args:?}"
    );
    let pod = api_pod(&docs);
    let volume = &pod.volumes.expect("volumes")[0];
    assert_eq!(
        volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some("api-tls")
    );
    let scheme = pod.containers[0]
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .and_then(|h| h.scheme.clone());
    assert_eq!(scheme.as_deref(), Some("HTTPS"));
}

#[test]
fn the_network_policy_admits_the_listed_peers_to_the_api_port_only() {
    let docs = render(&[
        "api.enabled=true",
        "api.networkPolicy.enabled=true",
        "api.networkPolicy.from[0].namespaceSelector.matchLabels.team=a",
    ]);
    let policy: NetworkPolicy = named(&docs, "NetworkPolicy", API).expect("NetworkPolicy");
    let spec = policy.spec.expect("spec");
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_string()][..])
    );
    let rule = &spec.ingress.expect("ingress")[0];
    let port = rule.ports.as_ref().expect("ports")[0].port.clone();
    assert_eq!(
        port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080))
    );
    assert_eq!(rule.from.as_ref().map(Vec::len), Some(1));
}

#[test]
fn helm_lint_accepts_the_api_values_and_the_schema_rejects_bad_ones() {
    let ok = helm(&[
        "lint",
        "--strict",
        CHART,
        "--set",
        "api.enabled=true",
        "--set",
        "api.tls.secretName=x",
        "--set",
        "api.networkPolicy.enabled=true",
    ]);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success() && !out.contains("[WARNING]"), "{out}");
    for bad in [
        "api.port=0",
        "api.service.type=Ingress",
        "api.maxWaitSeconds=600",
        "api.unknown=1",
    ] {
        let out = helm(&["lint", CHART, "--set", "api.enabled=true", "--set", bad]);
        assert!(
            !out.status.success(),
            "helm lint --set {bad} should fail the values schema"
        );
    }
}
