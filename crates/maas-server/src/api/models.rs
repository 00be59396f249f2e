//! Models, versions, aliases and tags.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use maas_core::{Alias, AliasName, Error, Model, ModelName, ModelRef, ModelVersion, Role, Task};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{model_name, version_number};
use crate::auth::Principal;
use crate::error::{ApiJson, ApiResult, ErrorBody};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models, create_model))
        .routes(routes!(get_model, delete_model))
        .routes(routes!(list_versions))
        .routes(routes!(get_version, delete_version))
        .routes(routes!(resolve_ref))
        .routes(routes!(set_alias, delete_alias))
        .routes(routes!(set_tags))
}

/// A model with its versions.
#[derive(Serialize, ToSchema)]
pub struct ModelDetail {
    /// The model.
    #[serde(flatten)]
    pub model: Model,
    /// Its versions, oldest first.
    pub versions: Vec<ModelVersion>,
}

/// List the models this key may see.
#[utoipa::path(get, path = "/api/v1/models", tag = "models",
    responses((status = 200, body = Vec<Model>), (status = 401, body = ErrorBody)))]
async fn list_models(State(state): State<AppState>, who: Principal) -> ApiResult<Json<Vec<Model>>> {
    let models = state.registry.list_models().await?;
    Ok(Json(
        models
            .into_iter()
            .filter(|m| who.can_access(&m.name))
            .collect(),
    ))
}

/// A model to create before any version exists.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    /// Unique name.
    pub name: String,
    /// What it does.
    pub task: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// Create an empty model (deployer); 409 if the name is taken. Pulls create models on
/// demand, so this is for setting the task and description up front.
#[utoipa::path(post, path = "/api/v1/models", tag = "models", request_body = CreateModel,
    responses((status = 201, body = Model), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_model(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<CreateModel>,
) -> ApiResult<(StatusCode, Json<Model>)> {
    who.require(Role::Deployer)?;
    let name =
        ModelName::parse(&body.name).map_err(|e| Error::invalid(format!("name: {}", e.message)))?;
    who.require_model(&name)?;
    let task: Task = body
        .task
        .parse()
        .map_err(|e: Error| Error::invalid(format!("task: {}", e.message)))?;
    if body.description.len() > 4096 {
        return Err(Error::invalid("description: at most 4096 bytes").into());
    }
    let model = state
        .registry
        .create_model(&name, task, &body.description, &who.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(model)))
}

/// One model with its versions.
#[utoipa::path(get, path = "/api/v1/models/{name}", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, body = ModelDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_model(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<ModelDetail>> {
    let name = model_name(&name)?;
    who.require_model(&name)?;
    let model = state.registry.get_model(&name).await?;
    let versions = state.registry.list_versions(&name).await?;
    Ok(Json(ModelDetail { model, versions }))
}

/// Delete a model with all its versions and aliases (admin).
#[utoipa::path(delete, path = "/api/v1/models/{name}", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_model(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(Role::Admin)?;
    let name = model_name(&name)?;
    state.registry.delete_model(&name, &who.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A model's versions, oldest first.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, body = Vec<ModelVersion>), (status = 404, body = ErrorBody)))]
async fn list_versions(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<ModelVersion>>> {
    let name = model_name(&name)?;
    who.require_model(&name)?;
    Ok(Json(state.registry.list_versions(&name).await?))
}

/// One version.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("version" = i64, Path, description = "Version number")),
    responses((status = 200, body = ModelVersion), (status = 404, body = ErrorBody)))]
async fn get_version(
    State(state): State<AppState>,
    who: Principal,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<ModelVersion>> {
    let name = model_name(&name)?;
    who.require_model(&name)?;
    let selector = maas_core::VersionSelector::Number(version_number(&version)?);
    Ok(Json(
        state.registry.resolve(&ModelRef { name, selector }).await?,
    ))
}

/// Delete one version (admin); refused with 409 while an alias points at it.
#[utoipa::path(delete, path = "/api/v1/models/{name}/versions/{version}", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("version" = i64, Path, description = "Version number")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_version(
    State(state): State<AppState>,
    who: Principal,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    who.require(Role::Admin)?;
    let name = model_name(&name)?;
    state
        .registry
        .delete_version(&name, version_number(&version)?, &who.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Resolve `name`, `name:N` or `name@alias` to a version.
#[utoipa::path(get, path = "/api/v1/refs/{reference}", tag = "models",
    params(("reference" = String, Path, description = "name, name:N or name@alias")),
    responses((status = 200, body = ModelVersion), (status = 404, body = ErrorBody)))]
async fn resolve_ref(
    State(state): State<AppState>,
    who: Principal,
    Path(reference): Path<String>,
) -> ApiResult<Json<ModelVersion>> {
    let r = ModelRef::parse(&reference)?;
    who.require_model(&r.name)?;
    Ok(Json(state.registry.resolve(&r).await?))
}

/// Where an alias should point.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlias {
    /// Version number.
    pub version: i64,
}

/// Create or move an alias (deployer). Moving is one transaction.
#[utoipa::path(put, path = "/api/v1/models/{name}/aliases/{alias}", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("alias" = String, Path, description = "Alias name")),
    request_body = SetAlias,
    responses((status = 200, body = Alias), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_alias(
    State(state): State<AppState>,
    who: Principal,
    Path((name, alias)): Path<(String, String)>,
    ApiJson(body): ApiJson<SetAlias>,
) -> ApiResult<Json<Alias>> {
    who.require(Role::Deployer)?;
    let name = model_name(&name)?;
    who.require_model(&name)?;
    let alias = AliasName::parse(&alias)?;
    if body.version < 1 {
        return Err(Error::invalid(format!(
            "version: {} is not a positive integer",
            body.version
        ))
        .into());
    }
    Ok(Json(
        state
            .registry
            .set_alias(&name, &alias, body.version, &who.actor())
            .await?,
    ))
}

/// Remove an alias (deployer).
#[utoipa::path(delete, path = "/api/v1/models/{name}/aliases/{alias}", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("alias" = String, Path, description = "Alias name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_alias(
    State(state): State<AppState>,
    who: Principal,
    Path((name, alias)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    who.require(Role::Deployer)?;
    let name = model_name(&name)?;
    who.require_model(&name)?;
    state
        .registry
        .delete_alias(&name, &AliasName::parse(&alias)?, &who.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

const MAX_TAG_LEN: usize = 256;

/// Set tags on a version (deployer): a JSON object of key → value.
#[utoipa::path(put, path = "/api/v1/models/{name}/versions/{version}/tags", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("version" = i64, Path, description = "Version number")),
    request_body = BTreeMap<String, String>,
    responses((status = 200, body = ModelVersion), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_tags(
    State(state): State<AppState>,
    who: Principal,
    Path((name, version)): Path<(String, String)>,
    ApiJson(tags): ApiJson<BTreeMap<String, String>>,
) -> ApiResult<Json<ModelVersion>> {
    who.require(Role::Deployer)?;
    let name = model_name(&name)?;
    who.require_model(&name)?;
    let version = version_number(&version)?;
    for (k, v) in &tags {
        if k.is_empty() || k.len() > MAX_TAG_LEN || v.len() > MAX_TAG_LEN {
            return Err(Error::invalid(format!(
                "tag '{k}': keys must be 1-{MAX_TAG_LEN} bytes and values at most {MAX_TAG_LEN}"
            ))
            .into());
        }
    }
    state
        .registry
        .set_tags(&name, version, &tags, &who.actor())
        .await?;
    let selector = maas_core::VersionSelector::Number(version);
    Ok(Json(
        state.registry.resolve(&ModelRef { name, selector }).await?,
    ))
}
