//! Datasets: upload a CSV or JSONL file as a new version (its schema inferred and profiled
//! before anything is stored), list datasets, show one with its versions.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::Json;
use maas_core::{Dataset, DatasetVersion, Error, ModelName, NewDatasetVersion, Role};
use maas_train::dataset::{self, FileFormat, Kind};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use crate::state::AppState;

/// Largest dataset file.
pub const MAX_DATASET_BYTES: usize = 256 << 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload, list_datasets))
        .routes(routes!(show_dataset))
        .routes(routes!(show_version))
        .layer(DefaultBodyLimit::max(MAX_DATASET_BYTES))
}

/// How to read an uploaded file.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Dataset name; a new version is added if it exists.
    pub name: String,
    /// The file's name (its extension gives the format when `format` is absent).
    #[serde(default)]
    pub filename: Option<String>,
    /// `csv`, `jsonl` or `zip` (images in one folder per label).
    #[serde(default)]
    pub format: Option<String>,
    /// The column to predict (default: the last).
    #[serde(default)]
    pub target: Option<String>,
    /// Columns whose kind is declared rather than inferred: `col:categorical,other:numeric`.
    #[serde(default)]
    pub kinds: Option<String>,
    /// Description of a new dataset.
    #[serde(default)]
    pub description: Option<String>,
}

fn kinds(raw: Option<&str>) -> Result<BTreeMap<String, Kind>, Error> {
    let mut out = BTreeMap::new();
    for item in raw
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.trim().is_empty())
    {
        let (col, kind) = item
            .rsplit_once(':')
            .ok_or_else(|| Error::invalid(format!("kinds: '{item}' is not COLUMN:KIND")))?;
        let kind = match kind.trim() {
            "numeric" => Kind::Numeric,
            "categorical" => Kind::Categorical,
            "text" => Kind::Text,
            other => {
                return Err(Error::invalid(format!(
                    "kinds: '{other}' is not numeric, categorical or text"
                )))
            }
        };
        out.insert(col.trim().to_owned(), kind);
    }
    Ok(out)
}

/// Upload a CSV (header row), JSONL, or a zip of images in one folder per label as a new
/// dataset version (deployer). The schema is
/// inferred and every column profiled first; a file that cannot be read is refused with the line
/// and column at fault, and nothing is stored.
#[utoipa::path(post, path = "/api/v1/datasets", tag = "datasets", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "text/csv"),
    responses((status = 201, body = DatasetVersion), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn upload(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<UploadQuery>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<DatasetVersion>)> {
    who.require(Role::Deployer)?;
    let body = body.map_err(|e| {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_input"
        };
        ApiError::new(e.status(), code, e.body_text())
    })?;
    let name =
        ModelName::parse(&q.name).map_err(|e| Error::invalid(format!("name: {}", e.message)))?;
    let format = match (q.format.as_deref(), q.filename.as_deref()) {
        (Some("csv"), _) => FileFormat::Csv,
        (Some("jsonl"), _) => FileFormat::Jsonl,
        (Some("zip"), _) => FileFormat::Zip,
        (Some(other), _) => {
            return Err(
                Error::invalid(format!("format must be csv, jsonl or zip, got '{other}'")).into(),
            )
        }
        (None, Some(f)) => FileFormat::from_name(f).ok_or_else(|| {
            Error::invalid(format!(
                "cannot tell the format of '{f}' (expected .csv, .jsonl or .zip); pass format"
            ))
        })?,
        (None, None) => FileFormat::Csv,
    };
    let declared = kinds(q.kinds.as_deref())?;
    let (target, bytes) = (q.target.clone(), body.clone());
    let profile = tokio::task::spawn_blocking(move || {
        let table = dataset::parse(&bytes, format)?;
        dataset::profile(&table, target.as_deref(), &declared)
    })
    .await
    .map_err(|e| Error::internal(format!("dataset profiling crashed: {e}")))??;
    let size_bytes = body.len() as i64;
    let digest = state.artifacts.put_bytes(body).await?;
    let new = NewDatasetVersion {
        dataset: name,
        description: q.description,
        format: match format {
            FileFormat::Csv => "csv",
            FileFormat::Jsonl => "jsonl",
            FileFormat::Zip => "zip",
        }
        .to_owned(),
        digest,
        size_bytes,
        rows: profile.rows as i64,
        target: profile.target.clone(),
        problem: serde_json::to_value(profile.problem)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        profile: serde_json::to_value(&profile.columns)
            .map_err(|e| Error::internal(e.to_string()))?,
        source: q.filename.unwrap_or_else(|| "upload".to_owned()),
    };
    let version = state
        .registry
        .register_dataset_version(new, &who.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(version)))
}

/// All datasets.
#[utoipa::path(get, path = "/api/v1/datasets", tag = "datasets",
    responses((status = 200, body = Vec<Dataset>), (status = 401, body = ErrorBody)))]
async fn list_datasets(
    State(state): State<AppState>,
    _who: Principal,
) -> ApiResult<Json<Vec<Dataset>>> {
    Ok(Json(state.registry.list_datasets().await?))
}

/// A dataset and its versions.
#[derive(Serialize, ToSchema)]
pub struct DatasetView {
    /// Name.
    pub name: String,
    /// Versions, oldest first.
    pub versions: Vec<DatasetVersion>,
}

/// A dataset with every version (schema, profile, target).
#[utoipa::path(get, path = "/api/v1/datasets/{name}", tag = "datasets",
    params(("name" = String, Path, description = "Dataset name")),
    responses((status = 200, body = DatasetView), (status = 404, body = ErrorBody)))]
async fn show_dataset(
    State(state): State<AppState>,
    _who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<DatasetView>> {
    let name = super::model_name(&name)?;
    let versions = state.registry.list_dataset_versions(&name).await?;
    Ok(Json(DatasetView {
        name: name.to_string(),
        versions,
    }))
}

/// One version of a dataset.
#[utoipa::path(get, path = "/api/v1/datasets/{name}/versions/{version}", tag = "datasets",
    params(("name" = String, Path, description = "Dataset name"), ("version" = i64, Path, description = "Version")),
    responses((status = 200, body = DatasetVersion), (status = 404, body = ErrorBody)))]
async fn show_version(
    State(state): State<AppState>,
    _who: Principal,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<DatasetVersion>> {
    let name = super::model_name(&name)?;
    let version = super::version_number(&version)?;
    Ok(Json(
        state.registry.dataset_version(&name, Some(version)).await?,
    ))
}
