//! Blob uploads: how the CLI sends local files. The path names the digest; the server hashes
//! the body as it streams and keeps it only if it matches.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use maas_core::{Digest, Role};

use crate::auth::Principal;
use crate::error::{ApiResult, ErrorBody};
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(head_blob, put_blob))
}

/// 200 if the blob is stored, 404 if not (deployer).
#[utoipa::path(head, path = "/api/v1/blobs/{digest}", tag = "blobs",
    params(("digest" = String, Path, description = "sha256:<hex>")),
    responses((status = 200), (status = 404)))]
async fn head_blob(
    State(state): State<AppState>,
    who: Principal,
    Path(digest): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(Role::Deployer)?;
    let digest = Digest::parse(&digest)?;
    Ok(if state.artifacts.contains(&digest).await? {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    })
}

/// Upload a blob whose sha256 is `digest` (deployer). A body that hashes differently is refused
/// with 400 and nothing is kept.
#[utoipa::path(put, path = "/api/v1/blobs/{digest}", tag = "blobs",
    params(("digest" = String, Path, description = "sha256:<hex>")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn put_blob(
    State(state): State<AppState>,
    who: Principal,
    Path(digest): Path<String>,
    body: Body,
) -> ApiResult<StatusCode> {
    who.require(Role::Deployer)?;
    let digest = Digest::parse(&digest)?;
    let stream = body.into_data_stream();
    state
        .artifacts
        .put_stream(stream, Some(digest), Some(state.max_blob_bytes))
        .await?;
    Ok(StatusCode::CREATED)
}
