//! HTTP responses as Kubernetes components write them: plain-text health answers and
//! `metav1.Status` JSON for errors.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::header::{CONTENT_TYPE, HeaderValue};

/// The response type every stand-in handler returns.
pub type Reply = Response<Full<Bytes>>;

fn with_type(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

/// A `text/plain` answer (health endpoints).
pub fn text(status: u16, body: String) -> Reply {
    with_type(status, "text/plain; charset=utf-8", body.into_bytes())
}

/// A JSON answer.
pub fn json(status: u16, value: &serde_json::Value) -> Reply {
    with_type(status, "application/json", value.to_string().into_bytes())
}

/// A `metav1.Status` failure, e.g. `status(403, "Forbidden", "forbidden: User ...")`.
pub fn status(code: u16, reason: &str, message: &str) -> Reply {
    let details = if code == 403 { serde_json::json!({}) } else { serde_json::Value::Null };
    status_with_details(code, reason, message, &details)
}

/// A `metav1.Status` failure with `details` (`{"name": ..., "kind": ...}`; null leaves them out).
pub fn status_with_details(code: u16, reason: &str, message: &str, details: &serde_json::Value) -> Reply {
    let mut value = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if !details.is_null() {
        value["details"] = details.clone();
    }
    json(code, &value)
}

/// The 401 every Kubernetes server answers to a credential it cannot verify.
pub fn unauthorized() -> Reply {
    status(401, "Unauthorized", "Unauthorized")
}
