//! Registry errors in the OCI Distribution error envelope
//! (`{"errors":[{"code","message","detail"}]}`) with the spec's codes and statuses, and
//! the Bearer challenge on 401.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::blobs::BlobError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{message}")]
    Oci {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// 401 with a `WWW-Authenticate: Bearer realm=…,service=…[,scope=…]` challenge.
    #[error("authentication required")]
    Unauthorized { challenge: String, message: String },
    /// 416 with the current upload range.
    #[error("{message}")]
    RangeNotSatisfiable {
        message: String,
        range: Option<String>,
    },
    #[error("internal registry error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

macro_rules! oci_errors {
    ($($fn:ident => $status:ident, $code:literal;)+) => {
        impl RegistryError {
            $(
                pub fn $fn(message: impl Into<String>) -> Self {
                    Self::Oci { status: StatusCode::$status, code: $code, message: message.into() }
                }
            )+
        }
    };
}

oci_errors! {
    blob_unknown => NOT_FOUND, "BLOB_UNKNOWN";
    blob_upload_invalid => BAD_REQUEST, "BLOB_UPLOAD_INVALID";
    blob_upload_unknown => NOT_FOUND, "BLOB_UPLOAD_UNKNOWN";
    digest_invalid => BAD_REQUEST, "DIGEST_INVALID";
    manifest_blob_unknown => BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN";
    manifest_invalid => BAD_REQUEST, "MANIFEST_INVALID";
    manifest_unknown => NOT_FOUND, "MANIFEST_UNKNOWN";
    name_invalid => BAD_REQUEST, "NAME_INVALID";
    name_unknown => NOT_FOUND, "NAME_UNKNOWN";
    size_invalid => BAD_REQUEST, "SIZE_INVALID";
    too_large => PAYLOAD_TOO_LARGE, "SIZE_INVALID";
    denied => FORBIDDEN, "DENIED";
    unsupported => METHOD_NOT_ALLOWED, "UNSUPPORTED";
}

impl RegistryError {
    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }
}

impl From<StoreError> for RegistryError {
    fn from(error: StoreError) -> Self {
        Self::internal(error)
    }
}

impl From<BlobError> for RegistryError {
    fn from(error: BlobError) -> Self {
        match error {
            BlobError::NotFound => Self::blob_unknown("blob unknown to registry"),
            BlobError::UnknownSession(_) => Self::blob_upload_unknown("upload unknown to registry"),
            BlobError::DigestMismatch { .. } => Self::digest_invalid(error.to_string()),
            BlobError::TooLarge { .. } => Self::too_large(error.to_string()),
            BlobError::OffsetMismatch { expected, .. } => Self::RangeNotSatisfiable {
                message: error.to_string(),
                range: Some(upload_range(expected)),
            },
            BlobError::Body(_) => Self::blob_upload_invalid(format!(
                "reading the request body failed: {}",
                crate::error_chain(&error)
            )),
            other => Self::internal(other),
        }
    }
}

/// The `Range` header value of an upload holding `size` bytes: the inclusive range
/// received so far (`0-0` when empty, as the reference registry answers).
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Self::Oci {
                status,
                code,
                message,
            } => (*status, *code, message.clone()),
            Self::Unauthorized { message, .. } => {
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message.clone())
            }
            Self::RangeNotSatisfiable { message, .. } => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                message.clone(),
            ),
            Self::Internal(source) => {
                tracing::error!(error = %crate::error_chain(source.as_ref()), "registry request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    "internal registry error".to_owned(),
                )
            }
        };
        let body = json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was never read: close rather than let the client send
            // its next request into the leftover bytes.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        match &self {
            Self::Unauthorized { challenge, .. } => {
                if let Ok(value) = HeaderValue::from_str(challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            Self::RangeNotSatisfiable {
                range: Some(range), ..
            } => {
                if let Ok(value) = HeaderValue::from_str(range) {
                    headers.insert(header::RANGE, value);
                }
            }
            _ => {}
        }
        response
    }
}
