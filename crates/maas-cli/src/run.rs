//! Talking to served models: `maas run NAME "prompt"` (one streamed chat turn), `maas chat NAME`
//! (an interactive conversation) and `maas embed NAME "text"…` (vectors).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::print_json;
use crate::Global;

/// Sampling settings shared by `run` and `chat`.
#[derive(Args, Clone)]
pub struct Sampling {
    /// A system message.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens to generate per answer.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Seed for reproducible sampling.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args)]
pub struct RunArgs {
    /// NAME, NAME:VERSION or NAME@ALIAS.
    model: String,
    /// The user message.
    prompt: String,
    #[command(flatten)]
    sampling: Sampling,
}

#[derive(Args)]
pub struct ChatArgs {
    /// NAME, NAME:VERSION or NAME@ALIAS.
    model: String,
    #[command(flatten)]
    sampling: Sampling,
}

#[derive(Args)]
pub struct EmbedArgs {
    /// NAME, NAME:VERSION or NAME@ALIAS of an embedding model.
    model: String,
    /// One or more texts.
    #[arg(required = true)]
    texts: Vec<String>,
}

/// Streams one chat completion, handing each piece of text to `on_piece`; returns the whole
/// answer and the usage the server reported.
async fn stream_chat(
    client: &Client,
    model: &str,
    messages: &[Value],
    sampling: &Sampling,
    on_piece: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<(String, Value)> {
    let body = json!({
        "model": model, "messages": messages, "stream": true, "temperature": sampling.temperature,
        "max_tokens": sampling.max_tokens, "seed": sampling.seed, "stream_options": {"include_usage": true},
    });
    let response = client
        .send(
            client
                .request(reqwest::Method::POST, "/v1/chat/completions")
                .json(&body),
        )
        .await?;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut text = String::new();
    let mut usage = Value::Null;
    while let Some(chunk) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(
            &chunk.context("the stream broke off")?,
        ));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let Some(data) = line.trim_end().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let event: Value =
                serde_json::from_str(data).context("the server sent an unreadable event")?;
            if let Some(message) = event.pointer("/error/message").and_then(Value::as_str) {
                bail!("generation failed: {message}");
            }
            if let Some(piece) = event
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
            {
                text.push_str(piece);
                on_piece(piece)?;
            }
            if !event["usage"].is_null() {
                usage = event["usage"].clone();
            }
        }
    }
    Ok((text, usage))
}

fn first_messages(sampling: &Sampling) -> Vec<Value> {
    sampling
        .system
        .iter()
        .map(|s| json!({"role": "system", "content": s}))
        .collect()
}

pub async fn run(g: &Global, args: RunArgs) -> Result<()> {
    let client = Client::new(&g.server, g.api_key.clone())?;
    let mut messages = first_messages(&args.sampling);
    messages.push(json!({"role": "user", "content": args.prompt}));
    let mut out = std::io::stdout().lock();
    let json_out = g.json;
    let (text, usage) = stream_chat(
        &client,
        &args.model,
        &messages,
        &args.sampling,
        &mut |piece| {
            if !json_out {
                write!(out, "{piece}")?;
                out.flush()?;
            }
            Ok(())
        },
    )
    .await?;
    if g.json {
        writeln!(
            out,
            "{}",
            json!({"model": args.model, "content": text, "usage": usage})
        )?;
    } else {
        writeln!(out)?;
    }
    Ok(())
}

const CHAT_HELP: &str = "commands: /reset forgets the conversation, /exit (or Ctrl-D) leaves";

/// An interactive conversation: each line is a user turn; the model sees the whole history.
pub async fn chat(g: &Global, args: ChatArgs) -> Result<()> {
    let client = Client::new(&g.server, g.api_key.clone())?;
    let interactive = std::io::stdin().is_terminal();
    let mut messages = first_messages(&args.sampling);
    if interactive {
        eprintln!("chatting with {}; {CHAT_HELP}", args.model);
    }
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            eprint!(">>> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next() else {
            break;
        };
        let line = line.context("cannot read the terminal")?;
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" | "/bye" => break,
            "/reset" => {
                messages = first_messages(&args.sampling);
                eprintln!("(conversation cleared)");
                continue;
            }
            "/help" | "/?" => {
                eprintln!("{CHAT_HELP}");
                continue;
            }
            _ => {}
        }
        messages.push(json!({"role": "user", "content": line}));
        let mut out = std::io::stdout().lock();
        let answer = stream_chat(
            &client,
            &args.model,
            &messages,
            &args.sampling,
            &mut |piece| {
                write!(out, "{piece}")?;
                out.flush()?;
                Ok(())
            },
        )
        .await;
        match answer {
            Ok((text, _)) => {
                writeln!(out)?;
                messages.push(json!({"role": "assistant", "content": text}));
            }
            Err(e) => {
                // One failed turn (a full context, say) does not end the conversation.
                messages.pop();
                writeln!(out)?;
                eprintln!("maas: error: {e:#}");
                if !interactive {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Prints one vector per text: the numbers for people, the API's answer with `--json`.
pub async fn embed(g: &Global, args: EmbedArgs) -> Result<()> {
    let client = Client::new(&g.server, g.api_key.clone())?;
    let body = json!({"model": args.model, "input": args.texts});
    let answer: Value = client.post("/v1/embeddings", &body).await?;
    if g.json {
        print_json(&answer);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for item in answer["data"].as_array().into_iter().flatten() {
        let numbers: Vec<String> = item["embedding"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| format!("{:.6}", x.as_f64().unwrap_or(f64::NAN)))
            .collect();
        writeln!(out, "[{}]", numbers.join(", "))?;
    }
    Ok(())
}
