//! Request extractors whose every rejection is an `ApiError` with a JSON body, and the
//! bearer-token authentication of users and admins.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use bencher_types::{ApiToken, JsonToken};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::auth::hash_secret;

/// A JSON object body. Like `axum::Json`, but every rejection (bad syntax, unknown
/// fields, invalid values, wrong content type, body over the limit) is a JSON error with
/// the right status, and only an object is accepted: serde would otherwise also read a
/// struct from an array of its field values.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<mime::Mime>().ok())
            .is_some_and(|mime| {
                mime.type_() == "application"
                    && (mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json"))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "expected a JSON body with `Content-Type: application/json`".into(),
            ));
        }
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        ApiError::PayloadTooLarge(rejection.body_text())
                    }
                    _ => ApiError::BadRequest(rejection.body_text()),
                })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::BadRequest(
                "the request body must be a JSON object".into(),
            ));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Self(value))
    }
}

/// `axum::extract::Path` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The caller's valid API token, admin or not.
pub struct User(pub JsonToken);

/// The caller's valid admin token. Non-admin tokens are refused with 403.
pub struct Admin(pub JsonToken);

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?;
        let hash = hash_secret(token.expose_secret());
        state
            .store
            .find_active_token(&hash, state.clock.now())
            .await?
            .map(User)
            .ok_or(ApiError::Unauthorized(
                "invalid, expired or revoked API token",
            ))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let User(token) = User::from_request_parts(parts, state).await?;
        if !token.admin {
            return Err(ApiError::Forbidden("this endpoint needs an admin token"));
        }
        Ok(Admin(token))
    }
}

/// The `Authorization: Bearer …` token, format-checked. Its value is never logged.
fn bearer_token(parts: &Parts) -> Result<ApiToken, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "missing `Authorization: Bearer <API token>` header",
        ))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(ApiError::Unauthorized("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized("expected a Bearer token"));
    }
    token.trim().parse().map_err(|_| {
        ApiError::Unauthorized(
            "malformed API token: expected `bencher_user_` and 30 letters or digits",
        )
    })
}
