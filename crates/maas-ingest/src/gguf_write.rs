//! Writing GGUF files: metadata first, then tensor descriptions, then aligned tensor data.
//!
//! Only what maas produces is supported: scalar, string and array metadata, and F32, F16 and
//! BF16 tensors. Shapes are given as in PyTorch (outermost dimension first) and stored reversed,
//! as GGUF lists the innermost dimension first.

use std::io::Write;

/// GGUF's value types, by their numeric code in the format.
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

/// Tensor data alignment (the format's default, `general.alignment`).
const ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An unsigned 32-bit integer.
    U32(u32),
    /// A 32-bit float.
    F32(f32),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array of strings.
    Strs(Vec<String>),
    /// An array of signed 32-bit integers.
    I32s(Vec<i32>),
}

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    /// 32-bit float (ggml type 0).
    F32,
    /// 16-bit IEEE float (ggml type 1).
    F16,
    /// bfloat16: a float's upper 16 bits (ggml type 30).
    BF16,
}

impl TensorType {
    fn code(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::BF16 => 30,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            TensorType::F32 => 4,
            TensorType::F16 | TensorType::BF16 => 2,
        }
    }
}

/// A tensor to be written: its name, PyTorch-order shape and element type.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// The name llama.cpp looks it up by.
    pub name: String,
    /// Shape, outermost dimension first.
    pub shape: Vec<u64>,
    /// Element type.
    pub ty: TensorType,
}

impl TensorInfo {
    /// Bytes of data.
    pub fn bytes(&self) -> u64 {
        self.shape.iter().product::<u64>() * self.ty.size()
    }
}

fn padding(len: u64) -> u64 {
    (ALIGNMENT - len % ALIGNMENT) % ALIGNMENT
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U32(v) => {
            out.extend(T_U32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Value::F32(v) => {
            out.extend(T_F32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Value::Bool(v) => {
            out.extend(T_BOOL.to_le_bytes());
            out.push(u8::from(*v));
        }
        Value::Str(s) => {
            out.extend(T_STRING.to_le_bytes());
            put_str(out, s);
        }
        Value::Strs(items) => {
            out.extend(T_ARRAY.to_le_bytes());
            out.extend(T_STRING.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for s in items {
                put_str(out, s);
            }
        }
        Value::I32s(items) => {
            out.extend(T_ARRAY.to_le_bytes());
            out.extend(T_I32.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for v in items {
                out.extend(v.to_le_bytes());
            }
        }
    }
}

/// The header of a GGUF file (everything before the tensor data), padded to the alignment.
/// Tensors are then written in the same order, each padded with [`write_tensor_data`].
pub fn header(metadata: &[(String, Value)], tensors: &[TensorInfo]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut out, key);
        put_value(&mut out, value);
    }
    let mut offset = 0u64;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend((t.shape.len() as u32).to_le_bytes());
        for dim in t.shape.iter().rev() {
            out.extend(dim.to_le_bytes());
        }
        out.extend(t.ty.code().to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += t.bytes() + padding(t.bytes());
    }
    let pad = padding(out.len() as u64);
    out.resize(out.len() + pad as usize, 0);
    out
}

/// Writes one tensor's bytes and the padding that follows them.
pub fn write_tensor_data(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    out.write_all(data)?;
    let pad = padding(data.len() as u64) as usize;
    out.write_all(&[0u8; ALIGNMENT as usize][..pad])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_headers_read_back() {
        let metadata = vec![
            ("general.architecture".to_owned(), Value::Str("bert".into())),
            ("bert.block_count".to_owned(), Value::U32(6)),
            ("bert.attention.causal".to_owned(), Value::Bool(false)),
            (
                "tokenizer.ggml.tokens".to_owned(),
                Value::Strs(vec!["[PAD]".into(), "▁a".into()]),
            ),
        ];
        let tensors = vec![TensorInfo {
            name: "token_embd.weight".into(),
            shape: vec![2, 3],
            ty: TensorType::F32,
        }];
        let bytes = header(&metadata, &tensors);
        assert_eq!(bytes.len() % 32, 0);
        let h = crate::gguf::parse_header(&bytes).unwrap();
        assert!(h.complete);
        assert_eq!(h.tensor_count, 1);
        assert_eq!(h.str("general.architecture"), Some("bert"));
        assert_eq!(h.metadata["bert.block_count"], 6);
        assert_eq!(h.metadata["bert.attention.causal"], false);
        assert_eq!(h.metadata["tokenizer.ggml.tokens"]["len"], 2);
        let mut data = vec![];
        write_tensor_data(&mut data, &[1u8; 24]).unwrap();
        assert_eq!(data.len(), 32);
    }
}
