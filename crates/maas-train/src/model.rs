//! A trained model as a file and as a served tensor model.
//!
//! The file is one safetensors file: the layers' weights as `layers.{i}.weight|bias`, and a JSON
//! header (`__metadata__["maas"]`) with the architecture and the fitted preprocessing pipeline,
//! so serving applies exactly the transform training fitted. Served through the Open Inference
//! Protocol, a model takes one tensor per input column, named after it (numbers as FP32 `[-1]`,
//! NaN for missing; categories as BYTES `[-1]`, empty for missing; images as BYTES `[-1]`, one
//! PNG, JPEG or WebP file each), and returns `label` (BYTES) and `probabilities`
//! (FP32 `[-1, classes]`) for a classifier, or `value` (FP32 `[-1]`) for a regressor.

use std::collections::HashMap;
use std::sync::Arc;

use maas_core::{Error, Format, Result, Task};
use maas_engine::batch::{BatchPolicy, BatchedModel};
use maas_engine::{
    Engine, EngineError, LoadSpec, LoadedModel, Signature, Tensor, TensorData, TensorSpec,
};
use serde::{Deserialize, Serialize};

use crate::prep::{Feature, Pipeline, Value};
use crate::train::{self, Network};
use crate::weights;

/// The `kind` of a model file's header.
const KIND: &str = "maas-mlp";

#[derive(Serialize, Deserialize)]
struct Header {
    kind: String,
    /// `(outputs, inputs)` of each layer.
    layers: Vec<(usize, usize)>,
    /// `(outputs, inputs, kernel)` of each convolution before them.
    #[serde(default)]
    convs: Vec<(usize, usize, usize)>,
    /// Channels and side of the image the convolutions read.
    #[serde(default)]
    image: Option<(usize, usize)>,
    activation: String,
    pipeline: Pipeline,
    /// The maas version that trained it.
    maas_version: String,
}

/// A trained network with the preprocessing it was trained behind.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedModel {
    /// The fitted transform from raw columns to the network's input.
    pub pipeline: Pipeline,
    /// The network.
    pub network: Network,
}

fn bad(m: impl Into<String>) -> EngineError {
    EngineError::InvalidRequest(m.into())
}

impl TrainedModel {
    /// The model file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let shapes = self.network.shapes();
        let header = Header {
            kind: KIND.to_owned(),
            layers: shapes.layers,
            convs: shapes.convs,
            image: shapes.image,
            activation: self.network.activation.clone(),
            pipeline: self.pipeline.clone(),
            maas_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let header = serde_json::to_string(&header).map_err(|e| Error::internal(e.to_string()))?;
        weights::pack(&train::layer_tensors("layers", &self.network), &header)
    }

    /// Reads a model file.
    pub fn from_bytes(bytes: &[u8]) -> Result<TrainedModel> {
        let (header, mut tensors) = weights::unpack(bytes)?;
        let header: Header = serde_json::from_str(&header)
            .map_err(|e| Error::invalid(format!("the model header is not valid: {e}")))?;
        if header.kind != KIND {
            return Err(Error::invalid(format!(
                "the model file is a '{}', not a '{KIND}'",
                header.kind
            )));
        }
        if !matches!(header.activation.as_str(), "relu" | "tanh") {
            return Err(Error::invalid(format!(
                "unknown activation '{}'",
                header.activation
            )));
        }
        let shapes = train::Shapes {
            convs: header.convs,
            image: header.image,
            layers: header.layers,
        };
        if !shapes.fits(header.pipeline.width()) {
            return Err(Error::invalid(
                "the model's layers do not fit its pipeline or each other",
            ));
        }
        let network = train::network_from(&mut tensors, "layers", &shapes, &header.activation)?;
        Ok(TrainedModel {
            pipeline: header.pipeline,
            network,
        })
    }

    /// The task it serves.
    pub fn task(&self) -> Task {
        let text = !self.embedded_columns().is_empty();
        let image = !self.image_columns().is_empty();
        match (&self.pipeline.classes, text, image) {
            (Some(_), _, true) => Task::ImageClassification,
            (Some(_), true, _) => Task::TextClassification,
            (Some(_), false, false) => Task::TabularClassification,
            (None, _, _) => Task::TabularRegression,
        }
    }

    /// The image columns it reads, with their channels and side.
    pub fn image_columns(&self) -> Vec<(String, usize, usize)> {
        self.pipeline
            .features
            .iter()
            .filter_map(|f| match f {
                Feature::Image {
                    column,
                    channels,
                    size,
                } => Some((column.clone(), *channels, *size)),
                _ => None,
            })
            .collect()
    }

    /// The text columns it reads as embeddings, with their length.
    pub fn embedded_columns(&self) -> Vec<(String, usize)> {
        self.pipeline
            .features
            .iter()
            .filter_map(|f| match f {
                Feature::Embedding { column, dims } => Some((column.clone(), *dims)),
                _ => None,
            })
            .collect()
    }

    /// Its Open Inference Protocol signature: one input per column (an embedded text column as
    /// its FP32 `[-1, dims]` vectors), outputs by problem.
    pub fn signature(&self) -> Signature {
        let spec = |name: &str, datatype: &str, shape: Vec<i64>| TensorSpec {
            name: name.to_owned(),
            datatype: datatype.to_owned(),
            shape,
        };
        let inputs = self
            .pipeline
            .features
            .iter()
            .map(|f| match f {
                Feature::Numeric { column, .. } => spec(column, "FP32", vec![-1]),
                Feature::OneHot { column, .. } => spec(column, "BYTES", vec![-1]),
                Feature::Embedding { column, dims } => spec(column, "FP32", vec![-1, *dims as i64]),
                Feature::Image { column, .. } => spec(column, "BYTES", vec![-1]),
            })
            .collect();
        let outputs = match &self.pipeline.classes {
            Some(classes) => vec![
                spec("label", "BYTES", vec![-1]),
                spec("probabilities", "FP32", vec![-1, classes.len() as i64]),
            ],
            None => vec![spec("value", "FP32", vec![-1])],
        };
        Signature {
            inputs,
            outputs,
            optimizer_error: None,
        }
    }
}

/// A trained model ready to serve: inputs checked against the signature, rows encoded by the
/// pipeline, the network run on a whole batch at once.
pub struct ServedModel {
    model: TrainedModel,
    signature: Signature,
}

impl ServedModel {
    /// Wraps a model for serving.
    pub fn new(model: TrainedModel) -> ServedModel {
        let signature = model.signature();
        ServedModel { model, signature }
    }

    /// Runs inputs already arranged in signature order.
    fn run(&self, inputs: Vec<Tensor>) -> std::result::Result<Vec<Tensor>, EngineError> {
        let rows = inputs.first().map(Tensor::rows).unwrap_or(0);
        if let Some(t) = inputs.iter().find(|t| t.rows() != rows) {
            return Err(bad(format!(
                "every input must hold the same number of rows: '{}' has {}, '{}' has {rows}",
                t.name,
                t.rows(),
                inputs[0].name
            )));
        }
        let width = self.model.pipeline.width();
        let mut x = Vec::with_capacity(rows * width);
        // Looked up once per request, not once per cell.
        let by_name: HashMap<&str, &Tensor> = inputs.iter().map(|t| (t.name.as_str(), t)).collect();
        let images = self.model.image_columns();
        for r in 0..rows {
            // Image files are decoded to pixels as training decoded them.
            let mut pixels = HashMap::new();
            for (column, channels, size) in &images {
                if let Some(TensorData::Bytes(v)) = by_name.get(column.as_str()).map(|t| &t.data) {
                    if !v[r].is_empty() {
                        let p = crate::images::pixels(&v[r], *channels, *size)
                            .map_err(|e| bad(format!("row {r}: '{column}': {}", e.message)))?;
                        pixels.insert(column.as_str(), p);
                    }
                }
            }
            let cell = |column: &str| -> Value {
                if let Some(p) = pixels.get(column) {
                    return Value::Vector(p.clone());
                }
                let Some(t) = by_name.get(column) else {
                    return Value::Missing;
                };
                match &t.data {
                    TensorData::F32(v) if t.shape.len() == 2 => {
                        let d = t.shape[1];
                        Value::Vector(v[r * d..(r + 1) * d].to_vec())
                    }
                    TensorData::F32(v) if v[r].is_nan() => Value::Missing,
                    TensorData::Bytes(v) if v[r].is_empty() => Value::Missing,
                    TensorData::F32(v) => Value::Number(f64::from(v[r])),
                    TensorData::Bytes(v) => Value::Text(String::from_utf8_lossy(&v[r]).into()),
                    _ => Value::Missing,
                }
            };
            let encoded = self
                .model
                .pipeline
                .encode(&cell)
                .map_err(|e| bad(format!("row {r}: {}", e.message)))?;
            x.extend(encoded);
        }
        let out = train::run_network(&self.model.network, &x, rows)
            .map_err(|e| EngineError::Backend(e.message))?;
        let tensor =
            |name: &str, shape: Vec<usize>, data: TensorData| Tensor::new(name, shape, data);
        match &self.model.pipeline.classes {
            Some(classes) => {
                let c = classes.len();
                let mut probs = Vec::with_capacity(out.len());
                let mut labels = Vec::with_capacity(rows);
                for logits in out.chunks(c) {
                    let p = softmax(logits);
                    labels.push(classes[train::argmax(&p)].clone().into_bytes());
                    probs.extend(p);
                }
                Ok(vec![
                    tensor("label", vec![rows], TensorData::Bytes(labels))?,
                    tensor("probabilities", vec![rows, c], TensorData::F32(probs))?,
                ])
            }
            None => {
                let values = out
                    .iter()
                    .map(|y| self.model.pipeline.unscale(*y))
                    .collect();
                Ok(vec![tensor("value", vec![rows], TensorData::F32(values))?])
            }
        }
    }
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// Serves models trained by maas (format `maas`).
pub struct TrainedEngine;

impl Engine for TrainedEngine {
    fn name(&self) -> &'static str {
        "candle"
    }

    fn supports(&self, format: Format, task: Task) -> bool {
        format == Format::Maas
            && matches!(
                task,
                Task::TabularClassification
                    | Task::TabularRegression
                    | Task::TextClassification
                    | Task::ImageClassification
                    | Task::Tensor
            )
    }

    fn load(&self, spec: &LoadSpec) -> std::result::Result<LoadedModel, EngineError> {
        let bytes = std::fs::read(&spec.path)
            .map_err(|e| EngineError::Load(format!("cannot read {}: {e}", spec.path.display())))?;
        let model = TrainedModel::from_bytes(&bytes).map_err(|e| EngineError::Load(e.message))?;
        let served = Arc::new(ServedModel::new(model));
        let signature = served.signature.clone();
        let run = served.clone();
        let policy = BatchPolicy {
            max_batch_size: spec.batching.max_inputs.max(1),
            max_wait: spec.batching.max_wait,
            workers: spec.threads.max(1),
        };
        let model = BatchedModel::new(
            "trained",
            signature,
            Arc::new(move |inputs| run.run(inputs)),
            policy,
        )?;
        Ok(LoadedModel {
            tensor: Some(Arc::new(model)),
            memory_bytes: bytes.len() as u64,
            ..LoadedModel::default()
        })
    }
}
