//! The Open Inference Protocol v2 (KServe, Triton, Seldon) over REST: server and model metadata,
//! readiness, inference with JSON or binary tensors, and the model repository extension.
//! Errors are `{"error": "..."}`, as the protocol writes them.

mod codec;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maas_core::{Error, ErrorKind, ModelName, ModelRef, ModelVersion, Role, Task, VersionSelector};
use maas_engine::{EngineError, Tensor};
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;
pub use codec::{decode_inputs, InferRequest};
use codec::{to_binary, JsonData};

/// Largest inference body (JSON or binary tensors).
pub const MAX_INFER_BYTES: usize = 64 << 20;

/// The binary tensor extension's header: length of the JSON part of the body.
const HEADER_LENGTH: &str = "inference-header-content-length";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(metadata))
        .route("/v2/models/{name}/ready", get(ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}", get(metadata))
        .route("/v2/models/{name}/versions/{version}/ready", get(ready))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{name}/load", post(repository_load))
        .route(
            "/v2/repository/models/{name}/unload",
            post(repository_unload),
        )
        .layer(DefaultBodyLimit::max(MAX_INFER_BYTES))
}

/// An error as the protocol writes it.
#[derive(Debug)]
pub struct V2Error(StatusCode, String);

impl V2Error {
    fn invalid(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }
}

impl V2Error {
    /// The same error in OpenAI's shape, for `/v1` routes that run tensor models.
    pub fn into_oai(self) -> crate::openai::OaiError {
        crate::openai::OaiError::with_status(self.0, self.1)
    }

    /// The same error as a plain [`Error`], for jobs that run tensor models.
    pub fn into_error(self) -> Error {
        Error::new(crate::error::kind_of(self.0), self.1)
    }
}

impl From<ApiError> for V2Error {
    fn from(e: ApiError) -> Self {
        let (status, _, message) = e.parts();
        Self(status, message.to_owned())
    }
}

impl From<Error> for V2Error {
    fn from(e: Error) -> Self {
        ApiError::from(e).into()
    }
}

impl From<EngineError> for V2Error {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidRequest(m) => Self::invalid(m),
            other => Error::internal(other.to_string()).into(),
        }
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({"error": self.1}))).into_response();
        if self.0 == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type V2Result<T> = Result<T, V2Error>;

/// The caller, with authentication failures in the protocol's error shape.
pub struct Caller(Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = V2Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> V2Result<Self> {
        Ok(Caller(Principal::from_request_parts(parts, state).await?))
    }
}

async fn server_metadata(_who: Caller) -> Json<Value> {
    Json(json!({
        "name": "maas",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["model_repository", "binary_tensor_data"],
    }))
}

/// Resolves a model path segment (`name`, `name:N` or `name@alias`), or with an explicit
/// version; returns the version and the model's task.
async fn resolve(
    state: &AppState,
    who: &Principal,
    name: &str,
    version: Option<&str>,
) -> V2Result<(ModelVersion, Task)> {
    let mut r = ModelRef::parse(name)?;
    if let Some(v) = version {
        let n = crate::api::version_number(v)?;
        r.selector = VersionSelector::Number(n);
    }
    who.require_model(&r.name)?;
    let task = state.registry.get_model(&r.name).await?.task;
    Ok((state.registry.resolve(&r).await?, task))
}

/// The signature recorded at pull (or training) time, or 400 for a model that has none.
fn signature(version: &ModelVersion) -> V2Result<&Value> {
    version
        .metadata
        .get("signature")
        .filter(|s| s.get("inputs").is_some())
        .ok_or_else(|| {
            V2Error::invalid(format!(
                "model '{}' ({}) has no tensor signature; the Open Inference Protocol serves tensor models (use /v1 for chat and embeddings)",
                version.model, version.format
            ))
        })
}

/// A model in a path: `/v2/models/{name}[/versions/{version}]`.
#[derive(serde::Deserialize)]
struct ModelPath {
    name: String,
    #[serde(default)]
    version: Option<String>,
}

async fn metadata(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(path): Path<ModelPath>,
) -> V2Result<Json<Value>> {
    let (version, _) = resolve(&state, &who, &path.name, path.version.as_deref()).await?;
    let sig = signature(&version)?;
    let versions: Vec<String> = state
        .registry
        .list_versions(&ModelName::parse(&version.model)?)
        .await?
        .iter()
        .map(|v| v.version.to_string())
        .collect();
    Ok(Json(json!({
        "name": version.model,
        "versions": versions,
        "platform": format!("{}_tract", version.format),
        "inputs": sig["inputs"],
        "outputs": sig["outputs"],
    })))
}

/// A tensor model is ready whenever it is registered: it loads on first use.
async fn ready(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(path): Path<ModelPath>,
) -> V2Result<Json<Value>> {
    let (version, _) = resolve(&state, &who, &path.name, path.version.as_deref()).await?;
    signature(&version)?;
    Ok(Json(json!({"name": version.model, "ready": true})))
}

/// Splits a body into its JSON header and binary tensors.
fn split_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> V2Result<(&'a [u8], &'a [u8])> {
    let Some(raw) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let n = raw
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .ok_or_else(|| V2Error::invalid("Inference-Header-Content-Length must be a byte count"))?;
    if n > body.len() {
        return Err(V2Error::invalid(format!(
            "Inference-Header-Content-Length is {n} but the body holds {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(n))
}

/// A model trained on an encoder's embeddings takes text in its encoded columns: embed it with
/// the encoder version it was trained with (kept in `metadata.encoder`).
async fn encode_texts(
    state: &AppState,
    version: &ModelVersion,
    mut inputs: Vec<Tensor>,
) -> V2Result<Vec<Tensor>> {
    let encoder = &version.metadata["encoder"];
    let Some(columns) = encoder["columns"].as_array() else {
        return Ok(inputs);
    };
    let (Some(model), Some(number)) = (encoder["model"].as_str(), encoder["version"].as_i64())
    else {
        return Ok(inputs);
    };
    let r = ModelRef {
        name: maas_core::ModelName::parse(model)?,
        selector: VersionSelector::Number(number),
    };
    let encoder_version = state.registry.resolve(&r).await.map_err(|e| {
        Error::invalid(format!(
            "model '{}' needs its encoder {model}:{number}, which cannot be found: {}",
            version.model, e.message
        ))
    })?;
    for input in inputs.iter_mut() {
        if !columns
            .iter()
            .any(|c| c.as_str() == Some(input.name.as_str()))
        {
            continue;
        }
        let maas_engine::TensorData::Bytes(texts) = &input.data else {
            return Err(V2Error::invalid(format!(
                "input '{}' is text for the model's encoder: send BYTES",
                input.name
            )));
        };
        let texts: Vec<String> = texts
            .iter()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect();
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(V2Error::invalid(format!(
                "input '{}' row {i} is empty: there is no text to classify",
                input.name
            )));
        }
        let n = texts.len();
        let vectors = crate::runs::embed(state, &encoder_version, texts).await?;
        let dims = vectors.first().map_or(0, Vec::len);
        *input = Tensor::new(
            input.name.clone(),
            vec![n, dims],
            maas_engine::TensorData::F32(vectors.concat()),
        )?;
    }
    Ok(inputs)
}

/// Runs a tensor model on decoded inputs: queue place, load, compute on a blocking thread.
pub async fn run_tensors(
    state: &AppState,
    version: &ModelVersion,
    task: Task,
    inputs: Vec<Tensor>,
) -> V2Result<Vec<Tensor>> {
    let inputs = encode_texts(state, version, inputs).await?;
    let permit = state.models.enqueue(version)?;
    let loaded = state.models.get(version, task).await?;
    let model = loaded.tensor.clone().ok_or_else(|| {
        V2Error::invalid(format!("model '{}' does not take tensors", version.model))
    })?;
    let outputs = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        model.infer(inputs)
    })
    .await
    .map_err(|e| Error::internal(format!("inference crashed: {e}")))??;
    Ok(outputs)
}

#[derive(Serialize)]
struct OutputOut<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputOut<'a>>,
}

async fn infer(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(path): Path<ModelPath>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> V2Result<Response> {
    // A body that cannot be read (413 when too large), in the protocol's error shape.
    let body = body.map_err(|e| V2Error(e.status(), e.body_text()))?;
    let (version, task) = resolve(&state, &who, &path.name, path.version.as_deref()).await?;
    let known_outputs = signature(&version)?["outputs"].clone();
    let (head, binary) = split_body(&headers, &body)?;
    let request: InferRequest = serde_json::from_slice(head)
        .map_err(|e| V2Error::invalid(format!("the inference request is not valid: {e}")))?;
    let binary_default = request
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_output"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // Which outputs go back, and how; unknown names are the caller's mistake.
    let wanted: Option<Vec<(String, bool)>> = match &request.outputs {
        None => None,
        Some(list) => {
            let known = known_outputs.as_array().cloned().unwrap_or_default();
            let mut out = vec![];
            for o in list {
                if !known.iter().any(|k| k["name"] == o.name.as_str()) {
                    return Err(V2Error::invalid(format!(
                        "unknown output '{}' requested",
                        o.name
                    )));
                }
                out.push((o.name.clone(), o.binary().unwrap_or(binary_default)));
            }
            Some(out)
        }
    };
    let inputs = decode_inputs(request.inputs, binary).map_err(V2Error::invalid)?;
    let outputs = run_tensors(&state, &version, task, inputs).await?;

    let chosen: Vec<(&Tensor, bool)> = match &wanted {
        None => outputs.iter().map(|t| (t, binary_default)).collect(),
        Some(list) => list
            .iter()
            .filter_map(|(n, b)| outputs.iter().find(|t| &t.name == n).map(|t| (t, *b)))
            .collect(),
    };
    let mut blobs: Vec<Vec<u8>> = vec![];
    let outs = chosen
        .iter()
        .map(|(t, binary)| {
            if *binary {
                let bytes = to_binary(&t.data);
                let size = bytes.len();
                blobs.push(bytes);
                OutputOut {
                    name: &t.name,
                    datatype: t.data.datatype(),
                    shape: &t.shape,
                    parameters: Some(json!({"binary_data_size": size})),
                    data: None,
                }
            } else {
                OutputOut {
                    name: &t.name,
                    datatype: t.data.datatype(),
                    shape: &t.shape,
                    parameters: None,
                    data: Some(JsonData(&t.data)),
                }
            }
        })
        .collect();
    let response = InferResponse {
        model_name: &version.model,
        model_version: version.version.to_string(),
        id: request.id,
        outputs: outs,
    };
    let head = serde_json::to_vec(&response)
        .map_err(|e| Error::internal(format!("cannot write the response: {e}")))?;
    if blobs.is_empty() {
        return Ok(([(header::CONTENT_TYPE, "application/json")], head).into_response());
    }
    let head_len = head.len();
    let mut body = head;
    blobs.iter().for_each(|b| body.extend_from_slice(b));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::HeaderName::from_static(HEADER_LENGTH),
                head_len.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

/// Every tensor model this key may see: its newest version, and whether it is loaded.
async fn repository_index(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> V2Result<Json<Value>> {
    let loaded = state.models.loaded();
    let mut out = vec![];
    for model in state.registry.list_models().await? {
        if !who.can_access(&model.name) || model.latest_version.is_none() {
            continue;
        }
        let version = match state.registry.resolve(&ModelRef::parse(&model.name)?).await {
            Ok(v) => v,
            Err(e) if e.kind == ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        if signature(&version).is_err() {
            continue;
        }
        let is_loaded = loaded
            .iter()
            .any(|l| l.model == version.model && l.version == version.version);
        out.push(json!({
            "name": version.model,
            "version": version.version.to_string(),
            "state": if is_loaded { "READY" } else { "UNAVAILABLE" },
            "reason": if is_loaded { "" } else { "not loaded; it loads on first use" },
        }));
    }
    Ok(Json(Value::Array(out)))
}

/// Loads a model now (deployer).
async fn repository_load(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> V2Result<Json<Value>> {
    who.require(Role::Deployer)?;
    let (version, task) = resolve(&state, &who, &name, None).await?;
    signature(&version)?;
    state.models.load_now(&version, task, None).await?;
    Ok(Json(json!({})))
}

/// Unloads a model (deployer); requests already running finish first. Unloading a model that
/// is not loaded succeeds: the state asked for holds.
async fn repository_unload(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> V2Result<Json<Value>> {
    who.require(Role::Deployer)?;
    let (version, _) = resolve(&state, &who, &name, None).await?;
    state.models.unload(&version.model, version.version);
    Ok(Json(json!({})))
}
