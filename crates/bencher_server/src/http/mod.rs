//! The REST API: routes, shared state, the OpenAPI document and the middleware every
//! request passes through. Handlers call the store; the store never calls back here.

mod alerts;
pub mod error;
mod extract;
mod jobs;
mod measures;
mod perf;
mod projects;
mod registry;
mod reports;
mod results;
mod runners;
mod server;
mod specs;
mod thresholds;
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

use crate::blobs::BlobStore;
use crate::channel::Hub;
use crate::clock::Clock;
use crate::queue::Timeouts;
use crate::registry::RegistryLimits;
use crate::registry::token::RegistryTokens;
use crate::store::Store;
use crate::update::Releases;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: Clock,
    pub blobs: BlobStore,
    pub oci_tokens: RegistryTokens,
    pub limits: RegistryLimits,
    /// The live runner channels of this process.
    pub hub: Hub,
    pub timeouts: Timeouts,
    /// Largest request body, and largest runner message.
    pub request_limit: usize,
    /// Largest uploaded job output document.
    pub max_output_size: u64,
    /// Runner self-update offers; `None` without `[update]`.
    pub releases: Option<Arc<Releases>>,
    openapi: Arc<serde_json::Value>,
}

/// The services the application is built from.
pub struct Services {
    pub store: Store,
    pub clock: Clock,
    pub blobs: BlobStore,
    pub oci_tokens: RegistryTokens,
    pub limits: RegistryLimits,
    pub request_limit: usize,
    pub hub: Hub,
    pub timeouts: Timeouts,
    pub max_output_size: u64,
    pub releases: Option<Arc<Releases>>,
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
        (name = "jobs", description = "Runs submitted as jobs, their status and cancellation"),
        (name = "reports", description = "Reports with their metrics, the perf history, measures and benchmarks"),
        (name = "thresholds", description = "Thresholds and their versioned models"),
        (name = "alerts", description = "Alerts raised on regressions, and dismissing them"),
        (name = "registry", description = "Registry tokens and housekeeping (the registry itself is under /v2/)"),
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
        components.add_security_scheme(
            "runner_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("bencher_runner_…")
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
        .routes(routes!(runners::channel))
        .routes(routes!(runners::upload_output))
        .routes(routes!(runners::list_specs, runners::add_spec))
        .routes(routes!(runners::remove_spec))
        .routes(routes!(runners::download_update))
        .routes(routes!(specs::list, specs::create))
        .routes(routes!(specs::view, specs::update, specs::delete))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(projects::list, projects::create))
        .routes(routes!(projects::view))
        .routes(routes!(jobs::run))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::view))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::list_all))
        .routes(routes!(results::create))
        .routes(routes!(reports::list))
        .routes(routes!(reports::view))
        .routes(routes!(perf::perf))
        .routes(routes!(measures::list_measures))
        .routes(routes!(measures::list_benchmarks))
        .routes(routes!(thresholds::list, thresholds::create))
        .routes(routes!(
            thresholds::view,
            thresholds::update,
            thresholds::delete
        ))
        .routes(routes!(alerts::list))
        .routes(routes!(alerts::view, alerts::update))
        .routes(routes!(registry::token))
        .routes(routes!(registry::gc))
}

/// The OpenAPI document of this server's REST API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The whole application: the REST API and the registry, JSON fallbacks, body limit,
/// panics caught, requests traced (method and path only; headers, where credentials
/// travel, are never logged).
pub fn router(services: Services) -> Router {
    let (router, api) = routes().split_for_parts();
    let openapi = serde_json::to_value(&api).expect("the OpenAPI document serializes");
    let state = AppState {
        store: services.store,
        clock: services.clock,
        blobs: services.blobs,
        oci_tokens: services.oci_tokens,
        limits: services.limits,
        hub: services.hub,
        timeouts: services.timeouts,
        request_limit: services.request_limit,
        max_output_size: services.max_output_size,
        releases: services.releases,
        openapi: Arc::new(openapi),
    };
    // Registry bodies stream to blob storage with their own limits, so the REST body
    // limit applies to the REST routes only.
    let rest = router
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this endpoint".into())
        })
        .layer(DefaultBodyLimit::max(services.request_limit));
    crate::registry::router()
        .merge(rest)
        .with_state(state)
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
