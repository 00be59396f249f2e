//! OpenAI-compatible endpoints: `/v1/models`, `/v1/chat/completions` (+ SSE),
//! `/v1/completions` and `/v1/embeddings`. Wire types live here and are converted to engine types at the edge;
//! errors use OpenAI's shape `{"error":{"message","type","param","code"}}` so the official
//! clients report them properly.

mod chat;
mod embeddings;
mod template;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maas_core::{Error, ModelRef, ModelVersion, Task};
use serde::Serialize;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(chat::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
}

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OaiError {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl OaiError {
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: Some(param),
            code: None,
        }
    }

    /// Any status, with no parameter named.
    pub fn with_status(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// The same error as a plain [`maas_core::Error`], for jobs.
    pub fn into_error(self) -> maas_core::Error {
        maas_core::Error::new(crate::error::kind_of(self.status), self.message)
    }

    /// 413: the request holds more than one call may.
    pub fn too_large(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: message.into(),
            param: Some(param),
            code: None,
        }
    }
}

impl From<ApiError> for OaiError {
    fn from(e: ApiError) -> Self {
        let (status, code, message) = e.parts();
        let code = match status {
            StatusCode::NOT_FOUND => Some("model_not_found"),
            StatusCode::UNAUTHORIZED => Some("invalid_api_key"),
            _ => Some(code),
        };
        Self {
            status,
            message: message.to_owned(),
            param: None,
            code,
        }
    }
}

impl From<Error> for OaiError {
    fn from(e: Error) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for OaiError {
    fn into_response(self) -> Response {
        let kind = match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        let body = serde_json::json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        response
    }
}

/// The caller, with authentication failures in OpenAI's shape.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = OaiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Caller(Principal::from_request_parts(parts, state).await?))
    }
}

/// A JSON body whose rejections are in OpenAI's shape.
pub struct OaiJson<T>(pub T);

impl<T, S> FromRequest<S> for OaiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = OaiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(OaiJson(v)),
            Err(rejection) => {
                let status = match rejection.status() {
                    StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
                    s => s,
                };
                Err(OaiError {
                    status,
                    message: rejection.body_text(),
                    param: None,
                    code: None,
                })
            }
        }
    }
}

/// Resolves the `model` field (`name`, `name:N`, `name@alias`) for this caller and checks the task.
pub async fn resolve(
    state: &AppState,
    who: &Principal,
    model: &str,
    task: Task,
    what: &str,
) -> Result<ModelVersion, OaiError> {
    let r = ModelRef::parse(model).map_err(|e| OaiError::invalid("model", e.message))?;
    who.require_model(&r.name)?;
    let found = state.registry.get_model(&r.name).await?;
    if found.task != task {
        return Err(OaiError::invalid(
            "model",
            format!(
                "model '{}' is a {} model; it cannot do {what}",
                r.name, found.task
            ),
        ));
    }
    Ok(state.registry.resolve(&r).await?)
}

#[derive(Serialize)]
struct ModelObject {
    id: String,
    object: &'static str,
    created: i64,
    owned_by: String,
}

async fn list_models(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<serde_json::Value>, OaiError> {
    let models = state.registry.list_models().await?;
    let data: Vec<ModelObject> = models
        .into_iter()
        .filter(|m| who.can_access(&m.name) && m.latest_version.is_some())
        .map(|m| ModelObject {
            id: m.name,
            object: "model",
            created: m.created_at.unix_timestamp(),
            owned_by: m.created_by,
        })
        .collect();
    Ok(Json(serde_json::json!({"object": "list", "data": data})))
}
