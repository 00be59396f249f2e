//! Bearer-key authentication and role/scope checks.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use maas_core::{Error, ModelName, Role};
use maas_store::{keys, Actor};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Key id.
    pub key_id: String,
    /// Role of the key.
    pub role: Role,
    /// Models a consumer key is limited to.
    pub models: Option<Vec<String>>,
}

impl Principal {
    /// Fails with 403 unless the key's role includes `required`.
    pub fn require(&self, required: Role) -> Result<(), ApiError> {
        if self.role.includes(required) {
            return Ok(());
        }
        Err(Error::forbidden(format!(
            "key '{}' has role {}; this needs role {required}",
            self.key_id, self.role
        ))
        .into())
    }

    /// Whether the key may see `model`.
    pub fn can_access(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|scope| scope.iter().any(|m| m == model))
    }

    /// Fails with 403 unless the key's scope includes `model`.
    pub fn require_model(&self, model: &ModelName) -> Result<(), ApiError> {
        if self.can_access(model.as_str()) {
            return Ok(());
        }
        Err(Error::forbidden(format!(
            "key '{}' is not allowed to access model '{model}'",
            self.key_id
        ))
        .into())
    }

    /// The actor recorded in the audit log.
    pub fn actor(&self) -> Actor {
        Actor(self.key_id.clone())
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            Error::unauthorized("missing API key: send 'Authorization: Bearer KEY'")
        })?;
        let presented = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                Error::unauthorized("malformed Authorization header: expected 'Bearer KEY'")
            })?;
        let invalid = || ApiError::from(Error::unauthorized("invalid API key"));
        let stored = state
            .registry
            .key_by_id(keys::id_of(presented))
            .await?
            .ok_or_else(invalid)?;
        if !keys::matches(presented, &stored.secret_hash) {
            return Err(invalid());
        }
        if stored.info.revoked_at.is_some() {
            return Err(Error::unauthorized(format!(
                "API key '{}' has been revoked",
                stored.info.id
            ))
            .into());
        }
        if stored
            .info
            .expires_at
            .is_some_and(|t| t <= OffsetDateTime::now_utc())
        {
            return Err(
                Error::unauthorized(format!("API key '{}' has expired", stored.info.id)).into(),
            );
        }
        Ok(Principal {
            key_id: stored.info.id,
            role: stored.info.role,
            models: stored.info.models,
        })
    }
}
