//! Evaluations: run a model version on every row of a dataset version and score it against the
//! dataset's target column. Classification: accuracy, precision/recall/F1 per class with macro
//! and weighted means, the confusion matrix and ROC-AUC for two classes; regression: MSE, RMSE,
//! MAE, R². The result is kept on the version (`metrics.evaluations`), so versions can be
//! compared on the same data.

use axum::extract::State;
use axum::response::Response;
use maas_core::{Error, ModelName, ModelRef, ModelVersion, Role};
use maas_engine::TensorData;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiJson, ApiQuery, ApiResult, ErrorBody};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_evaluation))
}

/// Rows sent to the model at once.
const CHUNK_ROWS: usize = 2048;

/// Evaluate a model version on a dataset.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationRequest {
    /// `NAME`, `NAME:VERSION` or `NAME@ALIAS`.
    pub model: String,
    /// `NAME` (newest version) or `NAME:VERSION`.
    pub dataset: String,
}

/// Evaluate a model version on every row of a dataset version (deployer). Runs as a job:
/// answers 202 with it, or with `?wait=true` 201 with the evaluation (also stored on the
/// version under `metrics.evaluations`).
#[utoipa::path(post, path = "/api/v1/evaluations", tag = "runs", params(super::pulls::PullQuery),
    request_body = EvaluationRequest,
    responses((status = 202, body = crate::jobs::JobView), (status = 201, description = "The evaluation"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_evaluation(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<super::pulls::PullQuery>,
    ApiJson(req): ApiJson<EvaluationRequest>,
) -> ApiResult<Response> {
    who.require(Role::Deployer)?;
    let model =
        ModelRef::parse(&req.model).map_err(|e| Error::invalid(format!("model: {}", e.message)))?;
    who.require_model(&model.name)?;
    let (dataset, dataset_version) = super::dataset_ref(&req.dataset)?;
    // Refuse what cannot work before starting a job.
    let version = state.registry.resolve(&model).await?;
    let dv = state
        .registry
        .dataset_version(&dataset, dataset_version)
        .await?;
    let job_state = state.clone();
    let by = who.key_id.clone();
    let id = state.jobs.spawn(
        "evaluate",
        format!(
            "{}:{} on {}:{}",
            version.model, version.version, dv.dataset, dv.version
        ),
        who.key_id.clone(),
        move |progress| async move {
            progress.start_phase("evaluating", 0);
            evaluate(&job_state, &version, &dataset, dv.version, &by).await
        },
    );
    super::pulls::answer(&state, &id, query.wait).await
}

async fn evaluate(
    state: &AppState,
    version: &ModelVersion,
    dataset: &ModelName,
    dataset_version: i64,
    by: &str,
) -> maas_core::Result<Value> {
    let task = state
        .registry
        .get_model(&ModelName::parse(&version.model)?)
        .await?
        .task;
    let (dv, table, _) = crate::runs::load_dataset(state, dataset, dataset_version).await?;
    let target = version.metadata["target"]
        .as_str()
        .unwrap_or(&dv.target)
        .to_owned();
    let t = table
        .columns
        .iter()
        .position(|c| *c == target)
        .ok_or_else(|| {
            Error::invalid(format!(
                "dataset {}:{} has no column '{target}', which model '{}' predicts",
                dv.dataset, dv.version, version.model
            ))
        })?;
    let signature = crate::serving::signature_from_metadata(&version.metadata).ok_or_else(|| {
        Error::invalid(format!(
            "model '{}' has no tensor signature: only tensor and trained models can be evaluated on a dataset",
            version.model
        ))
    })?;
    let inputs: Vec<(usize, String)> = signature
        .inputs
        .iter()
        .filter_map(|s| {
            table
                .columns
                .iter()
                .position(|c| *c == s.name)
                .map(|i| (i, s.name.clone()))
        })
        .collect();
    // An image model reads the files an image dataset's rows name, sent as a client sends them.
    let image_column = version.metadata["image"]["column"].as_str();
    let files = match (image_column, dv.format.as_str()) {
        (Some(_), "zip") => {
            let bytes = state.artifacts.get_verified(&dv.digest).await?;
            tokio::task::spawn_blocking(move || maas_train::dataset::zip_images(&bytes))
                .await
                .map_err(|e| Error::internal(format!("reading the images crashed: {e}")))??
        }
        _ => Default::default(),
    };
    let cell = |name: &str, value: Option<String>| -> Value {
        use base64::Engine as _;
        match (value, image_column == Some(name)) {
            (None, _) => Value::Null,
            (Some(path), true) => files.get(&path).map_or(Value::Null, |f| {
                Value::String(base64::engine::general_purpose::STANDARD.encode(f))
            }),
            (Some(v), false) => Value::String(v),
        }
    };
    let mut truth = vec![];
    let mut rows = vec![];
    for row in table.rows.iter().filter(|r| r[t].is_some()) {
        truth.push(row[t].clone().unwrap_or_default());
        let cells: Map<String, Value> = inputs
            .iter()
            .map(|(i, name)| (name.clone(), cell(name, row[*i].clone())))
            .collect();
        rows.push(cells);
    }
    if rows.is_empty() {
        return Err(Error::invalid(format!(
            "dataset {}:{} has no row with a value in '{target}'",
            dv.dataset, dv.version
        )));
    }
    let (mut labels, mut probs, mut values) = (vec![], vec![], vec![]);
    for chunk in rows.chunks(CHUNK_ROWS) {
        let tensors = crate::predict::tensors(version, chunk).map_err(|e| e.into_error())?;
        let outputs = crate::v2::run_tensors(state, version, task, tensors)
            .await
            .map_err(|e| e.into_error())?;
        for out in outputs {
            match (out.name.as_str(), out.data) {
                ("label", TensorData::Bytes(l)) => labels.extend(
                    l.into_iter()
                        .map(|b| String::from_utf8_lossy(&b).into_owned()),
                ),
                ("probabilities", TensorData::F32(p)) => probs.extend(p),
                ("value", TensorData::F32(v)) => values.extend(v),
                _ => {}
            }
        }
    }
    let metrics = if labels.len() == truth.len() {
        let mut classes: Vec<String> = version
            .metadata
            .get("classes")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default();
        let width = classes.len();
        // A label the model never saw counts as a class it always gets wrong.
        let mut index = |label: &str| match classes.iter().position(|c| c == label) {
            Some(i) => i,
            None => {
                classes.push(label.to_owned());
                classes.len() - 1
            }
        };
        let t: Vec<usize> = truth.iter().map(|l| index(l)).collect();
        let p: Vec<usize> = labels.iter().map(|l| index(l)).collect();
        let positive: Option<Vec<f64>> =
            (width == 2 && classes.len() == 2 && probs.len() == 2 * truth.len())
                .then(|| probs.chunks(2).map(|c| f64::from(c[1])).collect());
        let m = maas_train::metrics::classification(&t, &p, classes.len(), positive.as_deref());
        let mut v = serde_json::to_value(m).map_err(|e| Error::internal(e.to_string()))?;
        v["classes"] = json!(classes);
        v
    } else if values.len() == truth.len() {
        let t: Vec<f64> = truth
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.trim().parse::<f64>().map_err(|_| {
                    Error::invalid(format!(
                        "target '{target}' of row {} is not a number: '{v}'",
                        i + 1
                    ))
                })
            })
            .collect::<maas_core::Result<_>>()?;
        let p: Vec<f64> = values.iter().map(|v| f64::from(*v)).collect();
        serde_json::to_value(maas_train::metrics::regression(&t, &p))
            .map_err(|e| Error::internal(e.to_string()))?
    } else {
        return Err(Error::invalid(format!(
            "model '{}' returned neither one label nor one value per row",
            version.model
        )));
    };
    let evaluation = json!({
        "id": uuid::Uuid::new_v4().simple().to_string(),
        "dataset": {"name": dv.dataset, "version": dv.version, "digest": dv.digest},
        "target": target,
        "rows": truth.len(),
        "metrics": metrics,
        "at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "by": by,
    });
    state
        .registry
        .add_evaluation(
            &ModelName::parse(&version.model)?,
            version.version,
            evaluation.clone(),
            &maas_store::Actor(by.to_owned()),
        )
        .await?;
    Ok(json!({"model": version.model, "version": version.version, "evaluation": evaluation}))
}
