//! The maas HTTP server.
//!
//! [`app`] builds the axum router from an [`AppState`] (so tests can drive it directly), and
//! [`serve`] opens the embedded store, cleans up after any crash, bootstraps the first admin
//! key, binds and runs until SIGTERM or Ctrl-C.
//!
//! Routes: OpenAI-compatible `/v1/models`, `/v1/chat/completions`, `/v1/completions` and
//! `/v1/embeddings`; image classification at `/v1/images/classify`; predictions from raw rows
//! at `/v1/predict/{model}`;
//! the management API under `/api/v1` (models, versions, aliases, tags, pulls and jobs,
//! blobs, keys, audit, datasets, training runs with their event streams); the Open Inference Protocol v2 under `/v2` (health, metadata, infer with
//! JSON or binary tensors, model repository); and the OpenAPI
//! document at `/openapi.json`, generated from the handlers. Every route but health needs
//! `Authorization: Bearer KEY`. Errors are `{"error":{"code","message"}}`.
#![deny(missing_docs)]

mod api;
mod auth;
mod cache;
mod error;
mod images;
mod jobs;
mod openai;
mod predict;
mod pull;
mod runs;
mod serve;
mod serving;
mod state;
mod v2;

pub use cache::CacheConfig;
pub use jobs::Jobs;
pub use maas_engine::Batching;
pub use serve::{open_state, serve, ServeConfig};
pub use state::AppState;

use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::Principal;
use crate::error::ApiError;

/// pip's configured index (`PIP_INDEX_URL`), else PyPI: `pypi:` pulls use the index pip would.
pub fn default_pypi_index() -> String {
    std::env::var(maas_core::env::PIP_INDEX_URL)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "https://pypi.org/simple".to_owned())
}

/// Largest JSON body the management API accepts.
pub const MAX_JSON_BYTES: usize = 1 << 20;

#[derive(OpenApi)]
#[openapi(
    info(title = "maas", description = "Model-as-a-Service: registry, artifacts, keys and audit."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "models"), (name = "pulls"), (name = "blobs"), (name = "keys"), (name = "audit"), (name = "serving"), (name = "datasets"), (name = "runs"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"live": true}))
}

async fn ready(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Ready means the registry answers.
    state.registry.count_usable_admin_keys().await?;
    Ok(Json(serde_json::json!({"ready": true})))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", uri.path()),
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// The whole application router.
pub fn app(state: AppState) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api::models::router())
        .merge(api::pulls::router())
        .merge(api::keys::router())
        .merge(api::audit::router())
        .merge(api::loaded::router())
        .merge(api::runs::router())
        .merge(api::evaluations::router())
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        // Blobs stream to the store with their own size limit.
        .merge(api::blobs::router().layer(DefaultBodyLimit::disable()))
        .merge(api::datasets::router())
        .split_for_parts();
    let doc = std::sync::Arc::new(doc);
    let openapi = get(move |_who: Principal| {
        let doc = doc.clone();
        async move { Json(doc.as_ref().clone()) }
    });
    Router::new()
        .merge(api)
        .merge(openai::router().layer(DefaultBodyLimit::max(MAX_JSON_BYTES * 4)))
        .merge(v2::router())
        .merge(images::router())
        .merge(predict::router().layer(DefaultBodyLimit::max(MAX_JSON_BYTES * 16)))
        .route("/openapi.json", openapi)
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
