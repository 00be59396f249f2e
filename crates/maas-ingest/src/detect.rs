//! Telling what a set of model files is: format from magic bytes and layout, task from the
//! GGUF architecture or `config.json`. Reads only headers and small JSON files.

use std::io::Read;
use std::path::Path;

use maas_core::{Error, Format, Result, Task};
use serde_json::{json, Value};

use crate::gguf;
use crate::{Staged, StagedFile};

/// What the files are.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    /// Weight format.
    pub format: Format,
    /// What the model does.
    pub task: Task,
    /// Facts worth keeping with the version (architecture, sizes, file list).
    pub metadata: Value,
}

/// GGUF architectures that produce embeddings rather than text.
const EMBEDDING_ARCHS: &[&str] = &[
    "bert",
    "nomic-bert",
    "nomic-bert-moe",
    "jina-bert-v2",
    "modern-bert",
    "neo-bert",
    "t5encoder",
];

const HEADER_BYTES: u64 = 16 << 20;
const MAX_JSON_BYTES: u64 = 4 << 20;

fn read_prefix(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::internal(format!("cannot open {}: {e}", path.display())))?;
    let mut out = Vec::new();
    file.take(max)
        .read_to_end(&mut out)
        .map_err(|e| Error::internal(format!("cannot read {}: {e}", path.display())))?;
    Ok(out)
}

fn read_json(file: &StagedFile) -> Result<Value> {
    if file.size_bytes > MAX_JSON_BYTES {
        return Err(Error::invalid(format!(
            "{} is too large to be a config file",
            file.path
        )));
    }
    let bytes = read_prefix(&file.local, MAX_JSON_BYTES)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("{} is not valid JSON: {e}", file.path)))
}

fn find<'a>(staged: &'a Staged, path: &str) -> Option<&'a StagedFile> {
    staged.files.iter().find(|f| f.path == path)
}

fn detect_format(staged: &Staged) -> Result<Format> {
    let names: Vec<&str> = staged.files.iter().map(|f| f.path.as_str()).collect();
    if staged.files.iter().any(|f| f.path.ends_with(".gguf")) {
        return Ok(Format::Gguf);
    }
    if staged.files.iter().any(|f| f.path.ends_with(".onnx")) {
        return Ok(Format::Onnx);
    }
    if find(staged, "config.json").is_some() {
        if staged
            .files
            .iter()
            .any(|f| f.path.ends_with(".safetensors"))
        {
            return Ok(Format::Safetensors);
        }
        if find(staged, "model.bin").is_some() {
            return Ok(Format::Ctranslate2);
        }
    }
    if let [single] = staged.files.as_slice() {
        if read_prefix(&single.local, 4)? == b"GGUF" {
            return Ok(Format::Gguf);
        }
    }
    Err(Error::invalid(format!(
        "cannot tell the format of {}: expected a .gguf or .onnx file, or a folder with config.json and weights; pass --format to say",
        names.join(", ")
    )))
}

fn single_of<'a>(staged: &'a Staged, ext: &str, format: Format) -> Result<&'a StagedFile> {
    let matching: Vec<&StagedFile> = staged
        .files
        .iter()
        .filter(|f| f.path.ends_with(ext))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] if staged.files.len() == 1 => Ok(&staged.files[0]),
        [] => Err(Error::invalid(format!(
            "no {ext} file found for format {format}"
        ))),
        _ => Err(Error::invalid(format!(
            "{} {ext} files found; a {format} version holds exactly one",
            matching.len()
        ))),
    }
}

/// Checks the files against `format` and returns what the headers say.
fn inspect(staged: &Staged, format: Format) -> Result<(Value, Option<Task>)> {
    match format {
        Format::Gguf => {
            let file = single_of(staged, ".gguf", format)?;
            let header = gguf::parse_header(&read_prefix(&file.local, HEADER_BYTES)?)
                .map_err(|e| Error::invalid(format!("{}: {}", file.path, e.message)))?;
            let arch = header.str("general.architecture").map(str::to_owned);
            let keep = |k: &str| {
                k.starts_with("general.")
                    || arch
                        .as_deref()
                        .is_some_and(|a| k.starts_with(&format!("{a}.")))
                    || k == "tokenizer.ggml.model"
                    || k == "tokenizer.chat_template"
                    || k == "tokenizer.ggml.tokens"
            };
            let kept: serde_json::Map<String, Value> = header
                .metadata
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let task = arch.as_deref().map(|a| {
                if EMBEDDING_ARCHS.contains(&a) {
                    Task::Embedding
                } else {
                    Task::TextGeneration
                }
            });
            Ok((
                json!({"gguf": {"version": header.version, "tensor_count": header.tensor_count, "architecture": arch, "metadata": kept}}),
                task,
            ))
        }
        Format::Onnx => {
            let file = single_of(staged, ".onnx", format)?;
            // An ONNX ModelProto starts with field 1 (ir_version) as a varint: tag byte 0x08.
            let head = read_prefix(&file.local, 2)?;
            if head.first() != Some(&0x08) {
                return Err(Error::invalid(format!(
                    "{} is not an ONNX model (it does not start with an ir_version field)",
                    file.path
                )));
            }
            // An ONNX graph does not say what it is for; see `default_task`.
            Ok((json!({"onnx": {"file": file.path}}), None))
        }
        Format::Safetensors => {
            let config = find(staged, "config.json")
                .ok_or_else(|| Error::invalid("a safetensors folder needs config.json"))?;
            let config = read_json(config)?;
            let mut tensors = 0usize;
            for f in staged
                .files
                .iter()
                .filter(|f| f.path.ends_with(".safetensors"))
            {
                tensors += safetensors_tensor_count(f)?;
            }
            let task = task_from_config(staged, &config);
            Ok((
                json!({"config": config_summary(&config), "safetensors": {"tensors": tensors}}),
                task,
            ))
        }
        Format::Ctranslate2 => {
            let config = find(staged, "config.json")
                .ok_or_else(|| Error::invalid("a CTranslate2 folder needs config.json"))?;
            find(staged, "model.bin")
                .ok_or_else(|| Error::invalid("a CTranslate2 folder needs model.bin"))?;
            let config = read_json(config)?;
            // CTranslate2's Whisper exports carry decoding settings instead of architectures.
            let whisper =
                config.get("suppress_ids").is_some() || config.get("alignment_heads").is_some();
            let task = if whisper {
                Some(Task::SpeechToText)
            } else {
                task_from_config(staged, &config)
            };
            Ok((json!({"config": config_summary(&config)}), task))
        }
        Format::Maas => Err(Error::invalid(
            "models in maas's own format are registered by training runs (maas train), not pulled",
        )),
    }
}

/// Reads a safetensors header (u64 length + JSON) and counts its tensors.
fn safetensors_tensor_count(file: &StagedFile) -> Result<usize> {
    let bad = |why: &str| {
        Error::invalid(format!(
            "{} is not a valid safetensors file: {why}",
            file.path
        ))
    };
    let head = read_prefix(&file.local, 8)?;
    let len = u64::from_le_bytes(
        head.as_slice()
            .try_into()
            .map_err(|_| bad("shorter than 8 bytes"))?,
    );
    if len > 100 << 20 || len + 8 > file.size_bytes {
        return Err(bad("the header length is out of range"));
    }
    let bytes = read_prefix(&file.local, 8 + len)?;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..]).map_err(|e| bad(&e.to_string()))?;
    Ok(header.keys().filter(|k| *k != "__metadata__").count())
}

fn config_summary(config: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in [
        "model_type",
        "architectures",
        "hidden_size",
        "num_hidden_layers",
        "max_position_embeddings",
        "vocab_size",
    ] {
        if let Some(v) = config.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

fn task_from_config(staged: &Staged, config: &Value) -> Option<Task> {
    let archs: Vec<&str> = config
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let any = |suffix: &str| archs.iter().any(|a| a.ends_with(suffix));
    if model_type == "whisper" || archs.iter().any(|a| a.starts_with("Whisper")) {
        return Some(Task::SpeechToText);
    }
    let sentence_transformer = [
        "1_Pooling/config.json",
        "modules.json",
        "sentence_bert_config.json",
    ]
    .iter()
    .any(|p| find(staged, p).is_some());
    if sentence_transformer {
        return Some(Task::Embedding);
    }
    if any("ForCausalLM") || any("LMHeadModel") {
        return Some(Task::TextGeneration);
    }
    if any("ForSequenceClassification") {
        return Some(Task::TextClassification);
    }
    if any("ForImageClassification") {
        return Some(Task::ImageClassification);
    }
    if any("Model")
        && [
            "bert",
            "roberta",
            "xlm-roberta",
            "distilbert",
            "mpnet",
            "nomic_bert",
        ]
        .contains(&model_type)
    {
        return Some(Task::Embedding);
    }
    None
}

/// The weakest guess, used only when neither the files, the caller nor an existing model say.
fn default_task(format: Format) -> Option<Task> {
    (format == Format::Onnx).then_some(Task::Tensor)
}

/// Detects format and task, honouring overrides; `fallback_task` (the existing model's) is
/// used when the files do not say. The files must already be staged locally.
pub fn detect(
    staged: &Staged,
    format: Option<Format>,
    task: Option<Task>,
    fallback_task: Option<Task>,
) -> Result<Detected> {
    let format = match format {
        Some(f) => f,
        None => detect_format(staged)?,
    };
    let (mut metadata, detected_task) = inspect(staged, format)?;
    let task = task
        .or(detected_task)
        .or(fallback_task)
        .or(default_task(format))
        .ok_or_else(|| {
            Error::invalid(format!(
                "cannot tell the task of this {format} model; pass --task (e.g. --task embedding)"
            ))
        })?;
    if let Value::Object(m) = &mut metadata {
        let files: Vec<Value> = staged
            .files
            .iter()
            .map(|f| json!({"path": f.path, "size_bytes": f.size_bytes}))
            .collect();
        m.insert("files".to_owned(), Value::Array(files));
    }
    Ok(Detected {
        format,
        task,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use maas_core::Digest;

    fn stage(dir: &Path, files: &[(&str, &[u8])]) -> Staged {
        let files = files
            .iter()
            .map(|(p, bytes)| {
                let local = dir.join(p);
                std::fs::create_dir_all(local.parent().unwrap()).unwrap();
                std::fs::write(&local, bytes).unwrap();
                StagedFile {
                    path: p.to_string(),
                    local,
                    digest: Digest::from_bytes([0; 32]),
                    size_bytes: bytes.len() as u64,
                }
            })
            .collect::<Vec<_>>();
        Staged {
            is_dir: files.len() > 1,
            files,
            origin: Value::Null,
        }
    }

    fn safetensors(n: usize) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        for i in 0..n {
            header.insert(
                format!("t{i}"),
                json!({"dtype": "F32", "shape": [1], "data_offsets": [i * 4, i * 4 + 4]}),
            );
        }
        let h = serde_json::to_vec(&header).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(vec![0u8; n * 4]);
        out
    }

    #[test]
    fn gguf_llama_is_text_generation_and_bert_is_embedding() {
        let dir = tempfile::tempdir().unwrap();
        let d = detect(
            &stage(dir.path(), &[("m.gguf", &gguf::tests::tiny_gguf("llama"))]),
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!((d.format, d.task), (Format::Gguf, Task::TextGeneration));
        assert_eq!(d.metadata["gguf"]["architecture"], "llama");
        let d = detect(
            &stage(dir.path(), &[("e.gguf", &gguf::tests::tiny_gguf("bert"))]),
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(d.task, Task::Embedding);
    }

    #[test]
    fn sentence_transformer_folder_is_an_embedding_model() {
        let dir = tempfile::tempdir().unwrap();
        let config = br#"{"model_type":"bert","architectures":["BertModel"],"hidden_size":384}"#;
        let st = safetensors(3);
        let staged = stage(
            dir.path(),
            &[
                ("config.json", config),
                ("model.safetensors", &st),
                ("1_Pooling/config.json", b"{}"),
            ],
        );
        let d = detect(&staged, None, None, None).unwrap();
        assert_eq!((d.format, d.task), (Format::Safetensors, Task::Embedding));
        assert_eq!(d.metadata["safetensors"]["tensors"], 3);
    }

    #[test]
    fn corrupt_files_are_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = detect(
            &stage(dir.path(), &[("m.gguf", b"GGUX0000")]),
            None,
            None,
            None,
        )
        .unwrap_err();
        assert!(
            err.message.contains("m.gguf") && err.message.contains("magic"),
            "{}",
            err.message
        );
        let err = detect(
            &stage(dir.path(), &[("x.onnx", b"garbage")]),
            None,
            None,
            None,
        )
        .unwrap_err();
        assert!(err.message.contains("not an ONNX model"), "{}", err.message);
        let err = detect(
            &stage(dir.path(), &[("weights.dat", b"1234")]),
            None,
            None,
            None,
        )
        .unwrap_err();
        assert!(err.message.contains("--format"), "{}", err.message);
        let err = detect(
            &stage(
                dir.path(),
                &[
                    ("config.json", b"{nope"),
                    ("model.safetensors", &safetensors(1)),
                ],
            ),
            None,
            None,
            None,
        )
        .unwrap_err();
        assert!(
            err.message.contains("config.json is not valid JSON"),
            "{}",
            err.message
        );
    }

    #[test]
    fn overrides_win_and_unknown_tasks_ask_for_one() {
        let dir = tempfile::tempdir().unwrap();
        let staged = stage(
            dir.path(),
            &[
                ("config.json", br#"{"model_type":"custom"}"#),
                ("model.safetensors", &safetensors(1)),
            ],
        );
        let err = detect(&staged, None, None, None).unwrap_err();
        assert!(err.message.contains("--task"), "{}", err.message);
        let d = detect(&staged, None, Some(Task::TabularRegression), None).unwrap();
        assert_eq!(d.task, Task::TabularRegression);
    }
}
