//! `maas run NAME "prompt"`: one chat turn, streamed to the terminal as it is generated.

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::client::Client;
use crate::Global;

#[derive(Args)]
pub struct RunArgs {
    /// NAME, NAME:VERSION or NAME@ALIAS.
    model: String,
    /// The user message.
    prompt: String,
    /// A system message.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Seed for reproducible sampling.
    #[arg(long)]
    seed: Option<u64>,
}

pub async fn run(g: &Global, args: RunArgs) -> Result<()> {
    let client = Client::new(&g.server, g.api_key.clone())?;
    let mut messages = vec![];
    if let Some(system) = &args.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": args.prompt}));
    let body = json!({
        "model": args.model, "messages": messages, "stream": true, "temperature": args.temperature,
        "max_tokens": args.max_tokens, "seed": args.seed, "stream_options": {"include_usage": true},
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
    let mut out = std::io::stdout().lock();
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
                if !g.json {
                    write!(out, "{piece}")?;
                    out.flush()?;
                }
            }
            if !event["usage"].is_null() {
                usage = event["usage"].clone();
            }
        }
    }
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
