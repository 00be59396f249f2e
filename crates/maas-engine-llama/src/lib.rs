//! The llama.cpp backend, through the `llama-cpp-2` crate (which vendors and builds llama.cpp).
//!
//! We measured llama.cpp decoding SmolLM2-135M at about twice candle's speed on 2 cores, so
//! GGUF generation goes through it. Each loaded model gets one worker thread that owns its
//! llama.cpp context (contexts are not thread-safe and borrow the model, so they cannot move);
//! requests reach it over a channel and text comes back piece by piece. Today the worker runs
//! one sequence at a time; continuous batching over several sequence ids in the same context
//! is the next step and changes only the worker loop.
#![deny(missing_docs)]

use std::num::NonZeroU32;
use std::sync::{mpsc, Arc, OnceLock};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use maas_core::{Format, Task};
use maas_engine::{
    Engine, EngineError, FinishReason, GenerateParams, GenerateSummary, LoadSpec, LoadedModel,
    Piece, TextAssembler, TextGenerator,
};

/// Tokens per decode call while reading a prompt.
const BATCH_TOKENS: usize = 512;

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
        format == Format::Gguf && task == Task::TextGeneration
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
        let n_ctx = model.n_ctx_train().min(self.max_context).max(64);
        let memory_bytes = model.size();
        let generator = LlamaGenerator::start(model, n_ctx, spec.threads)?;
        Ok(LoadedModel {
            generator: Some(Arc::new(generator)),
            memory_bytes,
        })
    }
}

enum Event {
    Text(String),
    Done(Result<GenerateSummary, EngineError>),
}

struct Request {
    prompt: String,
    params: GenerateParams,
    events: mpsc::SyncSender<Event>,
}

/// A GGUF model served by one worker thread.
struct LlamaGenerator {
    model: Arc<LlamaModel>,
    n_ctx: u32,
    requests: mpsc::Sender<Request>,
}

impl LlamaGenerator {
    fn start(model: Arc<LlamaModel>, n_ctx: u32, threads: usize) -> Result<Self, EngineError> {
        let (requests, inbox) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let worker_model = model.clone();
        std::thread::Builder::new()
            .name("llama-worker".to_owned())
            .spawn(move || worker(&worker_model, n_ctx, threads, &inbox, &ready_tx))
            .map_err(|e| EngineError::Backend(format!("cannot start a llama.cpp worker: {e}")))?;
        ready_rx.recv().map_err(|_| {
            EngineError::Backend("the llama.cpp worker stopped while starting".to_owned())
        })??;
        Ok(Self {
            model,
            n_ctx,
            requests,
        })
    }
}

fn worker(
    model: &LlamaModel,
    n_ctx: u32,
    threads: usize,
    inbox: &mpsc::Receiver<Request>,
    ready: &mpsc::Sender<Result<(), EngineError>>,
) {
    let threads = i32::try_from(threads.max(1)).unwrap_or(1);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(BATCH_TOKENS as u32)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let context = backend().and_then(|b| {
        model
            .new_context(b, params)
            .map_err(|e| EngineError::Load(format!("llama.cpp cannot create a context: {e}")))
    });
    let mut context = match context {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut batch = LlamaBatch::new(BATCH_TOKENS, 1);
    // The loop ends when the generator (the only sender) is dropped: the model was unloaded.
    for request in inbox {
        let result = run(model, &mut context, &mut batch, n_ctx, &request);
        let _ = request.events.send(Event::Done(result));
    }
}

fn backend_err(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Backend(format!("llama.cpp {what} failed: {e}"))
}

fn sampler(params: &GenerateParams) -> LlamaSampler {
    if params.temperature <= 0.0 {
        return LlamaSampler::greedy();
    }
    let mut chain = vec![];
    if params.top_k > 0 {
        chain.push(LlamaSampler::top_k(params.top_k));
    }
    if params.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(params.top_p, 1));
    }
    chain.push(LlamaSampler::temp(params.temperature));
    chain.push(LlamaSampler::dist(params.seed));
    LlamaSampler::chain_simple(chain)
}

fn run(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    n_ctx: u32,
    request: &Request,
) -> Result<GenerateSummary, EngineError> {
    let params = &request.params;
    let vocab = model.vocab();
    ctx.clear_kv_cache();
    let prompt = vocab.tokenize(request.prompt.as_bytes(), true, true);
    if prompt.is_empty() {
        return Err(EngineError::InvalidRequest(
            "the prompt is empty".to_owned(),
        ));
    }
    let prompt_tokens = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
    if u64::from(prompt_tokens) + u64::from(params.max_tokens) > u64::from(n_ctx) {
        return Err(EngineError::InvalidRequest(format!(
            "the prompt ({prompt_tokens} tokens) plus max_tokens ({}) exceeds the model's context of {n_ctx} tokens",
            params.max_tokens
        )));
    }
    for (chunk_index, chunk) in prompt.chunks(BATCH_TOKENS).enumerate() {
        batch.clear();
        for (i, token) in chunk.iter().enumerate() {
            let pos = chunk_index * BATCH_TOKENS + i;
            let last = pos + 1 == prompt.len();
            batch
                .add(*token, i32::try_from(pos).unwrap_or(i32::MAX), &[0], last)
                .map_err(|e| backend_err("batching", e))?;
        }
        ctx.decode(batch)
            .map_err(|e| backend_err("prompt decode", e))?;
    }

    let mut sampler = sampler(params);
    let mut text = TextAssembler::new(&params.stop);
    let mut completion_tokens = 0u32;
    let mut pos = prompt_tokens;
    let send = |t: String| t.is_empty() || request.events.send(Event::Text(t)).is_ok();
    let finish_reason = loop {
        if completion_tokens >= params.max_tokens {
            break FinishReason::Length;
        }
        let token = sampler.sample(ctx, batch.n_tokens() - 1);
        if vocab.is_eog(token) {
            break FinishReason::Stop;
        }
        completion_tokens += 1;
        let bytes = vocab.token_to_piece(token, false, None);
        match text.push(&bytes) {
            Piece::Text(t) => {
                if !send(t) {
                    break FinishReason::Cancelled;
                }
            }
            Piece::Stopped(t) => {
                send(t);
                return Ok(GenerateSummary {
                    finish_reason: FinishReason::Stop,
                    prompt_tokens,
                    completion_tokens,
                });
            }
        }
        batch.clear();
        batch
            .add(token, i32::try_from(pos).unwrap_or(i32::MAX), &[0], true)
            .map_err(|e| backend_err("batching", e))?;
        pos += 1;
        ctx.decode(batch).map_err(|e| backend_err("decode", e))?;
    };
    if finish_reason != FinishReason::Cancelled {
        send(text.finish());
    }
    Ok(GenerateSummary {
        finish_reason,
        prompt_tokens,
        completion_tokens,
    })
}

impl TextGenerator for LlamaGenerator {
    fn context_length(&self) -> u32 {
        self.n_ctx
    }

    fn chat_template(&self) -> Option<String> {
        self.model
            .meta_val_str("tokenizer.chat_template")
            .ok()
            .filter(|t| !t.is_empty())
    }

    fn special_tokens(&self) -> (String, String) {
        let vocab = self.model.vocab();
        let text = |t| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
        (text(vocab.bos()), text(vocab.eos()))
    }

    fn count_tokens(&self, text: &str) -> Result<u32, EngineError> {
        let n = self
            .model
            .vocab()
            .tokenize(text.as_bytes(), false, true)
            .len();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    fn generate(
        &self,
        prompt: &str,
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenerateSummary, EngineError> {
        // A small buffer: if the listener is slow, the worker waits rather than racing ahead.
        let (events, inbox) = mpsc::sync_channel(64);
        let request = Request {
            prompt: prompt.to_owned(),
            params: params.clone(),
            events,
        };
        self.requests
            .send(request)
            .map_err(|_| EngineError::Backend("the llama.cpp worker has stopped".to_owned()))?;
        for event in inbox {
            match event {
                Event::Text(t) => {
                    if !on_text(&t) {
                        // Dropping the receiver makes the worker's next send fail: it stops.
                        return Ok(GenerateSummary {
                            finish_reason: FinishReason::Cancelled,
                            prompt_tokens: 0,
                            completion_tokens: 0,
                        });
                    }
                }
                Event::Done(result) => return result,
            }
        }
        Err(EngineError::Backend(
            "the llama.cpp worker stopped mid-generation".to_owned(),
        ))
    }
}
