//! The tract backend: pure-Rust ONNX. At pull time it validates a graph and reads its signature
//! (the Open Inference Protocol's model metadata); at serving time it runs the optimised plan
//! (or, where tract's optimiser refuses a graph, the plain one) behind a dynamic batcher.
#![deny(missing_docs)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use maas_core::{Format, Task};
use maas_engine::batch::{BatchPolicy, BatchedModel, RunFn};
use maas_engine::{
    Engine, EngineError, LoadSpec, LoadedModel, Signature, Tensor as Named, TensorData,
    TensorModel, TensorSpec,
};
use tract_onnx::prelude::*;

/// The Open Inference Protocol's name for a tract element type.
fn datatype(t: DatumType) -> Result<&'static str, EngineError> {
    Ok(match t {
        DatumType::Bool => "BOOL",
        DatumType::U8 => "UINT8",
        DatumType::U16 => "UINT16",
        DatumType::U32 => "UINT32",
        DatumType::U64 => "UINT64",
        DatumType::I8 => "INT8",
        DatumType::I16 => "INT16",
        DatumType::I32 => "INT32",
        DatumType::I64 => "INT64",
        DatumType::F16 => "FP16",
        DatumType::F32 => "FP32",
        DatumType::F64 => "FP64",
        DatumType::String => "BYTES",
        other => {
            return Err(EngineError::Load(format!(
                "tensors of type {other:?} cannot be served over the Open Inference Protocol"
            )))
        }
    })
}

fn spec(model: &TypedModel, outlet: OutletId) -> Result<TensorSpec, EngineError> {
    let fact = model
        .outlet_fact(outlet)
        .map_err(|e| EngineError::Load(e.to_string()))?;
    // Graph outputs are named by their outlet label; inputs by their source node.
    let name = model
        .outlet_label(outlet)
        .unwrap_or(&model.node(outlet.node).name)
        .to_owned();
    Ok(TensorSpec {
        name,
        datatype: datatype(fact.datum_type)?.to_owned(),
        // A symbolic dimension (the batch, usually) is dynamic: -1, as KServe writes it.
        shape: fact
            .shape
            .iter()
            .map(|d| d.to_i64().unwrap_or(-1))
            .collect(),
    })
}

fn load_err(e: TractError) -> EngineError {
    EngineError::Load(format!("{e:#}"))
}

fn typed(path: &Path) -> Result<TypedModel, EngineError> {
    tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.into_typed())
        .map_err(load_err)
}

fn signature_of(model: &TypedModel) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>), EngineError> {
    let load = load_err;
    let inputs = model
        .input_outlets()
        .map_err(load)?
        .iter()
        .map(|o| spec(model, *o))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = model
        .output_outlets()
        .map_err(load)?
        .iter()
        .map(|o| spec(model, *o))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((inputs, outputs))
}

/// Loads the ONNX graph at `path`, checks that tract can type it, and returns its signature.
/// Whether tract's optimiser accepts it is reported too: serving falls back to the plain plan
/// when it does not.
pub fn inspect(path: &Path) -> Result<Signature, EngineError> {
    let model = typed(path)?;
    let (inputs, outputs) = signature_of(&model)?;
    let optimizer_error = model.into_optimized().err().map(|e| format!("{e:#}"));
    Ok(Signature {
        inputs,
        outputs,
        optimizer_error,
    })
}

type Plan = TypedSimplePlan<TypedModel>;

/// An ONNX model ready to run.
pub struct TractModel(BatchedModel);

/// Plans with the batch size fixed: tract runs a graph whose batch dimension is a concrete
/// number about 3x faster than one planned for any batch (measured on open-nsfw: 96 ms against
/// 324 ms per image), and planning takes ~0.1 s, so a plan is made per batch size on first use
/// and the last few are kept.
struct Plans {
    typed: TypedModel,
    /// The symbol every input's first dimension is, if they share one.
    batch: Option<Symbol>,
    optimise: bool,
    recent: Mutex<Vec<(usize, Arc<Plan>)>>,
    /// The plan for any batch size, for when fixing it fails.
    any: Arc<Plan>,
}

/// Plans kept per model.
const KEPT_PLANS: usize = 6;

impl Plans {
    fn for_rows(&self, rows: usize) -> Arc<Plan> {
        let Some(batch) = &self.batch else {
            return self.any.clone();
        };
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = recent.iter().position(|(n, _)| *n == rows) {
            let hit = recent.remove(i);
            let plan = hit.1.clone();
            recent.insert(0, hit);
            return plan;
        }
        let fixed = self
            .typed
            .concretize_dims(&SymbolValues::default().with(batch, rows as i64))
            .and_then(|m| {
                if self.optimise {
                    m.into_optimized()
                } else {
                    Ok(m)
                }
            })
            .and_then(|m| m.into_runnable());
        match fixed {
            Ok(plan) => {
                let plan = Arc::new(plan);
                recent.insert(0, (rows, plan.clone()));
                recent.truncate(KEPT_PLANS);
                plan
            }
            Err(e) => {
                tracing::warn!(rows, error = %format!("{e:#}"), "cannot plan for a fixed batch size; using the plan for any size");
                self.any.clone()
            }
        }
    }
}

/// The symbol all of `model`'s inputs have as their first dimension, if they share one.
fn batch_symbol(model: &TypedModel) -> Option<Symbol> {
    let mut shared: Option<Symbol> = None;
    for outlet in model.input_outlets().ok()? {
        let fact = model.outlet_fact(*outlet).ok()?;
        match fact.shape.iter().next()? {
            TDim::Sym(s) if shared.as_ref().is_none_or(|x| x == s) => shared = Some(s.clone()),
            _ => return None,
        }
    }
    shared
}

impl TractModel {
    /// Loads and plans the graph at `path`; concurrent requests are batched by `policy`.
    pub fn load(path: &Path, policy: BatchPolicy) -> Result<TractModel, EngineError> {
        let model = typed(path)?;
        let (inputs, outputs) = signature_of(&model)?;
        let (any, optimizer_error) = match model.clone().into_optimized() {
            Ok(optimised) => (optimised.into_runnable().map_err(load_err)?, None),
            Err(e) => {
                let why = format!("{e:#}");
                tracing::warn!(path = %path.display(), error = %why, "tract's optimiser refused the graph; running the plain plan (slower)");
                (model.clone().into_runnable().map_err(load_err)?, Some(why))
            }
        };
        let plans = Arc::new(Plans {
            batch: batch_symbol(&model),
            optimise: optimizer_error.is_none(),
            typed: model,
            recent: Mutex::default(),
            any: Arc::new(any),
        });
        // The common case is planned now, not on the first request.
        plans.for_rows(1);
        let signature = Signature {
            inputs,
            outputs,
            optimizer_error,
        };
        let output_names: Vec<String> = signature.outputs.iter().map(|o| o.name.clone()).collect();
        let run: Arc<RunFn> = Arc::new(move |inputs: Vec<Named>| {
            let rows = inputs.first().map(Named::rows).unwrap_or(1);
            run(&plans.for_rows(rows), &output_names, inputs)
        });
        let name: String = path
            .file_stem()
            .map(|s| s.to_string_lossy().chars().take(8).collect())
            .unwrap_or_default();
        Ok(TractModel(BatchedModel::new(
            &name, signature, run, policy,
        )?))
    }
}

impl TensorModel for TractModel {
    fn signature(&self) -> &Signature {
        self.0.signature()
    }

    fn infer(&self, inputs: Vec<Named>) -> Result<Vec<Named>, EngineError> {
        self.0.infer(inputs)
    }
}

fn run(
    plan: &Plan,
    output_names: &[String],
    inputs: Vec<Named>,
) -> Result<Vec<Named>, EngineError> {
    let values = inputs
        .into_iter()
        .map(|t| to_tract(t).map(TValue::from))
        .collect::<Result<TVec<_>, _>>()?;
    let outputs = plan.run(values).map_err(|e| {
        EngineError::InvalidRequest(format!("the model cannot run on this input: {e:#}"))
    })?;
    outputs
        .iter()
        .zip(output_names)
        .map(|(value, name)| from_tract(name, value))
        .collect()
}

fn to_tract(t: Named) -> Result<Tensor, EngineError> {
    let shape = t.shape;
    let tensor = match t.data {
        TensorData::Bool(v) => Tensor::from_shape(&shape, &v),
        TensorData::U8(v) => Tensor::from_shape(&shape, &v),
        TensorData::U16(v) => Tensor::from_shape(&shape, &v),
        TensorData::U32(v) => Tensor::from_shape(&shape, &v),
        TensorData::U64(v) => Tensor::from_shape(&shape, &v),
        TensorData::I8(v) => Tensor::from_shape(&shape, &v),
        TensorData::I16(v) => Tensor::from_shape(&shape, &v),
        TensorData::I32(v) => Tensor::from_shape(&shape, &v),
        TensorData::I64(v) => Tensor::from_shape(&shape, &v),
        TensorData::F16(v) => Tensor::from_shape(&shape, &v),
        TensorData::F32(v) => Tensor::from_shape(&shape, &v),
        TensorData::F64(v) => Tensor::from_shape(&shape, &v),
        TensorData::Bytes(v) => {
            let strings = v
                .into_iter()
                .map(|b| {
                    String::from_utf8(b).map_err(|_| {
                        EngineError::InvalidRequest(format!(
                            "input '{}': this model reads BYTES as UTF-8 text, and an element is not",
                            t.name
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            tract_ndarray::ArrayD::from_shape_vec(shape.clone(), strings)
                .map(|a| a.into_tensor())
                .map_err(|e| anyhow::anyhow!(e))
        }
    };
    tensor.map_err(|e| EngineError::InvalidRequest(format!("input '{}': {e:#}", t.name)))
}

fn from_tract(name: &str, value: &TValue) -> Result<Named, EngineError> {
    let backend = |e: TractError| EngineError::Backend(format!("output '{name}': {e:#}"));
    macro_rules! copy {
        ($t:ty, $variant:ident) => {
            TensorData::$variant(value.as_slice::<$t>().map_err(backend)?.to_vec())
        };
    }
    let data = match value.datum_type() {
        DatumType::Bool => copy!(bool, Bool),
        DatumType::U8 => copy!(u8, U8),
        DatumType::U16 => copy!(u16, U16),
        DatumType::U32 => copy!(u32, U32),
        DatumType::U64 => copy!(u64, U64),
        DatumType::I8 => copy!(i8, I8),
        DatumType::I16 => copy!(i16, I16),
        DatumType::I32 => copy!(i32, I32),
        DatumType::I64 => copy!(i64, I64),
        DatumType::F16 => copy!(f16, F16),
        DatumType::F32 => copy!(f32, F32),
        DatumType::F64 => copy!(f64, F64),
        DatumType::String => TensorData::Bytes(
            value
                .as_slice::<String>()
                .map_err(backend)?
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        ),
        other => {
            return Err(EngineError::Backend(format!(
            "output '{name}' is of type {other:?}, which the Open Inference Protocol cannot carry"
        )))
        }
    };
    Named::new(name, value.shape().to_vec(), data)
}

/// The tract engine: ONNX graphs, any task served through tensors.
#[derive(Debug, Default)]
pub struct TractEngine;

impl Engine for TractEngine {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn supports(&self, format: Format, task: Task) -> bool {
        format == Format::Onnx
            && matches!(
                task,
                Task::Tensor
                    | Task::ImageClassification
                    | Task::TabularClassification
                    | Task::TabularRegression
                    | Task::TextClassification
            )
    }

    fn load(&self, spec: &LoadSpec) -> Result<LoadedModel, EngineError> {
        let policy = BatchPolicy {
            max_batch_size: spec.batching.max_inputs.max(1),
            max_wait: spec.batching.max_wait,
            workers: spec.threads.max(1),
        };
        let memory_bytes = std::fs::metadata(&spec.path).map(|m| m.len()).unwrap_or(0);
        let model = TractModel::load(&spec.path, policy)?;
        Ok(LoadedModel {
            tensor: Some(Arc::new(model)),
            memory_bytes,
            ..LoadedModel::default()
        })
    }
}
