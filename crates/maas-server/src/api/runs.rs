//! Training runs: start one on a dataset with a spec, list and show them, follow one as
//! server-sent events, cancel, and resume one a crash or stop interrupted.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use maas_core::{Error, ErrorKind, ModelName, NewRun, Role, Run, RunState};
use maas_train::train::TrainSpec;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiJson, ApiResult, ErrorBody};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_run, list_runs))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
        .routes(routes!(resume_run))
        .routes(routes!(run_events))
}

/// Start a training run.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// `NAME` (newest version) or `NAME:VERSION`.
    pub dataset: String,
    /// The training spec: `mlp`, `optimizer`, `loss`, `epochs`, `batch_size`, `schedule`,
    /// `patience`, `prep` (missing, dedupe, scale, test/validation fractions, seed).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// Model to register the result under (default: the dataset's name).
    #[serde(default)]
    pub model: Option<String>,
}

/// Start a training run (deployer). The dataset, the spec and the model's task are checked
/// first; the run then waits for a training worker. Answers 201 with the queued run.
#[utoipa::path(post, path = "/api/v1/runs", tag = "runs", request_body = RunRequest,
    responses((status = 201, body = Run), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_run(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(req): ApiJson<RunRequest>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    who.require(Role::Deployer)?;
    let (dataset, version) = super::dataset_ref(&req.dataset)?;
    let dv = state.registry.dataset_version(&dataset, version).await?;
    let spec_json = if req.spec.is_null() {
        serde_json::json!({})
    } else {
        req.spec
    };
    let spec: TrainSpec = serde_json::from_value(spec_json.clone())
        .map_err(|e| Error::invalid(format!("spec: {e}")))?;
    let problem = match dv.problem.as_str() {
        "regression" => maas_train::dataset::Problem::Regression,
        _ => maas_train::dataset::Problem::Classification,
    };
    spec.validate(problem)
        .map_err(|e| Error::invalid(format!("spec: {}", e.message)))?;
    let model = match &req.model {
        Some(m) => {
            ModelName::parse(m).map_err(|e| Error::invalid(format!("model: {}", e.message)))?
        }
        None => dataset.clone(),
    };
    if let Some(encoder) = &spec.encoder {
        crate::runs::encoder_version(&state, encoder).await?;
    }
    // What the trained version will serve (TrainedModel::task), so a model name keeps one task.
    let images = dv.format == "zip"
        && dv
            .profile
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["kind"] == "image" && c["name"] != dv.target.as_str());
    let task = match (problem, images, spec.encoder.is_some()) {
        (maas_train::dataset::Problem::Regression, _, _) => maas_core::Task::TabularRegression,
        (maas_train::dataset::Problem::Classification, true, _) => {
            maas_core::Task::ImageClassification
        }
        (maas_train::dataset::Problem::Classification, false, true) => {
            maas_core::Task::TextClassification
        }
        (maas_train::dataset::Problem::Classification, false, false) => {
            maas_core::Task::TabularClassification
        }
    };
    match state.registry.get_model(&model).await {
        Ok(existing) if existing.task != task => {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "model '{model}' is a {} model; a run on '{}' makes {task}: pass another model name",
                    existing.task, dv.dataset
                ),
            )
            .into())
        }
        Ok(_) => {}
        Err(e) if e.kind == ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let new = NewRun {
        id: uuid::Uuid::new_v4().simple().to_string(),
        dataset,
        dataset_version: dv.version,
        model,
        spec: spec_json,
        epochs_total: spec.epochs as i64,
    };
    let run = state.registry.create_run(new, &who.actor()).await?;
    state.runs.start(state.clone(), run.clone(), false);
    Ok((StatusCode::CREATED, Json(run)))
}

/// Training runs, newest first (the latest 200).
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs",
    responses((status = 200, body = Vec<Run>), (status = 401, body = ErrorBody)))]
async fn list_runs(State(state): State<AppState>, who: Principal) -> ApiResult<Json<Vec<Run>>> {
    who.require(Role::Deployer)?;
    Ok(Json(state.registry.list_runs(200).await?))
}

/// One run: state, per-epoch history, result or error.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = Run), (status = 404, body = ErrorBody)))]
async fn get_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Run>> {
    who.require(Role::Deployer)?;
    Ok(Json(state.registry.get_run(&id).await?))
}

/// Cancel a queued, running or interrupted run (deployer). It stops after the current epoch;
/// nothing is registered. 409 for a run that has already ended.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 202, body = Run), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    who.require(Role::Deployer)?;
    let run = state.registry.get_run(&id).await?;
    if run.state.is_final() {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("run '{id}' has already {}", run.state),
        )
        .into());
    }
    if !state.runs.cancel(&id) {
        // Interrupted (or left by a previous process): nothing is running it.
        let update = maas_core::RunUpdate {
            state: RunState::Cancelled,
            epochs_done: run.epochs_done,
            history: run.history.clone(),
            result: None,
            error: None,
        };
        let run = state.registry.update_run(&id, update, &who.actor()).await?;
        state.runs.forget(&id);
        return Ok((StatusCode::ACCEPTED, Json(run)));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(state.registry.get_run(&id).await?),
    ))
}

/// Resume an interrupted run from its last checkpoint (deployer). 409 unless it is interrupted.
#[utoipa::path(post, path = "/api/v1/runs/{id}/resume", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 202, body = Run), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn resume_run(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    who.require(Role::Deployer)?;
    let run = state.registry.get_run(&id).await?;
    if run.state != RunState::Interrupted || !state.runs.start(state.clone(), run.clone(), true) {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "run '{id}' is {}; only an interrupted run can resume",
                run.state
            ),
        )
        .into());
    }
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// Follow a run as server-sent events: `epoch` (one per finished epoch, the past ones first),
/// `state` (each change), and a last `end` event with the whole run, after which the stream
/// closes. A run that has already ended gives its history and `end` at once.
#[utoipa::path(get, path = "/api/v1/runs/{id}/events", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, description = "text/event-stream"), (status = 404, body = ErrorBody)))]
async fn run_events(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::response::Response> {
    who.require(Role::Deployer)?;
    // Subscribe before the first read, so no change between the two is missed.
    let changes = state.runs.subscribe(&id);
    state.registry.get_run(&id).await?;
    struct Cursor {
        state: AppState,
        id: String,
        changes: Option<tokio::sync::watch::Receiver<u64>>,
        sent: usize,
        last: Option<RunState>,
        done: bool,
        first: bool,
    }
    let cursor = Cursor {
        state,
        id,
        changes,
        sent: 0,
        last: None,
        done: false,
        first: true,
    };
    let stream = futures::stream::unfold(cursor, |mut c| async move {
        if c.done {
            return None;
        }
        if !c.first {
            match c.changes.as_mut() {
                // Woken by progress, or every few seconds in case the run ended elsewhere.
                Some(rx) => {
                    let _ = tokio::time::timeout(Duration::from_secs(5), rx.changed()).await;
                }
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        c.first = false;
        let mut events = vec![];
        let run = match c.state.registry.get_run(&c.id).await {
            Ok(run) => run,
            Err(e) => {
                c.done = true;
                events.push(Event::default().event("error").data(e.message));
                return Some((events, c));
            }
        };
        let history = run.history.as_array().cloned().unwrap_or_default();
        // A resumed run may restart its history shorter than what was sent.
        c.sent = c.sent.min(history.len());
        for epoch in &history[c.sent..] {
            events.push(Event::default().event("epoch").data(epoch.to_string()));
        }
        c.sent = history.len();
        if c.last != Some(run.state) {
            c.last = Some(run.state);
            events.push(
                Event::default()
                    .event("state")
                    .data(serde_json::json!({"state": run.state}).to_string()),
            );
        }
        let active = c.state.runs.is_active(&c.id);
        if run.state.is_final() || !active {
            c.done = true;
            events.push(
                Event::default()
                    .event("end")
                    .data(serde_json::to_string(&run).unwrap_or_default()),
            );
        }
        Some((events, c))
    });
    let stream = futures::StreamExt::flat_map(stream, |events| {
        futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
