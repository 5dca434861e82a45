//! The operator's Kubernetes clients. Every request carries the user agent
//! `datajob-operator/<version> (<instance>)`, so the API server's audit log tells the replicas
//! apart. The client the controllers use is fenced: a write (POST, PUT, PATCH, DELETE) is
//! refused before it leaves the process unless [`Fence::allows_writes`] holds at that moment,
//! which is how a leader that may have lost its Lease (it could not renew in time, or it was
//! frozen) stops writing before another replica may lead.

use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use http::{HeaderValue, Method, Request, header};
use kube::client::{Body, ClientBuilder};
use tower::{Layer, Service};

use crate::leader::Fence;
use tracing::error;

/// The error of a write refused by the fence.
#[derive(Debug, thiserror::Error)]
#[error("refused to {method} {path}: this replica does not hold the leader lease")]
pub struct NotLeading {
    /// The request's method.
    pub method: Method,
    /// The request's path.
    pub path: String,
}

/// Whether the API server's error chain says a write was refused by the fence.
pub fn is_not_leading(error: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<NotLeading>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The user agent of this process.
pub fn user_agent(instance: &str) -> String {
    format!(
        "{}/{} ({instance})",
        crate::OPERATOR_NAME,
        env!("CARGO_PKG_VERSION")
    )
}

/// Adds the user agent and, when `fence` is set, refuses writes the fence does not allow.
#[derive(Clone)]
pub struct OperatorLayer {
    user_agent: HeaderValue,
    fence: Option<Fence>,
}

impl OperatorLayer {
    /// A layer for `instance`; `fence` None lets every write through (the elector's client).
    pub fn new(instance: &str, fence: Option<Fence>) -> Self {
        OperatorLayer {
            user_agent: HeaderValue::from_str(&user_agent(instance))
                .unwrap_or_else(|_| HeaderValue::from_static(crate::OPERATOR_NAME)),
            fence,
        }
    }
}

impl<S> Layer<S> for OperatorLayer {
    type Service = OperatorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OperatorService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`OperatorLayer`].
#[derive(Clone)]
pub struct OperatorService<S> {
    inner: S,
    layer: OperatorLayer,
}

impl<S> Service<Request<Body>> for OperatorService<S>
where
    S: Service<Request<Body>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<tower::BoxError>,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<S::Response, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        request
            .headers_mut()
            .insert(header::USER_AGENT, self.layer.user_agent.clone());
        let write = !matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        );
        if write
            && let Some(fence) = &self.layer.fence
            && !fence.allows_writes()
        {
            let refused = NotLeading {
                method: request.method().clone(),
                path: request.uri().path().to_string(),
            };
            return futures::future::ready(Err(refused.into())).boxed();
        }
        let response = self.inner.call(request);
        async move { response.await.map_err(Into::into) }.boxed()
    }
}

/// Builds a client from `config` with the operator's layer.
pub fn build(
    config: kube::Config,
    instance: &str,
    fence: Option<Fence>,
) -> Result<kube::Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&OperatorLayer::new(instance, fence))
        .build())
}

/// The controllers' client (writes fenced by `fence`) and the leader elector's (not fenced),
/// both with this instance's user agent; None (logged) when no configuration is found.
pub async fn clients(instance: &str, fence: &Fence) -> Option<(kube::Client, kube::Client)> {
    let config = match kube::Config::infer().await {
        Ok(config) => config,
        Err(e) => {
            error!(error = %e, "failed to load a Kubernetes client configuration (kubeconfig or in-cluster)");
            return None;
        }
    };
    let clients = build(config.clone(), instance, Some(fence.clone()))
        .and_then(|fenced| Ok((fenced, build(config, instance, None)?)));
    clients
        .inspect_err(|e| error!(error = %e, "failed to build a Kubernetes client"))
        .ok()
}

#[cfg(test)]
mod tests {
    use http::Response;
    use tower_test::mock;

    use super::*;

    #[tokio::test]
    async fn a_closed_fence_refuses_writes_but_not_reads() {
        let (service, mut server) = mock::pair::<Request<Body>, Response<Body>>();
        let fence = Fence::closed();
        let client = kube::Client::new(
            OperatorLayer::new("replica-a", Some(fence)).layer(service),
            "default",
        );
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(client, "default");
        let write = pods
            .delete("p", &Default::default())
            .await
            .expect_err("refused");
        assert!(is_not_leading(&write), "{write}");
        let read = tokio::spawn(async move { pods.get_opt("p").await });
        let (request, send) = server.next_request().await.expect("the read goes out");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.headers()[header::USER_AGENT],
            format!("datajob-operator/{} (replica-a)", env!("CARGO_PKG_VERSION"))
        );
        send.send_response(
            Response::builder()
                .status(404)
                .body(Body::from(
                    br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#
                        .to_vec(),
                ))
                .expect("response"),
        );
        assert!(read.await.expect("join").expect("read").is_none());
    }
}
