//! `/v0/server/…` and `/v0/openapi.json`: version, health and the API description.
//! These need no token.

use axum::extract::State;
use axum::http::StatusCode;
use bencher_types::{JsonHealth, JsonServerVersion};

use super::AppState;

/// The server's version.
#[utoipa::path(get, path = "/v0/server/version", tag = "server",
    responses((status = 200, body = JsonServerVersion)))]
pub async fn version() -> axum::Json<JsonServerVersion> {
    axum::Json(JsonServerVersion {
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// Whether the server and its database answer: 200 when healthy, 503 otherwise.
#[utoipa::path(get, path = "/v0/server/health", tag = "server",
    responses((status = 200, body = JsonHealth), (status = 503, body = JsonHealth)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, axum::Json<JsonHealth>) {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(JsonHealth {
                status: "ok".into(),
                database: "ok".into(),
            }),
        ),
        Err(error) => {
            tracing::warn!(error = %super::error::error_chain(&error), "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(JsonHealth {
                    status: "degraded".into(),
                    database: "unreachable".into(),
                }),
            )
        }
    }
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(get, path = "/v0/openapi.json", tag = "server",
    responses((status = 200, description = "OpenAPI document", content_type = "application/json")))]
pub async fn openapi(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(state.openapi.as_ref().clone())
}
