//! `maas infer` (an Open Inference Protocol request from a JSON file) and `maas classify`
//! (an image file, answered with labels and scores).

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::Args;
use serde_json::{json, Value};

use crate::client::{segment, Client};
use crate::output::{print_json, table};
use crate::Global;

#[derive(Args)]
pub struct InferArgs {
    /// NAME, NAME:VERSION or NAME@ALIAS of a tensor model.
    model: String,
    /// The request: `{"inputs": [{"name", "shape", "datatype", "data"}], "outputs": […]}`
    /// ("-" reads standard input).
    #[arg(long, short)]
    input: PathBuf,
}

#[derive(Args)]
pub struct ClassifyArgs {
    /// NAME, NAME:VERSION or NAME@ALIAS of an image classifier.
    model: String,
    /// A JPEG, PNG or WebP file.
    image: PathBuf,
    /// How many classes to show.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
}

fn read_input(path: &PathBuf) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = vec![];
        std::io::stdin().read_to_end(&mut buf)?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// At most `n` elements of a flat list, for people.
fn preview(data: &Value, n: usize) -> String {
    let items = data.as_array().cloned().unwrap_or_default();
    let shown: Vec<String> = items.iter().take(n).map(Value::to_string).collect();
    let more = items.len().saturating_sub(n);
    if more > 0 {
        format!("[{}, … {more} more]", shown.join(", "))
    } else {
        format!("[{}]", shown.join(", "))
    }
}

pub async fn infer(g: &Global, args: InferArgs) -> Result<()> {
    let raw = read_input(&args.input)?;
    let request: Value = serde_json::from_slice(&raw)
        .with_context(|| format!("{} is not JSON", args.input.display()))?;
    if !request["inputs"].is_array() {
        bail!(
            "{}: an inference request needs an \"inputs\" list",
            args.input.display()
        );
    }
    let c = Client::new(&g.server, g.api_key.clone())?;
    let answer: Value = c
        .post(
            &format!("/v2/models/{}/infer", segment(&args.model)),
            &request,
        )
        .await?;
    if g.json {
        print_json(&answer);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for o in answer["outputs"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{} {} {}: {}",
            o["name"].as_str().unwrap_or("?"),
            o["datatype"].as_str().unwrap_or("?"),
            o["shape"],
            preview(&o["data"], 16)
        )?;
    }
    Ok(())
}

pub async fn classify(g: &Global, args: ClassifyArgs) -> Result<()> {
    let bytes = std::fs::read(&args.image)
        .with_context(|| format!("cannot read {}", args.image.display()))?;
    let c = Client::new(&g.server, g.api_key.clone())?;
    let body = json!({
        "model": args.model,
        "image": base64::engine::general_purpose::STANDARD.encode(bytes),
        "top_k": args.top_k,
    });
    let answer: Value = c.post("/v1/images/classify", &body).await?;
    if g.json {
        print_json(&answer);
        return Ok(());
    }
    let rows = answer["predictions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                p["label"].as_str().unwrap_or("?").to_owned(),
                format!("{:.4}", p["score"].as_f64().unwrap_or(f64::NAN)),
            ]
        })
        .collect();
    println!("{}", table(&["LABEL", "SCORE"], rows));
    Ok(())
}
