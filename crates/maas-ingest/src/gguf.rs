//! Reading the metadata header of a GGUF file (llama.cpp's format): magic, version, tensor
//! count and the key-value pairs. Array values are summarised by type and length; the tensor
//! data is never touched.

use std::collections::BTreeMap;

use maas_core::{Error, Result};

/// What the header says.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Number of tensors.
    pub tensor_count: u64,
    /// Scalar metadata (strings, numbers, booleans); arrays as `{"array": type, "len": n}`.
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// False when the bytes ended before every key was read.
    pub complete: bool,
}

impl GgufHeader {
    /// A string metadata value.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(|v| v.as_str())
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

struct Truncated;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], Truncated> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(Truncated)?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u32(&mut self) -> std::result::Result<u32, Truncated> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| Truncated)?,
        ))
    }
    fn u64(&mut self) -> std::result::Result<u64, Truncated> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| Truncated)?,
        ))
    }
    fn string(&mut self) -> std::result::Result<String, Truncated> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| Truncated)?;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }
}

/// Size in bytes of a fixed-size GGUF value type, or None for strings and arrays.
fn fixed_size(t: u32) -> Option<usize> {
    match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

const MAX_STRING_KEPT: usize = 256;

fn scalar(r: &mut Reader<'_>, t: u32) -> std::result::Result<Option<serde_json::Value>, Truncated> {
    use serde_json::json;
    Ok(Some(match t {
        0 => json!(r.take(1)?[0]),
        1 => json!(r.take(1)?[0] as i8),
        2 => {
            let s = r.take(2)?;
            json!(u16::from_le_bytes([s[0], s[1]]))
        }
        3 => {
            let s = r.take(2)?;
            json!(i16::from_le_bytes([s[0], s[1]]))
        }
        4 => json!(r.u32()?),
        5 => json!(r.u32()? as i32),
        6 => json!(f32::from_bits(r.u32()?)),
        7 => json!(r.take(1)?[0] != 0),
        8 => {
            let s = r.string()?;
            if s.len() > MAX_STRING_KEPT {
                json!({"string_len": s.len()})
            } else {
                json!(s)
            }
        }
        10 => json!(r.u64()?),
        11 => json!(r.u64()? as i64),
        12 => json!(f64::from_bits(r.u64()?)),
        _ => return Ok(None),
    }))
}

/// Parses the header from the first bytes of a file. Fails on a wrong magic, an unknown
/// version or an unknown value type; a header cut short by `bytes` is returned with
/// `complete: false`.
pub fn parse_header(bytes: &[u8]) -> Result<GgufHeader> {
    if bytes.len() < 4 || &bytes[..4] != b"GGUF" {
        return Err(Error::invalid(
            "not a GGUF file: the magic bytes 'GGUF' are missing",
        ));
    }
    let mut r = Reader { bytes, pos: 4 };
    let short = || Error::invalid("not a valid GGUF file: the header is truncated");
    let version = r.u32().map_err(|_| short())?;
    if !(2..=3).contains(&version) {
        return Err(Error::invalid(format!(
            "unsupported GGUF version {version} (maas reads versions 2 and 3)"
        )));
    }
    let tensor_count = r.u64().map_err(|_| short())?;
    let kv_count = r.u64().map_err(|_| short())?;
    if kv_count > 1_000_000 || tensor_count > 10_000_000 {
        return Err(Error::invalid(
            "not a valid GGUF file: implausible key or tensor count",
        ));
    }
    let mut metadata = BTreeMap::new();
    let mut complete = true;
    for _ in 0..kv_count {
        let entry: std::result::Result<(), Truncated> = (|| {
            let key = r.string()?;
            let t = r.u32()?;
            if t == 9 {
                let item = r.u32()?;
                let len = r.u64()?;
                match fixed_size(item) {
                    Some(size) => {
                        let total = usize::try_from(len)
                            .ok()
                            .and_then(|l| l.checked_mul(size))
                            .ok_or(Truncated)?;
                        r.take(total)?;
                    }
                    None if item == 8 => {
                        for _ in 0..len {
                            r.string()?;
                        }
                    }
                    None => return Err(Truncated),
                }
                metadata.insert(key, serde_json::json!({"array": item, "len": len}));
            } else {
                let value = scalar(&mut r, t)?.ok_or(Truncated)?;
                metadata.insert(key, value);
            }
            Ok(())
        })();
        if entry.is_err() {
            complete = false;
            break;
        }
    }
    Ok(GgufHeader {
        version,
        tensor_count,
        metadata,
        complete,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a tiny GGUF header for tests.
    pub fn tiny_gguf(arch: &str) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend(3u64.to_le_bytes());
        let key = |out: &mut Vec<u8>, k: &str| {
            out.extend((k.len() as u64).to_le_bytes());
            out.extend(k.as_bytes());
        };
        key(&mut out, "general.architecture");
        out.extend(8u32.to_le_bytes());
        key(&mut out, arch);
        key(&mut out, "llama.context_length");
        out.extend(4u32.to_le_bytes());
        out.extend(2048u32.to_le_bytes());
        key(&mut out, "tokenizer.ggml.tokens");
        out.extend(9u32.to_le_bytes());
        out.extend(8u32.to_le_bytes());
        out.extend(2u64.to_le_bytes());
        key(&mut out, "a");
        key(&mut out, "bc");
        out
    }

    #[test]
    fn header_keys_are_read() {
        let h = parse_header(&tiny_gguf("llama")).unwrap();
        assert!(h.complete);
        assert_eq!(h.str("general.architecture"), Some("llama"));
        assert_eq!(h.metadata["llama.context_length"], serde_json::json!(2048));
        assert_eq!(
            h.metadata["tokenizer.ggml.tokens"]["len"],
            serde_json::json!(2)
        );
    }

    #[test]
    fn truncation_and_garbage_are_told_apart() {
        let bytes = tiny_gguf("llama");
        let cut = parse_header(&bytes[..bytes.len() - 3]).unwrap();
        assert!(!cut.complete);
        assert_eq!(cut.str("general.architecture"), Some("llama"));
        assert!(parse_header(b"GGML....").is_err());
        let mut bad_version = bytes.clone();
        bad_version[4] = 99;
        assert!(parse_header(&bad_version)
            .unwrap_err()
            .message
            .contains("version 99"));
    }
}
