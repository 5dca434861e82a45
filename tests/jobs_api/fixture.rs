//! What the Jobs API tests need besides the cluster: ServiceAccounts with real tokens
//! (TokenRequest) bound to a read-only or a read-write role, the API served in-process or as
//! the `datajob-operator api` subcommand, an operator process, and a small HTTP client.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use datajob_operator::api::DataJob;
use datajob_operator::jobs_api::{self, AppState, identity::Upstream};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::support::{STEP, TestNamespace, admin_client, install_crds};

/// A test namespace with two callers: `viewer` (get/list/watch DataJobs) and `editor` (also
/// create/patch/delete DataJobs, and read pods), each a ServiceAccount with a real token.
pub struct Env {
    pub admin: Client,
    pub ns: TestNamespace,
    pub viewer: String,
    pub editor: String,
}

impl Env {
    pub async fn new(prefix: &str) -> Env {
        let admin = admin_client().await;
        install_crds(&admin).await;
        let ns = TestNamespace::new(&admin, prefix).await;
        let read = ["get", "list", "watch"];
        let write = [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ];
        let viewer = caller(&admin, ns.name(), "viewer", &read).await;
        let editor = caller(&admin, ns.name(), "editor", &write).await;
        Env {
            admin,
            ns,
            viewer,
            editor,
        }
    }

    pub fn jobs(&self) -> Api<DataJob> {
        Api::namespaced(self.admin.clone(), self.ns.name())
    }

    /// The Kubernetes user name of the ServiceAccount `name` of the namespace.
    pub fn user(&self, name: &str) -> String {
        format!("system:serviceaccount:{}:{name}", self.ns.name())
    }

    /// Serves the API in this process for the test's namespace; `max_wait` caps `?wait=`.
    pub async fn api_in_process(&self, max_wait: Duration) -> JobsApi {
        let config = kube::Config::infer().await.expect("KUBECONFIG loads");
        let state = AppState {
            upstream: Upstream::new(config),
            namespace: self.ns.name().to_string(),
            max_wait,
        };
        let (addr, server) = jobs_api::serve("127.0.0.1:0".parse().expect("addr"), state, None)
            .await
            .expect("the API binds");
        tokio::spawn(server);
        JobsApi::at(format!("http://{addr}"))
    }

    pub async fn cleanup(self) {
        self.ns.cleanup().await;
    }
}

/// Creates ServiceAccount `name` bound to a Role with `verbs` on DataJobs (and read access to
/// pods for writers, as the built-in `edit` role has), and returns a token of it.
async fn caller(admin: &Client, ns: &str, name: &str, verbs: &[&str]) -> String {
    let pp = PostParams::default();
    let mut rules =
        vec![json!({"apiGroups": ["datajob.dev"], "resources": ["datajobs"], "verbs": verbs})];
    if verbs.contains(&"patch") {
        rules.push(
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}),
        );
    }
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": name }, "rules": rules,
    }))
    .expect("role");
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&pp, &role)
        .await
        .expect("create role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ns }],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&pp, &binding)
        .await
        .expect("create rolebinding");
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let account: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": name } })).expect("account");
    accounts
        .create(&pp, &account)
        .await
        .expect("create account");
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": { "audiences": [], "expirationSeconds": 3600 }
    }))
    .expect("token request");
    accounts
        .create_token_request(name, &pp, &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {name}: {e}"))
        .status
        .expect("token status")
        .token
}

/// An HTTP answer: status, headers and the body as JSON (`Null` when empty or not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.text)
    }
}

/// A client of the Jobs API at a base URL.
#[derive(Clone)]
pub struct JobsApi {
    base: String,
    http: HttpClient<HttpConnector, Full<bytes::Bytes>>,
}

impl JobsApi {
    pub fn at(base: String) -> JobsApi {
        JobsApi {
            base,
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method path` with an optional Bearer token, extra headers and a raw body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Answer {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
            .expect("request");
        let response = tokio::time::timeout(STEP * 4, self.http.request(request))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), &[], None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call("POST", path, Some(token), &[], Some(body.to_string()))
            .await
    }
}

/// The body of a small materialize-view job on data plane `dp-api`, with a 2 s grace period.
pub fn create_body() -> Value {
    json!({
        "type": "materialize-view",
        "input": { "nql": "SELECT * FROM company_data.\"6402\"", "dataset_id": 6404, "stats_enabled": true },
        "data_plane": "dp-api",
        "executor": { "termination_grace_period_seconds": 2 },
    })
}

/// A process of the operator binary (killed when dropped), logging to
/// `<CARGO_TARGET_TMPDIR>/jobs-api-logs/<log_name>.log`.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn start(log_name: &str, args: &[&str]) -> Process {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("jobs-api-logs")
            .join(format!("{log_name}.log"));
        std::fs::create_dir_all(log.parent().expect("folder")).expect("log folder");
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_datajob-operator"))
            .args(args)
            .env("RUST_LOG", "info,datajob_operator=debug")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("the operator binary starts");
        Process { child, log }
    }

    /// `datajob-operator api` for `namespace` on a free port; returns it with its client once
    /// it has logged the address it serves on.
    pub async fn api(namespace: &str) -> (Process, JobsApi) {
        let mut process = Process::start(
            &format!("api-{namespace}"),
            &[
                "api",
                "--http-addr",
                "127.0.0.1:0",
                "--namespace",
                namespace,
                "--log-format",
                "json",
            ],
        );
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let log = std::fs::read_to_string(&process.log).unwrap_or_default();
            let addr = log
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find_map(|l| {
                    let addr = l.get("addr").or_else(|| l["fields"].get("addr"));
                    addr.and_then(Value::as_str).map(str::to_string)
                });
            if let Some(addr) = addr {
                return (process, JobsApi::at(format!("http://{addr}")));
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("`datajob-operator api` exited ({status}):\n{log}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`datajob-operator api` did not log its address:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sets a DataJob's status as the operator would (the admin may write the status
/// subresource): used where a test needs a state without running executors.
pub async fn set_status(jobs: &Api<DataJob>, name: &str, status: Value) {
    let patch = json!({ "status": status });
    jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("cannot set the status of {name}: {e}"));
}

/// A DataJob manifest created by the admin (not through the API).
pub fn datajob(name: &str, data_plane: &str, job_type: &str) -> DataJob {
    crate::support::datajob(name)
        .data_plane(data_plane)
        .job_type(job_type)
        .nql("SELECT 1")
        .build()
}
