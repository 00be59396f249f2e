//! f32 tensors and a JSON header in one safetensors file: the format of trained models and of
//! training checkpoints. Any safetensors reader opens them; the header sits in the file's
//! `__metadata__` under the key `maas`.

use std::collections::HashMap;

use maas_core::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// The metadata key holding the JSON header.
pub const HEADER_KEY: &str = "maas";

/// One named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    /// Name in the file.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Serialises `tensors` with `header` (JSON text).
pub fn pack(tensors: &[Named], header: &str) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            TensorView::new(Dtype::F32, t.shape.clone(), b)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| Error::internal(format!("tensor '{}': {e}", t.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([(HEADER_KEY.to_owned(), header.to_owned())]);
    safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), Some(meta))
        .map_err(|e| Error::internal(format!("cannot write the weights: {e}")))
}

/// Reads a file written by [`pack`]: the header and the tensors by name.
pub fn unpack(bytes: &[u8]) -> Result<(String, HashMap<String, Named>)> {
    let bad = |m: String| Error::invalid(format!("not a maas weights file: {m}"));
    let file = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let header = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(HEADER_KEY))
        .cloned()
        .ok_or_else(|| bad(format!("no '{HEADER_KEY}' header")))?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor '{name}' is {:?}, not F32",
                view.dtype()
            )));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.insert(
            name.clone(),
            Named {
                name,
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((header, tensors))
}

/// Takes tensor `name` out of `tensors`, checking its shape.
pub fn take(tensors: &mut HashMap<String, Named>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = tensors
        .remove(name)
        .ok_or_else(|| Error::invalid(format!("the weights file has no tensor '{name}'")))?;
    if t.shape != shape {
        return Err(Error::invalid(format!(
            "tensor '{name}' has shape {:?}, expected {shape:?}",
            t.shape
        )));
    }
    Ok(t.data)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tensors_and_header_round_trip_bit_exactly() {
        let t = Named {
            name: "w".into(),
            shape: vec![2, 2],
            data: vec![1.0, -0.0, f32::MIN_POSITIVE, 3.5e-9],
        };
        let bytes = pack(std::slice::from_ref(&t), r#"{"a":1}"#).unwrap();
        let (header, mut tensors) = unpack(&bytes).unwrap();
        assert_eq!(header, r#"{"a":1}"#);
        let back = take(&mut tensors, "w", &[2, 2]).unwrap();
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert!(take(&mut tensors, "w", &[2, 2]).is_err());
        assert!(unpack(b"not safetensors")
            .unwrap_err()
            .message
            .contains("not a maas weights file"));
    }
}
