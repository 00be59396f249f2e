//! The tract backend: pure-Rust ONNX. Today it validates a graph at pull time and reads its
//! signature (the Open Inference Protocol's model metadata); inference comes next.
#![deny(missing_docs)]

use std::path::Path;

use maas_engine::{EngineError, Signature, TensorSpec};
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

/// Loads the ONNX graph at `path`, checks that tract can type it, and returns its signature.
/// Whether tract's optimiser accepts it is reported too: serving falls back to the plain plan
/// when it does not.
pub fn inspect(path: &Path) -> Result<Signature, EngineError> {
    let load = |e: TractError| EngineError::Load(format!("{e:#}"));
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.into_typed())
        .map_err(load)?;
    let inputs = model
        .input_outlets()
        .map_err(load)?
        .iter()
        .map(|o| spec(&model, *o))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = model
        .output_outlets()
        .map_err(load)?
        .iter()
        .map(|o| spec(&model, *o))
        .collect::<Result<Vec<_>, _>>()?;
    let optimizer_error = model.into_optimized().err().map(|e| format!("{e:#}"));
    Ok(Signature {
        inputs,
        outputs,
        optimizer_error,
    })
}
