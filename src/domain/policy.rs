//! The tenant boundary: what a DataJob may ask of its ComputePool and of the operator. Pure
//! functions; the state machine turns a refusal into a failed job.
//!
//! - images: allowed by the operator's `--allowed-image-prefix` flags or the pool's
//!   `allowedImages` ([`image_allowed`]);
//! - environment values from Secrets or ConfigMaps: only in pools with `allowEnvValueFrom`;
//! - namespaces: a pool with a `namespaceSelector` admits only matching namespaces.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::{ComputePool, DataJobSpec};
use crate::domain::model::Reason;

/// Why a job may not run as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The spec asks for something the operator's or the pool's policy forbids (reason
    /// `InvalidSpec`).
    InvalidSpec(String),
    /// The pool does not admit the job's namespace (reason `PoolNotAllowed`).
    PoolNotAllowed(String),
    /// A pod under one of the executor's deterministic names is not the job's (reason
    /// `ExecutorConflict`); it is never adopted.
    ExecutorConflict(String),
}

impl Refusal {
    /// The failure reason.
    pub fn reason(&self) -> Reason {
        match self {
            Refusal::InvalidSpec(_) => Reason::InvalidSpec,
            Refusal::PoolNotAllowed(_) => Reason::PoolNotAllowed,
            Refusal::ExecutorConflict(_) => Reason::ExecutorConflict,
        }
    }

    /// What is wrong and what to do about it.
    pub fn message(&self) -> &str {
        match self {
            Refusal::InvalidSpec(m) | Refusal::PoolNotAllowed(m) | Refusal::ExecutorConflict(m) => {
                m
            }
        }
    }
}

/// Whether `entry` (an allowed-image prefix) admits `image`: the image equals the entry, or
/// continues it right after a `/`, `:` or `@` boundary. So `registry.example/team/` admits
/// everything under that path, `registry.example/exec` admits `registry.example/exec:1.0` and
/// `registry.example/exec@sha256:...` but not `registry.example/executor-evil`.
pub fn prefix_admits(entry: &str, image: &str) -> bool {
    if entry.is_empty() || !image.starts_with(entry) {
        return false;
    }
    if image.len() == entry.len() || entry.ends_with(['/', ':', '@']) {
        return true;
    }
    matches!(image.as_bytes()[entry.len()], b'/' | b':' | b'@')
}

/// Whether `image` may run: no policy at all (no flag and no pool list) allows every image;
/// otherwise one entry of the flags or of the pool's `allowedImages` must admit it.
pub fn image_allowed(image: &str, operator_prefixes: &[String], pool_images: &[String]) -> bool {
    if operator_prefixes.is_empty() && pool_images.is_empty() {
        return true;
    }
    operator_prefixes
        .iter()
        .chain(pool_images)
        .any(|entry| prefix_admits(entry, image))
}

/// Whether a label selector matches `labels` (Kubernetes semantics; an empty selector matches
/// everything). An expression with an unknown operator matches nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    match_labels && expressions
}

/// Checks a job against the policy before its executor is created. `image` is the resolved
/// image (job, else pool, else the operator's default); `namespace_labels` are the labels of
/// the job's namespace (None when unknown: a pool with a selector then refuses, never guesses).
pub fn check(
    spec: &DataJobSpec,
    namespace: &str,
    namespace_labels: Option<&BTreeMap<String, String>>,
    pool: Option<&ComputePool>,
    image: &str,
    operator_prefixes: &[String],
) -> Result<(), Refusal> {
    if let Some(pool) = pool
        && let Some(selector) = &pool.spec.namespace_selector
    {
        let pool_name = pool.metadata.name.as_deref().unwrap_or_default();
        let admitted = namespace_labels.is_some_and(|labels| selector_matches(selector, labels));
        if !admitted {
            return Err(Refusal::PoolNotAllowed(format!(
                "compute pool {pool_name} does not admit jobs of namespace {namespace} (its namespaceSelector does not match the namespace's labels); use another pool or ask its administrator"
            )));
        }
    }
    let pool_images = pool
        .map(|p| p.spec.allowed_images.as_slice())
        .unwrap_or(&[]);
    if !image_allowed(image, operator_prefixes, pool_images) {
        return Err(Refusal::InvalidSpec(format!(
            "image {} is not allowed: it matches no --allowed-image-prefix of the operator{}",
            truncate(image, 512),
            if pool.is_some() {
                " and no allowedImages entry of the compute pool"
            } else {
                ""
            }
        )));
    }
    let env = spec.executor.iter().flat_map(|e| e.env.iter());
    if let Some(var) = env.clone().find(|v| v.value_from.is_some()) {
        let allowed = pool.is_some_and(|p| p.spec.allow_env_value_from);
        if !allowed {
            return Err(Refusal::InvalidSpec(format!(
                "spec.executor.env[{}].valueFrom reads a Secret or ConfigMap, which {}; use a literal value",
                truncate(&var.name, 128),
                match pool {
                    Some(p) => format!(
                        "compute pool {} does not allow (allowEnvValueFrom is false)",
                        p.metadata.name.as_deref().unwrap_or_default()
                    ),
                    None => "only a compute pool with allowEnvValueFrom allows".to_string(),
                }
            )));
        }
    }
    Ok(())
}

/// At most `max` characters of `text`, with `...` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use serde_json::json;

    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prefixes_match_only_at_boundaries() {
        assert!(prefix_admits(
            "registry.example/exec",
            "registry.example/exec"
        ));
        assert!(prefix_admits(
            "registry.example/exec",
            "registry.example/exec:1.0"
        ));
        assert!(prefix_admits(
            "registry.example/exec",
            "registry.example/exec@sha256:00"
        ));
        assert!(prefix_admits(
            "registry.example/team/",
            "registry.example/team/x:1"
        ));
        assert!(prefix_admits(
            "registry.example/exec:",
            "registry.example/exec:2"
        ));
        assert!(!prefix_admits(
            "registry.example/exec",
            "registry.example/executor-evil"
        ));
        assert!(!prefix_admits(
            "registry.example",
            "registry.example.evil/x"
        ));
        assert!(!prefix_admits("", "anything"));
    }

    #[test]
    fn no_policy_allows_every_image_and_any_list_restricts() {
        assert!(image_allowed("x", &[], &[]));
        assert!(!image_allowed("x", &strings(&["registry.example/"]), &[]));
        assert!(image_allowed(
            "pool.example/a:1",
            &strings(&["registry.example/"]),
            &strings(&["pool.example/a"])
        ));
        assert!(!image_allowed(
            "other/a",
            &[],
            &strings(&["pool.example/a"])
        ));
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let labels: BTreeMap<String, String> = [("team".to_string(), "a".to_string())]
            .into_iter()
            .collect();
        let by_label = LabelSelector {
            match_labels: Some([("team".to_string(), "a".to_string())].into()),
            match_expressions: None,
        };
        assert!(selector_matches(&by_label, &labels));
        assert!(!selector_matches(&by_label, &BTreeMap::new()));
        assert!(selector_matches(
            &LabelSelector::default(),
            &BTreeMap::new()
        ));
        let expr = |key: &str, op: &str, values: &[&str]| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.to_string(),
                operator: op.to_string(),
                values: Some(strings(values)),
            }]),
        };
        assert!(selector_matches(&expr("team", "In", &["a", "b"]), &labels));
        assert!(!selector_matches(&expr("team", "NotIn", &["a"]), &labels));
        assert!(selector_matches(&expr("env", "NotIn", &["prod"]), &labels));
        assert!(selector_matches(&expr("team", "Exists", &[]), &labels));
        assert!(!selector_matches(
            &expr("team", "DoesNotExist", &[]),
            &labels
        ));
        assert!(!selector_matches(&expr("team", "Bogus", &[]), &labels));
    }

    fn spec(env: serde_json::Value) -> DataJobSpec {
        serde_json::from_value(json!({
            "type": "nql-forecast", "input": { "nql": "x" }, "dataPlane": "dp",
            "executor": { "env": env },
        }))
        .expect("spec")
    }

    fn pool(spec: serde_json::Value) -> ComputePool {
        serde_json::from_value(json!({
            "apiVersion": "datajob.dev/v1alpha1", "kind": "ComputePool",
            "metadata": { "name": "p" }, "spec": spec,
        }))
        .expect("pool")
    }

    #[test]
    fn value_from_needs_a_pool_that_allows_it() {
        let secret = spec(
            json!([{ "name": "TOKEN", "valueFrom": { "secretKeyRef": { "name": "s", "key": "k" } } }]),
        );
        let refused = check(&secret, "ns", None, None, "img", &[]).expect_err("no pool");
        assert_eq!(refused.reason(), Reason::InvalidSpec);
        assert!(
            refused
                .message()
                .contains("spec.executor.env[TOKEN].valueFrom")
        );
        let closed = pool(json!({}));
        assert!(check(&secret, "ns", None, Some(&closed), "img", &[]).is_err());
        let open = pool(json!({ "allowEnvValueFrom": true }));
        assert_eq!(check(&secret, "ns", None, Some(&open), "img", &[]), Ok(()));
        let literal = spec(json!([{ "name": "A", "value": "1" }]));
        assert_eq!(check(&literal, "ns", None, None, "img", &[]), Ok(()));
    }

    #[test]
    fn a_pool_with_a_namespace_selector_refuses_other_namespaces() {
        let job = spec(json!([]));
        let limited = pool(json!({ "namespaceSelector": { "matchLabels": { "team": "a" } } }));
        let team_a: BTreeMap<String, String> = [("team".into(), "a".into())].into();
        assert_eq!(
            check(&job, "a", Some(&team_a), Some(&limited), "img", &[]),
            Ok(())
        );
        let refused = check(
            &job,
            "b",
            Some(&BTreeMap::new()),
            Some(&limited),
            "img",
            &[],
        )
        .expect_err("namespace b is not admitted");
        assert_eq!(refused.reason(), Reason::PoolNotAllowed);
        assert!(check(&job, "b", None, Some(&limited), "img", &[]).is_err());
    }

    #[test]
    fn images_outside_the_policy_are_refused() {
        let job = spec(json!([]));
        let flags = strings(&["registry.example/"]);
        let refused = check(&job, "ns", None, None, "evil.example/x", &flags).expect_err("refused");
        assert_eq!(refused.reason(), Reason::InvalidSpec);
        assert!(refused.message().contains("evil.example/x"));
        let pool = pool(json!({ "allowedImages": ["evil.example/x"] }));
        assert_eq!(
            check(&job, "ns", None, Some(&pool), "evil.example/x:1", &flags),
            Ok(())
        );
    }
}
