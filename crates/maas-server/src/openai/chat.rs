//! `/v1/chat/completions` and `/v1/completions`, plain and streamed (SSE ending in `[DONE]`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use maas_core::{ModelVersion, Task};
use maas_engine::{
    EngineError, FinishReason, GenerateParams, GenerateSummary, GenerationSink, TextGenerator,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::template::{render, TemplateMessage};
use super::{resolve, Caller, OaiError, OaiJson};
use crate::cache::QueuePermit;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
pub struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

/// Sampling fields shared by both endpoints, read as raw JSON so every type error names its
/// field (serde's `flatten` would lose the path). Unknown fields (user, logit_bias, …) are
/// ignored, as OpenAI clients send them.
#[derive(Deserialize)]
pub struct SamplingFields {
    #[serde(default)]
    temperature: Option<Value>,
    #[serde(default)]
    top_p: Option<Value>,
    #[serde(default)]
    top_k: Option<Value>,
    #[serde(default)]
    seed: Option<Value>,
    #[serde(default)]
    max_tokens: Option<Value>,
    #[serde(default)]
    max_completion_tokens: Option<Value>,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    n: Option<Value>,
    #[serde(default)]
    stream: Option<Value>,
    #[serde(default)]
    stream_options: Option<Value>,
}

fn float(v: Option<Value>, name: &'static str) -> Result<Option<f32>, OaiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64().map(|f| f as f32)),
        Some(other) => Err(OaiError::invalid(
            name,
            format!("{name} must be a number, got {other}"),
        )),
    }
}

fn int(v: Option<Value>, name: &'static str) -> Result<Option<i64>, OaiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| OaiError::invalid(name, format!("{name} must be an integer, got {n}"))),
        Some(other) => Err(OaiError::invalid(
            name,
            format!("{name} must be an integer, got {other}"),
        )),
    }
}

fn flag(v: Option<Value>, name: &'static str) -> Result<bool, OaiError> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(other) => Err(OaiError::invalid(
            name,
            format!("{name} must be true or false, got {other}"),
        )),
    }
}

fn stops(v: Option<Value>) -> Result<Vec<String>, OaiError> {
    let bad = || OaiError::invalid("stop", "stop must be a string or an array of strings");
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

#[derive(Deserialize)]
pub struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    sampling: SamplingFields,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
pub struct CompletionRequest {
    model: String,
    prompt: Prompt,
    #[serde(flatten)]
    sampling: SamplingFields,
}

/// Validated sampling settings; `max_tokens` is settled once the prompt length is known.
struct Sampling {
    params: GenerateParams,
    max_tokens: Option<u32>,
    stream: bool,
    include_usage: bool,
}

const MAX_STOPS: usize = 4;

fn sampling(f: SamplingFields, default_max_tokens: Option<u32>) -> Result<Sampling, OaiError> {
    let temperature = float(f.temperature, "temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(OaiError::invalid(
            "temperature",
            format!("temperature must be between 0 and 2, got {temperature}"),
        ));
    }
    let top_p = float(f.top_p, "top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(OaiError::invalid(
            "top_p",
            format!("top_p must be in (0, 1], got {top_p}"),
        ));
    }
    let top_k = int(f.top_k, "top_k")?.unwrap_or(0);
    let top_k = i32::try_from(top_k)
        .ok()
        .filter(|k| *k >= 0)
        .ok_or_else(|| {
            OaiError::invalid(
                "top_k",
                format!("top_k must be a non-negative integer, got {top_k}"),
            )
        })?;
    if let Some(n) = int(f.n, "n")?.filter(|n| *n != 1) {
        return Err(OaiError::invalid(
            "n",
            format!("only n=1 is supported, got {n}"),
        ));
    }
    let max_tokens = match int(f.max_completion_tokens, "max_completion_tokens")?
        .or(int(f.max_tokens, "max_tokens")?)
    {
        Some(m) => Some(u32::try_from(m).ok().filter(|m| *m >= 1).ok_or_else(|| {
            OaiError::invalid(
                "max_tokens",
                format!("max_tokens must be at least 1, got {m}"),
            )
        })?),
        None => default_max_tokens,
    };
    let stop = stops(f.stop)?;
    if stop.len() > MAX_STOPS {
        return Err(OaiError::invalid(
            "stop",
            format!("at most {MAX_STOPS} stop sequences, got {}", stop.len()),
        ));
    }
    // Without a seed each request samples differently, as OpenAI does.
    let seed = match int(f.seed, "seed")? {
        Some(s) => (s as u64 & u64::from(u32::MAX)) as u32,
        None => uuid::Uuid::new_v4().as_u128() as u32,
    };
    let include_usage = match f.stream_options {
        Some(Value::Object(o)) => flag(
            o.get("include_usage").cloned(),
            "stream_options.include_usage",
        )?,
        None | Some(Value::Null) => false,
        Some(_) => {
            return Err(OaiError::invalid(
                "stream_options",
                "stream_options must be an object",
            ))
        }
    };
    Ok(Sampling {
        params: GenerateParams {
            max_tokens: 0,
            temperature,
            top_p,
            top_k,
            seed,
            stop,
        },
        max_tokens,
        stream: flag(f.stream, "stream")?,
        include_usage,
    })
}

fn message_text(m: ChatMessage, i: usize) -> Result<TemplateMessage, OaiError> {
    if !matches!(
        m.role.as_str(),
        "system" | "developer" | "user" | "assistant" | "tool"
    ) {
        return Err(OaiError::invalid(
            "messages",
            format!(
                "messages[{i}].role '{}' is not one of system, user, assistant, tool",
                m.role
            ),
        ));
    }
    let content = match m.content {
        None => String::new(),
        Some(Content::Text(t)) => t,
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for p in parts {
                match (p.kind.as_str(), p.text) {
                    ("text", Some(t)) => out.push_str(&t),
                    (kind, _) => {
                        return Err(OaiError::invalid(
                            "messages",
                            format!(
                                "messages[{i}]: content parts of type '{kind}' are not supported"
                            ),
                        ))
                    }
                }
            }
            out
        }
    };
    // "developer" is OpenAI's newer name for "system"; templates know the old one.
    let role = if m.role == "developer" {
        "system".to_owned()
    } else {
        m.role
    };
    Ok(TemplateMessage { role, content })
}

enum Kind {
    Chat,
    Completion,
}

pub async fn chat_completions(
    State(state): State<AppState>,
    Caller(who): Caller,
    OaiJson(req): OaiJson<ChatRequest>,
) -> Result<Response, OaiError> {
    if req.messages.is_empty() {
        return Err(OaiError::invalid(
            "messages",
            "messages must hold at least one message",
        ));
    }
    let messages = req
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message_text(m, i))
        .collect::<Result<Vec<_>, _>>()?;
    let sampling = sampling(req.sampling, None)?;
    let version = resolve(
        &state,
        &who,
        &req.model,
        Task::TextGeneration,
        "chat completions",
    )
    .await?;
    let (permit, generator) = acquire(&state, &version).await?;
    let (bos, eos) = generator.special_tokens();
    let prompt = render(generator.chat_template().as_deref(), &messages, &bos, &eos)?;
    respond(generator, permit, prompt, sampling, req.model, Kind::Chat).await
}

pub async fn completions(
    State(state): State<AppState>,
    Caller(who): Caller,
    OaiJson(req): OaiJson<CompletionRequest>,
) -> Result<Response, OaiError> {
    let prompt = match req.prompt {
        Prompt::One(p) => p,
        Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
        Prompt::Many(v) => {
            return Err(OaiError::invalid(
                "prompt",
                format!("one prompt per request is supported, got {}", v.len()),
            ))
        }
    };
    if prompt.is_empty() {
        return Err(OaiError::invalid("prompt", "prompt must not be empty"));
    }
    // OpenAI's default for legacy completions.
    let sampling = sampling(req.sampling, Some(16))?;
    let version = resolve(
        &state,
        &who,
        &req.model,
        Task::TextGeneration,
        "completions",
    )
    .await?;
    let (permit, generator) = acquire(&state, &version).await?;
    respond(
        generator,
        permit,
        prompt,
        sampling,
        req.model,
        Kind::Completion,
    )
    .await
}

async fn acquire(
    state: &AppState,
    version: &ModelVersion,
) -> Result<(QueuePermit, Arc<dyn TextGenerator>), OaiError> {
    let permit = state.models.enqueue(version)?;
    let loaded = state.models.get(version, Task::TextGeneration).await?;
    let generator = loaded.generator.clone().ok_or_else(|| {
        OaiError::invalid(
            "model",
            format!("model '{}' cannot generate text", version.model),
        )
    })?;
    Ok((permit, generator))
}

/// What a generation sends to the request handling it.
enum Output {
    Text(String),
    Done(Result<GenerateSummary, EngineError>),
}

/// Takes a generation's output on the engine's thread and hands it to the async side without
/// blocking; holds the request's place in the model's queue until the generation is done.
struct Sink {
    tx: mpsc::UnboundedSender<Output>,
    _permit: QueuePermit,
}

impl GenerationSink for Sink {
    fn text(&mut self, piece: &str) -> bool {
        // Fails once the request is gone (client disconnected): the generation stops.
        self.tx.send(Output::Text(piece.to_owned())).is_ok()
    }

    fn done(self: Box<Self>, result: Result<GenerateSummary, EngineError>) {
        let _ = self.tx.send(Output::Done(result));
    }
}

fn stopped() -> maas_core::Error {
    maas_core::Error::internal("the generation ended without a result")
}

fn engine_error(e: EngineError) -> OaiError {
    match e {
        EngineError::InvalidRequest(m) => OaiError::invalid("max_tokens", m),
        other => maas_core::Error::internal(other.to_string()).into(),
    }
}

fn finish_text(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn usage(s: &GenerateSummary) -> Value {
    json!({"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens, "total_tokens": s.prompt_tokens + s.completion_tokens})
}

async fn respond(
    generator: Arc<dyn TextGenerator>,
    permit: QueuePermit,
    prompt: String,
    mut sampling: Sampling,
    model: String,
    kind: Kind,
) -> Result<Response, OaiError> {
    let context = generator.context_length();
    let prompt_tokens = generator.count_tokens(&prompt).map_err(engine_error)?;
    let room = context.saturating_sub(prompt_tokens + 1);
    if room == 0 {
        return Err(OaiError::invalid(
            "messages",
            format!("the prompt is {prompt_tokens} tokens; the model's context is {context}"),
        ));
    }
    let max_tokens = sampling.max_tokens.unwrap_or(room);
    if max_tokens > room {
        return Err(OaiError::invalid(
            "max_tokens",
            format!("max_tokens ({max_tokens}) plus the prompt ({prompt_tokens} tokens) exceeds the model's context of {context} tokens"),
        ));
    }
    sampling.params.max_tokens = max_tokens;

    let (tx, mut output) = mpsc::unbounded_channel::<Output>();
    generator.start(
        &prompt,
        &sampling.params,
        Box::new(Sink {
            tx,
            _permit: permit,
        }),
    );
    let (id, object) = match kind {
        Kind::Chat => (
            format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            "chat.completion",
        ),
        Kind::Completion => (
            format!("cmpl-{}", uuid::Uuid::new_v4().simple()),
            "text_completion",
        ),
    };
    let created = now();

    if !sampling.stream {
        let mut text = String::new();
        let summary = loop {
            match output.recv().await {
                Some(Output::Text(piece)) => text.push_str(&piece),
                Some(Output::Done(result)) => break result.map_err(engine_error)?,
                None => return Err(stopped().into()),
            }
        };
        let choice = match kind {
            Kind::Chat => {
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_text(summary.finish_reason), "logprobs": null})
            }
            Kind::Completion => {
                json!({"index": 0, "text": text, "finish_reason": finish_text(summary.finish_reason), "logprobs": null})
            }
        };
        let body = json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice], "usage": usage(&summary)});
        return Ok(Json(body).into_response());
    }

    let chunk_object = match kind {
        Kind::Chat => "chat.completion.chunk",
        Kind::Completion => "text_completion",
    };
    let chunk = move |choice: Value, usage: Option<Value>| {
        let mut c = json!({"id": id, "object": chunk_object, "created": created, "model": model, "choices": choice});
        if let Some(u) = usage {
            c["usage"] = u;
        }
        Event::default().data(c.to_string())
    };
    let (events_tx, events_rx) = mpsc::channel::<Event>(64);
    let include_usage = sampling.include_usage;
    tokio::spawn(async move {
        let delta = |content: Value| match kind {
            Kind::Chat => {
                json!([{"index": 0, "delta": content, "finish_reason": null, "logprobs": null}])
            }
            Kind::Completion => {
                json!([{"index": 0, "text": content.get("content").cloned().unwrap_or(json!("")), "finish_reason": null, "logprobs": null}])
            }
        };
        if matches!(kind, Kind::Chat)
            && events_tx
                .send(chunk(
                    delta(json!({"role": "assistant", "content": ""})),
                    None,
                ))
                .await
                .is_err()
        {
            return;
        }
        let result = loop {
            match output.recv().await {
                Some(Output::Text(piece)) => {
                    if events_tx
                        .send(chunk(delta(json!({"content": piece})), None))
                        .await
                        .is_err()
                    {
                        // The client left: dropping `output` makes the generator stop.
                        return;
                    }
                }
                Some(Output::Done(result)) => break result,
                None => break Err(EngineError::Backend(stopped().message)),
            }
        };
        let last = match result {
            Ok(summary) => {
                let finish = finish_text(summary.finish_reason);
                let choice = match kind {
                    Kind::Chat => {
                        json!([{"index": 0, "delta": {}, "finish_reason": finish, "logprobs": null}])
                    }
                    Kind::Completion => {
                        json!([{"index": 0, "text": "", "finish_reason": finish, "logprobs": null}])
                    }
                };
                let mut out = vec![chunk(choice, None)];
                if include_usage {
                    out.push(chunk(json!([]), Some(usage(&summary))));
                }
                out
            }
            Err(e) => vec![Event::default().data(
                json!({"error": {"message": e.to_string(), "type": "server_error"}}).to_string(),
            )],
        };
        for event in last {
            if events_tx.send(event).await.is_err() {
                return;
            }
        }
        let _ = events_tx.send(Event::default().data("[DONE]")).await;
    });
    let stream = futures::stream::unfold(events_rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
