//! API keys (admin only).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use maas_core::{ApiKeyInfo, Error, ModelName, Role};
use maas_store::{keys, NewKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiJson, ApiResult, ErrorBody};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

/// A key to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Human label.
    pub name: String,
    /// `admin`, `deployer` or `consumer`.
    pub role: String,
    /// For consumer keys: the only models the key may use.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Expiry (RFC 3339), in the future.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<OffsetDateTime>,
}

/// A created key: the secret is in `key` and is never shown again.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// The full key; store it now.
    pub key: String,
    /// The key's record.
    #[serde(flatten)]
    pub info: ApiKeyInfo,
}

/// All keys (admin). Secrets are never listed.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    responses((status = 200, body = Vec<ApiKeyInfo>), (status = 403, body = ErrorBody)))]
async fn list_keys(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<Vec<ApiKeyInfo>>> {
    who.require(Role::Admin)?;
    Ok(Json(state.registry.list_keys().await?))
}

/// Create a key (admin). The response is the only time the secret is shown.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    who.require(Role::Admin)?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(Error::invalid("name: must be 1-128 characters").into());
    }
    let role: Role = body
        .role
        .parse()
        .map_err(|e: Error| Error::invalid(format!("role: {}", e.message)))?;
    let models = match body.models {
        Some(_) if role != Role::Consumer => {
            return Err(
                Error::invalid("models: only consumer keys can be limited to models").into(),
            );
        }
        Some(list) if list.is_empty() => {
            return Err(Error::invalid(
                "models: an empty list would allow nothing; omit it to allow all",
            )
            .into())
        }
        Some(list) => Some(
            list.iter()
                .map(|m| {
                    ModelName::parse(m)
                        .map_err(|e| Error::invalid(format!("models: {}", e.message)))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    if let Some(t) = body.expires_at.filter(|t| *t <= OffsetDateTime::now_utc()) {
        return Err(Error::invalid(format!("expires_at: {t} is in the past")).into());
    }
    let generated = keys::generate();
    let new = NewKey {
        id: generated.id,
        name: name.to_owned(),
        role,
        models,
        secret_hash: keys::hash(&generated.secret),
        expires_at: body.expires_at,
    };
    let info = state.registry.create_key(new, &who.actor()).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: generated.secret,
            info,
        }),
    ))
}

/// Revoke a key (admin). It stops working at once.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 200, body = ApiKeyInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke_key(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKeyInfo>> {
    who.require(Role::Admin)?;
    Ok(Json(state.registry.revoke_key(&id, &who.actor()).await?))
}
