//! Pulls and the jobs that run them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use maas_core::{check_relative_path, Error, FileEntry, Format, ModelName, Precision, Role, Task};
use maas_ingest::Source;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use crate::jobs::{JobState, JobView};
use crate::pull::{self, PullPlan};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_pull))
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
}

/// Files the client uploaded as blobs, pulled as one version.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadedFiles {
    /// The files with their digests; each must have been uploaded to `/api/v1/blobs`.
    pub files: Vec<FileEntry>,
    /// Whether they form a folder.
    pub is_dir: bool,
    /// What the client pulled (its local path), for the record.
    pub label: String,
}

/// Register a new version from a source.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// `http(s)://…`, `pypi:PACKAGE[==VERSION]` or `hf:ORG/REPO[@REV][/PATH]`. Exactly one of
    /// `source` and `upload` is given.
    #[serde(default)]
    pub source: Option<String>,
    /// Files already uploaded as blobs.
    #[serde(default)]
    pub upload: Option<UploadedFiles>,
    /// Model name; derived from the source when omitted.
    #[serde(default)]
    pub name: Option<String>,
    /// Task override.
    #[serde(default)]
    pub task: Option<String>,
    /// Format override.
    #[serde(default)]
    pub format: Option<String>,
    /// Description for a new model.
    #[serde(default)]
    pub description: Option<String>,
    /// Serving settings kept with the version (image preprocessing, labels, batching),
    /// checked against the model's signature.
    #[serde(default)]
    pub serving: Option<crate::serving::ServingConfig>,
    /// Weight precision of the GGUF a safetensors BERT embedding folder is converted to:
    /// `f16`, `bf16` or `f32` (the original numbers). By default F32 weights get the half
    /// precision the server's CPU multiplies fastest: bf16 on AMD CPUs with AVX512-BF16, f16
    /// elsewhere (and f16 files stay f16, bf16 files bf16).
    #[serde(default)]
    pub precision: Option<String>,
}

/// Whether to answer at once or when the pull ends.
#[derive(Deserialize, IntoParams)]
pub struct PullQuery {
    /// Wait for the pull to end and answer with the version (201) or its error.
    #[serde(default)]
    pub wait: bool,
}

fn field<T>(
    name: &str,
    value: Option<&str>,
    parse: impl Fn(&str) -> maas_core::Result<T>,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            parse(v).map_err(|e| ApiError::from(Error::invalid(format!("{name}: {}", e.message))))
        })
        .transpose()
}

fn plan(body: PullRequest, server_precision: Option<Precision>) -> Result<PullPlan, ApiError> {
    let source = match (body.source, body.upload) {
        (Some(s), None) => Source::parse_remote(&s)
            .map_err(|e| Error::invalid(format!("source: {}", e.message)))?,
        (None, Some(u)) => {
            if u.files.is_empty() {
                return Err(Error::invalid("upload.files: at least one file is needed").into());
            }
            if !u.is_dir && u.files.len() != 1 {
                return Err(Error::invalid(
                    "upload.files: a single-file upload holds exactly one file",
                )
                .into());
            }
            for f in &u.files {
                check_relative_path(&f.path)
                    .map_err(|e| Error::invalid(format!("upload.files: {}", e.message)))?;
            }
            Source::Uploaded {
                files: u.files,
                is_dir: u.is_dir,
                label: u.label,
            }
        }
        _ => return Err(Error::invalid("give exactly one of 'source' and 'upload'").into()),
    };
    Ok(PullPlan {
        source,
        name: field("name", body.name.as_deref(), ModelName::parse)?,
        task: field("task", body.task.as_deref(), str::parse::<Task>)?,
        format: field("format", body.format.as_deref(), str::parse::<Format>)?,
        description: body.description,
        serving: body.serving,
        precision: field("precision", body.precision.as_deref(), str::parse)?,
        server_precision,
    })
}

/// Start a pull (deployer). Answers 202 with the job, or with `?wait=true` the registered
/// version (201) or the pull's error.
#[utoipa::path(post, path = "/api/v1/pulls", tag = "pulls", params(PullQuery), request_body = PullRequest,
    responses((status = 202, body = JobView), (status = 201, body = maas_core::ModelVersion), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_pull(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<PullQuery>,
    ApiJson(body): ApiJson<PullRequest>,
) -> ApiResult<Response> {
    who.require(Role::Deployer)?;
    let plan = plan(body, state.convert_precision)?;
    if let Some(name) = &plan.name {
        who.require_model(name)?;
    }
    let target = plan.source.to_string();
    let actor = who.actor();
    let job_state = state.clone();
    let id = state.jobs.spawn(
        "pull",
        target,
        who.key_id.clone(),
        move |progress| async move {
            let version = pull::run(job_state, plan, actor, progress).await?;
            serde_json::to_value(version).map_err(|e| Error::internal(e.to_string()))
        },
    );
    answer(&state, &id, query.wait).await
}

/// The answer to a request that started job `id`: 202 with the job, or when the caller waits,
/// 201 with its result or its error with the status it carries.
pub async fn answer(state: &AppState, id: &str, wait: bool) -> ApiResult<Response> {
    if !wait {
        let view = state
            .jobs
            .get(id)
            .ok_or_else(|| Error::internal("job vanished"))?;
        return Ok((StatusCode::ACCEPTED, Json(view)).into_response());
    }
    let view = state
        .jobs
        .wait(id)
        .await
        .ok_or_else(|| Error::internal("job vanished"))?;
    match (view.state, view.result, view.error) {
        (JobState::Succeeded, Some(result), _) => {
            Ok((StatusCode::CREATED, Json(result)).into_response())
        }
        (_, _, Some(err)) => {
            let status =
                StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Ok((
                status,
                Json(ErrorBody {
                    error: (&err).into(),
                }),
            )
                .into_response())
        }
        _ => Err(Error::internal("job ended without an outcome").into()),
    }
}

/// Jobs, newest first (deployer).
#[utoipa::path(get, path = "/api/v1/jobs", tag = "pulls", responses((status = 200, body = Vec<JobView>)))]
async fn list_jobs(State(state): State<AppState>, who: Principal) -> ApiResult<Json<Vec<JobView>>> {
    who.require(Role::Deployer)?;
    Ok(Json(state.jobs.list()))
}

/// One job with its progress (deployer).
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "pulls",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)))]
async fn get_job(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    who.require(Role::Deployer)?;
    state
        .jobs
        .get(&id)
        .map(Json)
        .ok_or_else(|| Error::not_found(format!("job '{id}' not found")).into())
}
