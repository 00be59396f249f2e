//! `maas datasets upload|list|show`: training data as named, versioned files with their inferred
//! schema and profile.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use crate::client::{segment, Client};
use crate::output::{print_json, size, table, text};
use crate::Global;

#[derive(Subcommand)]
pub enum DatasetsCommand {
    /// Upload a CSV (header row), JSONL, or a zip of images in one folder per label as a new
    /// version of a dataset.
    Upload {
        /// The file.
        file: PathBuf,
        /// Dataset name.
        #[arg(long)]
        name: String,
        /// The column to predict (default: the last).
        #[arg(long)]
        target: Option<String>,
        /// Declare column kinds instead of inferring them: COL:numeric|categorical|text, …
        #[arg(long, value_delimiter = ',')]
        kind: Vec<String>,
        /// Description of a new dataset.
        #[arg(long)]
        description: Option<String>,
    },
    /// List datasets.
    List,
    /// Show a dataset's newest version (NAME) or one version (NAME:VERSION): schema and profile.
    Show {
        /// NAME or NAME:VERSION.
        reference: String,
    },
}

fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => format!("{x:.4}"),
        None => "-".to_owned(),
    }
}

fn print_version(v: &Value) {
    println!(
        "{}:{}  {} rows, {} ({}), target '{}' ({})",
        text(v, "dataset"),
        text(v, "version"),
        text(v, "rows"),
        text(v, "format"),
        size(v["size_bytes"].as_u64().unwrap_or(0)),
        text(v, "target"),
        text(v, "problem"),
    );
    let rows = v["profile"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let values = match c["counts"].as_object() {
                Some(counts) => {
                    let mut pairs: Vec<String> = counts
                        .iter()
                        .take(6)
                        .map(|(k, n)| format!("{k}={n}"))
                        .collect();
                    if counts.len() > 6 {
                        pairs.push("…".to_owned());
                    }
                    pairs.join(" ")
                }
                None => String::new(),
            };
            vec![
                text(c, "name"),
                text(c, "kind"),
                text(c, "count"),
                text(c, "missing"),
                text(c, "distinct"),
                number(&c["min"]),
                number(&c["max"]),
                number(&c["mean"]),
                number(&c["std"]),
                values,
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "COLUMN", "KIND", "COUNT", "MISSING", "DISTINCT", "MIN", "MAX", "MEAN", "STD",
                "VALUES"
            ],
            rows
        )
    );
}

pub async fn run(g: &Global, cmd: DatasetsCommand) -> Result<()> {
    let c = Client::new(&g.server, g.api_key.clone())?;
    match cmd {
        DatasetsCommand::Upload {
            file,
            name,
            target,
            kind,
            description,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let filename = file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut query = vec![("name", name), ("filename", filename)];
            if let Some(t) = target {
                query.push(("target", t));
            }
            if !kind.is_empty() {
                query.push(("kinds", kind.join(",")));
            }
            if let Some(d) = description {
                query.push(("description", d));
            }
            let v: Value = c
                .json(
                    c.request(Method::POST, "/api/v1/datasets")
                        .query(&query)
                        .body(bytes),
                )
                .await?;
            if g.json {
                print_json(&v);
            } else {
                print_version(&v);
            }
        }
        DatasetsCommand::List => {
            let v: Vec<Value> = c.get("/api/v1/datasets").await?;
            if g.json {
                print_json(&Value::Array(v));
            } else {
                let rows = v
                    .iter()
                    .map(|d| {
                        vec![
                            text(d, "name"),
                            text(d, "latest_version"),
                            text(d, "created_by"),
                            text(d, "created_at"),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table(&["NAME", "LATEST", "CREATED BY", "CREATED"], rows)
                );
            }
        }
        DatasetsCommand::Show { reference } => {
            let v: Value = match reference.split_once(':') {
                Some((name, version)) => {
                    c.get(&format!(
                        "/api/v1/datasets/{}/versions/{}",
                        segment(name),
                        segment(version)
                    ))
                    .await?
                }
                None => {
                    let all: Value = c
                        .get(&format!("/api/v1/datasets/{}", segment(&reference)))
                        .await?;
                    all["versions"]
                        .as_array()
                        .and_then(|v| v.last().cloned())
                        .unwrap_or(Value::Null)
                }
            };
            if g.json {
                print_json(&v);
            } else {
                print_version(&v);
            }
        }
    }
    Ok(())
}
