//! Text generation on llama.cpp with continuous batching.
//!
//! One worker thread per model owns the context; output goes straight from it to each request's
//! [`GenerationSink`], with no thread in between. Up to `sequences` requests run at once, each
//! under its own sequence id with its own slice of the KV cache (llama.cpp's non-unified
//! cache: one stream per sequence, so a request's attention never sees, or is reordered by,
//! another's cells). Every step builds one batch: the last sampled token of each running
//! sequence plus chunks of prompts still being read; one decode serves them all. New requests
//! join between steps, finished ones leave and free their slot. Prompt and `max_tokens` are
//! checked against the per-sequence context before a request is admitted, so the cache never
//! runs out mid-generation.

use std::num::NonZeroU32;
use std::sync::{mpsc, Arc};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use maas_engine::{
    EngineError, FinishReason, GenerateParams, GenerateSummary, GenerationSink, Piece,
    TextAssembler, TextGenerator,
};

use crate::{backend_err, open_context, spawn_worker};

/// Tokens per decode call (prompt chunks and running sequences together).
const BATCH_TOKENS: usize = 512;

struct Request {
    prompt: String,
    params: GenerateParams,
    sink: Box<dyn GenerationSink>,
}

/// A GGUF model served by one worker thread.
pub(crate) struct LlamaGenerator {
    model: Arc<LlamaModel>,
    n_ctx: u32,
    requests: mpsc::Sender<Request>,
}

impl LlamaGenerator {
    /// Starts the worker: `n_ctx` tokens per sequence, `sequences` sequences at once.
    pub(crate) fn start(
        model: Arc<LlamaModel>,
        n_ctx: u32,
        sequences: usize,
        threads: usize,
    ) -> Result<Self, EngineError> {
        let (requests, inbox) = mpsc::channel::<Request>();
        let sequences = sequences.clamp(1, 64);
        spawn_worker("llama-generate", model.clone(), move |model, ready| {
            if let Some(context) = ready.open(new_context(model, n_ctx, sequences, threads)) {
                Worker::new(model, context, n_ctx, sequences).run(&inbox);
            }
        })?;
        Ok(Self {
            model,
            n_ctx,
            requests,
        })
    }
}

fn new_context(
    model: &LlamaModel,
    n_ctx: u32,
    sequences: usize,
    threads: usize,
) -> Result<LlamaContext<'_>, EngineError> {
    let total = n_ctx.saturating_mul(sequences as u32);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(total))
        .with_n_batch(BATCH_TOKENS as u32)
        .with_n_seq_max(sequences as u32)
        .with_kv_unified(false);
    open_context(model, params, threads)
}

/// How a sequence picks its next token.
enum Sampler {
    /// Temperature 0: the most likely token, the first of equals (as llama.cpp's greedy
    /// sampler), read straight from the logits, without building llama.cpp's candidate array
    /// of the whole vocabulary (49k entries for SmolLM2) every step.
    Greedy,
    Chain(LlamaSampler),
}

impl Sampler {
    fn new(params: &GenerateParams) -> Self {
        if params.temperature <= 0.0 {
            Self::Greedy
        } else {
            Self::Chain(chain(params))
        }
    }

    /// The token for the logits at `at` in the batch just decoded.
    fn sample(&mut self, ctx: &LlamaContext<'_>, at: i32) -> LlamaToken {
        match self {
            Self::Greedy => LlamaToken(argmax(ctx.get_logits_ith(at))),
            Self::Chain(sampler) => sampler.sample(ctx, at),
        }
    }
}

/// Index of the largest value, the first one on ties; NaN never wins.
fn argmax(values: &[f32]) -> i32 {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &v) in values.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    i32::try_from(best.0).unwrap_or(0)
}

fn chain(params: &GenerateParams) -> LlamaSampler {
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

/// One running request.
struct Sequence {
    id: i32,
    request: Request,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens already decoded.
    fed: usize,
    /// The token sampled last, to be decoded next step.
    next: Option<LlamaToken>,
    /// Position of the next token to decode.
    pos: i32,
    sampler: Sampler,
    text: TextAssembler,
    completion_tokens: u32,
    /// Where this sequence's logits are in the batch just decoded.
    logits_at: Option<i32>,
    finished: Option<FinishReason>,
}

impl Sequence {
    fn summary(&self, finish_reason: FinishReason) -> GenerateSummary {
        GenerateSummary {
            finish_reason,
            prompt_tokens: u32::try_from(self.prompt.len()).unwrap_or(u32::MAX),
            completion_tokens: self.completion_tokens,
        }
    }

    /// Sends text; false when the caller has gone.
    fn send(&mut self, text: &str) -> bool {
        text.is_empty() || self.request.sink.text(text)
    }
}

struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'m>,
    n_ctx: u32,
    sequences: usize,
    free: Vec<i32>,
    running: Vec<Sequence>,
}

impl<'m> Worker<'m> {
    fn new(model: &'m LlamaModel, ctx: LlamaContext<'m>, n_ctx: u32, sequences: usize) -> Self {
        Self {
            model,
            ctx,
            batch: LlamaBatch::new(BATCH_TOKENS, 1),
            n_ctx,
            sequences,
            free: (0..sequences as i32).rev().collect(),
            running: vec![],
        }
    }

    fn run(mut self, inbox: &mpsc::Receiver<Request>) {
        loop {
            // Idle: wait for work. The loop ends when the generator (the only sender) is
            // dropped, i.e. the model was unloaded, and nothing is left running.
            if self.running.is_empty() {
                match inbox.recv() {
                    Ok(r) => self.admit(r),
                    Err(_) => return,
                }
            }
            while !self.free.is_empty() {
                match inbox.try_recv() {
                    Ok(r) => self.admit(r),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.step() {
                // A failed decode leaves the cache in an unknown state: fail everyone running.
                for s in self.running.drain(..) {
                    s.request.sink.done(Err(e.clone()));
                }
                self.ctx.clear_kv_cache();
                self.free = (0..self.sequences as i32).rev().collect();
            }
            self.retire();
        }
    }

    /// Checks a request and gives it a sequence id, or answers it with an error.
    fn admit(&mut self, request: Request) {
        let prompt = self
            .model
            .vocab()
            .tokenize(request.prompt.as_bytes(), true, true);
        let refuse = |request: Request, message: String| {
            request.sink.done(Err(EngineError::InvalidRequest(message)));
        };
        if prompt.is_empty() {
            return refuse(request, "the prompt is empty".to_owned());
        }
        let needed = prompt.len() as u64 + u64::from(request.params.max_tokens);
        if needed > u64::from(self.n_ctx) {
            let message = format!(
                "the prompt ({} tokens) plus max_tokens ({}) exceeds the model's context of {} tokens",
                prompt.len(),
                request.params.max_tokens,
                self.n_ctx
            );
            return refuse(request, message);
        }
        let Some(id) = self.free.pop() else {
            return refuse(request, "no free sequence slot".to_owned());
        };
        let at = self.running.partition_point(|s| s.id < id);
        self.running.insert(
            at,
            Sequence {
                id,
                sampler: Sampler::new(&request.params),
                text: TextAssembler::new(&request.params.stop),
                request,
                prompt,
                fed: 0,
                next: None,
                pos: 0,
                completion_tokens: 0,
                logits_at: None,
                finished: None,
            },
        );
    }

    /// One decode for every running sequence, then one sampled token for each that is ready.
    ///
    /// With one KV stream per sequence llama.cpp splits a batch into runs of consecutive
    /// sequence ids, so tokens go in by id (`running` is kept sorted, and the lowest free id
    /// is handed out first) to keep the whole step in one pass.
    fn step(&mut self) -> Result<(), EngineError> {
        self.batch.clear();
        // Sequences already generating need one token each; prompts share what is left.
        let generating = self.running.iter().filter(|s| s.next.is_some()).count();
        let mut room = BATCH_TOKENS - generating;
        for s in &mut self.running {
            s.logits_at = None;
            if let Some(token) = s.next.take() {
                s.logits_at = Some(self.batch.n_tokens());
                self.batch
                    .add(token, s.pos, &[s.id], true)
                    .map_err(|e| backend_err("batching", e))?;
                s.pos += 1;
                continue;
            }
            let take = (s.prompt.len() - s.fed).min(room);
            for i in 0..take {
                let last = s.fed + i + 1 == s.prompt.len();
                if last {
                    s.logits_at = Some(self.batch.n_tokens());
                }
                self.batch
                    .add(s.prompt[s.fed + i], s.pos, &[s.id], last)
                    .map_err(|e| backend_err("batching", e))?;
                s.pos += 1;
            }
            s.fed += take;
            room -= take;
        }
        if self.batch.n_tokens() == 0 {
            return Ok(());
        }
        self.ctx
            .decode(&mut self.batch)
            .map_err(|e| backend_err("decode", e))?;

        let vocab = self.model.vocab();
        for s in &mut self.running {
            let Some(at) = s.logits_at else {
                continue;
            };
            let token = s.sampler.sample(&self.ctx, at);
            if vocab.is_eog(token) {
                s.finished = Some(FinishReason::Stop);
                continue;
            }
            s.completion_tokens += 1;
            let bytes = vocab.token_to_piece(token, false, None);
            match s.text.push(&bytes) {
                Piece::Text(t) => {
                    if !s.send(&t) {
                        s.finished = Some(FinishReason::Cancelled);
                        continue;
                    }
                }
                Piece::Stopped(t) => {
                    s.send(&t);
                    // The stop string ended it: nothing held back is sent.
                    s.text = TextAssembler::new(&[]);
                    s.finished = Some(FinishReason::Stop);
                    continue;
                }
            }
            if s.completion_tokens >= s.request.params.max_tokens {
                s.finished = Some(FinishReason::Length);
            } else {
                s.next = Some(token);
            }
        }
        Ok(())
    }

    /// Answers finished sequences and frees their slots.
    fn retire(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            let Some(reason) = self.running[i].finished else {
                i += 1;
                continue;
            };
            let mut s = self.running.remove(i);
            if reason != FinishReason::Cancelled {
                let rest = s.text.finish();
                s.send(&rest);
            }
            let _ = self.ctx.clear_kv_cache_seq(Some(s.id as u32), None, None);
            let summary = s.summary(reason);
            s.request.sink.done(Ok(summary));
            self.free.push(s.id);
            // Highest first, so `pop` hands out the lowest free id.
            self.free.sort_unstable_by(|a, b| b.cmp(a));
        }
    }
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

    fn start(&self, prompt: &str, params: &GenerateParams, sink: Box<dyn GenerationSink>) {
        let request = Request {
            prompt: prompt.to_owned(),
            params: params.clone(),
            sink,
        };
        if let Err(mpsc::SendError(request)) = self.requests.send(request) {
            request.sink.done(Err(EngineError::Backend(
                "the llama.cpp worker has stopped".to_owned(),
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_the_first_of_equal_largest_values() {
        assert_eq!(argmax(&[0.5, 2.0, -1.0, 2.0]), 1);
        assert_eq!(argmax(&[-3.0, -2.0, -2.5]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN, 0.5]), 1);
        assert_eq!(argmax(&[7.0]), 0);
    }
}
