//! The Open Inference Protocol's tensors on the wire: JSON `data` (flat or nested, row-major)
//! and the binary tensor extension (a JSON header of `Inference-Header-Content-Length` bytes,
//! then each binary tensor's raw little-endian bytes in order; BYTES elements each prefixed by
//! a 4-byte length).

use maas_engine::{element_count, f16, Tensor, TensorData};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request's JSON part.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
    pub inputs: Vec<InputTensor>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

impl RequestedOutput {
    pub fn binary(&self) -> Option<bool> {
        self.parameters.as_ref()?.get("binary_data")?.as_bool()
    }
}

/// Bytes per element of a fixed-size datatype; None for BYTES and unknown names.
fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        _ => return None,
    })
}

const DATATYPES: &str =
    "BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES";

fn check_datatype(name: &str, datatype: &str) -> Result<(), String> {
    if datatype == "BYTES" || element_size(datatype).is_some() {
        Ok(())
    } else {
        Err(format!(
            "input '{name}': unknown datatype '{datatype}'; one of {DATATYPES}"
        ))
    }
}

fn shape_of(name: &str, shape: &[i64]) -> Result<Vec<usize>, String> {
    shape
        .iter()
        .map(|d| {
            usize::try_from(*d)
                .map_err(|_| format!("input '{name}': shape {shape:?} has a negative dimension"))
        })
        .collect()
}

/// Flattens nested arrays (row-major) into `out`.
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

/// Reads JSON elements as one datatype, naming the first bad element.
fn from_json(name: &str, datatype: &str, data: &Value) -> Result<TensorData, String> {
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let bad =
        |i: usize, v: &Value, what: &str| format!("input '{name}': element {i} is {v}, not {what}");
    macro_rules! ints {
        ($t:ty, $variant:ident) => {{
            let mut out = Vec::with_capacity(flat.len());
            for (i, v) in flat.iter().enumerate() {
                let n = v
                    .as_i64()
                    .and_then(|n| <$t>::try_from(n).ok())
                    .or_else(|| v.as_u64().and_then(|n| <$t>::try_from(n).ok()))
                    .ok_or_else(|| bad(i, v, concat!("an integer that fits ", stringify!($t))))?;
                out.push(n);
            }
            TensorData::$variant(out)
        }};
    }
    macro_rules! floats {
        ($variant:ident, $conv:expr) => {{
            let mut out = Vec::with_capacity(flat.len());
            for (i, v) in flat.iter().enumerate() {
                let x = v.as_f64().ok_or_else(|| bad(i, v, "a number"))?;
                out.push($conv(x));
            }
            TensorData::$variant(out)
        }};
    }
    Ok(match datatype {
        "BOOL" => TensorData::Bool(
            flat.iter()
                .enumerate()
                .map(|(i, v)| v.as_bool().ok_or_else(|| bad(i, v, "true or false")))
                .collect::<Result<_, _>>()?,
        ),
        "UINT8" => ints!(u8, U8),
        "UINT16" => ints!(u16, U16),
        "UINT32" => ints!(u32, U32),
        "UINT64" => ints!(u64, U64),
        "INT8" => ints!(i8, I8),
        "INT16" => ints!(i16, I16),
        "INT32" => ints!(i32, I32),
        "INT64" => ints!(i64, I64),
        "FP16" => floats!(F16, |x: f64| f16::from_f64(x)),
        "FP32" => floats!(F32, |x: f64| x as f32),
        "FP64" => floats!(F64, |x: f64| x),
        "BYTES" => TensorData::Bytes(
            flat.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .map(|s| s.as_bytes().to_vec())
                        .ok_or_else(|| bad(i, v, "a string"))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("input '{name}': unknown datatype '{other}'")),
    })
}

/// Reads raw little-endian bytes as one datatype.
fn from_binary(
    name: &str,
    datatype: &str,
    bytes: &[u8],
    count: usize,
) -> Result<TensorData, String> {
    if datatype == "BYTES" {
        let mut out = Vec::with_capacity(count);
        let mut rest = bytes;
        while !rest.is_empty() {
            let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(|| {
                format!("input '{name}': BYTES element {} is cut short", out.len())
            })?;
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(format!(
                    "input '{name}': BYTES element {} says {len} bytes but {} remain",
                    out.len(),
                    tail.len()
                ));
            }
            out.push(tail[..len].to_vec());
            rest = &tail[len..];
        }
        return Ok(TensorData::Bytes(out));
    }
    let size = element_size(datatype)
        .ok_or_else(|| format!("input '{name}': unknown datatype '{datatype}'"))?;
    if bytes.len() != count * size {
        return Err(format!(
            "input '{name}': {} binary bytes given, but {count} {datatype} elements need {}",
            bytes.len(),
            count * size
        ));
    }
    macro_rules! le {
        ($t:ty, $variant:ident) => {
            TensorData::$variant(
                bytes
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            )
        };
    }
    Ok(match datatype {
        "BOOL" => TensorData::Bool(bytes.iter().map(|b| *b != 0).collect()),
        "UINT8" => TensorData::U8(bytes.to_vec()),
        "INT8" => TensorData::I8(bytes.iter().map(|b| *b as i8).collect()),
        "UINT16" => le!(u16, U16),
        "UINT32" => le!(u32, U32),
        "UINT64" => le!(u64, U64),
        "INT16" => le!(i16, I16),
        "INT32" => le!(i32, I32),
        "INT64" => le!(i64, I64),
        "FP16" => TensorData::F16(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        "FP32" => le!(f32, F32),
        "FP64" => le!(f64, F64),
        other => return Err(format!("input '{name}': unknown datatype '{other}'")),
    })
}

/// The raw little-endian bytes of a tensor, as the binary extension carries it.
pub fn to_binary(data: &TensorData) -> Vec<u8> {
    macro_rules! le {
        ($v:expr) => {
            $v.iter().flat_map(|x| x.to_le_bytes()).collect()
        };
    }
    match data {
        TensorData::Bool(v) => v.iter().map(|b| u8::from(*b)).collect(),
        TensorData::U8(v) => v.clone(),
        TensorData::U16(v) => le!(v),
        TensorData::U32(v) => le!(v),
        TensorData::U64(v) => le!(v),
        TensorData::I8(v) => le!(v),
        TensorData::I16(v) => le!(v),
        TensorData::I32(v) => le!(v),
        TensorData::I64(v) => le!(v),
        TensorData::F16(v) => le!(v),
        TensorData::F32(v) => le!(v),
        TensorData::F64(v) => le!(v),
        TensorData::Bytes(v) => v
            .iter()
            .flat_map(|b| {
                (b.len() as u32)
                    .to_le_bytes()
                    .into_iter()
                    .chain(b.iter().copied())
            })
            .collect(),
    }
}

/// Tensor data as a flat JSON array, keeping each type's own shortest spelling (an f32 0.1 is
/// written `0.1`, not as the f64 it widens to).
pub struct JsonData<'a>(pub &'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        macro_rules! all {
            ($v:expr) => {
                for x in $v {
                    seq.serialize_element(&x)?;
                }
            };
        }
        match self.0 {
            TensorData::Bool(v) => all!(v),
            TensorData::U8(v) => all!(v),
            TensorData::U16(v) => all!(v),
            TensorData::U32(v) => all!(v),
            TensorData::U64(v) => all!(v),
            TensorData::I8(v) => all!(v),
            TensorData::I16(v) => all!(v),
            TensorData::I32(v) => all!(v),
            TensorData::I64(v) => all!(v),
            TensorData::F16(v) => all!(v.iter().map(|x| x.to_f32())),
            TensorData::F32(v) => all!(v),
            TensorData::F64(v) => all!(v),
            TensorData::Bytes(v) => all!(v.iter().map(|b| String::from_utf8_lossy(b))),
        }
        seq.end()
    }
}

/// Decodes the request's inputs: JSON `data`, or (with `binary_data_size`) the next bytes of
/// `binary`, which must be used up exactly.
pub fn decode_inputs(inputs: Vec<InputTensor>, binary: &[u8]) -> Result<Vec<Tensor>, String> {
    if inputs.is_empty() {
        return Err("inputs must not be empty".to_owned());
    }
    let mut offset = 0usize;
    let mut out = Vec::with_capacity(inputs.len());
    for input in inputs {
        let name = input.name;
        check_datatype(&name, &input.datatype)?;
        let shape = shape_of(&name, &input.shape)?;
        let count = element_count(&shape)
            .ok_or_else(|| format!("input '{name}': shape {:?} is too large", input.shape))?;
        let binary_size = match input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
        {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                format!("input '{name}': binary_data_size must be a non-negative integer, got {v}")
            })? as usize),
        };
        let data = match (binary_size, &input.data) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "input '{name}' has both data and binary_data_size; send one"
                ))
            }
            (Some(size), None) => {
                let end = offset.checked_add(size).filter(|end| *end <= binary.len()).ok_or_else(|| {
                    format!(
                        "input '{name}': binary_data_size {size} runs past the end of the body ({} binary bytes remain)",
                        binary.len() - offset
                    )
                })?;
                let data = from_binary(&name, &input.datatype, &binary[offset..end], count)?;
                offset = end;
                data
            }
            (None, Some(data)) => from_json(&name, &input.datatype, data)?,
            (None, None) => return Err(format!("input '{name}' has no data")),
        };
        let tensor = Tensor::new(name, shape, data).map_err(|e| e.to_string())?;
        out.push(tensor);
    }
    if offset != binary.len() {
        return Err(format!(
            "the body holds {} binary bytes after the JSON header, but the inputs account for {offset}",
            binary.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> InputTensor {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn nested_and_flat_json_give_the_same_tensor() {
        let flat = input(
            json!({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2.5, 3, 4]}),
        );
        let nested = input(
            json!({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2.5], [3, 4]]}),
        );
        let a = decode_inputs(vec![flat], &[]).unwrap();
        let b = decode_inputs(vec![nested], &[]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].data, TensorData::F32(vec![1.0, 2.5, 3.0, 4.0]));
    }

    #[test]
    fn bad_json_elements_are_named() {
        let err = |v: Value| decode_inputs(vec![input(v)], &[]).unwrap_err();
        assert_eq!(
            err(json!({"name": "x", "shape": [2], "datatype": "UINT8", "data": [1, 300]})),
            "input 'x': element 1 is 300, not an integer that fits u8"
        );
        assert_eq!(
            err(json!({"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]})),
            "tensor 'x': shape [3] holds 3 elements but 2 were given"
        );
        assert!(
            err(json!({"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}))
                .contains("unknown datatype 'FLOAT'")
        );
        assert!(
            err(json!({"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}))
                .contains("negative dimension")
        );
        assert_eq!(
            err(json!({"name": "x", "shape": [1], "datatype": "BOOL", "data": ["yes"]})),
            "input 'x': element 0 is \"yes\", not true or false"
        );
    }

    #[test]
    fn binary_tensors_round_trip_and_must_fill_the_body() {
        let values = TensorData::F32(vec![0.5, -1.0, 3.25]);
        let words = TensorData::Bytes(vec![b"ab".to_vec(), vec![], b"xyz".to_vec()]);
        let mut body = to_binary(&values);
        let first = body.len();
        body.extend(to_binary(&words));
        let inputs = || {
            vec![
                input(
                    json!({"name": "v", "shape": [3], "datatype": "FP32", "parameters": {"binary_data_size": first}}),
                ),
                input(
                    json!({"name": "w", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": body.len() - first}}),
                ),
            ]
        };
        let got = decode_inputs(inputs(), &body).unwrap();
        assert_eq!(got[0].data, values);
        assert_eq!(got[1].data, words);

        let cut = decode_inputs(inputs(), &body[..body.len() - 2]).unwrap_err();
        assert!(cut.contains("runs past the end"), "{cut}");
        let mut extra = body.clone();
        extra.push(0);
        assert!(decode_inputs(inputs(), &extra)
            .unwrap_err()
            .contains("binary bytes after the JSON header"));
    }

    #[test]
    fn f32_output_keeps_its_short_spelling() {
        let text = serde_json::to_string(&JsonData(&TensorData::F32(vec![0.1, 2.0]))).unwrap();
        assert_eq!(text, "[0.1,2.0]");
    }
}
