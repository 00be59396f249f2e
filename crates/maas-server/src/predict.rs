//! `POST /v1/predict/{model}`: raw rows in (`{"rows": [{"column": value, ...}]}`), predictions
//! out: a label with class probabilities for a classifier, a value for a regressor. Each row's
//! cells become the model's per-column input tensors (numbers FP32, NaN where missing;
//! categories BYTES, empty where missing), so the model's own saved preprocessing does the rest,
//! exactly as in training. Errors use the OpenAI shape, as the rest of `/v1` does.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use maas_core::{ModelRef, ModelVersion};
use maas_engine::{Tensor, TensorData};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::openai::{Caller, OaiError, OaiJson};
use crate::serving::signature_from_metadata;
use crate::state::AppState;

/// Most rows in one request.
pub const MAX_ROWS: usize = 10_000;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/predict/{model}", post(predict))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    #[serde(default)]
    rows: Option<Vec<Map<String, Value>>>,
    /// For a text classifier: the texts, in place of rows with one text column.
    #[serde(default)]
    texts: Option<Vec<String>>,
}

/// One input tensor per signature input, built from the rows' cells.
pub fn tensors(
    version: &ModelVersion,
    rows: &[Map<String, Value>],
) -> Result<Vec<Tensor>, OaiError> {
    let signature = signature_from_metadata(&version.metadata).ok_or_else(|| {
        OaiError::invalid(
            "model",
            format!(
                "model '{}' takes no rows (it has no tensor signature)",
                version.model
            ),
        )
    })?;
    let per_column = signature.inputs.iter().all(|s| s.shape == [-1]);
    if !per_column {
        return Err(OaiError::invalid(
            "model",
            format!(
                "model '{}' takes tensors, not rows of columns; call /v2/models/{}/infer",
                version.model, version.model
            ),
        ));
    }
    // A column the model does not know is most likely a typo: say so rather than ignore it.
    for (i, row) in rows.iter().enumerate() {
        if let Some(unknown) = row
            .keys()
            .find(|k| !signature.inputs.iter().any(|s| &s.name == *k))
        {
            let known: Vec<&str> = signature.inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(OaiError::invalid(
                "rows",
                format!(
                    "rows[{i}]: unknown column '{unknown}'; the model reads {}",
                    known.join(", ")
                ),
            ));
        }
    }
    let bad = |i: usize, column: &str, what: String| {
        OaiError::invalid("rows", format!("rows[{i}].{column}: {what}"))
    };
    // An image column's cell is the file in base64, as `/v1/images/classify` takes it.
    let image_column = version.metadata["image"]["column"].as_str();
    signature
        .inputs
        .iter()
        .map(|spec| {
            let column = spec.name.as_str();
            let data = match spec.datatype.as_str() {
                "FP32" => TensorData::F32(
                    rows.iter()
                        .enumerate()
                        .map(|(i, row)| match row.get(column) {
                            None | Some(Value::Null) => Ok(f32::NAN),
                            Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(f64::NAN) as f32),
                            Some(Value::String(s)) => s.trim().parse::<f32>().map_err(|_| {
                                bad(i, column, format!("must be a number, got '{s}'"))
                            }),
                            Some(other) => {
                                Err(bad(i, column, format!("must be a number, got {other}")))
                            }
                        })
                        .collect::<Result<_, _>>()?,
                ),
                "BYTES" => TensorData::Bytes(
                    rows.iter()
                        .enumerate()
                        .map(|(i, row)| match row.get(column) {
                            None | Some(Value::Null) => Ok(vec![]),
                            Some(Value::String(s)) if image_column == Some(column) => {
                                crate::images::from_base64(s).map_err(|e| bad(i, column, e))
                            }
                            Some(Value::String(s)) => Ok(s.clone().into_bytes()),
                            Some(Value::Number(n)) => {
                                Ok(maas_train::prep::number_text(n.as_f64().unwrap_or(0.0))
                                    .into_bytes())
                            }
                            Some(Value::Bool(b)) => Ok(b.to_string().into_bytes()),
                            Some(other) => {
                                Err(bad(i, column, format!("must be text, got {other}")))
                            }
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => {
                    return Err(OaiError::invalid(
                        "model",
                        format!("input '{column}' is {other}; rows can fill FP32 and BYTES inputs"),
                    ))
                }
            };
            Tensor::new(column, vec![rows.len()], data)
                .map_err(|e| OaiError::invalid("rows", e.to_string()))
        })
        .collect()
}

fn predictions(
    version: &ModelVersion,
    outputs: &[Tensor],
    rows: usize,
) -> Result<Vec<Value>, OaiError> {
    let find = |name: &str| outputs.iter().find(|t| t.name == name).map(|t| &t.data);
    let classes: Option<Vec<String>> = version
        .metadata
        .get("classes")
        .and_then(|c| serde_json::from_value(c.clone()).ok());
    match (find("label"), find("probabilities"), find("value")) {
        (Some(TensorData::Bytes(labels)), Some(TensorData::F32(probs)), _)
            if labels.len() == rows =>
        {
            let width = probs.len() / rows.max(1);
            Ok(labels
                .iter()
                .zip(probs.chunks(width.max(1)))
                .map(|(label, p)| {
                    let named: Map<String, Value> = p
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let name = classes
                                .as_ref()
                                .and_then(|c| c.get(i).cloned())
                                .unwrap_or_else(|| i.to_string());
                            (name, json!(v))
                        })
                        .collect();
                    json!({"label": String::from_utf8_lossy(label), "probabilities": named})
                })
                .collect())
        }
        (_, _, Some(TensorData::F32(values))) if values.len() == rows => {
            Ok(values.iter().map(|v| json!({"value": v})).collect())
        }
        _ => Err(maas_core::Error::internal(format!(
            "model '{}' did not return labels or values",
            version.model
        ))
        .into()),
    }
}

async fn predict(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(model): Path<String>,
    OaiJson(req): OaiJson<PredictRequest>,
) -> Result<Json<Value>, OaiError> {
    let r = ModelRef::parse(&model).map_err(|e| OaiError::invalid("model", e.message))?;
    who.require_model(&r.name)?;
    let task = state.registry.get_model(&r.name).await?.task;
    let version = state.registry.resolve(&r).await?;
    let rows = match (req.rows, req.texts) {
        (Some(rows), None) => rows,
        (None, Some(texts)) => {
            let columns = version.metadata["encoder"]["columns"].as_array();
            let [column] = columns.map(Vec::as_slice).unwrap_or_default() else {
                return Err(OaiError::invalid(
                    "texts",
                    format!(
                        "model '{}' does not read one text column; send rows",
                        version.model
                    ),
                ));
            };
            let column = column.as_str().unwrap_or_default().to_owned();
            texts
                .into_iter()
                .map(|t| Map::from_iter([(column.clone(), Value::String(t))]))
                .collect()
        }
        _ => {
            return Err(OaiError::invalid(
                "rows",
                "send exactly one of rows and texts",
            ))
        }
    };
    if rows.is_empty() {
        return Err(OaiError::invalid(
            "rows",
            "rows is empty: send at least one row",
        ));
    }
    if rows.len() > MAX_ROWS {
        return Err(OaiError::too_large(
            "rows",
            format!(
                "{} rows is more than the {MAX_ROWS} one request may hold",
                rows.len()
            ),
        ));
    }
    let inputs = tensors(&version, &rows)?;
    let outputs = crate::v2::run_tensors(&state, &version, task, inputs)
        .await
        .map_err(|e| e.into_oai())?;
    Ok(Json(json!({
        "model": version.model,
        "version": version.version,
        "predictions": predictions(&version, &outputs, rows.len())?,
    })))
}
