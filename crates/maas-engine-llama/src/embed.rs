//! Embeddings on llama.cpp with dynamic batching.
//!
//! Callers tokenize on their own thread (the model's vocabulary is shared and read-only) and
//! hand token lists to one worker that owns the encoder context. The worker takes the first
//! request, waits up to `max_wait` for more (until `max_inputs` inputs, or a pass's worth of
//! tokens, are in hand), then packs the sequences into llama.cpp passes of about a hundred
//! tokens, one sequence id each, and reads one pooled vector per sequence.

use std::num::NonZeroU32;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use maas_engine::{Batching, Embedder, Embeddings, EngineError};

use crate::{backend_err, open_context, spawn_worker, Ready};

/// Inputs are packed into encoder passes of about this many tokens. Attention in a pass spans
/// every token in it (masked between sequences), so its cost grows with the square of the
/// pass: on MiniLM, passes of ~128-256 tokens embed about 30% faster than passes of 1024.
/// An input longer than this runs in a pass of its own.
const TARGET_PASS_TOKENS: usize = 128;
/// The longest input read, whatever the model allows.
const MAX_INPUT_TOKENS: u32 = 2048;
/// Sequences per encoder pass.
const BATCH_SEQS: usize = 64;

const KEY_MAX_SEQ_LEN: &str = "maas.embedding.max_seq_length";
const KEY_NORMALIZE: &str = "maas.embedding.normalize";

struct Request {
    inputs: Vec<Vec<LlamaToken>>,
    reply: mpsc::SyncSender<Result<Vec<Vec<f32>>, EngineError>>,
}

/// A GGUF encoder served by one worker thread.
pub(crate) struct LlamaEmbedder {
    model: Arc<LlamaModel>,
    dimensions: usize,
    max_tokens: u32,
    requests: mpsc::Sender<Request>,
}

impl LlamaEmbedder {
    pub(crate) fn start(
        model: Arc<LlamaModel>,
        threads: usize,
        batching: Batching,
    ) -> Result<Self, EngineError> {
        let dimensions = usize::try_from(model.n_embd()).unwrap_or(0);
        let trained = model.n_ctx_train();
        let max_tokens = model
            .meta_val_str(KEY_MAX_SEQ_LEN)
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(trained)
            .min(trained)
            .min(MAX_INPUT_TOKENS);
        if max_tokens < 2 || dimensions == 0 {
            return Err(EngineError::Load(
                "the model reports no usable context or embedding size".to_owned(),
            ));
        }
        // GGUFs made elsewhere have no such key; sentence-transformers models normalise.
        let normalize = model
            .meta_val_str(KEY_NORMALIZE)
            .map_or(true, |v| v == "true");
        let (requests, inbox) = mpsc::channel::<Request>();
        let pass = Pass {
            tokens: (max_tokens as usize).max(TARGET_PASS_TOKENS),
            target: TARGET_PASS_TOKENS,
            normalize,
        };
        spawn_worker("llama-embed", model.clone(), move |model, ready| {
            worker(model, threads, batching, pass, &inbox, ready);
        })?;
        Ok(Self {
            model,
            dimensions,
            max_tokens,
            requests,
        })
    }

    /// `[CLS] text [SEP]`, cut to the model's length the way sentence-transformers cuts it:
    /// the text is shortened and the closing separator kept.
    fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(text.as_bytes(), true, false);
        let max = self.max_tokens as usize;
        if tokens.len() > max {
            let last = tokens[tokens.len() - 1];
            tokens.truncate(max - 1);
            tokens.push(last);
        }
        tokens
    }
}

impl Embedder for LlamaEmbedder {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn max_tokens(&self) -> u32 {
        self.max_tokens
    }

    fn embed(&self, inputs: &[String]) -> Result<Embeddings, EngineError> {
        if inputs.is_empty() {
            return Ok(Embeddings {
                vectors: vec![],
                prompt_tokens: 0,
            });
        }
        let tokens: Vec<Vec<LlamaToken>> = inputs.iter().map(|t| self.tokenize(t)).collect();
        let prompt_tokens = tokens.iter().map(Vec::len).sum::<usize>();
        let (reply, answer) = mpsc::sync_channel(1);
        self.requests
            .send(Request {
                inputs: tokens,
                reply,
            })
            .map_err(|_| EngineError::Backend("the llama.cpp worker has stopped".to_owned()))?;
        let vectors = answer.recv().map_err(|_| {
            EngineError::Backend("the llama.cpp worker stopped mid-request".to_owned())
        })??;
        Ok(Embeddings {
            vectors,
            prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
        })
    }
}

/// How the worker runs its encoder passes.
#[derive(Clone, Copy)]
struct Pass {
    /// Most tokens per pass (no input is longer).
    tokens: usize,
    /// Inputs are packed up to this many tokens a pass; a longer input runs alone.
    target: usize,
    /// L2-normalise the pooled vectors.
    normalize: bool,
}

fn worker(
    model: &LlamaModel,
    threads: usize,
    batching: Batching,
    pass: Pass,
    inbox: &mpsc::Receiver<Request>,
    ready: Ready,
) {
    let params = LlamaContextParams::default()
        .with_embeddings(true)
        .with_n_ctx(NonZeroU32::new(pass.tokens as u32))
        .with_n_batch(pass.tokens as u32)
        .with_n_ubatch(pass.tokens as u32)
        .with_n_seq_max(BATCH_SEQS as u32)
        .with_kv_unified(true);
    let Some(mut context) = ready.open(open_context(model, params, threads)) else {
        return;
    };
    let mut batch = LlamaBatch::new(pass.tokens, BATCH_SEQS as i32);
    // Ends when the embedder (the only sender) is dropped: the model was unloaded.
    while let Ok(first) = inbox.recv() {
        let tokens = |r: &Request| r.inputs.iter().map(Vec::len).sum::<usize>();
        let mut n_inputs = first.inputs.len();
        let mut n_tokens = tokens(&first);
        let mut requests = vec![first];
        let deadline = Instant::now() + batching.max_wait;
        // Waiting for company only pays while the inputs in hand do not fill a pass: a request
        // of many inputs (a client's own batch) starts at once.
        while n_inputs < batching.max_inputs && n_tokens < pass.target {
            let left = deadline.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(left) {
                Ok(r) => {
                    n_inputs += r.inputs.len();
                    n_tokens += tokens(&r);
                    requests.push(r);
                }
                Err(_) => break,
            }
        }
        let all: Vec<&[LlamaToken]> = requests
            .iter()
            .flat_map(|r| r.inputs.iter().map(Vec::as_slice))
            .collect();
        match encode_all(&mut context, &mut batch, &all, pass) {
            Ok(mut vectors) => {
                for r in requests {
                    let rest = vectors.split_off(r.inputs.len());
                    let _ = r.reply.send(Ok(vectors));
                    vectors = rest;
                }
            }
            Err(e) => {
                for r in requests {
                    let _ = r.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Encodes every sequence, packing as many as fit into each pass.
fn encode_all(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    inputs: &[&[LlamaToken]],
    pass: Pass,
) -> Result<Vec<Vec<f32>>, EngineError> {
    let mut out = Vec::with_capacity(inputs.len());
    let mut start = 0;
    while start < inputs.len() {
        let mut end = start;
        let mut tokens = 0;
        while end < inputs.len()
            && end - start < BATCH_SEQS
            && (end == start || tokens + inputs[end].len() <= pass.target)
        {
            tokens += inputs[end].len();
            end += 1;
        }
        batch.clear();
        for (seq, input) in inputs[start..end].iter().enumerate() {
            let seq = i32::try_from(seq).unwrap_or(0);
            for (pos, token) in input.iter().enumerate() {
                batch
                    .add(*token, i32::try_from(pos).unwrap_or(0), &[seq], true)
                    .map_err(|e| backend_err("batching", e))?;
            }
        }
        ctx.encode(batch).map_err(|e| backend_err("encode", e))?;
        for seq in 0..(end - start) {
            let v = ctx
                .embeddings_seq_ith(i32::try_from(seq).unwrap_or(0))
                .map_err(|e| backend_err("reading embeddings", e))?;
            let mut v = v.to_vec();
            if pass.normalize {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x /= norm);
                }
            }
            out.push(v);
        }
        start = end;
    }
    Ok(out)
}
