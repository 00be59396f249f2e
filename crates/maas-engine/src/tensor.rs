//! Tensors as the Open Inference Protocol sees them: a name, a shape and row-major data of one
//! element type, plus the checks every tensor backend needs against a model's [`Signature`].

use crate::{EngineError, Signature, TensorSpec};

pub use half::f16;

/// Row-major elements of one type. The variants are the Open Inference Protocol's datatypes.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `BOOL`
    Bool(Vec<bool>),
    /// `UINT8`
    U8(Vec<u8>),
    /// `UINT16`
    U16(Vec<u16>),
    /// `UINT32`
    U32(Vec<u32>),
    /// `UINT64`
    U64(Vec<u64>),
    /// `INT8`
    I8(Vec<i8>),
    /// `INT16`
    I16(Vec<i16>),
    /// `INT32`
    I32(Vec<i32>),
    /// `INT64`
    I64(Vec<i64>),
    /// `FP16`
    F16(Vec<f16>),
    /// `FP32`
    F32(Vec<f32>),
    /// `FP64`
    F64(Vec<f64>),
    /// `BYTES`: each element a byte string.
    Bytes(Vec<Vec<u8>>),
}

/// Applies `$body` to the vector inside any variant, bound as `$v`; with `wrap`, the result is
/// put back in the same variant.
macro_rules! each_variant {
    ($data:expr, $v:ident => wrap $body:expr) => {
        match $data {
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::U8($v) => TensorData::U8($body),
            TensorData::U16($v) => TensorData::U16($body),
            TensorData::U32($v) => TensorData::U32($body),
            TensorData::U64($v) => TensorData::U64($body),
            TensorData::I8($v) => TensorData::I8($body),
            TensorData::I16($v) => TensorData::I16($body),
            TensorData::I32($v) => TensorData::I32($body),
            TensorData::I64($v) => TensorData::I64($body),
            TensorData::F16($v) => TensorData::F16($body),
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::F64($v) => TensorData::F64($body),
            TensorData::Bytes($v) => TensorData::Bytes($body),
        }
    };
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::U16($v) => $body,
            TensorData::U32($v) => $body,
            TensorData::U64($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::I16($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::F16($v) => $body,
            TensorData::F32($v) => $body,
            TensorData::F64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        each_variant!(self, v => v.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Open Inference Protocol datatype.
    pub fn datatype(&self) -> &'static str {
        match self {
            TensorData::Bool(_) => "BOOL",
            TensorData::U8(_) => "UINT8",
            TensorData::U16(_) => "UINT16",
            TensorData::U32(_) => "UINT32",
            TensorData::U64(_) => "UINT64",
            TensorData::I8(_) => "INT8",
            TensorData::I16(_) => "INT16",
            TensorData::I32(_) => "INT32",
            TensorData::I64(_) => "INT64",
            TensorData::F16(_) => "FP16",
            TensorData::F32(_) => "FP32",
            TensorData::F64(_) => "FP64",
            TensorData::Bytes(_) => "BYTES",
        }
    }

    /// Elements `range` as a new vector of the same type.
    pub fn slice(&self, range: std::ops::Range<usize>) -> TensorData {
        each_variant!(self, v => wrap v[range].to_vec())
    }

    /// The elements of `parts`, one after the other; None if their types differ.
    pub fn concat(parts: &[&TensorData]) -> Option<TensorData> {
        let first = *parts.first()?;
        let mut out = first.slice(0..0);
        for part in parts {
            match (&mut out, part) {
                (TensorData::Bool(a), TensorData::Bool(b)) => a.extend_from_slice(b),
                (TensorData::U8(a), TensorData::U8(b)) => a.extend_from_slice(b),
                (TensorData::U16(a), TensorData::U16(b)) => a.extend_from_slice(b),
                (TensorData::U32(a), TensorData::U32(b)) => a.extend_from_slice(b),
                (TensorData::U64(a), TensorData::U64(b)) => a.extend_from_slice(b),
                (TensorData::I8(a), TensorData::I8(b)) => a.extend_from_slice(b),
                (TensorData::I16(a), TensorData::I16(b)) => a.extend_from_slice(b),
                (TensorData::I32(a), TensorData::I32(b)) => a.extend_from_slice(b),
                (TensorData::I64(a), TensorData::I64(b)) => a.extend_from_slice(b),
                (TensorData::F16(a), TensorData::F16(b)) => a.extend_from_slice(b),
                (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
                (TensorData::F64(a), TensorData::F64(b)) => a.extend_from_slice(b),
                (TensorData::Bytes(a), TensorData::Bytes(b)) => a.extend_from_slice(b),
                _ => return None,
            }
        }
        Some(out)
    }
}

/// A named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Name of the graph input or output.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major elements; as many as the shape's product.
    pub data: TensorData,
}

impl Tensor {
    /// A tensor, checking that the data fills the shape.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<usize>,
        data: TensorData,
    ) -> Result<Tensor, EngineError> {
        let name = name.into();
        let want = element_count(&shape).ok_or_else(|| {
            EngineError::InvalidRequest(format!("tensor '{name}': shape {shape:?} is too large"))
        })?;
        if want != data.len() {
            return Err(EngineError::InvalidRequest(format!(
                "tensor '{name}': shape {shape:?} holds {want} elements but {} were given",
                data.len()
            )));
        }
        Ok(Tensor { name, shape, data })
    }

    /// Size of the first dimension (the batch); 1 for a scalar.
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }
}

/// The product of `shape`, or None on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d))
}

fn shape_matches(spec: &TensorSpec, shape: &[usize]) -> bool {
    spec.shape.len() == shape.len()
        && spec
            .shape
            .iter()
            .zip(shape)
            .all(|(want, got)| *want < 0 || *want as usize == *got)
}

fn shown(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(","))
}

impl Signature {
    /// Checks `inputs` against the signature and returns them in graph order: every input
    /// present once, no unknown names, datatypes and shapes as declared (-1 matches any size).
    pub fn arrange(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let bad = |m: String| EngineError::InvalidRequest(m);
        let mut slots: Vec<Option<Tensor>> = vec![None; self.inputs.len()];
        for tensor in inputs {
            let Some(i) = self.inputs.iter().position(|s| s.name == tensor.name) else {
                let known: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
                return Err(bad(format!(
                    "unknown input '{}'; the model takes {}",
                    tensor.name,
                    known.join(", ")
                )));
            };
            let spec = &self.inputs[i];
            if tensor.data.datatype() != spec.datatype {
                return Err(bad(format!(
                    "input '{}' must be {}, got {}",
                    spec.name,
                    spec.datatype,
                    tensor.data.datatype()
                )));
            }
            if !shape_matches(spec, &tensor.shape) {
                return Err(bad(format!(
                    "input '{}' must have shape {} (-1: any size), got {:?}",
                    spec.name,
                    shown(&spec.shape),
                    tensor.shape
                )));
            }
            if slots[i].replace(tensor).is_some() {
                return Err(bad(format!("input '{}' is given twice", spec.name)));
            }
        }
        slots
            .into_iter()
            .zip(&self.inputs)
            .map(|(t, spec)| t.ok_or_else(|| bad(format!("input '{}' is missing", spec.name))))
            .collect()
    }

    /// Whether every input and output has a dynamic first dimension: requests can then be
    /// joined along it and the results split back.
    pub fn batchable(&self) -> bool {
        !self.inputs.is_empty()
            && self
                .inputs
                .iter()
                .chain(&self.outputs)
                .all(|t| t.shape.first() == Some(&-1))
    }
}

/// A model that maps named tensors to named tensors.
pub trait TensorModel: Send + Sync {
    /// What it takes and returns.
    fn signature(&self) -> &Signature;
    /// Runs the model on `inputs` (checked with [`Signature::arrange`]). Blocks until done;
    /// concurrent callers may be batched together.
    fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature() -> Signature {
        let spec = |name: &str, datatype: &str, shape: Vec<i64>| TensorSpec {
            name: name.to_owned(),
            datatype: datatype.to_owned(),
            shape,
        };
        Signature {
            inputs: vec![spec("a", "FP32", vec![-1, 3]), spec("b", "INT64", vec![-1])],
            outputs: vec![spec("y", "FP32", vec![-1, 2])],
            optimizer_error: None,
        }
    }

    fn t(name: &str, shape: Vec<usize>, data: TensorData) -> Tensor {
        Tensor::new(name, shape, data).unwrap()
    }

    #[test]
    fn inputs_are_put_in_graph_order_and_checked() {
        let sig = signature();
        let a = t("a", vec![2, 3], TensorData::F32(vec![0.0; 6]));
        let b = t("b", vec![2], TensorData::I64(vec![1, 2]));
        let arranged = sig.arrange(vec![b.clone(), a.clone()]).unwrap();
        assert_eq!(arranged, vec![a.clone(), b.clone()]);

        let err = |inputs: Vec<Tensor>| sig.arrange(inputs).unwrap_err().to_string();
        assert_eq!(err(vec![a.clone()]), "input 'b' is missing");
        assert!(err(vec![
            a.clone(),
            b.clone(),
            t("c", vec![1], TensorData::U8(vec![1]))
        ])
        .starts_with("unknown input 'c'"));
        assert_eq!(
            err(vec![
                a.clone(),
                t("b", vec![2], TensorData::I32(vec![1, 2]))
            ]),
            "input 'b' must be INT64, got INT32"
        );
        assert_eq!(
            err(vec![
                t("a", vec![2, 2], TensorData::F32(vec![0.0; 4])),
                b.clone()
            ]),
            "input 'a' must have shape [-1,3] (-1: any size), got [2, 2]"
        );
        assert_eq!(err(vec![a.clone(), a, b]), "input 'a' is given twice");
        assert!(sig.batchable());
    }

    #[test]
    fn a_shape_must_hold_exactly_the_data() {
        let e = Tensor::new("x", vec![2, 2], TensorData::F32(vec![1.0; 3])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tensor 'x': shape [2, 2] holds 4 elements but 3 were given"
        );
        assert!(Tensor::new("x", vec![usize::MAX, 2], TensorData::U8(vec![])).is_err());
    }

    #[test]
    fn data_of_one_type_concatenates_and_slices() {
        let a = TensorData::I32(vec![1, 2]);
        let b = TensorData::I32(vec![3]);
        let joined = TensorData::concat(&[&a, &b]).unwrap();
        assert_eq!(joined, TensorData::I32(vec![1, 2, 3]));
        assert_eq!(joined.slice(1..3), TensorData::I32(vec![2, 3]));
        assert_eq!(TensorData::concat(&[&a, &TensorData::U8(vec![1])]), None);
    }
}
