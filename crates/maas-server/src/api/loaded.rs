//! Loaded models: list them, load (and pin) one ahead of traffic, unload one.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use maas_core::{Error, ModelRef, Role};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::cache::LoadedInfo;
use crate::error::{ApiJson, ApiResult, ErrorBody};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_loaded, load))
        .routes(routes!(unload))
}

/// The models loaded now that this key may see.
#[utoipa::path(get, path = "/api/v1/loaded", tag = "serving",
    responses((status = 200, body = Vec<LoadedInfo>), (status = 401, body = ErrorBody)))]
async fn list_loaded(State(state): State<AppState>, who: Principal) -> Json<Vec<LoadedInfo>> {
    Json(
        state
            .models
            .loaded()
            .into_iter()
            .filter(|m| who.can_access(&m.model))
            .collect(),
    )
}

/// What to load.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    /// `name`, `name:N` or `name@alias`.
    pub model: String,
    /// Keep it loaded whatever the memory budget and idle time say (true), or release a pin
    /// (false); unchanged when absent.
    #[serde(default)]
    pub pin: Option<bool>,
}

/// Load a model now, so the first request does not wait (deployer). Also pins or unpins it.
#[utoipa::path(post, path = "/api/v1/loaded", tag = "serving", request_body = LoadRequest,
    responses((status = 200, body = LoadedInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn load(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<LoadRequest>,
) -> ApiResult<Json<LoadedInfo>> {
    who.require(Role::Deployer)?;
    let r = ModelRef::parse(&body.model)
        .map_err(|e| Error::invalid(format!("model: {}", e.message)))?;
    who.require_model(&r.name)?;
    let task = state.registry.get_model(&r.name).await?.task;
    let version = state.registry.resolve(&r).await?;
    let info = state.models.load_now(&version, task, body.pin).await?;
    Ok(Json(info))
}

/// Unload a model (deployer); requests already running finish first. 404 if it is not loaded.
#[utoipa::path(delete, path = "/api/v1/loaded/{reference}", tag = "serving",
    params(("reference" = String, Path, description = "name, name:N or name@alias")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn unload(
    State(state): State<AppState>,
    who: Principal,
    Path(reference): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(Role::Deployer)?;
    let r = ModelRef::parse(&reference)?;
    who.require_model(&r.name)?;
    let version = state.registry.resolve(&r).await?;
    if !state.models.unload(&version.model, version.version) {
        return Err(Error::not_found(format!(
            "{}:{} is not loaded",
            version.model, version.version
        ))
        .into());
    }
    Ok(StatusCode::NO_CONTENT)
}
