//! The operator's HTTP endpoints, served in-process on a free loopback port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datajob_operator::api::JobState;
use datajob_operator::http::{Health, serve};
use datajob_operator::telemetry::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (code, _, body) = get_with_headers(addr, path).await;
    (code, body)
}

/// Status code, the header block (lower-cased) and the body.
async fn get_with_headers(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (code, head.to_lowercase(), body.to_string())
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(Metrics::default());
    metrics.observe_transition("cancelled");
    metrics.observe_error("write_status");
    let health = Health {
        ready: ready.clone(),
        metrics,
    };
    let (addr, server) = serve("127.0.0.1:0".parse().expect("addr"), health)
        .await
        .expect("bind");
    assert!(addr.ip().is_loopback());
    let server = tokio::spawn(server);

    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(
        get(addr, "/readyz").await.0,
        503,
        "not ready before the caches sync"
    );
    ready.store(true, Ordering::Relaxed);
    assert_eq!(get(addr, "/readyz").await.0, 200);

    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        body.contains(r#"datajob_operator_state_transitions_total{state="cancelled"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"datajob_operator_reconcile_errors_total{category="write_status"} 1"#),
        "{body}"
    );
    assert!(
        body.contains("datajob_operator_reconcile_duration_seconds"),
        "{body}"
    );
    server.abort();
}

#[tokio::test]
async fn metrics_are_openmetrics_with_jobs_by_state_leader_and_build_info() {
    let metrics = Arc::new(Metrics::default());
    let health = Health {
        ready: Arc::new(AtomicBool::new(true)),
        metrics: metrics.clone(),
    };
    let (addr, server) = serve("127.0.0.1:0".parse().expect("addr"), health)
        .await
        .expect("bind");
    let server = tokio::spawn(server);

    let (code, head, body) = get_with_headers(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics ends with # EOF: {body}"
    );
    assert!(body.contains("datajob_operator_leader 0\n"), "{body}");
    assert!(
        body.contains(&format!(
            "datajob_operator_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{body}"
    );
    assert!(
        !body.contains("datajob_operator_jobs{"),
        "no job gauge before a job source is installed: {body}"
    );

    metrics.set_leader(true);
    metrics.count_jobs_with(Box::new(|| {
        [(JobState::Running, 3), (JobState::Cancelled, 1)]
            .into_iter()
            .collect()
    }));
    let (_, body) = get(addr, "/metrics").await;
    assert!(body.contains("datajob_operator_leader 1\n"), "{body}");
    assert!(
        body.contains("# TYPE datajob_operator_jobs gauge"),
        "{body}"
    );
    for (state, count) in [
        ("pending", 0),
        ("running", 3),
        ("pending_cancellation", 0),
        ("cancelled", 1),
        ("completed", 0),
        ("failed", 0),
    ] {
        assert!(
            body.contains(&format!(
                "datajob_operator_jobs{{state=\"{state}\"}} {count}\n"
            )),
            "{state} {count}: {body}"
        );
    }
    server.abort();
}

/// `datajob-operator probe URL`, what the chart's `helm test` hook runs: 0 on 200, 1 otherwise.
#[tokio::test]
async fn probe_subcommand_succeeds_only_when_ready() {
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health {
        ready: ready.clone(),
        metrics: Arc::new(Metrics::default()),
    };
    let (addr, server) = serve("127.0.0.1:0".parse().expect("addr"), health)
        .await
        .expect("bind");
    let server = tokio::spawn(server);
    let url = format!("http://{addr}/readyz");
    let probe = |url: String| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_datajob-operator"))
                .args(["probe", &url])
                .output()
                .expect("probe runs")
        })
    };
    let out = probe(url.clone()).await.expect("join");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("answered 503: caches not synced"),
        "{out:?}"
    );
    ready.store(true, Ordering::Relaxed);
    let out = probe(url).await.expect("join");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    server.abort();
    // Nothing listening: a clear failure.
    let out = probe(format!("http://{addr}/readyz")).await.expect("join");
    assert_eq!(out.status.code(), Some(1));
}
