//! `maas pull`: remote sources are fetched by the server; local files and folders are uploaded
//! first as content-addressed blobs (skipping any the server already has), then registered.
//! Progress is drawn on a TTY.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use crate::client::Client;
use crate::commands::print_version;
use crate::output::print_json;
use crate::Global;

#[derive(Args)]
pub struct PullArgs {
    /// A local file or folder, http(s)://URL, pypi:PACKAGE[==VERSION] or hf:ORG/REPO[@REV][/PATH].
    source: String,
    /// Model name (derived from the source when omitted).
    #[arg(long)]
    name: Option<String>,
    /// Task (detected when omitted): text-generation, embedding, speech-to-text, …
    #[arg(long)]
    task: Option<String>,
    /// Weight format (detected when omitted): gguf, safetensors, onnx, ctranslate2.
    #[arg(long)]
    format: Option<String>,
    /// Description of a new model.
    #[arg(long)]
    description: Option<String>,
    /// Serving settings to keep with the version (TOML): image preprocessing, labels, the
    /// scores output, batching. See the README's "Tensor models and images".
    #[arg(long, alias = "preprocess")]
    serving: Option<std::path::PathBuf>,
    /// Weight precision when a safetensors BERT embedding folder is converted to GGUF:
    /// f16, bf16, or f32 (the original numbers). By default F32 weights get the half precision
    /// this CPU multiplies fastest: bf16 on AMD CPUs with AVX512-BF16, f16 elsewhere.
    #[arg(long)]
    precision: Option<String>,
    /// Print the job id and return without waiting.
    #[arg(long)]
    detach: bool,
}

fn is_remote(source: &str) -> bool {
    ["http://", "https://", "pypi:", "hf:"]
        .iter()
        .any(|p| source.starts_with(p))
}

fn bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

struct LocalFile {
    path: String,
    local: PathBuf,
    size: u64,
}

/// Files of a folder, recursively, following symlinks, skipping hidden entries.
fn walk(root: &Path, dir: &Path, out: &mut Vec<LocalFile>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let meta =
            std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file() {
            let rel = path
                .strip_prefix(root)?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push(LocalFile {
                path: rel,
                local: path,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

async fn sha256_file(path: &Path, bar: &ProgressBar) -> Result<String> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

async fn upload(client: &Client, source: &str) -> Result<Value> {
    let root = Path::new(source);
    let meta = std::fs::metadata(root).with_context(|| {
        format!(
            "'{source}' is not a file or folder here, nor a remote source (http(s)://, pypi:, hf:)"
        )
    })?;
    let mut files = Vec::new();
    let is_dir = meta.is_dir();
    if is_dir {
        walk(root, root, &mut files)?;
        if files.is_empty() {
            bail!("folder '{source}' holds no files");
        }
    } else {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".to_owned());
        files.push(LocalFile {
            path: name,
            local: root.to_path_buf(),
            size: meta.len(),
        });
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    let progress = bar(total * 2);
    progress.set_message("hashing and uploading");
    let mut entries = Vec::with_capacity(files.len());
    for f in &files {
        let digest = sha256_file(&f.local, &progress).await?;
        let blob = format!("/api/v1/blobs/{digest}");
        let head = client.request(Method::HEAD, &blob).send().await;
        let present = matches!(head, Ok(ref r) if r.status() == StatusCode::OK);
        if !present {
            let file = tokio::fs::File::open(&f.local).await?;
            let counter = progress.clone();
            let stream =
                tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect(move |chunk| {
                    if let Ok(c) = chunk {
                        counter.inc(c.len() as u64);
                    }
                });
            let req = client
                .request(Method::PUT, &blob)
                .header(reqwest::header::CONTENT_LENGTH, f.size)
                .body(reqwest::Body::wrap_stream(stream));
            client
                .send(req)
                .await
                .with_context(|| format!("uploading {}", f.path))?;
        } else {
            progress.inc(f.size);
        }
        entries.push(json!({"path": f.path, "digest": digest, "size_bytes": f.size}));
    }
    progress.finish_and_clear();
    let label = std::fs::canonicalize(root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| source.to_owned());
    Ok(json!({"files": entries, "is_dir": is_dir, "label": label}))
}

pub async fn run(g: &Global, args: PullArgs) -> Result<()> {
    let client = Client::new(&g.server, g.api_key.clone())?;
    let mut body = json!({"name": args.name, "task": args.task, "format": args.format,
        "description": args.description, "precision": args.precision});
    if let Some(path) = &args.serving {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let settings: Value = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        body["serving"] = settings;
    }
    if is_remote(&args.source) {
        body["source"] = json!(args.source);
    } else {
        body["upload"] = upload(&client, &args.source).await?;
    }
    let job: Value = client.post("/api/v1/pulls", &body).await?;
    let id = job["id"]
        .as_str()
        .context("the server sent no job id")?
        .to_owned();
    if args.detach {
        if g.json {
            print_json(&job);
        } else {
            println!("pull started: job {id}");
        }
        return Ok(());
    }
    let progress = bar(0);
    let final_view = loop {
        let view: Value = client.get(&format!("/api/v1/jobs/{id}")).await?;
        match view["state"].as_str() {
            Some("succeeded") | Some("failed") => break view,
            _ => {
                let total = view["bytes_total"].as_u64().unwrap_or(0);
                progress.set_length(total);
                progress.set_position(view["bytes_done"].as_u64().unwrap_or(0));
                progress.set_message(view["phase"].as_str().unwrap_or("").to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    progress.finish_and_clear();
    if final_view["state"] == "failed" {
        let message = final_view
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        bail!("pull of {} failed: {message}", args.source);
    }
    let version = &final_view["result"];
    if g.json {
        print_json(version);
    } else {
        print!("pulled ");
        print_version(version);
    }
    Ok(())
}
