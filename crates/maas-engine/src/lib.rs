//! The boundary between the server and compute.
//!
//! The server speaks capabilities (generate, embed, infer, transcribe, classify) and never a
//! backend type. Backends (llama.cpp now; tract and candle later) live in their own crates and
//! implement [`Engine`]; a loaded model hands out the capabilities it has. Everything here is
//! synchronous on purpose: compute runs on backend threads, never on the async runtime, and the
//! server bridges with channels.
#![deny(missing_docs)]

pub mod batch;
mod tensor;
mod text;
pub mod vision;

pub use tensor::{element_count, f16, Tensor, TensorData, TensorModel};
pub use text::{Piece, TextAssembler};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use maas_core::{Format, Task};

/// Something a loaded model can do, as the server asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Text generation (chat, completions).
    Generate,
    /// Embeddings.
    Embed,
    /// Tensor in, tensor out (Open Inference Protocol).
    Infer,
    /// Speech to text.
    Transcribe,
    /// Labels with scores.
    Classify,
}

impl Capability {
    /// The capability a task is served through.
    pub fn for_task(task: Task) -> Capability {
        match task {
            Task::TextGeneration => Capability::Generate,
            Task::Embedding => Capability::Embed,
            Task::SpeechToText => Capability::Transcribe,
            Task::ImageClassification | Task::TextClassification | Task::TabularClassification => {
                Capability::Classify
            }
            Task::TabularRegression | Task::Tensor => Capability::Infer,
        }
    }
}

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The request cannot be served as asked (too long for the context, empty input …).
    InvalidRequest(String),
    /// The model could not be loaded (corrupt or unsupported file).
    Load(String),
    /// The backend failed while running.
    Backend(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::InvalidRequest(m) | EngineError::Load(m) | EngineError::Backend(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for EngineError {}

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The weights: a file, or a folder for folder artifacts.
    pub path: PathBuf,
    /// Their format.
    pub format: Format,
    /// What the model is for.
    pub task: Task,
    /// Compute threads.
    pub threads: usize,
    /// How requests are grouped into batches.
    pub batching: Batching,
}

/// How a loaded model shares its compute between concurrent requests.
///
/// Generation uses continuous batching: up to `sequences` requests decode together, each step
/// one token for each, and a new request joins between steps. Embeddings use dynamic batching:
/// requests that arrive within `max_wait` of the first run together, up to `max_inputs` inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Generation requests decoded together (each gets its own context of the model's length).
    pub sequences: usize,
    /// Most inputs in one embedding batch; for tensor models, most rows in one run.
    pub max_inputs: usize,
    /// Longest an embedding or tensor request waits for others to join it.
    pub max_wait: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            sequences: 4,
            max_inputs: 64,
            max_wait: Duration::from_millis(2),
        }
    }
}

/// Sampling and stopping settings of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling mass (1 = off).
    pub top_p: f32,
    /// Top-k (0 = off).
    pub top_k: i32,
    /// Random seed for sampling.
    pub seed: u32,
    /// Strings that end the generation; they are not part of the output.
    pub stop: Vec<String>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn, or a stop string was produced.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The caller stopped listening.
    Cancelled,
}

/// Totals of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateSummary {
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

/// Receives one generation's output. Called on the backend's own thread, so it must not block:
/// hand the text on (an unbounded channel, a buffer) and return.
pub trait GenerationSink: Send {
    /// A piece of text; returning false stops the generation (the listener has gone).
    fn text(&mut self, piece: &str) -> bool;
    /// The end: totals, or why it failed. Called exactly once, last.
    fn done(self: Box<Self>, result: Result<GenerateSummary, EngineError>);
}

/// A model that continues text.
pub trait TextGenerator: Send + Sync {
    /// Tokens the context holds (prompt + completion).
    fn context_length(&self) -> u32;
    /// The chat template (Jinja) shipped with the model, if any.
    fn chat_template(&self) -> Option<String>;
    /// The text of the beginning- and end-of-sequence tokens, for templates.
    fn special_tokens(&self) -> (String, String);
    /// How many tokens `text` is.
    fn count_tokens(&self, text: &str) -> Result<u32, EngineError>;
    /// Starts generating from `prompt`; the output goes to `sink` as it is produced.
    /// Returns at once.
    fn start(&self, prompt: &str, params: &GenerateParams, sink: Box<dyn GenerationSink>);

    /// Generates from `prompt`, handing each piece of text to `on_text` on the calling thread;
    /// `on_text` returns false to stop early. Blocks until done.
    fn generate(
        &self,
        prompt: &str,
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenerateSummary, EngineError> {
        let (events, inbox) = std::sync::mpsc::channel();
        self.start(prompt, params, Box::new(ChannelSink(events)));
        for event in inbox {
            match event {
                Ok(text) => {
                    if !on_text(&text) {
                        // Dropping the receiver makes the sink refuse the next piece: it stops.
                        return Ok(GenerateSummary {
                            finish_reason: FinishReason::Cancelled,
                            prompt_tokens: 0,
                            completion_tokens: 0,
                        });
                    }
                }
                Err(result) => return result,
            }
        }
        Err(EngineError::Backend(
            "the generation ended without a result".to_owned(),
        ))
    }
}

type SinkEvent = Result<String, Result<GenerateSummary, EngineError>>;

/// Forwards a generation to a blocking caller: text as `Ok`, the end as `Err`.
struct ChannelSink(std::sync::mpsc::Sender<SinkEvent>);

impl GenerationSink for ChannelSink {
    fn text(&mut self, piece: &str) -> bool {
        self.0.send(Ok(piece.to_owned())).is_ok()
    }

    fn done(self: Box<Self>, result: Result<GenerateSummary, EngineError>) {
        let _ = self.0.send(Err(result));
    }
}

/// One named tensor of a model's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name in the graph.
    pub name: String,
    /// Open Inference Protocol datatype (`FP32`, `INT64`, `BYTES` …).
    pub datatype: String,
    /// Dimensions; -1 where the size is dynamic (usually the batch).
    pub shape: Vec<i64>,
}

/// What a tensor model takes and returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Inputs, in graph order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in graph order.
    pub outputs: Vec<TensorSpec>,
    /// Why the backend's optimiser refused the graph, if it did (the plain plan still runs).
    pub optimizer_error: Option<String>,
}

/// Vectors for a list of inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read, after truncation, summed over the inputs.
    pub prompt_tokens: u32,
}

/// A model that turns text into vectors.
pub trait Embedder: Send + Sync {
    /// Length of each vector.
    fn dimensions(&self) -> usize;
    /// Tokens per input; longer inputs are truncated to this, as sentence-transformers does.
    fn max_tokens(&self) -> u32;
    /// Embeds `inputs`. Blocks until done; concurrent callers are batched together.
    fn embed(&self, inputs: &[String]) -> Result<Embeddings, EngineError>;
}

/// A loaded model and the capabilities it offers.
#[derive(Clone, Default)]
pub struct LoadedModel {
    /// Present when the model generates text.
    pub generator: Option<Arc<dyn TextGenerator>>,
    /// Present when the model embeds text.
    pub embedder: Option<Arc<dyn Embedder>>,
    /// Present when the model maps tensors to tensors.
    pub tensor: Option<Arc<dyn TensorModel>>,
    /// Bytes the model holds in memory (for the cache's budget).
    pub memory_bytes: u64,
}

impl LoadedModel {
    /// The capabilities present.
    pub fn capabilities(&self) -> Vec<Capability> {
        let mut out = vec![];
        if self.generator.is_some() {
            out.push(Capability::Generate);
        }
        if self.embedder.is_some() {
            out.push(Capability::Embed);
        }
        if self.tensor.is_some() {
            out.push(Capability::Infer);
        }
        out
    }
}

/// A compute backend.
pub trait Engine: Send + Sync {
    /// A short name for logs and metrics (`llama.cpp`, `tract`, `candle`).
    fn name(&self) -> &'static str;
    /// Whether this backend can serve `task` from weights in `format`.
    fn supports(&self, format: Format, task: Task) -> bool;
    /// Loads the weights. Slow: call from a blocking thread.
    fn load(&self, spec: &LoadSpec) -> Result<LoadedModel, EngineError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_map_to_the_capability_that_serves_them() {
        assert_eq!(Capability::for_task(Task::Embedding), Capability::Embed);
        assert_eq!(
            Capability::for_task(Task::TextGeneration),
            Capability::Generate
        );
        assert_eq!(
            Capability::for_task(Task::ImageClassification),
            Capability::Classify
        );
    }
}
