//! `RegistryError`: everything that can go wrong talking to an OCI registry, and the
//! decoding of its error bodies (the OCI envelope, our REST API's JSON, or raw text).
//! Pure; no IO.

use std::path::PathBuf;
use std::time::Duration;

use bencher_oci::digest::DigestMismatch;
use bencher_oci::reference::RepositoryNameError;
use reqwest::StatusCode;
use serde::Deserialize;

/// The longest raw (non-JSON) error body kept in a message: a proxy's HTML error page
/// is noise past its first lines.
const MAX_RAW_MESSAGE_CHARS: usize = 512;

/// An error of [`RegistryClient`](super::RegistryClient). Never carries a token: not the
/// API token, not a registry token, not an `Authorization` header.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry URL cannot serve as the base of `/v2/` URLs.
    #[error("invalid registry URL `{url}`: {reason}")]
    Url { url: String, reason: &'static str },

    /// A repository name that no registry accepts; refused before anything is sent.
    #[error("invalid repository name `{name}`")]
    Repository {
        name: String,
        #[source]
        source: RepositoryNameError,
    },

    /// The registry answered with an error status. `code` is the OCI error code
    /// (`BLOB_UNKNOWN`, `UNAUTHORIZED`, …), or derived from the status when the body was
    /// not an OCI error envelope.
    #[error("{message} (HTTP {status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },

    /// The token endpoint (the challenge's realm) refused or failed, or the challenge
    /// asked for credentials to go somewhere they must not. `message` is the realm's own
    /// answer when it gave one.
    #[error("registry authentication at {realm} failed: {message}")]
    Auth {
        realm: String,
        /// The realm's HTTP status, when it answered at all.
        status: Option<u16>,
        message: String,
    },

    /// The request did not complete: DNS, connection, TLS, a read timeout, or a body
    /// cut short (including a blob source that failed while streaming).
    #[error("{method} {url} failed")]
    Transport {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// An upload that made no progress for too long: the server stopped reading the
    /// body, or never answered after it.
    #[error("{method} {url}: no progress for {} s", waited.as_secs())]
    Stalled {
        method: String,
        url: String,
        waited: Duration,
    },

    /// Content fetched or pushed by digest hashed to something else.
    #[error("{what} does not match its digest")]
    DigestMismatch {
        /// What was checked, e.g. `manifest sha256:… of my-project`.
        what: String,
        #[source]
        source: DigestMismatch,
    },

    /// The registry answered with success, but not with what the protocol promises.
    #[error("unexpected response from {method} {url}: {reason}")]
    Decode {
        method: String,
        url: String,
        reason: String,
    },

    /// A blob to push could not be read from disk.
    #[error("cannot read blob source {}", path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A blob source holds fewer or more bytes than the size it is pushed with.
    #[error("blob source {source_name} has {actual} bytes where {expected} were expected")]
    SourceSize {
        source_name: String,
        expected: u64,
        actual: u64,
    },
}

impl RegistryError {
    /// The HTTP status of a registry or token endpoint error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Auth { status, .. } => *status,
            _ => None,
        }
    }

    /// The OCI error code of a registry error answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The error for a registry's non-success response from its status and raw body.
    pub(crate) fn from_response(status: StatusCode, body: &[u8]) -> Self {
        let (code, message) = decode_error_body(status, body);
        Self::Api {
            status: status.as_u16(),
            code,
            message,
        }
    }
}

/// `{"errors":[{"code","message","detail"}]}`: the OCI distribution error envelope.
#[derive(Deserialize)]
struct Envelope {
    errors: Vec<EnvelopeError>,
}

#[derive(Deserialize)]
struct EnvelopeError {
    code: String,
    #[serde(default)]
    message: Option<String>,
}

/// `{status, code, message}`: our REST API's errors, which the token endpoint sends.
#[derive(Deserialize)]
struct RestError {
    code: String,
    message: String,
}

/// The error code and message of an error body, whoever wrote it: a registry (the OCI
/// envelope), our token endpoint (REST JSON), or a proxy in front (raw text or HTML).
pub(crate) fn decode_error_body(status: StatusCode, body: &[u8]) -> (String, String) {
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(body)
        && let Some(first) = envelope.errors.first()
    {
        let message = envelope
            .errors
            .iter()
            .map(|e| match e.message.as_deref().map(str::trim) {
                Some(message) if !message.is_empty() => message.to_owned(),
                _ => e.code.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ");
        return (first.code.clone(), message);
    }
    if let Ok(rest) = serde_json::from_slice::<RestError>(body) {
        return (rest.code, rest.message);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        // HEAD answers and some proxies have no body at all.
        status
            .canonical_reason()
            .unwrap_or("the server gave no reason")
            .to_owned()
    } else if text.chars().count() > MAX_RAW_MESSAGE_CHARS {
        let cut: String = text.chars().take(MAX_RAW_MESSAGE_CHARS).collect();
        format!("{cut}…")
    } else {
        text.to_owned()
    };
    (code_of(status), message)
}

/// An OCI-style code for a status without an envelope (`NOT_FOUND`), so callers can
/// match on `code` whoever produced the error.
fn code_of(status: StatusCode) -> String {
    match status {
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED".to_owned(),
        StatusCode::FORBIDDEN => "DENIED".to_owned(),
        _ => match status.canonical_reason() {
            Some(reason) => reason
                .chars()
                .filter_map(|c| match c {
                    ' ' | '-' => Some('_'),
                    c if c.is_ascii_alphanumeric() => Some(c.to_ascii_uppercase()),
                    _ => None,
                })
                .collect(),
            None => "UNKNOWN".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_oci_envelope() {
        let body = br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":null}]}"#;
        let err = RegistryError::from_response(StatusCode::NOT_FOUND, body);
        assert_eq!(err.status(), Some(404));
        assert_eq!(err.code(), Some("BLOB_UNKNOWN"));
        assert_eq!(
            err.to_string(),
            "blob unknown to registry (HTTP 404 BLOB_UNKNOWN)"
        );
    }

    #[test]
    fn joins_several_errors_and_falls_back_to_codes() {
        let body = br#"{"errors":[{"code":"DENIED","message":"no"},{"code":"UNSUPPORTED"}]}"#;
        let (code, message) = decode_error_body(StatusCode::FORBIDDEN, body);
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("DENIED", "no; UNSUPPORTED")
        );
    }

    #[test]
    fn decodes_rest_errors_of_the_token_endpoint() {
        let body = br#"{"status":401,"code":"unauthorized","message":"invalid, expired or revoked API token"}"#;
        let (code, message) = decode_error_body(StatusCode::UNAUTHORIZED, body);
        assert_eq!(code, "unauthorized");
        assert_eq!(message, "invalid, expired or revoked API token");
    }

    #[test]
    fn raw_and_empty_bodies() {
        let (code, message) = decode_error_body(StatusCode::NOT_FOUND, b"");
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("NOT_FOUND", "Not Found")
        );
        let (code, _) = decode_error_body(StatusCode::UNAUTHORIZED, b"");
        assert_eq!(code, "UNAUTHORIZED");
        let (code, message) =
            decode_error_body(StatusCode::BAD_GATEWAY, b"<html>upstream down</html>\n");
        assert_eq!(code, "BAD_GATEWAY");
        assert_eq!(message, "<html>upstream down</html>");
        let long = "x".repeat(5000);
        let (_, message) = decode_error_body(StatusCode::INTERNAL_SERVER_ERROR, long.as_bytes());
        assert_eq!(message.chars().count(), MAX_RAW_MESSAGE_CHARS + 1);
        // An envelope with no errors says nothing; keep the raw text instead.
        let (code, message) = decode_error_body(StatusCode::BAD_REQUEST, br#"{"errors":[]}"#);
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("BAD_REQUEST", r#"{"errors":[]}"#)
        );
    }
}
