//! Hand-written schemas for the fields the operator copies into executor pods (image,
//! environment, resources, node selector, tolerations) and for the pool's namespace selector.
//!
//! The Kubernetes types keep their Rust representation; only their CRD schema is replaced, so
//! that every string, list and map is bounded, every integer has a maximum, and every refusal
//! names the field (`docs/design.md`, "Bounds and refusals"). The API server checks all of it
//! before the operator sees an object.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

/// Longest image reference.
pub const MAX_IMAGE_LENGTH: usize = 512;
/// Most extra environment variables of an executor.
pub const MAX_ENV_VARS: usize = 64;
/// Longest environment variable name.
pub const MAX_ENV_NAME_LENGTH: usize = 128;
/// Longest literal environment variable value (in characters). 64 values of this size stay
/// far below the kernel's limits on a process environment.
pub const MAX_ENV_VALUE_LENGTH: usize = 4096;
/// Most entries of `resources.requests` and of `resources.limits`.
pub const MAX_RESOURCE_ENTRIES: usize = 8;
/// Longest resource quantity, as written.
pub const MAX_QUANTITY_LENGTH: usize = 64;
/// Most entries of a pool's node selector and of a label selector's `matchLabels`.
pub const MAX_LABELS: usize = 32;
/// Most tolerations of a pool.
pub const MAX_TOLERATIONS: usize = 32;
/// Longest toleration, in seconds (one year).
pub const MAX_TOLERATION_SECONDS: i64 = 31_536_000;
/// Most expressions of a label selector.
pub const MAX_SELECTOR_EXPRESSIONS: usize = 16;
/// Most values of one label selector expression.
pub const MAX_SELECTOR_VALUES: usize = 64;
/// Most entries of a pool's `allowedImages`.
pub const MAX_ALLOWED_IMAGES: usize = 32;

/// An image reference: `[registry[:port]/]path[:tag][@sha256:digest]`, lower-case path
/// components (the distribution reference grammar, without upper-case repository names).
pub const IMAGE_PATTERN: &str = concat!(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?/)?",
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*",
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
);
/// An environment variable name: a C identifier.
pub const ENV_NAME_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";
/// A DNS-1123 label (names of pools, data planes).
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 subdomain (names of ConfigMaps and Secrets).
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters.
pub const LABEL_KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
/// A label value: empty, or at most 63 characters, alphanumeric at both ends.
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";
/// A ConfigMap or Secret key.
pub const CONFIG_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

fn rule(rule: &str, message: &str) -> Value {
    json!({ "rule": rule, "message": message })
}

/// `spec.executor.image` of a DataJob or a ComputePool.
pub fn image(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Container image of the executor pods: [registry[:port]/]path[:tag][@sha256:digest], at most 512 characters. The operator's --allowed-image-prefix flags and the pool's allowedImages decide whether a job may use it.",
        "type": "string",
        "nullable": true,
        "minLength": 1,
        "maxLength": MAX_IMAGE_LENGTH,
        "pattern": IMAGE_PATTERN,
    })
}

fn key_ref(kind: &str) -> Value {
    json!({
        "description": format!("A key of a {kind} in the job's namespace."),
        "type": "object",
        "required": ["name", "key"],
        "properties": {
            "name": {
                "description": format!("Name of the {kind}."),
                "type": "string", "minLength": 1, "maxLength": 253, "pattern": DNS_SUBDOMAIN_PATTERN,
            },
            "key": {
                "description": format!("The key in the {kind}."),
                "type": "string", "minLength": 1, "maxLength": 253, "pattern": CONFIG_KEY_PATTERN,
            },
            "optional": {
                "description": format!("Whether the pod starts when the {kind} or its key is missing."),
                "type": "boolean",
            },
        },
    })
}

/// `spec.executor.env` of a DataJob.
pub fn env(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Extra environment variables of the executor containers: at most 64, unique names (C identifiers), literal values of at most 4096 characters. The DATAJOB_* contract variables are the operator's. valueFrom (a Secret or ConfigMap key of the job's namespace) is refused at run time unless the job's ComputePool sets allowEnvValueFrom.",
        "type": "array",
        "maxItems": MAX_ENV_VARS,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {
                    "description": "Variable name: a C identifier, at most 128 characters.",
                    "type": "string", "minLength": 1, "maxLength": MAX_ENV_NAME_LENGTH,
                    "pattern": ENV_NAME_PATTERN,
                },
                "value": {
                    "description": "Literal value, at most 4096 characters.",
                    "type": "string", "maxLength": MAX_ENV_VALUE_LENGTH,
                },
                "valueFrom": {
                    "description": "A Secret or ConfigMap key to read the value from (only in pools that allow it).",
                    "type": "object",
                    "properties": {
                        "configMapKeyRef": key_ref("ConfigMap"),
                        "secretKeyRef": key_ref("Secret"),
                    },
                    "x-kubernetes-validations": [rule(
                        "has(self.configMapKeyRef) != has(self.secretKeyRef)",
                        "spec.executor.env[].valueFrom must set exactly one of configMapKeyRef and secretKeyRef",
                    )],
                },
            },
            "x-kubernetes-validations": [rule(
                "!(has(self.value) && has(self.valueFrom))",
                "spec.executor.env[]: set value or valueFrom, not both",
            )],
        },
    })
}

fn quantities(what: &str) -> Value {
    let valid = "self.all(k, k.size() <= 253 && string(self[k]).size() <= 64 && isQuantity(string(self[k])) && quantity(string(self[k])).compareTo(quantity('0')) >= 0)";
    json!({
        "description": format!("{what}: resource name to quantity (at most 8 entries)."),
        "type": "object",
        "maxProperties": MAX_RESOURCE_ENTRIES,
        "additionalProperties": { "x-kubernetes-int-or-string": true, "maxLength": MAX_QUANTITY_LENGTH },
        "x-kubernetes-validations": [rule(
            valid,
            &format!("spec.executor.resources.{}: every value must be a non-negative quantity such as 500m, 2 or 1Gi (at most 64 characters)", what.to_lowercase()),
        )],
    })
}

/// `spec.executor.resources` of a DataJob or a ComputePool.
pub fn resources(_: &mut SchemaGenerator) -> Schema {
    let requests_within_limits = "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)";
    json_schema!({
        "description": "Compute resources of each executor container: requests and limits (cpu, memory, ...). Every request must be at most the limit of the same resource.",
        "type": "object",
        "nullable": true,
        "properties": {
            "requests": quantities("Requests"),
            "limits": quantities("Limits"),
        },
        "x-kubernetes-validations": [rule(
            requests_within_limits,
            "spec.executor.resources: every request must be at most the limit of the same resource",
        )],
    })
}

/// `spec.nodeSelector` of a ComputePool.
pub fn node_selector(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Node labels executor pods of this pool must match: at most 32, label keys and values.",
        "type": "object",
        "maxProperties": MAX_LABELS,
        "additionalProperties": {
            "type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN,
        },
        "x-kubernetes-validations": [rule(
            &format!("self.all(k, k.size() <= 317 && k.matches('{LABEL_KEY_PATTERN}'))"),
            "spec.nodeSelector: every key must be a label key ([prefix/]name, the name at most 63 characters)",
        )],
    })
}

/// `spec.tolerations` of a ComputePool.
pub fn tolerations(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Tolerations given to executor pods of this pool (at most 32).",
        "type": "array",
        "maxItems": MAX_TOLERATIONS,
        "items": {
            "type": "object",
            "properties": {
                "key": { "description": "Taint key; empty with operator Exists matches every taint.", "type": "string", "maxLength": 317 },
                "operator": { "description": "Exists or Equal (default).", "type": "string", "enum": ["Exists", "Equal"] },
                "value": { "description": "Taint value (operator Equal).", "type": "string", "maxLength": 63 },
                "effect": { "description": "Taint effect to match; empty matches all.", "type": "string", "enum": ["", "NoSchedule", "PreferNoSchedule", "NoExecute"] },
                "tolerationSeconds": {
                    "description": "How long a NoExecute taint is tolerated, 0 to 31536000 seconds.",
                    "type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_TOLERATION_SECONDS,
                },
            },
        },
    })
}

/// `spec.namespaceSelector` of a ComputePool.
pub fn namespace_selector(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Namespaces whose DataJobs may use this pool (a label selector on the Namespace). Unset admits every namespace; a job from any other namespace fails with reason PoolNotAllowed.",
        "type": "object",
        "nullable": true,
        "properties": {
            "matchLabels": {
                "description": "Labels the namespace must carry (at most 32).",
                "type": "object",
                "maxProperties": MAX_LABELS,
                "additionalProperties": { "type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN },
                "x-kubernetes-validations": [rule(
                    &format!("self.all(k, k.size() <= 317 && k.matches('{LABEL_KEY_PATTERN}'))"),
                    "spec.namespaceSelector.matchLabels: every key must be a label key",
                )],
            },
            "matchExpressions": {
                "description": "Label requirements the namespace must meet (at most 16).",
                "type": "array",
                "maxItems": MAX_SELECTOR_EXPRESSIONS,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": { "type": "string", "minLength": 1, "maxLength": 317, "pattern": LABEL_KEY_PATTERN },
                        "operator": { "type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"] },
                        "values": {
                            "type": "array", "maxItems": MAX_SELECTOR_VALUES,
                            "items": { "type": "string", "maxLength": 63 },
                        },
                    },
                    "x-kubernetes-validations": [rule(
                        "(self.operator == 'In' || self.operator == 'NotIn') == (has(self.values) && size(self.values) > 0)",
                        "spec.namespaceSelector.matchExpressions[]: In and NotIn need values; Exists and DoesNotExist take none",
                    )],
                },
            },
        },
    })
}

/// `spec.allowedImages` of a ComputePool.
pub fn allowed_images(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Image prefixes the pool's jobs may use, besides the operator's --allowed-image-prefix flags (at most 32, each at most 512 characters). An entry matches an image equal to it or continuing it after '/', ':' or '@' (or any continuation when the entry itself ends in '/' or ':'). Unset or empty: only the operator's flags decide.",
        "type": "array",
        "maxItems": MAX_ALLOWED_IMAGES,
        "items": { "type": "string", "minLength": 1, "maxLength": MAX_IMAGE_LENGTH, "pattern": r"^[^\s]+$" },
    })
}

#[cfg(test)]
mod tests {
    use regex::Regex;

    use super::*;

    fn matches(pattern: &str, value: &str) -> bool {
        Regex::new(pattern)
            .expect("pattern compiles")
            .is_match(value)
    }

    #[test]
    fn image_references_are_recognised() {
        for good in [
            "busybox",
            "busybox:1.36",
            "ghcr.io/datajob-dev/executor:0.1.0",
            "registry.example/datajob-executor:e2e",
            "localhost:5000/team/exec_utor__x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "Registry.Example/a/b-c.d:TAG_1",
        ] {
            assert!(matches(IMAGE_PATTERN, good), "{good} should be accepted");
        }
        for bad in [
            "",
            "upper/Case",
            "a b",
            "-leading",
            "x:",
            "x@sha256:short",
            "registry.example/x:tag with space",
            "x;rm -rf /",
            "x\nY",
        ] {
            assert!(!matches(IMAGE_PATTERN, bad), "{bad:?} should be refused");
        }
    }

    #[test]
    fn env_names_are_c_identifiers() {
        for good in ["A", "_x", "JAVA_OPTS", "a1"] {
            assert!(matches(ENV_NAME_PATTERN, good), "{good}");
        }
        for bad in ["", "1A", "A-B", "A=B", "A B", "Ä"] {
            assert!(!matches(ENV_NAME_PATTERN, bad), "{bad:?}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        for good in [
            "zone",
            "kubernetes.io/hostname",
            "a.b/c_d.e-f",
            &"k".repeat(63),
        ] {
            assert!(matches(LABEL_KEY_PATTERN, good), "{good}");
        }
        for bad in ["", "/x", "a/b/c", "-x", &"k".repeat(64), "x y"] {
            assert!(!matches(LABEL_KEY_PATTERN, bad), "{bad:?}");
        }
        for good in ["", "a", "a-b_c.d", &"v".repeat(63)] {
            assert!(matches(LABEL_VALUE_PATTERN, good), "{good}");
        }
        for bad in ["-a", "a-", &"v".repeat(64), "a b"] {
            assert!(!matches(LABEL_VALUE_PATTERN, bad), "{bad:?}");
        }
    }
}
