//! `ApiError`: the one place where failures become HTTP statuses (SPEC §2, "Errors").
//!
//! Two body shapes: the Databricks / MLflow one, `{"error_code", "message"}`, everywhere
//! but the OpenAI routes, which use OpenAI's `{"error": {"message", "type", "param",
//! "code"}}`. A message never contains a bearer token. 500 is kept for real bugs.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_runtime::engine::SubmitError;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Databricks `error_code`, e.g. `INVALID_PARAMETER_VALUE`.
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, if any (OpenAI `param`).
    pub param: Option<String>,
    /// Answer in OpenAI's shape.
    pub openai: bool,
    /// Seconds for a `Retry-After` header (429 / 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), param: None, openai: false, retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    /// 400 naming the field at fault.
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> ApiError {
        let field = field.into();
        let mut e = ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
            format!("invalid value for {field}: {message}"),
        );
        e.param = Some(field);
        e
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "RESOURCE_ALREADY_EXISTS", message)
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "REQUEST_TOO_LARGE",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE", message)
    }

    pub fn rate_limited(message: impl Into<String>, retry_after_s: u64) -> ApiError {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "REQUEST_LIMIT_EXCEEDED", message);
        e.retry_after = Some(retry_after_s.max(1));
        e
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE", message);
        e.retry_after = Some(1);
        e
    }

    pub fn timeout(seconds: u64) -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "DEADLINE_EXCEEDED",
            format!("the request did not finish within {seconds} s (see --request-timeout)"),
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", message)
    }

    /// The same error in OpenAI's shape.
    pub fn openai(mut self) -> ApiError {
        self.openai = true;
        self
    }

    /// OpenAI's error `type` for this status.
    fn openai_type(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The JSON body this error is sent with.
    pub fn body(&self) -> serde_json::Value {
        if self.openai {
            let code = match (self.status, self.code) {
                (StatusCode::NOT_FOUND, "ENDPOINT_NOT_FOUND") => "model_not_found".to_string(),
                (_, c) => c.to_ascii_lowercase(),
            };
            json!({"error": {"message": self.message, "type": self.openai_type(), "param": self.param, "code": code}})
        } else {
            json!({"error_code": self.code, "message": self.message})
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

impl From<keel_runtime::Error> for ApiError {
    fn from(e: keel_runtime::Error) -> ApiError {
        match e {
            keel_runtime::Error::InvalidArgument { field, msg } => ApiError::invalid(field, msg),
            keel_runtime::Error::Tokenizer(m) => ApiError::invalid("prompt", m),
            keel_runtime::Error::ChatTemplate(m) => ApiError::invalid("messages", m),
            keel_runtime::Error::OutOfCache(m) => ApiError::invalid("prompt", m),
            other if other.is_user_error() => ApiError::bad_request(other.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        match e {
            SubmitError::Invalid(e) => e.into(),
            e @ SubmitError::QueueFull(_) => ApiError::unavailable(e.to_string()),
            e @ SubmitError::Stopped => ApiError::unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let e = ApiError::invalid("temperature", "must be finite");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let b = e.body();
        assert_eq!(b["error_code"], "INVALID_PARAMETER_VALUE");
        assert!(b["message"].as_str().unwrap().contains("temperature"));
        let o = e.openai().body();
        assert_eq!(o["error"]["param"], "temperature");
        assert_eq!(o["error"]["type"], "invalid_request_error");
        assert!(o.get("error_code").is_none());
    }

    #[test]
    fn runtime_errors_map_to_4xx_with_the_field() {
        let e: ApiError = keel_runtime::Error::InvalidArgument { field: "max_tokens", msg: "too many".into() }.into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let q: ApiError = SubmitError::QueueFull(3).into();
        assert_eq!(q.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(q.retry_after, Some(1));
    }
}
