//! Every failure of the API as one JSON shape ([`ErrorBody`]), and how the Kubernetes API
//! server's answers map onto it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::wire::{ErrorBody, ErrorCode};

/// A failed request: the status, the code and a message for the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub pods: Option<Vec<String>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            pods: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    pub fn job_not_found(id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no job with id {id:?}"),
        )
    }

    /// The Kubernetes API server's answer to a call made for `action` (for example "list
    /// jobs"), passed on with its status where the caller can act on it.
    pub fn from_kube(action: &str, error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => {
                let code = status.code;
                let detail = if status.message.is_empty() {
                    status.reason.clone()
                } else {
                    status.message.clone()
                };
                let (http, code) = match code {
                    401 => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
                    403 => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
                    404 => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
                    409 => (StatusCode::CONFLICT, ErrorCode::Conflict),
                    410 => (StatusCode::GONE, ErrorCode::Gone),
                    400 => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
                    422 => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::Invalid),
                    429 => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::Upstream),
                    _ => (StatusCode::BAD_GATEWAY, ErrorCode::Upstream),
                };
                let message = match http {
                    StatusCode::UNAUTHORIZED => format!(
                        "the Kubernetes API server did not accept the Bearer token (use a valid \
                         Kubernetes token, e.g. from `kubectl create token`): {detail}"
                    ),
                    StatusCode::FORBIDDEN => format!(
                        "your Kubernetes identity may not {action}; the API server said: {detail}"
                    ),
                    StatusCode::GONE => format!(
                        "the continue token expired; list again from the first page: {detail}"
                    ),
                    _ => format!("failed to {action}: {detail}"),
                };
                ApiError::new(http, code, message)
            }
            other => ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::Upstream,
                format!(
                    "failed to {action}: the Kubernetes API server could not be reached: {other}"
                ),
            ),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            status: self.status.as_u16(),
            code: self.code,
            message: self.message.clone(),
            pods: self.pods.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kube_status(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            serde_json::from_value(serde_json::json!({
                "status": "Failure", "message": message, "reason": "Forbidden", "code": code
            }))
            .expect("status"),
        ))
    }

    #[test]
    fn a_forbidden_answer_is_passed_on_with_what_was_refused() {
        let e = ApiError::from_kube(
            "patch the job",
            kube_status(
                403,
                "datajobs.datajob.dev \"x\" is forbidden: User \"bob\" cannot patch",
            ),
        );
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(e.message.contains("may not patch the job"), "{}", e.message);
        assert!(
            e.message.contains("User \"bob\" cannot patch"),
            "{}",
            e.message
        );
    }

    #[test]
    fn an_api_server_failure_is_a_bad_gateway() {
        let e = ApiError::from_kube("list jobs", kube_status(500, "etcd is gone"));
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert_eq!(e.code, ErrorCode::Upstream);
    }
}
