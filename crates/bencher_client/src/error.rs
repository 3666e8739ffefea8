//! `ClientError`: everything that can go wrong talking to the API, and the decoding of
//! the server's error bodies.

use bencher_types::JsonError;

/// The longest raw (non-JSON) error body kept in [`ClientError::Api`]: a proxy's HTML
/// error page is noise past its first lines, and a terminal is no place for all of it.
const MAX_RAW_MESSAGE_CHARS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host cannot serve as the base of the API's URLs.
    #[error("invalid host URL `{host}`: {reason}")]
    Host { host: String, reason: &'static str },

    /// The server answered with an error status.
    #[error("{message} (HTTP {status} {code})")]
    Api {
        status: u16,
        /// Machine-readable kind, such as `not_found`; derived from the status when the
        /// body was not the API's JSON error.
        code: String,
        message: String,
    },

    /// The request did not complete: DNS, connection, TLS, timeout, or a body cut short.
    #[error("{method} {url} failed")]
    Transport {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The server answered with success, but not with the body the API promises.
    #[error("unexpected response body from {method} {url} (HTTP {status})")]
    Decode {
        method: String,
        url: String,
        status: u16,
        #[source]
        source: serde_json::Error,
    },

    /// A list came back without a usable total count header.
    #[error("{method} {url}: response has no valid `{header}` header")]
    MissingTotal {
        method: String,
        url: String,
        header: &'static str,
    },
}

impl ClientError {
    /// The HTTP status the server answered with, when it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Builds the error for a non-success response from its status and raw body.
    ///
    /// The API promises `{status, code, message}`, but a reverse proxy, a load balancer or
    /// a framework-level rejection may answer first with HTML or plain text, so anything
    /// else is kept as the message rather than lost behind a decode failure.
    pub(crate) fn from_response(status: reqwest::StatusCode, body: &[u8]) -> Self {
        if let Ok(json) = serde_json::from_slice::<JsonError>(body) {
            return Self::Api {
                status: status.as_u16(),
                code: json.code,
                message: json.message,
            };
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
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
        Self::Api {
            status: status.as_u16(),
            code: code_of(status),
            message,
        }
    }
}

/// The API's error code for a status, in the same spelling the server uses
/// (`payload_too_large`), so callers can match on `code` whoever produced the error.
fn code_of(status: reqwest::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => reason
            .chars()
            .filter_map(|c| match c {
                ' ' | '-' => Some('_'),
                c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        None => "unknown".to_owned(),
    }
}

/// An error and its sources on one line, `a: b: c`: how the CLI and the runner print
/// an error chain once.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    fn api(err: ClientError) -> (u16, String, String) {
        match err {
            ClientError::Api {
                status,
                code,
                message,
            } => (status, code, message),
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    #[test]
    fn decodes_the_json_error_body() {
        let body = br#"{"status":404,"code":"not_found","message":"runner `my-runner` not found"}"#;
        let err = ClientError::from_response(StatusCode::NOT_FOUND, body);
        assert_eq!(
            err.to_string(),
            "runner `my-runner` not found (HTTP 404 not_found)"
        );
        assert_eq!(err.status(), Some(404));
        assert_eq!(
            api(err),
            (
                404,
                "not_found".to_owned(),
                "runner `my-runner` not found".to_owned()
            )
        );
    }

    #[test]
    fn the_http_status_wins_over_the_body() {
        let body = br#"{"status":200,"code":"conflict","message":"slug taken"}"#;
        let (status, code, _) = api(ClientError::from_response(StatusCode::CONFLICT, body));
        assert_eq!((status, code.as_str()), (409, "conflict"));
    }

    #[test]
    fn falls_back_to_raw_text() {
        let err = ClientError::from_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            b"  Failed to buffer the request body: length limit exceeded\n",
        );
        assert_eq!(
            api(err),
            (
                413,
                "payload_too_large".to_owned(),
                "Failed to buffer the request body: length limit exceeded".to_owned()
            )
        );
    }

    #[test]
    fn json_of_another_shape_is_kept_as_text() {
        let body = br#"{"error":"nope"}"#;
        let (_, code, message) = api(ClientError::from_response(StatusCode::BAD_GATEWAY, body));
        assert_eq!(code, "bad_gateway");
        assert_eq!(message, r#"{"error":"nope"}"#);
    }

    #[test]
    fn empty_body_uses_the_reason_phrase() {
        let (_, code, message) = api(ClientError::from_response(
            StatusCode::TOO_MANY_REQUESTS,
            b"",
        ));
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("too_many_requests", "Too Many Requests")
        );
        let unknown = StatusCode::from_u16(599).expect("599 is a valid status code");
        let (status, code, message) = api(ClientError::from_response(unknown, b" "));
        assert_eq!(
            (status, code.as_str(), message.as_str()),
            (599, "unknown", "the server gave no reason")
        );
    }

    #[test]
    fn long_and_invalid_utf8_bodies_are_tamed() {
        let long = format!("<html>{}</html>", "x".repeat(2000));
        let (_, _, message) = api(ClientError::from_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            long.as_bytes(),
        ));
        assert_eq!(message.chars().count(), MAX_RAW_MESSAGE_CHARS + 1);
        assert!(message.ends_with('…'));

        let (_, _, message) = api(ClientError::from_response(
            StatusCode::BAD_REQUEST,
            b"bad \xff byte",
        ));
        assert_eq!(message, "bad \u{fffd} byte");
    }
}
