//! The caller's identity: the Bearer token of a request is the caller's Kubernetes credential,
//! and every API-server call made for the request uses a client built from that token alone.
//! The server's own credential (in-cluster ServiceAccount or kubeconfig) is never used for
//! data: only its cluster address and CA are kept.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::config::AuthInfo;
use kube::{Client, Config};

use super::error::ApiError;

/// The address and trust of the API server, without any credential.
#[derive(Clone)]
pub struct Upstream {
    config: Config,
}

impl Upstream {
    /// Keeps what identifies the API server from `config` (URL, CA, TLS server name, proxy) and
    /// drops every credential and extra header (impersonation included).
    pub fn new(config: Config) -> Self {
        let mut config = config;
        config.auth_info = AuthInfo::default();
        config.headers.clear();
        Upstream { config }
    }

    /// A client that acts as the holder of `token`.
    pub fn client_for(&self, token: &str) -> Result<Client, ApiError> {
        let mut config = self.config.clone();
        config.auth_info = AuthInfo {
            token: Some(token.to_string().into()),
            ..AuthInfo::default()
        };
        Client::try_from(config)
            .map_err(|e| ApiError::from_kube("build a client for the Kubernetes API server", e))
    }
}

/// The Bearer token of a request: 401 when it is missing or malformed.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    const HINT: &str = "send `Authorization: Bearer <token>` with a Kubernetes token \
        (for example from `kubectl create token SERVICEACCOUNT`)";
    let value = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized(format!("no Authorization header: {HINT}")))?;
    let value = value.to_str().map_err(|_| {
        ApiError::unauthorized(format!("the Authorization header is not text: {HINT}"))
    })?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized(format!("not a Bearer token: {HINT}")))?;
    let token = token.trim();
    let valid = |c: char| c.is_ascii_graphic();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || !token.chars().all(valid) {
        return Err(ApiError::unauthorized(format!(
            "not a Bearer token: {HINT}"
        )));
    }
    Ok(token)
}

/// The Kubernetes user name of the client's credential (a SelfSubjectReview, which every
/// authenticated user may make).
pub async fn username(client: &Client) -> Result<String, ApiError> {
    let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
    }))
    .expect("static SelfSubjectReview");
    let answer = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| ApiError::from_kube("find out who you are (SelfSubjectReview)", e))?;
    answer
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("the API server did not say which user the token belongs to")
        })
}

/// Whether the client's user may `verb` the DataJob `name` in `namespace` (a
/// SelfSubjectAccessReview): the seed requires write access for both cancel calls, also when
/// they end up changing nothing.
pub async fn may(
    client: &Client,
    namespace: &str,
    verb: &str,
    name: &str,
) -> Result<bool, ApiError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                verb: Some(verb.to_string()),
                group: Some(crate::api::GROUP.to_string()),
                resource: Some("datajobs".to_string()),
                name: Some(name.to_string()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| ApiError::from_kube("check your access (SelfSubjectAccessReview)", e))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
        h
    }

    #[test]
    fn a_bearer_token_is_taken_from_the_authorization_header() {
        assert_eq!(
            bearer_token(&headers("Bearer abc.def")).ok(),
            Some("abc.def")
        );
        assert_eq!(bearer_token(&headers("bearer abc")).ok(), Some("abc"));
    }

    #[test]
    fn no_or_another_kind_of_credential_is_unauthorized() {
        for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "token"] {
            let e = bearer_token(&headers(value)).expect_err(value);
            assert_eq!(e.status, axum::http::StatusCode::UNAUTHORIZED, "{value}");
        }
        assert!(bearer_token(&HeaderMap::new()).is_err());
    }

    #[test]
    fn the_servers_own_credential_is_dropped() {
        let mut config = Config::new("https://127.0.0.1:6443".parse().expect("uri"));
        config.auth_info.token = Some("server-secret".to_string().into());
        config.auth_info.client_certificate_data = Some("cert".into());
        config.auth_info.impersonate = Some("admin".into());
        config.headers.push((
            "impersonate-user".parse().expect("name"),
            HeaderValue::from_static("admin"),
        ));
        let upstream = Upstream::new(config);
        let auth = &upstream.config.auth_info;
        assert!(auth.token.is_none() && auth.client_certificate_data.is_none());
        assert!(auth.impersonate.is_none());
        assert!(upstream.config.headers.is_empty());
    }
}
