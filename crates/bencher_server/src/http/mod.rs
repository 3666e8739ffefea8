//! The REST API: routes, shared state, the OpenAPI document and the middleware every
//! request passes through. Handlers call the store; the store never calls back here.

pub mod error;
mod extract;
mod projects;
mod runners;
mod server;
mod specs;
mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bencher_types::TOTAL_COUNT_HEADER;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clock::Clock;
use crate::store::Store;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: Clock,
    openapi: Arc<serde_json::Value>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Bencher API", description = "Self-hosted continuous benchmarking: runners, specs and jobs."),
    modifiers(&ApiTokenScheme),
    tags(
        (name = "runners", description = "Machines that run jobs, their keys and the Specs they serve"),
        (name = "specs", description = "Hardware descriptions that jobs ask for"),
        (name = "tokens", description = "API tokens"),
        (name = "projects", description = "Projects, each also a registry repository"),
        (name = "server", description = "Version, health and this document"),
    )
)]
struct ApiDoc;

struct ApiTokenScheme;

impl Modify for ApiTokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("bencher_user_…")
                    .build(),
            ),
        );
    }
}

/// Every route, registered together with its OpenAPI operation so the document cannot
/// fall behind the router.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(server::version))
        .routes(routes!(server::health))
        .routes(routes!(server::openapi))
        .routes(routes!(runners::list, runners::create))
        .routes(routes!(runners::view, runners::update))
        .routes(routes!(runners::rotate_key))
        .routes(routes!(runners::list_specs, runners::add_spec))
        .routes(routes!(runners::remove_spec))
        .routes(routes!(specs::list, specs::create))
        .routes(routes!(specs::view, specs::update, specs::delete))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(projects::list, projects::create))
        .routes(routes!(projects::view))
}

/// The OpenAPI document of this server's REST API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The whole application: routes, JSON fallbacks, body limit, panics caught, requests
/// traced (method and path only; headers, where credentials travel, are never logged).
pub fn router(store: Store, clock: Clock, request_limit: usize) -> Router {
    let (router, api) = routes().split_for_parts();
    let openapi = serde_json::to_value(&api).expect("the OpenAPI document serializes");
    let state = AppState {
        store,
        clock,
        openapi: Arc::new(openapi),
    };
    router
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this endpoint".into())
        })
        .with_state(state)
        .layer(DefaultBodyLimit::max(request_limit))
        .layer(CatchPanicLayer::custom(|_panic| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
}

/// A JSON list with its total count in `X-Total-Count`.
pub(crate) fn paginated<T: Serialize>(items: Vec<T>, total: u64) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(TOTAL_COUNT_HEADER, HeaderValue::from(total));
    (StatusCode::OK, headers, axum::Json(items)).into_response()
}
