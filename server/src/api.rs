//! The error answer of every API: a status and `{"error": code, "detail": sentence}`, where
//! `code` is a short, stable, machine-readable word (`bad_sql`, `invalid_k`, `rate_limited`) and
//! `detail` says in the user's words what was wrong and, where it helps, what to do.

use std::borrow::Cow;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// An answer that is not a success.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Short, stable code: clients branch on it.
    pub error: Cow<'static, str>,
    /// What went wrong, for a person.
    pub detail: String,
    /// `Retry-After` (whole seconds, rounded up): how long a client should wait (429, 503).
    pub retry_after: Option<Duration>,
    /// `WWW-Authenticate` (401).
    pub challenge: Option<&'static str>,
    /// Fields the body carries besides `error` and `detail` (an API's own conventions).
    extra: Map<String, Value>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        error: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            error: error.into(),
            detail: detail.into(),
            retry_after: None,
            challenge: None,
            extra: Map::new(),
        }
    }

    /// 400: the request is wrong; `detail` says how.
    pub fn bad_request(error: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, detail)
    }

    /// 404.
    pub fn not_found(error: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error, detail)
    }

    /// 500 with an opaque detail: the cause belongs in the server's log, not in the answer.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request failed on the server; see its log",
        )
    }

    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn with_challenge(mut self, challenge: &'static str) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// Adds a field to the body (an API whose clients expect one, such as Segment's `success`).
    pub fn with_field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = self.extra.clone();
        body.insert("error".into(), Value::from(self.error.as_ref()));
        body.insert("detail".into(), Value::from(self.detail.as_str()));
        Value::Object(body)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.error,
            self.detail
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if let Some(challenge) = self.challenge {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_the_error_and_keeps_extra_fields() {
        let e = ApiError::bad_request("invalid_k", "k must be from 1 to 100")
            .with_field("success", false);
        assert_eq!(
            e.body(),
            serde_json::json!({"error": "invalid_k", "detail": "k must be from 1 to 100", "success": false})
        );
        let resp = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down")
            .with_retry_after(Duration::from_millis(1500))
            .into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
    }
}
