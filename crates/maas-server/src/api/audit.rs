//! The audit log (admin only).

use axum::extract::State;
use axum::Json;
use maas_core::{AuditEntry, AuditVerdict, Error, Role};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiQuery, ApiResult, ErrorBody};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit))
        .routes(routes!(verify_audit))
}

/// Paging through the log.
#[derive(Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Entries after this sequence number (default 0: from the start).
    #[serde(default)]
    pub after: i64,
    /// At most this many (1-1000, default 100).
    #[serde(default = "default_limit")]
    pub limit: i64,
}

fn default_limit() -> i64 {
    100
}

/// Audit entries, oldest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = 403, body = ErrorBody)))]
async fn list_audit(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    who.require(Role::Admin)?;
    if !(1..=1000).contains(&q.limit) || q.after < 0 {
        return Err(Error::invalid("limit must be 1-1000 and after must not be negative").into());
    }
    Ok(Json(state.registry.audit_list(q.after, q.limit).await?))
}

/// Check the hash chain: any edited or removed entry is reported.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = AuditVerdict), (status = 403, body = ErrorBody)))]
async fn verify_audit(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<AuditVerdict>> {
    who.require(Role::Admin)?;
    Ok(Json(state.registry.audit_verify().await?))
}
