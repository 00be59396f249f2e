//! `/v1/embeddings`: one string or a list of strings in, one vector per input out, as JSON
//! floats or (with `encoding_format: "base64"`) little-endian f32 bytes in base64.

use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use maas_core::Task;
use maas_engine::{Embeddings, EngineError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{resolve, Caller, OaiError, OaiJson};
use crate::state::AppState;

/// Most inputs in one request (OpenAI's own limit).
pub const MAX_INPUTS: usize = 2048;

#[derive(Deserialize)]
pub struct EmbeddingsRequest {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<Value>,
    #[serde(default)]
    dimensions: Option<Value>,
}

/// The inputs as texts, each error naming what is wrong where.
fn texts(input: Value) -> Result<Vec<String>, OaiError> {
    let items = match input {
        Value::String(s) => vec![Value::String(s)],
        Value::Array(items) => items,
        other => {
            return Err(OaiError::invalid(
                "input",
                format!("input must be a string or an array of strings, got {other}"),
            ))
        }
    };
    if items.is_empty() {
        return Err(OaiError::invalid("input", "input must not be empty"));
    }
    if items.len() > MAX_INPUTS {
        return Err(OaiError::too_large(
            "input",
            format!(
                "input holds {} items; at most {MAX_INPUTS} per request",
                items.len()
            ),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) if s.is_empty() => Err(OaiError::invalid(
                "input",
                format!("input[{i}] is an empty string"),
            )),
            Value::String(s) => Ok(s),
            Value::Number(_) | Value::Array(_) => Err(OaiError::invalid(
                "input",
                "token-id inputs are not supported; send text",
            )),
            other => Err(OaiError::invalid(
                "input",
                format!("input[{i}] must be a string, got {other}"),
            )),
        })
        .collect()
}

enum Encoding {
    Float,
    Base64,
}

fn encoding(v: Option<Value>) -> Result<Encoding, OaiError> {
    match v {
        None | Some(Value::Null) => Ok(Encoding::Float),
        Some(Value::String(s)) if s == "float" => Ok(Encoding::Float),
        Some(Value::String(s)) if s == "base64" => Ok(Encoding::Base64),
        Some(other) => Err(OaiError::invalid(
            "encoding_format",
            format!("encoding_format must be 'float' or 'base64', got {other}"),
        )),
    }
}

pub async fn embeddings(
    State(state): State<AppState>,
    Caller(who): Caller,
    OaiJson(req): OaiJson<EmbeddingsRequest>,
) -> Result<Json<Value>, OaiError> {
    let inputs = texts(req.input)?;
    let encoding = encoding(req.encoding_format)?;
    let dimensions = match req.dimensions {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|d| d > 0) => n.as_u64(),
        Some(other) => {
            return Err(OaiError::invalid(
                "dimensions",
                format!("dimensions must be a positive integer, got {other}"),
            ))
        }
    };
    let version = resolve(&state, &who, &req.model, Task::Embedding, "embeddings").await?;
    let permit = state.models.enqueue(&version)?;
    let loaded = state.models.get(&version, Task::Embedding).await?;
    let embedder = loaded.embedder.clone().ok_or_else(|| {
        OaiError::invalid(
            "model",
            format!("model '{}' cannot produce embeddings", version.model),
        )
    })?;
    if let Some(d) = dimensions.filter(|d| *d != embedder.dimensions() as u64) {
        return Err(OaiError::invalid(
            "dimensions",
            format!(
                "model '{}' returns {} dimensions and cannot shorten them; got dimensions={d}",
                version.model,
                embedder.dimensions()
            ),
        ));
    }
    let Embeddings {
        vectors,
        prompt_tokens,
    } = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        embedder.embed(&inputs)
    })
    .await
    .map_err(|e| maas_core::Error::internal(format!("embedding crashed: {e}")))?
    .map_err(|e| match e {
        EngineError::InvalidRequest(m) => OaiError::invalid("input", m),
        other => maas_core::Error::internal(other.to_string()).into(),
    })?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = match encoding {
                Encoding::Float => json!(v),
                Encoding::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })))
}
