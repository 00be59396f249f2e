//! Embeddings on llama.cpp with dynamic batching.
//!
//! Callers tokenize on their own thread (the model's vocabulary is shared and read-only) and
//! hand token lists to a collector thread. It takes the first request, waits up to `max_wait`
//! for more (until `max_inputs` inputs, or a pass's worth of tokens, are in hand), then packs
//! the sequences into llama.cpp passes of about a hundred tokens, one sequence id each. The
//! passes go to one encoder per compute thread, each with a single-threaded context of its
//! own: on 2 cores, two passes side by side embed ~14% more sentences per second than one
//! pass at a time on two threads (no per-operation synchronisation between threads).

use std::num::NonZeroU32;
use std::ops::Range;
use std::sync::{mpsc, Arc, Mutex};
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
/// pass: on MiniLM, passes of ~128-256 tokens embed about 30% faster than passes of 1024
/// (and passes of 64 about 25% slower than 128).
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
        let pass = Pass {
            tokens: (max_tokens as usize).max(TARGET_PASS_TOKENS),
            target: TARGET_PASS_TOKENS,
            normalize,
            encoders: threads.max(1),
        };
        let (passes, queue) = mpsc::channel::<PassJob>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..pass.encoders {
            let queue = queue.clone();
            spawn_worker(
                &format!("llama-embed-{i}"),
                model.clone(),
                move |model, ready| {
                    encoder(model, pass, &queue, ready);
                },
            )?;
        }
        let (requests, inbox) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("llama-embed-batch".to_owned())
            .spawn(move || collector(batching, pass, &inbox, &passes))
            .map_err(|e| EngineError::Backend(format!("cannot start a llama.cpp worker: {e}")))?;
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

/// How batches are split into encoder passes and run.
#[derive(Clone, Copy)]
struct Pass {
    /// Most tokens per pass: the encoders' context (no input is longer).
    tokens: usize,
    /// Passes hold about this many tokens (see [`plan_passes`]).
    target: usize,
    /// L2-normalise the pooled vectors.
    normalize: bool,
    /// Encoders (single-threaded contexts) running passes side by side.
    encoders: usize,
}

/// One encoder pass: the inputs to embed together, and where the vectors go (with the pass's
/// number in its batch).
struct PassJob {
    inputs: Arc<Vec<Vec<LlamaToken>>>,
    range: Range<usize>,
    number: usize,
    reply: mpsc::Sender<(usize, Vectors)>,
}

/// One pooled vector per input, or why there are none.
type Vectors = Result<Vec<Vec<f32>>, EngineError>;

/// Gathers requests into batches, splits each batch into passes for the encoders and answers
/// the requests once every pass is back. Ends when the embedder (the only sender) is dropped:
/// the model was unloaded; the encoders then end too.
fn collector(
    batching: Batching,
    pass: Pass,
    inbox: &mpsc::Receiver<Request>,
    passes: &mpsc::Sender<PassJob>,
) {
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
        let counts: Vec<usize> = requests.iter().map(|r| r.inputs.len()).collect();
        let replies: Vec<_> = requests.iter().map(|r| r.reply.clone()).collect();
        let all: Vec<Vec<LlamaToken>> = requests.into_iter().flat_map(|r| r.inputs).collect();
        match embed_batch(Arc::new(all), pass, passes) {
            Ok(mut vectors) => {
                for (reply, n) in replies.into_iter().zip(counts) {
                    let rest = vectors.split_off(n);
                    let _ = reply.send(Ok(vectors));
                    vectors = rest;
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Embeds every input through the encoders and returns the vectors in input order.
fn embed_batch(
    inputs: Arc<Vec<Vec<LlamaToken>>>,
    pass: Pass,
    passes: &mpsc::Sender<PassJob>,
) -> Result<Vec<Vec<f32>>, EngineError> {
    let stopped = || EngineError::Backend("the llama.cpp encoders have stopped".to_owned());
    let plan = plan_passes(&inputs, pass);
    let (reply, results) = mpsc::channel();
    for (number, range) in plan.iter().enumerate() {
        passes
            .send(PassJob {
                inputs: inputs.clone(),
                range: range.clone(),
                number,
                reply: reply.clone(),
            })
            .map_err(|_| stopped())?;
    }
    drop(reply);
    let mut done: Vec<Option<Vec<Vec<f32>>>> = vec![None; plan.len()];
    for _ in 0..plan.len() {
        let (number, vectors) = results.recv().map_err(|_| stopped())?;
        done[number] = Some(vectors?);
    }
    Ok(done.into_iter().flatten().flatten().collect())
}

/// Splits the inputs, in order, into passes of about `pass.target` tokens, in a number of
/// passes that keeps all `pass.encoders` equally busy: 550 tokens for two encoders make four
/// passes of ~138 tokens, not five of 128 of which the last runs alone. An input goes to the
/// pass its middle token falls in; a pass never exceeds the context (`pass.tokens`) or
/// `BATCH_SEQS` sequences.
fn plan_passes(inputs: &[Vec<LlamaToken>], pass: Pass) -> Vec<Range<usize>> {
    let total: usize = inputs.iter().map(Vec::len).sum();
    let per_round = pass.target.max(1) * pass.encoders.max(1);
    let passes = ((total + per_round / 2) / per_round).max(1) * pass.encoders.max(1);
    let share = total as f64 / passes as f64;
    let mut plan = vec![];
    let (mut start, mut tokens, mut before, mut current) = (0, 0, 0, 0);
    for (i, input) in inputs.iter().enumerate() {
        let middle = (before + input.len() / 2) as f64;
        let wanted = ((middle / share) as usize).min(passes - 1);
        let full = tokens + input.len() > pass.tokens || i - start >= BATCH_SEQS;
        if i > start && (wanted > current || full) {
            plan.push(start..i);
            start = i;
            tokens = 0;
        }
        current = current.max(wanted);
        tokens += input.len();
        before += input.len();
    }
    if start < inputs.len() {
        plan.push(start..inputs.len());
    }
    plan
}

/// Runs passes from the shared queue on a single-threaded context of its own until the queue
/// closes.
fn encoder(model: &LlamaModel, pass: Pass, queue: &Mutex<mpsc::Receiver<PassJob>>, ready: Ready) {
    let params = LlamaContextParams::default()
        .with_embeddings(true)
        .with_n_ctx(NonZeroU32::new(pass.tokens as u32))
        .with_n_batch(pass.tokens as u32)
        .with_n_ubatch(pass.tokens as u32)
        .with_n_seq_max(BATCH_SEQS as u32)
        .with_kv_unified(true);
    let Some(mut context) = ready.open(open_context(model, params, 1)) else {
        return;
    };
    let mut batch = LlamaBatch::new(pass.tokens, BATCH_SEQS as i32);
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.recv()
        };
        let Ok(job) = job else {
            return;
        };
        let vectors = encode_pass(&mut context, &mut batch, &job.inputs[job.range], pass);
        let _ = job.reply.send((job.number, vectors));
    }
}

/// Encodes the sequences of one pass and reads one pooled vector each.
fn encode_pass(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    inputs: &[Vec<LlamaToken>],
    pass: Pass,
) -> Vectors {
    batch.clear();
    for (seq, input) in inputs.iter().enumerate() {
        let seq = i32::try_from(seq).unwrap_or(0);
        for (pos, token) in input.iter().enumerate() {
            batch
                .add(*token, i32::try_from(pos).unwrap_or(0), &[seq], true)
                .map_err(|e| backend_err("batching", e))?;
        }
    }
    ctx.encode(batch).map_err(|e| backend_err("encode", e))?;
    let mut out = Vec::with_capacity(inputs.len());
    for seq in 0..inputs.len() {
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(lengths: &[usize]) -> Vec<Vec<LlamaToken>> {
        lengths
            .iter()
            .map(|n| vec![LlamaToken::new(1); *n])
            .collect()
    }

    fn sizes(inputs: &[Vec<LlamaToken>], plan: &[Range<usize>]) -> Vec<usize> {
        plan.iter()
            .map(|r| inputs[r.clone()].iter().map(Vec::len).sum())
            .collect()
    }

    fn pass(encoders: usize) -> Pass {
        Pass {
            tokens: 256,
            target: 128,
            normalize: true,
            encoders,
        }
    }

    #[test]
    fn passes_cover_every_input_in_order_and_share_work_between_encoders() {
        // 25 inputs of 22 tokens: 550 tokens, two encoders, passes of ~128 wanted.
        let many = inputs(&[22; 25]);
        let plan = plan_passes(&many, pass(2));
        assert_eq!(plan.len(), 4, "{plan:?}");
        assert_eq!(plan.first().unwrap().start, 0);
        assert_eq!(plan.last().unwrap().end, 25);
        assert!(plan.windows(2).all(|w| w[0].end == w[1].start));
        let s = sizes(&many, &plan);
        assert!(s.iter().all(|n| (120..=160).contains(n)), "{s:?}");

        // One encoder: as many passes as the target asks, evenly filled.
        let plan = plan_passes(&many, pass(1));
        assert_eq!(plan.len(), 4, "{plan:?}");

        // A short batch still goes to both encoders when it has two inputs ...
        assert_eq!(plan_passes(&inputs(&[10, 12]), pass(2)).len(), 2);
        // ... one input is one pass ...
        assert_eq!(plan_passes(&inputs(&[10]), pass(2)), vec![0..1]);
        // ... and no pass outgrows the context or BATCH_SEQS sequences.
        let long = inputs(&[5, 250, 5]);
        let plan = plan_passes(&long, pass(1));
        assert!(sizes(&long, &plan).iter().all(|n| *n <= 256), "{plan:?}");
        let tiny = inputs(&[1; 200]);
        assert!(plan_passes(&tiny, pass(1))
            .iter()
            .all(|r| r.len() <= BATCH_SEQS));
        let whole: usize = plan_passes(&tiny, pass(1)).iter().map(|r| r.len()).sum();
        assert_eq!(whole, 200);
    }
}
