//! The llama.cpp backend, through the `llama-cpp-2` crate (which vendors and builds llama.cpp).
//!
//! We measured llama.cpp decoding SmolLM2-135M at about twice candle's speed on 2 cores, so
//! GGUF generation goes through it. Each loaded model gets one worker thread that owns its
//! llama.cpp context (contexts are not thread-safe and borrow the model, so they cannot move);
//! requests reach it over a channel and text comes back piece by piece. Embedding models
//! (BERT-style encoders, including those maas converts from safetensors at pull time) get an
//! encoder worker that batches concurrent requests.
#![deny(missing_docs)]

mod embed;
mod generate;

use std::sync::{mpsc, Arc, OnceLock};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use maas_core::{Format, Task};
use maas_engine::{Engine, EngineError, LoadSpec, LoadedModel};

use crate::embed::LlamaEmbedder;
use crate::generate::LlamaGenerator;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// llama.cpp's global state, initialised once per process.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            // llama.cpp logs every tensor on load; our own tracing says what matters.
            backend.void_logs();
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| EngineError::Backend(format!("llama.cpp failed to start: {e}")))
}

/// The llama.cpp engine.
#[derive(Debug, Clone)]
pub struct LlamaEngine {
    /// Upper bound on the context length of a loaded model (the model's own is used if smaller).
    pub max_context: u32,
}

impl Default for LlamaEngine {
    fn default() -> Self {
        Self { max_context: 4096 }
    }
}

impl Engine for LlamaEngine {
    fn name(&self) -> &'static str {
        "llama.cpp"
    }

    fn supports(&self, format: Format, task: Task) -> bool {
        format == Format::Gguf && matches!(task, Task::TextGeneration | Task::Embedding)
    }

    fn load(&self, spec: &LoadSpec) -> Result<LoadedModel, EngineError> {
        if !self.supports(spec.format, spec.task) {
            return Err(EngineError::Load(format!(
                "llama.cpp cannot serve a {} model stored as {}",
                spec.task, spec.format
            )));
        }
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, &spec.path, &LlamaModelParams::default())
            .map_err(|e| {
            EngineError::Load(format!(
                "llama.cpp cannot load {}: {e}",
                spec.path.display()
            ))
        })?;
        let model = Arc::new(model);
        let memory_bytes = model.size();
        if spec.task == Task::Embedding {
            let embedder = LlamaEmbedder::start(model, spec.threads, spec.batching)?;
            return Ok(LoadedModel {
                embedder: Some(Arc::new(embedder)),
                memory_bytes,
                ..LoadedModel::default()
            });
        }
        let n_ctx = model.n_ctx_train().min(self.max_context).max(64);
        let generator = LlamaGenerator::start(model, n_ctx, spec.batching.sequences, spec.threads)?;
        Ok(LoadedModel {
            generator: Some(Arc::new(generator)),
            memory_bytes,
            ..LoadedModel::default()
        })
    }
}

/// A context on `model` with `params`, computing on `threads` threads.
fn open_context(
    model: &LlamaModel,
    params: llama_cpp_2::context::params::LlamaContextParams,
    threads: usize,
) -> Result<llama_cpp_2::context::LlamaContext<'_>, EngineError> {
    let threads = i32::try_from(threads.max(1)).unwrap_or(1);
    let params = params.with_n_threads(threads).with_n_threads_batch(threads);
    model
        .new_context(backend()?, params)
        .map_err(|e| EngineError::Load(format!("llama.cpp cannot create a context: {e}")))
}

fn backend_err(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Backend(format!("llama.cpp {what} failed: {e}"))
}

/// Tells the thread that started a worker whether its context could be created.
struct Ready(mpsc::Sender<Result<(), EngineError>>);

impl Ready {
    /// Reports the outcome of opening the worker's context; the value on success.
    fn open<T>(self, opened: Result<T, EngineError>) -> Option<T> {
        match opened {
            Ok(v) => {
                let _ = self.0.send(Ok(()));
                Some(v)
            }
            Err(e) => {
                let _ = self.0.send(Err(e));
                None
            }
        }
    }
}

/// Runs `body` on a new thread that owns `model`. llama.cpp contexts borrow their model and
/// cannot move between threads, so each worker creates its own and reports through [`Ready`];
/// this waits for that report.
fn spawn_worker(
    name: &str,
    model: Arc<LlamaModel>,
    body: impl FnOnce(&LlamaModel, Ready) + Send + 'static,
) -> Result<(), EngineError> {
    let (ready, started) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || body(&model, Ready(ready)))
        .map_err(|e| EngineError::Backend(format!("cannot start a llama.cpp worker: {e}")))?;
    started.recv().map_err(|_| {
        EngineError::Backend("the llama.cpp worker stopped while starting".to_owned())
    })?
}
