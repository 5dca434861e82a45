//! Readiness and leadership of real operator processes, read over HTTP (`/readyz`, the
//! `datajob_operator_leader` gauge) and from the Lease: a plain `run` becomes ready, a standby
//! is ready while another replica leads, the chart's rolling update finishes with one and two
//! replicas, a holder whose clock lags keeps its Lease, and a frozen leader stops.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use datajob_operator::api::{DataJob, JobState};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const LEASE: &str = "datajob-operator";

/// The address the operator serves /readyz on, read from its log.
async fn http_addr(operator: &Operator) -> SocketAddr {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let log = std::fs::read_to_string(operator.log()).unwrap_or_default();
        let addr = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("serving /metrics"))
            })
            .and_then(|l| l["addr"].as_str().and_then(|a| a.parse().ok()));
        if let Some(addr) = addr {
            return addr;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator never logged its HTTP address; see {}",
            operator.log().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One GET; None when the connection fails.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// The value of the `datajob_operator_leader` gauge.
async fn leader_gauge(addr: SocketAddr) -> Option<i64> {
    let (_, body) = get(addr, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix("datajob_operator_leader "))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_ready(addr: SocketAddr) {
    eventually(format!("{addr}/readyz to answer 200"), STEP, async || {
        get(addr, "/readyz")
            .await
            .is_some_and(|(code, _)| code == 200)
            .then_some(())
    })
    .await;
}

async fn wait_gauge(addr: SocketAddr, expected: i64) {
    eventually(
        format!("{addr} to report datajob_operator_leader {expected}"),
        STEP,
        async || (leader_gauge(addr).await == Some(expected)).then_some(()),
    )
    .await;
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

/// A replica with leader election on the Lease in `namespace`, watching `namespace`.
fn replica(namespace: &str, instance: &str, lease_seconds: &str) -> Operator {
    Operator::start_with(
        &format!("{namespace}-{instance}"),
        &[
            "--namespace",
            namespace,
            "--leader-election",
            "--lease-namespace",
            namespace,
            "--lease-name",
            LEASE,
            "--lease-duration-seconds",
            lease_seconds,
            "--instance",
            instance,
        ],
    )
}

/// Two replicas in a fresh namespace: `replica-a` leads, `replica-b` is ready and stands by.
struct Pair {
    ns: TestNamespace,
    leases: Api<Lease>,
    jobs: Api<DataJob>,
    a: Operator,
    a_addr: SocketAddr,
    b: Operator,
    b_addr: SocketAddr,
}

async fn leader_and_standby(prefix: &str) -> Pair {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, prefix).await;
    let name = ns.name().to_string();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &name);
    let a = replica(&name, "replica-a", "3");
    let a_addr = http_addr(&a).await;
    wait_for(&leases, LEASE, STEP, |l: &Lease| {
        holder(l).as_deref() == Some("replica-a")
    })
    .await;
    wait_ready(a_addr).await;
    let b = replica(&name, "replica-b", "3");
    let b_addr = http_addr(&b).await;
    wait_ready(b_addr).await;
    Pair {
        jobs: Api::namespaced(client.clone(), &name),
        ns,
        leases,
        a,
        a_addr,
        b,
        b_addr,
    }
}

fn signal(operator: &Operator, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &operator.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "could not send {signal}");
}

#[tokio::test]
async fn a_plain_run_is_ready_once_its_caches_sync_and_reports_that_it_leads() {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "e2e-ready").await;
    let operator = Operator::start_with(ns.name(), &["--namespace", ns.name()]);
    let addr = http_addr(&operator).await;
    wait_ready(addr).await;
    assert_eq!(get(addr, "/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(leader_gauge(addr).await, Some(1), "no election: it leads");
    assert!(operator.logged("caches synced; ready"));
    drop(operator);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_standby_is_ready_and_reports_that_it_does_not_lead_until_it_takes_over() {
    let Pair {
        ns,
        leases,
        jobs,
        mut a,
        a_addr,
        b,
        b_addr,
    } = leader_and_standby("e2e-standby").await;
    wait_gauge(a_addr, 1).await;
    assert_eq!(
        leader_gauge(b_addr).await,
        Some(0),
        "the standby does not lead"
    );
    eventually("replica-b to log that it stands by", STEP, async || {
        b.logged("standing by").then_some(())
    })
    .await;
    jobs.create(&PostParams::default(), &datajob("led-by-a").build())
        .await
        .expect("create job");
    wait_state(&jobs, "led-by-a", JobState::Running).await;

    a.kill();
    wait_gauge(b_addr, 1).await;
    assert_eq!(
        holder(&leases.get(LEASE).await.expect("lease")).as_deref(),
        Some("replica-b")
    );
    assert!(b.logged("acquired leadership"));
    jobs.create(&PostParams::default(), &datajob("led-by-b").build())
        .await
        .expect("create job");
    wait_state(&jobs, "led-by-b", JobState::Running).await;
    drop(b);
    ns.cleanup().await;
}

/// The chart's Deployment with `replicas` and everything else at its defaults.
fn chart_deployment(replicas: i32, namespace: &str) -> Deployment {
    let root = env!("CARGO_MANIFEST_DIR");
    let helm = std::env::var("HELM")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "helm".into());
    let output = Command::new(helm)
        .args([
            "template",
            "rel",
            &format!("{root}/charts/datajob-operator"),
            "--namespace",
            namespace,
            // The chart requires a recent cluster; template renders offline.
            "--kube-version",
            "1.33.0",
            "--set",
            &format!("replicas={replicas}"),
            "--set",
            &format!("watchNamespace={namespace}"),
            "--set",
            "executor.image=registry.example/datajob-executor:e2e",
        ])
        .output()
        .expect("helm runs (hack/cluster.sh env puts it on PATH)");
    assert!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8");
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .find(|doc| doc["kind"] == "Deployment")
        .map(|doc| serde_json::from_value(doc).expect("a Deployment"))
        .expect("the chart renders a Deployment")
}

/// `value` of a rolling update parameter (an int or a percentage of `replicas`), rounded as the
/// Deployment controller rounds it (surge up, unavailable down).
fn scaled(
    value: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    replicas: i32,
    default_percent: i32,
    round_up: bool,
) -> i32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let percent = match value {
        Some(IntOrString::Int(n)) => return *n,
        Some(IntOrString::String(p)) => p.trim_end_matches('%').parse().expect("a percentage"),
        None => default_percent,
    };
    let scaled = replicas * percent;
    if round_up {
        (scaled + 99) / 100
    } else {
        scaled / 100
    }
}

/// Plays the Deployment controller's rolling update of the chart's Deployment with real
/// processes (started with the container's arguments): start new replicas while the surge
/// allows, stop (SIGTERM) an old one only while enough replicas are ready, as the readiness
/// probe (`/readyz`, read from the chart) reports. Before readiness meant "caches synced", a
/// new replica could never become ready while an old one led: this deadlocked.
async fn rolling_update(replicas: i32) {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, &format!("e2e-rollout-{replicas}")).await;
    let name = ns.name().to_string();
    let deployment = chart_deployment(replicas, &name);
    let spec = deployment.spec.expect("deployment spec");
    assert_eq!(spec.replicas, Some(replicas));
    let rolling = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    assert!(
        spec.strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .is_none_or(|t| t == "RollingUpdate"),
        "the chart rolls its pods"
    );
    let surge = scaled(rolling.max_surge.as_ref(), replicas, 25, true);
    let unavailable = scaled(rolling.max_unavailable.as_ref(), replicas, 25, false);
    let container = &spec.template.spec.expect("pod spec").containers[0];
    let probe = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .and_then(|h| h.path.clone())
        .expect("the chart has an HTTP readiness probe");
    // The fixture sets the HTTP address, log format and executor image itself.
    let args: Vec<String> = container
        .args
        .iter()
        .flatten()
        .filter(|a| {
            !a.starts_with("--http-addr")
                && !a.starts_with("--log-format")
                && !a.starts_with("--executor-image")
        })
        .cloned()
        .collect();
    assert!(args.iter().any(|a| a == "--leader-election"));
    let lease_name = args
        .iter()
        .find_map(|a| a.strip_prefix("--lease-name="))
        .expect("the chart names the Lease")
        .to_string();
    let start = |instance: String| {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        // What the chart passes through POD_NAME and POD_NAMESPACE.
        all.extend(["--instance", &instance, "--lease-namespace", &name]);
        Operator::start_with(&format!("{name}-{instance}"), &all)
    };
    let ready = |addr: SocketAddr| {
        let probe = probe.clone();
        async move { get(addr, &probe).await.is_some_and(|(code, _)| code == 200) }
    };

    let mut old = Vec::new();
    for i in 0..replicas {
        let operator = start(format!("old-{i}"));
        let addr = http_addr(&operator).await;
        old.push((operator, addr));
    }
    for (_, addr) in &old {
        eventually("an old replica to be ready", STEP, async || {
            ready(*addr).await.then_some(())
        })
        .await;
    }
    let mut new: Vec<(Operator, SocketAddr)> = Vec::new();
    let mut started = 0;
    while !old.is_empty() || new.len() < replicas as usize {
        let total = old.len() + new.len();
        if started < replicas && total < (replicas + surge) as usize {
            let operator = start(format!("new-{started}"));
            let addr = http_addr(&operator).await;
            new.push((operator, addr));
            started += 1;
            continue;
        }
        // Scale the old set down only while enough replicas stay ready.
        let (_, newest) = new.last().expect("a new replica");
        eventually(
            "the newest replica to pass the chart's readiness probe",
            STEP,
            async || ready(*newest).await.then_some(()),
        )
        .await;
        let mut ready_count = 0;
        for (_, addr) in old.iter().chain(new.iter()) {
            if ready(*addr).await {
                ready_count += 1;
            }
        }
        // Stopping one old replica must leave at least replicas - maxUnavailable ready.
        assert!(
            ready_count > replicas - unavailable,
            "the rollout could not proceed: {ready_count} ready"
        );
        let Some((mut gone, _)) = old.pop() else {
            break;
        };
        let status = gone.terminate(STEP);
        assert!(status.success(), "an old replica stops cleanly: {status}");
    }
    // One new replica leads and reconciles.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &name);
    let lease = wait_for(&leases, &lease_name, STEP, |l: &Lease| {
        holder(l).is_some_and(|h| h.starts_with("new-"))
    })
    .await;
    let leader = holder(&lease).expect("a holder");
    for (operator, addr) in &new {
        let expected = i64::from(operator.log().to_string_lossy().contains(&leader));
        wait_gauge(*addr, expected).await;
    }
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), &name);
    jobs.create(&PostParams::default(), &datajob("after-rollout").build())
        .await
        .expect("create job");
    wait_state(&jobs, "after-rollout", JobState::Running).await;
    drop(new);
    ns.cleanup().await;
}

#[tokio::test]
async fn the_charts_rolling_update_finishes_with_one_replica() {
    rolling_update(1).await;
}

#[tokio::test]
async fn the_charts_rolling_update_finishes_with_two_replicas() {
    rolling_update(2).await;
}

/// Writes the Lease as a holder whose clock is an hour behind (renewTime in the past).
async fn renew_with_lagging_clock(
    leases: &Api<Lease>,
    transitions: i32,
) -> Result<(), kube::Error> {
    let past = Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let spec = LeaseSpec {
        holder_identity: Some("lagging-clock".to_string()),
        lease_duration_seconds: Some(3),
        acquire_time: Some(MicroTime(past)),
        renew_time: Some(MicroTime(past)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    match leases.get_opt(LEASE).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            leases.create(&PostParams::default(), &lease).await?;
        }
        Some(mut lease) => {
            assert_eq!(
                holder(&lease).as_deref(),
                Some("lagging-clock"),
                "a standby took over a Lease that was renewed every 300 ms"
            );
            lease.spec = Some(spec);
            // Guarded by the resourceVersion just read.
            leases
                .replace(LEASE, &PostParams::default(), &lease)
                .await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_standby_judges_expiry_by_its_own_clock_not_the_holders_renew_time() {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "e2e-skew").await;
    let name = ns.name().to_string();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &name);
    renew_with_lagging_clock(&leases, 0)
        .await
        .expect("create the Lease");
    let standby = replica(&name, "standby", "3");
    let addr = http_addr(&standby).await;
    wait_ready(addr).await;
    // Renew for four lease durations; by the holder's renewTime the Lease expired an hour ago.
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        renew_with_lagging_clock(&leases, 0)
            .await
            .expect("renew the Lease (a 409 means the standby took it)");
    }
    assert_eq!(leader_gauge(addr).await, Some(0));
    assert!(standby.logged("standing by"));
    // The holder stops renewing: the standby takes over a lease duration after the last change.
    let taken = wait_for(&leases, LEASE, STEP, |l: &Lease| {
        holder(l).as_deref() == Some("standby")
    })
    .await;
    assert_eq!(taken.spec.and_then(|s| s.lease_transitions), Some(1));
    wait_gauge(addr, 1).await;
    drop(standby);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_frozen_leader_stops_when_it_resumes_after_another_took_over() {
    let Pair {
        ns,
        leases,
        jobs,
        mut a,
        b,
        ..
    } = leader_and_standby("e2e-frozen").await;

    signal(&a, "-STOP");
    wait_for(&leases, LEASE, STEP, |l: &Lease| {
        holder(l).as_deref() == Some("replica-b")
    })
    .await;
    jobs.create(&PostParams::default(), &datajob("while-frozen").build())
        .await
        .expect("create job");
    wait_state(&jobs, "while-frozen", JobState::Running).await;
    signal(&a, "-CONT");
    let deadline = tokio::time::Instant::now() + STEP;
    let status = loop {
        if let Some(status) = a.exited() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resumed leader did not stop; see {}",
            a.log().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "it exits non-zero: {status}");
    assert!(a.logged("stopped leading"));
    assert_eq!(
        holder(&leases.get(LEASE).await.expect("lease")).as_deref(),
        Some("replica-b")
    );
    drop(b);
    ns.cleanup().await;
}
