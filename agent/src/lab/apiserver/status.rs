//! API errors and their `kind: Status` bodies, shaped like kube-apiserver's (`code`, `reason`,
//! `message`, `details`), so clients (kube-rs `Error::Api`) see exactly what a real server sends.

use serde_json::{json, Map, Value};

use super::resources::ResourceType;

/// A failed API request: HTTP code, Kubernetes `reason` and the human message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `404` for a path that names no resource (kube-apiserver's wording, empty details).
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified()),
        )
        .with_details(rt.details(name))
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified()),
        )
        .with_details(rt.details(name))
    }

    /// Optimistic-concurrency failure (stale `metadata.resourceVersion` or a failed precondition).
    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified()
            ),
        )
        .with_details(rt.details(name))
    }

    pub fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// `422 Invalid` with one cause per field error: `(field, cause reason, message)`.
    pub fn invalid(
        rt: &ResourceType,
        name: &str,
        errors: &[(String, &'static str, String)],
    ) -> Self {
        let list: Vec<String> = errors
            .iter()
            .map(|(field, _, msg)| format!("{field}: {msg}"))
            .collect();
        let message = if list.len() == 1 {
            format!("{} \"{name}\" is invalid: {}", rt.kind, list.join(""))
        } else {
            format!("{} \"{name}\" is invalid: [{}]", rt.kind, list.join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|(field, reason, msg)| json!({"reason": reason, "message": msg, "field": field}))
            .collect();
        let mut details = Map::new();
        details.insert("name".into(), json!(name));
        if !rt.group.is_empty() {
            details.insert("group".into(), json!(rt.group));
        }
        details.insert("kind".into(), json!(rt.kind));
        details.insert("causes".into(), Value::Array(causes));
        Self::new(422, "Invalid", message).with_details(Value::Object(details))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn forbidden(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", rt.qualified()),
        )
        .with_details(rt.details(name))
    }

    /// `410 Expired`: a watch or continue token from before the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    pub fn not_acceptable() -> Self {
        Self::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `kind: Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = Map::new();
        status.insert("kind".into(), json!("Status"));
        status.insert("apiVersion".into(), json!("v1"));
        status.insert("metadata".into(), json!({}));
        status.insert("status".into(), json!("Failure"));
        status.insert("message".into(), json!(self.message));
        status.insert("reason".into(), json!(self.reason));
        if let Some(d) = &self.details {
            status.insert("details".into(), d.clone());
        }
        status.insert("code".into(), json!(self.code));
        Value::Object(status)
    }
}

impl ApiError {
    /// `422`: a patch that cannot be applied (failed JSON patch `test`, bad merge key, ...).
    pub fn unprocessable(rt: &ResourceType, name: &str, message: &str) -> Self {
        Self::new(422, "Invalid", message.to_string()).with_details(rt.details(name))
    }
}

impl ApiError {
    /// `422` about the request's options rather than an object.
    pub fn invalid_options(field: &str, message: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("ListOptions.meta.k8s.io \"\" is invalid: {field}: {message}"),
        )
        .with_details(
            json!({"group": "meta.k8s.io", "kind": "ListOptions", "causes": [
            {"reason": "FieldValueForbidden", "message": message, "field": field}]}),
        )
    }
}
