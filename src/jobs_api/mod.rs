//! The seed's Jobs REST API (`datajob-operator api`), served on top of DataJobs.
//!
//! Kubernetes stays the source of truth: a job is a DataJob, its id is the DataJob's uid
//! (`status.jobId`), and the API holds no state. Every request is made to the API server with
//! the caller's own Bearer token ([`identity`]), so RBAC decides what a caller may do and the
//! API has no privilege to escalate through. The API never writes `status`: cancellation is
//! requested through `spec.cancel`, and `cancelled` is recorded by the operator alone once the
//! executor pods are gone. See docs/api.md.
//!
//! [`wire`] holds the snake_case bodies, [`handlers`] the endpoints, [`openapi`] the document
//! generated from both, [`error`] the one error shape.

pub mod error;
pub mod handlers;
pub mod identity;
pub mod openapi;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tracing::{debug, warn};

use self::error::ApiError;
use self::identity::Upstream;
use self::wire::ErrorCode;

/// What every request needs.
#[derive(Clone)]
pub struct AppState {
    /// The API server's address and CA, without credentials.
    pub upstream: Upstream,
    /// The namespace whose DataJobs are the jobs.
    pub namespace: String,
    /// The longest `?wait=` honoured.
    pub max_wait: Duration,
}

impl AppState {
    /// The wait a request asked for (or `default` seconds), capped at the server's maximum.
    fn wait(&self, asked: Option<u32>, default: u32) -> Result<Duration, ApiError> {
        let seconds = asked.unwrap_or(default);
        if seconds > 300 {
            return Err(ApiError::bad_request(
                "wait must be between 0 and 300 seconds",
            ));
        }
        Ok(Duration::from_secs(u64::from(seconds)).min(self.max_wait))
    }
}

/// The routes: `/v1/...`, `/v1/openapi.json`, `/healthz`, `/readyz`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/jobs",
            get(handlers::list_jobs).post(handlers::create_job),
        )
        .route("/v1/jobs/{job_id}", get(handlers::get_job))
        .route(
            "/v1/jobs/{job_id}/request-cancellation",
            post(handlers::request_cancellation),
        )
        .route("/v1/jobs/{job_id}/cancel", post(handlers::cancel))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::BadRequest,
                "method not allowed on this route",
            )
        })
        .with_state(state)
}

async fn openapi_json() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi::document_json(),
    )
}

/// TLS certificate and key files (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Serves the Jobs API on `addr` for the DataJobs of `namespace` until SIGTERM/SIGINT (HTTPS
/// when `tls` is given). Errs with a message naming what failed: finding the API server,
/// binding, the TLS files, or the server itself.
pub async fn run(
    addr: SocketAddr,
    namespace: String,
    max_wait: Duration,
    tls: Option<TlsFiles>,
) -> Result<(), String> {
    // Only the API server's address and CA are taken from here; requests use the callers'
    // tokens (see identity).
    let config = kube::Config::infer().await.map_err(|e| {
        format!("failed to find the Kubernetes API server (kubeconfig or in-cluster config): {e}")
    })?;
    let state = AppState {
        upstream: Upstream::new(config),
        namespace: namespace.clone(),
        max_wait,
    };
    let https = tls.is_some();
    let (addr, server) = serve(addr, state, tls)
        .await
        .map_err(|e| format!("failed to start the Jobs API: {e}"))?;
    tracing::info!(%addr, https, %namespace, "serving the Jobs API under /v1");
    tokio::select! {
        result = server => result.map_err(|e| format!("the Jobs API stopped: {e}")),
        () = crate::startup::shutdown_signal() => {
            tracing::info!("stopping the Jobs API");
            Ok(())
        }
    }
}

/// Binds `addr` and returns the bound address and the server future (HTTPS when `tls` is
/// given, else plain HTTP).
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    tls: Option<TlsFiles>,
) -> Result<(SocketAddr, impl Future<Output = std::io::Result<()>>), String> {
    let acceptor = tls.map(|files| tls_acceptor(&files)).transpose()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("failed to bind {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("failed to read the bound address: {e}"))?;
    let app = router(state);
    let server = async move {
        match acceptor {
            None => axum::serve(listener, app).await,
            Some(acceptor) => loop {
                let (tcp, peer) = listener.accept().await?;
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let service = TowerToHyperService::new(app);
                    if let Err(e) =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await
                    {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            },
        }
    };
    Ok((bound, server))
}

fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "failed to read the TLS certificate {}: {e}",
                files.cert.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "no PEM certificate in the TLS certificate file {}",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("failed to read the TLS key {}: {e}", files.key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            warn!(error = %e, "unusable TLS certificate or key");
            format!("the TLS certificate and key do not work together: {e}")
        })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
