//! `POST /v1/images/classify`: an image (multipart `file`, or base64 in JSON `image`) in,
//! the top-k `{label, score}` out. The version's own preprocessing (kept in its metadata at pull
//! time) turns the image into the model's input, so the same photo gets the same answer as the
//! model's reference pipeline. Errors use the OpenAI shape, as the rest of `/v1` does.

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use maas_core::{ModelRef, Task};
use maas_engine::TensorData;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::openai::{Caller, OaiError};
use crate::serving::{signature_from_metadata, ServingConfig};
use crate::state::AppState;

/// Largest image upload.
pub const MAX_IMAGE_BYTES: usize = 32 << 20;

/// Most classes returned.
const MAX_TOP_K: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/images/classify", post(classify))
        .layer(axum::extract::DefaultBodyLimit::max(
            MAX_IMAGE_BYTES + (1 << 20),
        ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    model: String,
    /// Base64 of the file (a `data:image/...;base64,` prefix is allowed).
    image: String,
    #[serde(default)]
    top_k: Option<usize>,
}

struct ClassifyRequest {
    model: String,
    image: Vec<u8>,
    top_k: usize,
}

fn top_k(raw: Option<usize>) -> Result<usize, OaiError> {
    match raw {
        None => Ok(5),
        Some(k) if (1..=MAX_TOP_K).contains(&k) => Ok(k),
        Some(k) => Err(OaiError::invalid(
            "top_k",
            format!("top_k must be between 1 and {MAX_TOP_K}, got {k}"),
        )),
    }
}

async fn read_request(state: &AppState, req: Request) -> Result<ClassifyRequest, OaiError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, state)
            .await
            .map_err(|e| OaiError::invalid("file", e.body_text()))?;
        let (mut model, mut image, mut k) = (None, None, None);
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| OaiError::invalid("file", format!("cannot read the form: {e}")))?
        {
            let name = field.name().unwrap_or("").to_owned();
            let bytes = field.bytes().await.map_err(|e| {
                OaiError::invalid("file", format!("cannot read field '{name}': {e}"))
            })?;
            match name.as_str() {
                "model" => model = Some(String::from_utf8_lossy(&bytes).into_owned()),
                "file" | "image" => image = Some(bytes.to_vec()),
                "top_k" => {
                    let text = String::from_utf8_lossy(&bytes);
                    k = Some(text.trim().parse::<usize>().map_err(|_| {
                        OaiError::invalid(
                            "top_k",
                            format!("top_k must be a whole number, got '{text}'"),
                        )
                    })?);
                }
                other => {
                    return Err(OaiError::invalid(
                        "file",
                        format!("unknown form field '{other}'; send model, file and top_k"),
                    ))
                }
            }
        }
        return Ok(ClassifyRequest {
            model: model
                .ok_or_else(|| OaiError::invalid("model", "the form has no 'model' field"))?,
            image: image
                .ok_or_else(|| OaiError::invalid("file", "the form has no 'file' field"))?,
            top_k: top_k(k)?,
        });
    }
    let Json(body) = Json::<JsonRequest>::from_request(req, state)
        .await
        .map_err(|e| OaiError::invalid("image", e.body_text()))?;
    let image = from_base64(&body.image).map_err(|e| OaiError::invalid("image", e))?;
    Ok(ClassifyRequest {
        model: body.model,
        image,
        top_k: top_k(body.top_k)?,
    })
}

/// An image file sent as base64 (a `data:image/...;base64,` prefix is allowed).
pub fn from_base64(text: &str) -> Result<Vec<u8>, String> {
    let encoded = match text.split_once(";base64,") {
        Some((prefix, data)) if prefix.starts_with("data:") => data,
        _ => text,
    };
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| format!("must be an image file in base64: {e}"))
}

fn softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    scores.iter_mut().for_each(|s| *s /= sum);
}

async fn classify(
    State(state): State<AppState>,
    Caller(who): Caller,
    req: Request,
) -> Result<Json<Value>, OaiError> {
    let req = read_request(&state, req).await?;
    if req.image.is_empty() {
        return Err(OaiError::invalid("file", "the image is empty"));
    }
    let r = ModelRef::parse(&req.model).map_err(|e| OaiError::invalid("model", e.message))?;
    who.require_model(&r.name)?;
    let task: Task = state.registry.get_model(&r.name).await?.task;
    let version = state.registry.resolve(&r).await?;
    let (scores, labels) = match version.format {
        maas_core::Format::Maas => trained_scores(&state, &version, task, req.image).await?,
        _ => pulled_scores(&state, &version, task, req.image).await?,
    };
    let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let predictions: Vec<Value> = ranked
        .into_iter()
        .take(req.top_k)
        .map(|(index, score)| {
            let label = labels
                .as_ref()
                .and_then(|l| l.get(index).cloned())
                .unwrap_or_else(|| index.to_string());
            json!({"label": label, "index": index, "score": score})
        })
        .collect();
    Ok(Json(json!({
        "model": version.model,
        "version": version.version,
        "predictions": predictions,
    })))
}

/// Class probabilities of a model trained by maas on images: the file goes in as is, and the
/// model decodes it exactly as its training images were.
async fn trained_scores(
    state: &AppState,
    version: &maas_core::ModelVersion,
    task: Task,
    image: Vec<u8>,
) -> Result<(Vec<f32>, Option<Vec<String>>), OaiError> {
    let Some(column) = version.metadata["image"]["column"].as_str() else {
        return Err(OaiError::invalid(
            "model",
            format!("model '{}' was not trained on images", version.model),
        ));
    };
    let tensor = maas_engine::Tensor::new(column, vec![1], TensorData::Bytes(vec![image]))
        .map_err(|e| OaiError::invalid("file", e.to_string()))?;
    let outputs = crate::v2::run_tensors(state, version, task, vec![tensor])
        .await
        .map_err(|e| e.into_oai())?;
    let probabilities = outputs
        .into_iter()
        .find(|t| t.name == "probabilities")
        .ok_or_else(|| maas_core::Error::internal("the model returned no probabilities"))?;
    let TensorData::F32(scores) = probabilities.data else {
        return Err(maas_core::Error::internal("the probabilities are not FP32").into());
    };
    let labels = serde_json::from_value(version.metadata["classes"].clone()).ok();
    Ok((scores, labels))
}

/// Scores of a pulled image model, its input prepared by the preprocessing saved at pull time.
async fn pulled_scores(
    state: &AppState,
    version: &maas_core::ModelVersion,
    task: Task,
    image: Vec<u8>,
) -> Result<(Vec<f32>, Option<Vec<String>>), OaiError> {
    let not_image = || {
        OaiError::invalid(
            "model",
            format!(
                "model '{}' has no image preprocessing; pull it with serving settings (maas pull … --serving FILE.toml)",
                version.model
            ),
        )
    };
    let serving: ServingConfig = version
        .metadata
        .get("serving")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .ok_or_else(not_image)?;
    let signature = signature_from_metadata(&version.metadata).ok_or_else(not_image)?;
    let image_model = serving
        .image_model(&signature)
        .map_err(|e| OaiError::invalid("model", e.message))?
        .ok_or_else(not_image)?;

    let (input, preprocess) = (image_model.input.clone(), image_model.preprocess.clone());
    let bytes = image;
    let tensor = tokio::task::spawn_blocking(move || {
        maas_engine::vision::image_tensor(&input, &bytes, &preprocess)
    })
    .await
    .map_err(|e| maas_core::Error::internal(format!("image decoding crashed: {e}")))?
    .map_err(|e| OaiError::invalid("file", e.to_string()))?;

    let outputs = crate::v2::run_tensors(state, version, task, vec![tensor])
        .await
        .map_err(|e| e.into_oai())?;
    let scores = outputs
        .iter()
        .find(|t| t.name == image_model.output)
        .ok_or_else(|| maas_core::Error::internal("the model did not return its scores output"))?;
    let mut scores: Vec<f32> = match &scores.data {
        TensorData::F32(v) => v.clone(),
        TensorData::F64(v) => v.iter().map(|x| *x as f32).collect(),
        TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        other => {
            return Err(maas_core::Error::internal(format!(
                "the scores output is {}, not floating point",
                other.datatype()
            ))
            .into())
        }
    };
    if image_model.softmax {
        softmax(&mut scores);
    }
    Ok((scores, image_model.labels.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut s = [1.0, 3.0, 2.0];
        softmax(&mut s);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(s[1] > s[2] && s[2] > s[0]);
    }
}
