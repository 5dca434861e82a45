//! The operator's HTTP endpoints, served in-process on a free loopback port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datajob_operator::http::{Health, serve};
use datajob_operator::telemetry::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
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
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
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
