//! Converting a Hugging Face BERT folder (safetensors + tokenizer + sentence-transformers
//! config) into one GGUF file that llama.cpp serves as an embedding model.
//!
//! What carries over: the encoder weights under llama.cpp's tensor names; the WordPiece
//! vocabulary in llama.cpp's spelling (word-initial pieces get the `▁` phantom space,
//! continuation pieces lose their `##`); the normaliser's lowercasing and accent stripping;
//! the special tokens; the pooling mode of `1_Pooling/config.json`. Two facts llama.cpp has no
//! key for are kept under `maas.*`: the sentence-transformers truncation length and whether the
//! pipeline L2-normalises its output.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use maas_core::{Digest, Error, Precision, Result};
use serde::Deserialize;
use serde_json::{json, Value as Json};
use sha2::{Digest as _, Sha256};

use crate::gguf_write::{self, TensorInfo, TensorType, Value};
use crate::{Staged, StagedFile};

/// GGUF metadata key: tokens per input the model was trained to read (we truncate to it).
pub const KEY_MAX_SEQ_LEN: &str = "maas.embedding.max_seq_length";
/// GGUF metadata key: whether embeddings are L2-normalised after pooling.
pub const KEY_NORMALIZE: &str = "maas.embedding.normalize";

/// llama.cpp's pooling codes (`enum llama_pooling_type`).
const POOLING_MEAN: u32 = 1;
const POOLING_CLS: u32 = 2;
const POOLING_LAST: u32 = 3;

/// llama.cpp's token attribute codes (`enum llama_token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_UNUSED: i32 = 5;

const MAX_JSON_BYTES: u64 = 64 << 20;

/// Whether `detect`'s metadata describes a folder this module converts.
pub fn is_convertible_bert(metadata: &Json) -> bool {
    metadata["config"]["model_type"] == "bert"
}

#[derive(Deserialize)]
struct BertConfig {
    hidden_size: u64,
    intermediate_size: u64,
    num_hidden_layers: u64,
    num_attention_heads: u64,
    max_position_embeddings: u64,
    vocab_size: u64,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: u64,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default, rename = "_name_or_path")]
    name_or_path: Option<String>,
}

fn default_type_vocab() -> u64 {
    2
}

fn default_eps() -> f64 {
    1e-12
}

fn file<'a>(staged: &'a Staged, path: &str) -> Option<&'a StagedFile> {
    staged.files.iter().find(|f| f.path == path)
}

fn read_json(staged: &Staged, path: &str) -> Result<Option<Json>> {
    let Some(f) = file(staged, path) else {
        return Ok(None);
    };
    if f.size_bytes > MAX_JSON_BYTES {
        return Err(Error::invalid(format!("{path} is too large")));
    }
    let bytes =
        std::fs::read(&f.local).map_err(|e| Error::internal(format!("cannot read {path}: {e}")))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::invalid(format!("{path} is not valid JSON: {e}")))
}

/// The tokenizer, as llama.cpp's WPM tokenizer wants it.
struct Vocab {
    tokens: Vec<String>,
    types: Vec<i32>,
    lowercase: bool,
    strip_accents: bool,
    cls: u32,
    sep: u32,
    unk: u32,
    pad: u32,
    mask: Option<u32>,
}

/// `[CLS]` style names stay as they are; `##piece` continues a word; anything else starts one.
fn llama_spelling(token: &str) -> String {
    if token.starts_with('[') && token.ends_with(']') {
        token.to_owned()
    } else if let Some(rest) = token.strip_prefix("##") {
        rest.to_owned()
    } else {
        format!("\u{2581}{token}")
    }
}

/// A special token's text from `tokenizer_config.json`, which spells it as a string or as
/// `{"content": ...}`.
fn special_name(config: &Option<Json>, key: &str, default: &str) -> String {
    let v = config.as_ref().map(|c| &c[key]);
    v.and_then(|v| v.as_str().or_else(|| v["content"].as_str()))
        .unwrap_or(default)
        .to_owned()
}

fn load_vocab(staged: &Staged, vocab_size: u64) -> Result<Vocab> {
    let tokenizer_config = read_json(staged, "tokenizer_config.json")?;
    let mut by_id: Vec<Option<String>> = vec![None; vocab_size as usize];
    let mut specials = std::collections::HashSet::new();
    let (lowercase, strip_accents) = if let Some(tok) = read_json(staged, "tokenizer.json")? {
        let model = &tok["model"];
        if model["type"] != "WordPiece" {
            return Err(Error::invalid(format!(
                "tokenizer.json uses a {} tokenizer; maas converts BERT models with WordPiece",
                model["type"]
            )));
        }
        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| Error::invalid("tokenizer.json has no model.vocab"))?;
        for (token, id) in vocab {
            let id = id
                .as_u64()
                .filter(|id| *id < vocab_size)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "tokenizer.json gives '{token}' the id {id}, outside the model's vocabulary of {vocab_size}"
                    ))
                })?;
            by_id[id as usize] = Some(token.clone());
        }
        for added in tok["added_tokens"].as_array().into_iter().flatten() {
            if let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) {
                if id < vocab_size {
                    by_id[id as usize] = Some(content.to_owned());
                    if added["special"] == true {
                        specials.insert(id);
                    }
                }
            }
        }
        let normalizer = &tok["normalizer"];
        let lowercase = normalizer["lowercase"].as_bool().unwrap_or(false);
        // BertNormalizer strips accents when asked, or (when unset) whenever it lowercases.
        let strip = normalizer["strip_accents"].as_bool().unwrap_or(lowercase);
        (lowercase, strip)
    } else if let Some(f) = file(staged, "vocab.txt") {
        let text = std::fs::read_to_string(&f.local)
            .map_err(|e| Error::invalid(format!("vocab.txt is not readable text: {e}")))?;
        for (id, token) in text.lines().enumerate() {
            if id as u64 >= vocab_size {
                return Err(Error::invalid(format!(
                    "vocab.txt has more tokens than the model's vocabulary of {vocab_size}"
                )));
            }
            by_id[id] = Some(token.to_owned());
        }
        let lowercase = tokenizer_config
            .as_ref()
            .and_then(|c| c["do_lower_case"].as_bool())
            .unwrap_or(true);
        (lowercase, lowercase)
    } else {
        return Err(Error::invalid(
            "the BERT folder has neither tokenizer.json nor vocab.txt",
        ));
    };

    let mut tokens = Vec::with_capacity(by_id.len());
    let mut types = Vec::with_capacity(by_id.len());
    for (id, token) in by_id.into_iter().enumerate() {
        match token {
            Some(t) => {
                types.push(if specials.contains(&(id as u64)) {
                    TOKEN_CONTROL
                } else {
                    TOKEN_NORMAL
                });
                tokens.push(llama_spelling(&t));
            }
            // Embedding rows no token uses: give them names nothing can match.
            None => {
                types.push(TOKEN_UNUSED);
                tokens.push(format!("[maas-unused-{id}]"));
            }
        }
    }
    let find =
        |name: &str| -> Option<u32> { tokens.iter().position(|t| t == name).map(|i| i as u32) };
    let need = |key: &str, default: &str| -> Result<u32> {
        let name = special_name(&tokenizer_config, key, default);
        find(&name)
            .ok_or_else(|| Error::invalid(format!("the vocabulary has no {key} token '{name}'")))
    };
    let cls = need("cls_token", "[CLS]")?;
    let sep = need("sep_token", "[SEP]")?;
    let unk = need("unk_token", "[UNK]")?;
    let pad = need("pad_token", "[PAD]")?;
    let mask = find(&special_name(&tokenizer_config, "mask_token", "[MASK]"));
    for id in [cls, sep, unk, pad].into_iter().chain(mask) {
        types[id as usize] = TOKEN_CONTROL;
    }
    Ok(Vocab {
        tokens,
        types,
        lowercase,
        strip_accents,
        cls,
        sep,
        unk,
        pad,
        mask,
    })
}

/// Pooling code, max sequence length and normalisation from the sentence-transformers files.
fn pipeline(staged: &Staged, config: &BertConfig) -> Result<(u32, u64, bool)> {
    let modules = read_json(staged, "modules.json")?;
    let module_of = |suffix: &str| -> Option<String> {
        modules
            .as_ref()?
            .as_array()?
            .iter()
            .find(|m| m["type"].as_str().is_some_and(|t| t.ends_with(suffix)))
            .and_then(|m| m["path"].as_str().map(str::to_owned))
    };
    let pooling_dir = module_of(".Pooling").unwrap_or_else(|| "1_Pooling".to_owned());
    let pooling = match read_json(staged, &format!("{pooling_dir}/config.json"))? {
        None => POOLING_MEAN,
        Some(p) => {
            let on = |k: &str| p[k] == true;
            if on("pooling_mode_max_tokens") || on("pooling_mode_mean_sqrt_len_tokens") {
                return Err(Error::invalid(format!(
                    "{pooling_dir}/config.json asks for max or sqrt-length pooling, which llama.cpp cannot do; mean, cls and last-token pooling are supported"
                )));
            }
            if on("pooling_mode_cls_token") {
                POOLING_CLS
            } else if on("pooling_mode_lasttoken") {
                POOLING_LAST
            } else {
                POOLING_MEAN
            }
        }
    };
    let max_seq = read_json(staged, "sentence_bert_config.json")?
        .and_then(|c| c["max_seq_length"].as_u64())
        .unwrap_or(config.max_position_embeddings)
        .min(config.max_position_embeddings);
    // Without a sentence-transformers pipeline, normalise: cosine similarity is what
    // embedding clients compute, and OpenAI's own embeddings are unit length.
    let normalize = match &modules {
        Some(_) => module_of(".Normalize").is_some(),
        None => true,
    };
    Ok((pooling, max_seq, normalize))
}

/// The llama.cpp name of a Hugging Face BERT tensor; `Ok(None)` for tensors it does not use.
fn llama_name(hf: &str) -> Result<Option<String>> {
    let name = hf.strip_prefix("bert.").unwrap_or(hf);
    let name = name
        .replace("LayerNorm.gamma", "LayerNorm.weight")
        .replace("LayerNorm.beta", "LayerNorm.bias");
    if name == "embeddings.position_ids" || name.starts_with("pooler.") || name.starts_with("cls.")
    {
        return Ok(None);
    }
    let fixed = [
        ("embeddings.word_embeddings.", "token_embd."),
        ("embeddings.position_embeddings.", "position_embd."),
        ("embeddings.token_type_embeddings.", "token_types."),
        ("embeddings.LayerNorm.", "token_embd_norm."),
    ];
    for (from, to) in fixed {
        if let Some(rest) = name.strip_prefix(from) {
            return Ok(Some(format!("{to}{rest}")));
        }
    }
    if let Some(rest) = name.strip_prefix("encoder.layer.") {
        if let Some((layer, part)) = rest.split_once('.') {
            if layer.parse::<u32>().is_ok() {
                let parts = [
                    ("attention.self.query.", "attn_q."),
                    ("attention.self.key.", "attn_k."),
                    ("attention.self.value.", "attn_v."),
                    ("attention.output.dense.", "attn_output."),
                    ("attention.output.LayerNorm.", "attn_output_norm."),
                    ("intermediate.dense.", "ffn_up."),
                    ("output.dense.", "ffn_down."),
                    ("output.LayerNorm.", "layer_output_norm."),
                ];
                for (from, to) in parts {
                    if let Some(kind) = part.strip_prefix(from) {
                        return Ok(Some(format!("blk.{layer}.{to}{kind}")));
                    }
                }
            }
        }
    }
    Err(Error::invalid(format!(
        "unexpected tensor '{hf}': maas converts plain BERT encoders"
    )))
}

#[derive(Deserialize)]
struct SafeTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// A tensor to copy: where its bytes are, how to convert them, and what to write.
struct Source {
    file: usize,
    offset: u64,
    len: u64,
    dtype: String,
    info: TensorInfo,
}

fn read_safetensors_header(f: &StagedFile) -> Result<(u64, BTreeMap<String, SafeTensor>)> {
    let bad = |why: String| Error::invalid(format!("{} is not valid safetensors: {why}", f.path));
    let mut file = File::open(&f.local)
        .map_err(|e| Error::internal(format!("cannot open {}: {e}", f.path)))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| bad("shorter than its header".into()))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_JSON_BYTES || len + 8 > f.size_bytes {
        return Err(bad(format!("header length {len} is implausible")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|_| bad("the header is cut short".into()))?;
    let mut map: BTreeMap<String, Json> =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    map.remove("__metadata__");
    let mut tensors = BTreeMap::new();
    for (name, v) in map {
        let t: SafeTensor =
            serde_json::from_value(v).map_err(|e| bad(format!("tensor '{name}': {e}")))?;
        let [begin, end] = t.data_offsets;
        if begin > end || 8 + len + end > f.size_bytes {
            return Err(bad(format!("tensor '{name}' lies outside the file")));
        }
        tensors.insert(name, t);
    }
    Ok((8 + len, tensors))
}

fn element_size(dtype: &str) -> Option<u64> {
    match dtype {
        "F32" => Some(4),
        "F16" | "BF16" => Some(2),
        _ => None,
    }
}

/// The numbers in `bytes` of `dtype` (F32, BF16, or else F16).
fn values<'a>(dtype: &str, bytes: &'a [u8]) -> Box<dyn Iterator<Item = f32> + 'a> {
    match dtype {
        "F32" => Box::new(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        "BF16" => Box::new(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        _ => Box::new(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
    }
}

/// Converts `bytes` of `dtype` to the tensor's output type (rounding to nearest, ties to even).
fn convert_data(dtype: &str, out: TensorType, bytes: &[u8]) -> Vec<u8> {
    let same = matches!(
        (dtype, out),
        ("F32", TensorType::F32) | ("F16", TensorType::F16) | ("BF16", TensorType::BF16)
    );
    if same {
        return bytes.to_vec();
    }
    let values = values(dtype, bytes);
    match out {
        TensorType::F32 => values.flat_map(f32::to_le_bytes).collect(),
        TensorType::F16 => values
            .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        TensorType::BF16 => values
            .flat_map(|v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

/// The precision of the layer matrices of a file whose weights are stored as `dtype`, when the
/// caller asks for none: half-precision files keep what they have (F16 or BF16: exact); F32
/// files get the half-precision type this CPU multiplies fastest ([`fast_half_precision`]).
/// Embedding tables, norms and biases are not the products' weights and stay as they are (F32,
/// or F16 tables).
fn default_precision(dtype: &str) -> Precision {
    match dtype {
        "F16" => Precision::F16,
        "BF16" => Precision::BF16,
        _ => fast_half_precision(),
    }
}

/// The 16-bit weight type llama.cpp multiplies fastest on this CPU, measured on MiniLM
/// (embeddings per second, 2 threads): bfloat16 on AMD CPUs with AVX512-BF16 (Zen 4 and
/// later run its dot products on two pipes: 1.6x f32); IEEE half elsewhere: on AVX2 (Zen 3)
/// f16 1.33x f32 and 1.2x bf16, while Intel runs bf16 dot products on one port (bf16 0.88x
/// f32) and f16 through the f32 FMAs. f16 is also the closer of the two to the original
/// numbers (10 mantissa bits to bfloat16's 7).
pub fn fast_half_precision() -> Precision {
    #[cfg(target_arch = "x86_64")]
    {
        let vendor = std::arch::x86_64::__cpuid(0);
        // "AuthenticAMD", as cpuid spells it across ebx, edx, ecx.
        let amd = [vendor.ebx, vendor.edx, vendor.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163];
        if amd && std::is_x86_feature_detected!("avx512bf16") {
            return Precision::BF16;
        }
    }
    Precision::F16
}

/// The first value of `bytes` (of `dtype`) that IEEE half precision cannot hold (beyond
/// ±65504, which rounds to infinity).
fn beyond_f16(dtype: &str, bytes: &[u8]) -> Option<f32> {
    if dtype == "F16" {
        return None;
    }
    values(dtype, bytes).find(|v| v.is_finite() && half::f16::from_f32(*v).is_infinite())
}

fn tensor_type(p: Precision) -> TensorType {
    match p {
        Precision::F32 => TensorType::F32,
        Precision::F16 => TensorType::F16,
        Precision::BF16 => TensorType::BF16,
    }
}

/// llama.cpp's `general.file_type` for a file whose matrices are of precision `p`.
fn file_type(p: Precision) -> u32 {
    match p {
        Precision::F32 => 0,
        Precision::F16 => 1,
        Precision::BF16 => 32,
    }
}

/// Whether the llama.cpp tensor `name` of `rank` dimensions is a weight matrix of a layer.
fn is_layer_matrix(name: &str, rank: usize) -> bool {
    rank == 2 && name.starts_with("blk.") && name.ends_with(".weight")
}

/// The outcome of a conversion.
#[derive(Debug, Clone)]
pub struct Converted {
    /// Facts for the version's metadata.
    pub facts: Json,
    /// sha256 of the written file.
    pub digest: Digest,
    /// Its size.
    pub size_bytes: u64,
}

/// Hashes and counts what passes through on its way to the file.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Converts the staged BERT folder into a GGUF file at `out`. `out` is written in place:
/// callers put it in a staging folder.
pub fn bert_to_gguf(
    staged: &Staged,
    out: &Path,
    precision: Option<Precision>,
) -> Result<Converted> {
    let config_json = read_json(staged, "config.json")?
        .ok_or_else(|| Error::invalid("the BERT folder has no config.json"))?;
    let config: BertConfig = serde_json::from_value(config_json)
        .map_err(|e| Error::invalid(format!("config.json is not a BERT config: {e}")))?;
    if let Some(act) = config.hidden_act.as_deref().filter(|a| *a != "gelu") {
        return Err(Error::invalid(format!(
            "config.json asks for the '{act}' activation; llama.cpp's BERT uses gelu"
        )));
    }
    if let Some(pos) = config
        .position_embedding_type
        .as_deref()
        .filter(|p| *p != "absolute")
    {
        return Err(Error::invalid(format!(
            "config.json asks for '{pos}' position embeddings; llama.cpp's BERT uses absolute ones"
        )));
    }
    let vocab = load_vocab(staged, config.vocab_size)?;
    let (pooling, max_seq, normalize) = pipeline(staged, &config)?;

    let weight_files: Vec<&StagedFile> = staged
        .files
        .iter()
        .filter(|f| !f.path.contains('/') && f.path.ends_with(".safetensors"))
        .collect();
    if weight_files.is_empty() {
        return Err(Error::invalid(
            "the BERT folder has no .safetensors weights",
        ));
    }
    let mut sources = Vec::new();
    let mut matrices: Option<Precision> = None;
    for (index, f) in weight_files.iter().enumerate() {
        let (data_start, tensors) = read_safetensors_header(f)?;
        for (hf, t) in tensors {
            let Some(name) = llama_name(&hf)? else {
                continue;
            };
            let size = element_size(&t.dtype).ok_or_else(|| {
                Error::invalid(format!(
                    "tensor '{hf}' is {}; maas converts F32, F16 and BF16",
                    t.dtype
                ))
            })?;
            let [begin, end] = t.data_offsets;
            if t.shape.iter().product::<u64>() * size != end - begin {
                return Err(Error::invalid(format!(
                    "{}: tensor '{hf}' has {} bytes for shape {:?}",
                    f.path,
                    end - begin,
                    t.shape
                )));
            }
            // Layer matrices get the precision asked for; embedding tables keep half
            // precision if they have it; vectors (norms, biases) must be F32 for ggml.
            let ty = if is_layer_matrix(&name, t.shape.len()) {
                let p = precision.unwrap_or_else(|| default_precision(&t.dtype));
                matrices = Some(p);
                tensor_type(p)
            } else if t.dtype == "F16" && t.shape.len() == 2 {
                TensorType::F16
            } else {
                TensorType::F32
            };
            sources.push(Source {
                file: index,
                offset: data_start + begin,
                len: end - begin,
                dtype: t.dtype,
                info: TensorInfo {
                    name,
                    shape: t.shape,
                    ty,
                },
            });
        }
    }
    sources.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    let names: std::collections::HashSet<&str> =
        sources.iter().map(|s| s.info.name.as_str()).collect();
    let mut missing: Vec<String> = [
        "token_embd.weight",
        "position_embd.weight",
        "token_embd_norm.weight",
        "token_embd_norm.bias",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for layer in 0..config.num_hidden_layers {
        for part in [
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "attn_output_norm",
            "ffn_up",
            "ffn_down",
            "layer_output_norm",
        ] {
            missing.push(format!("blk.{layer}.{part}.weight"));
            missing.push(format!("blk.{layer}.{part}.bias"));
        }
    }
    missing.retain(|n| !names.contains(n.as_str()));
    if let Some(first) = missing.first() {
        return Err(Error::invalid(format!(
            "the weights lack {} tensor(s) a {}-layer BERT needs (first: {first})",
            missing.len(),
            config.num_hidden_layers
        )));
    }

    let mut inputs: Vec<File> = weight_files
        .iter()
        .map(|f| {
            File::open(&f.local)
                .map_err(|e| Error::internal(format!("cannot open {}: {e}", f.path)))
        })
        .collect::<Result<_>>()?;
    let mut read = |s: &Source| -> Result<Vec<u8>> {
        let input = &mut inputs[s.file];
        let mut bytes = vec![0u8; s.len as usize];
        input
            .seek(SeekFrom::Start(s.offset))
            .and_then(|_| input.read_exact(&mut bytes))
            .map_err(|e| {
                Error::invalid(format!(
                    "cannot read tensor {} from {}: {e}",
                    s.info.name, weight_files[s.file].path
                ))
            })?;
        Ok(bytes)
    };
    // IEEE half stops at ±65504. Asked for, a matrix beyond it is refused; chosen by default,
    // the matrices fall back to bfloat16 (the range of f32). Files already in F16 fit.
    let narrowed = |s: &Source| s.info.ty == TensorType::F16 && s.dtype != "F16";
    let mut beyond = None;
    for s in sources.iter().filter(|s| narrowed(s)) {
        if let Some(v) = beyond_f16(&s.dtype, &read(s)?) {
            beyond = Some((s.info.name.clone(), v));
            break;
        }
    }
    if let Some((name, v)) = beyond {
        if precision.is_some() {
            return Err(Error::invalid(format!(
                "tensor '{name}' holds {v}, beyond f16's range (±65504): convert to bf16 or f32"
            )));
        }
        for s in sources.iter_mut().filter(|s| narrowed(s)) {
            s.info.ty = TensorType::BF16;
        }
        matrices = Some(Precision::BF16);
    }

    let matrices = matrices.unwrap_or(Precision::F32);
    let mut metadata: Vec<(String, Value)> = vec![];
    let mut kv = |k: &str, v: Value| metadata.push((k.to_owned(), v));
    kv("general.architecture", Value::Str("bert".into()));
    kv(
        "general.name",
        Value::Str(config.name_or_path.clone().unwrap_or_else(|| "bert".into())),
    );
    kv("general.file_type", Value::U32(file_type(matrices)));
    let n = |v: u64| Value::U32(u32::try_from(v).unwrap_or(u32::MAX));
    kv("bert.context_length", n(config.max_position_embeddings));
    kv("bert.embedding_length", n(config.hidden_size));
    kv("bert.feed_forward_length", n(config.intermediate_size));
    kv("bert.block_count", n(config.num_hidden_layers));
    kv("bert.attention.head_count", n(config.num_attention_heads));
    kv(
        "bert.attention.layer_norm_epsilon",
        Value::F32(config.layer_norm_eps as f32),
    );
    kv("bert.attention.causal", Value::Bool(false));
    kv("bert.pooling_type", Value::U32(pooling));
    kv("tokenizer.ggml.model", Value::Str("bert".into()));
    kv("tokenizer.ggml.tokens", Value::Strs(vocab.tokens));
    kv("tokenizer.ggml.token_type", Value::I32s(vocab.types));
    kv("tokenizer.ggml.token_type_count", n(config.type_vocab_size));
    kv("tokenizer.ggml.bos_token_id", Value::U32(vocab.cls));
    kv("tokenizer.ggml.seperator_token_id", Value::U32(vocab.sep));
    kv("tokenizer.ggml.unknown_token_id", Value::U32(vocab.unk));
    kv("tokenizer.ggml.padding_token_id", Value::U32(vocab.pad));
    if let Some(mask) = vocab.mask {
        kv("tokenizer.ggml.mask_token_id", Value::U32(mask));
    }
    kv(
        "tokenizer.ggml.normalizer.lowercase",
        Value::Bool(vocab.lowercase),
    );
    kv(
        "tokenizer.ggml.normalizer.strip_accents",
        Value::Bool(vocab.strip_accents),
    );
    kv(KEY_MAX_SEQ_LEN, n(max_seq));
    kv(KEY_NORMALIZE, Value::Bool(normalize));

    let infos: Vec<TensorInfo> = sources.iter().map(|s| s.info.clone()).collect();
    let header = gguf_write::header(&metadata, &infos);
    let io = |e: std::io::Error| Error::internal(format!("cannot write {}: {e}", out.display()));
    let mut writer = Hashing {
        inner: BufWriter::new(File::create(out).map_err(io)?),
        hasher: Sha256::new(),
        written: 0,
    };
    writer.write_all(&header).map_err(io)?;
    for s in &sources {
        let data = convert_data(&s.dtype, s.info.ty, &read(s)?);
        gguf_write::write_tensor_data(&mut writer, &data).map_err(io)?;
    }
    let Hashing {
        inner,
        hasher,
        written,
    } = writer;
    inner
        .into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    let facts = json!({
        "from": "safetensors",
        "architecture": "bert",
        "tensors": sources.len(),
        "pooling": match pooling { POOLING_CLS => "cls", POOLING_LAST => "last", _ => "mean" },
        "max_seq_length": max_seq,
        "normalize": normalize,
        "lowercase": vocab.lowercase,
        "weights": matrices.to_string(),
    });
    Ok(Converted {
        facts,
        digest: Digest::from_bytes(hasher.finalize().into()),
        size_bytes: written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_cpp() {
        let n = |s: &str| llama_name(s).unwrap();
        assert_eq!(
            n("embeddings.word_embeddings.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(
            n("bert.encoder.layer.3.attention.output.LayerNorm.gamma").as_deref(),
            Some("blk.3.attn_output_norm.weight")
        );
        assert_eq!(
            n("encoder.layer.0.output.dense.bias").as_deref(),
            Some("blk.0.ffn_down.bias")
        );
        assert_eq!(n("pooler.dense.weight"), None);
        assert!(llama_name("decoder.weight").is_err());
    }

    #[test]
    fn wordpiece_spelling() {
        assert_eq!(llama_spelling("[CLS]"), "[CLS]");
        assert_eq!(llama_spelling("##ing"), "ing");
        assert_eq!(llama_spelling("walk"), "\u{2581}walk");
    }

    #[test]
    fn half_precision_converts() {
        let one = half::f16::from_f32(1.5).to_bits().to_le_bytes();
        let out = convert_data("F16", TensorType::F32, &one);
        assert_eq!(f32::from_le_bytes(out.try_into().unwrap()), 1.5);
        let bf = ((2.0f32.to_bits() >> 16) as u16).to_le_bytes();
        let out = convert_data("BF16", TensorType::F32, &bf);
        assert_eq!(f32::from_le_bytes(out.try_into().unwrap()), 2.0);
    }

    #[test]
    fn f32_rounds_to_the_nearest_bfloat16() {
        let bf16 = |x: f32| {
            let out = convert_data("F32", TensorType::BF16, &x.to_le_bytes());
            f32::from_bits(u32::from(u16::from_le_bytes([out[0], out[1]])) << 16)
        };
        // bfloat16 keeps 8 significant bits: 1 + 2^-7 is exact, 1 + 2^-9 is not.
        assert_eq!(bf16(1.0 + 2f32.powi(-7)), 1.0 + 2f32.powi(-7));
        assert_eq!(bf16(1.0 + 2f32.powi(-9)), 1.0);
        // Above half a step it rounds up, not down (truncation would give 1.0).
        assert_eq!(
            bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-12)),
            1.0 + 2f32.powi(-7)
        );
        // An exact tie goes to the even neighbour.
        assert_eq!(bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(bf16(-3.0), -3.0);
    }

    #[test]
    fn values_beyond_half_precision_are_found() {
        let f32s = |xs: &[f32]| xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(beyond_f16("F32", &f32s(&[1.0, -65504.0, 65519.0])), None);
        assert_eq!(
            beyond_f16("F32", &f32s(&[1.0, -70000.0, 1e6])),
            Some(-70000.0)
        );
        // Infinities and NaN were never finite numbers: nothing is lost.
        assert_eq!(beyond_f16("F32", &f32s(&[f32::INFINITY, f32::NAN])), None);
        let big = ((1e5f32.to_bits() >> 16) as u16).to_le_bytes();
        assert!(beyond_f16("BF16", &big).is_some());
    }

    #[test]
    fn only_layer_matrices_take_the_precision() {
        assert!(is_layer_matrix("blk.0.ffn_up.weight", 2));
        assert!(!is_layer_matrix("blk.0.ffn_up.bias", 1));
        assert!(!is_layer_matrix("token_embd.weight", 2));
        assert_eq!(default_precision("F32"), fast_half_precision());
        assert_eq!(default_precision("F16"), Precision::F16);
        assert_eq!(default_precision("BF16"), Precision::BF16);
    }
}
