//! `maas train` (start a run and follow it), `maas runs list|show|watch|cancel` and
//! `maas predict` (raw rows in, labels or values out).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::client::{segment, Client};
use crate::output::{print_json, table, text, when};
use crate::Global;

#[derive(Args)]
pub struct TrainArgs {
    /// Dataset: NAME or NAME:VERSION.
    #[arg(long, required_unless_present = "resume")]
    dataset: Option<String>,
    /// Training spec (TOML or JSON): mlp, cnn, image, optimizer, loss, epochs, batch_size,
    /// schedule, patience, prep, encoder, augment. Defaults apply to what it leaves out.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Model to register the result under (default: the dataset's name).
    #[arg(long)]
    name: Option<String>,
    /// Resume the interrupted run ID from its last checkpoint.
    #[arg(long, conflicts_with_all = ["dataset", "spec", "name"])]
    resume: Option<String>,
    /// Print the run id and return at once instead of following it.
    #[arg(long)]
    detach: bool,
}

#[derive(Subcommand)]
pub enum RunsCommand {
    /// List training runs, newest first.
    List,
    /// Show a run: state, per-epoch figures, result.
    Show {
        /// Run id.
        id: String,
    },
    /// Follow a run with a progress bar until it ends.
    Watch {
        /// Run id.
        id: String,
    },
    /// Cancel a run; it stops after its current epoch and registers nothing.
    Cancel {
        /// Run id.
        id: String,
    },
}

#[derive(Args)]
pub struct PredictArgs {
    /// NAME, NAME:VERSION or NAME@ALIAS of a trained model.
    model: String,
    /// Rows as JSON: an array of {"column": value} objects, or {"rows": [...]}; `-` reads stdin.
    #[arg(long)]
    rows: String,
}

fn read_spec(path: &PathBuf) -> Result<Value> {
    let raw =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_json =
        path.extension().is_some_and(|e| e == "json") || raw.trim_start().starts_with('{');
    if is_json {
        serde_json::from_str(&raw).with_context(|| format!("{} is not valid JSON", path.display()))
    } else {
        let value: toml::Value = toml::from_str(&raw)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        Ok(serde_json::to_value(value)?)
    }
}

fn figure(v: &Value) -> String {
    v.as_f64().map_or("-".to_owned(), |x| format!("{x:.4}"))
}

fn print_run(run: &Value) {
    println!(
        "run {}  {}  dataset {}:{} -> model {}  epochs {}/{}",
        text(run, "id"),
        text(run, "state"),
        text(run, "dataset"),
        text(run, "dataset_version"),
        text(run, "model"),
        text(run, "epochs_done"),
        text(run, "epochs_total"),
    );
    if let Some(e) = run["error"].as_str() {
        println!("error: {e}");
    }
    let result = &run["result"];
    if result.is_object() {
        println!(
            "registered {}:{} (best epoch {})",
            text(result, "model"),
            text(result, "version"),
            text(result, "best_epoch")
        );
        print_metrics(&result["test_metrics"]);
    }
}

/// The headline figures of a metrics object: accuracy, macro and weighted F1, ROC-AUC, or the
/// regression errors.
fn headline(m: &Value) -> Vec<(&'static str, f64)> {
    [
        ("accuracy", &m["accuracy"]),
        ("macro f1", &m["macro_avg"]["f1"]),
        ("weighted f1", &m["weighted_avg"]["f1"]),
        ("roc auc", &m["roc_auc"]),
        ("r2", &m["r2"]),
        ("rmse", &m["rmse"]),
        ("mae", &m["mae"]),
        ("mse", &m["mse"]),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_f64().map(|x| (k, x)))
    .collect()
}

/// The headline metrics, one per line.
pub fn print_metrics(m: &Value) {
    for (key, x) in headline(m) {
        println!("  {key:<12} {x:.4}");
    }
}

fn epoch_line(e: &Value) -> String {
    format!(
        "epoch {:>4}  lr {:.2e}  train loss {}  val loss {}  val score {}",
        text(e, "epoch"),
        e["lr"].as_f64().unwrap_or(0.0),
        figure(&e["train_loss"]),
        figure(&e["val_loss"]),
        figure(&e["val_score"]),
    )
}

/// Follows a run's events until it ends; returns the final run.
async fn watch(c: &Client, id: &str, json_out: bool) -> Result<Value> {
    let response = c
        .send(c.request(
            reqwest::Method::GET,
            &format!("/api/v1/runs/{}/events", segment(id)),
        ))
        .await?;
    let bar = if std::io::stderr().is_terminal() && !json_out {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg:40!} [{bar:30}] {pos}/{len} epochs {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut stream = response.bytes_stream();
    let (mut buffer, mut event) = (String::new(), String::new());
    let mut end = Value::Null;
    while let Some(chunk) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(
            &chunk.context("the event stream broke")?,
        ));
        while let Some(at) = buffer.find('\n') {
            let line: String = buffer.drain(..=at).collect();
            let line = line.trim_end();
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_owned();
                continue;
            }
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let value: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            match event.as_str() {
                "epoch" => {
                    bar.set_position(value["epoch"].as_u64().unwrap_or(0));
                    bar.set_message(format!(
                        "val loss {} score {}",
                        figure(&value["val_loss"]),
                        figure(&value["val_score"])
                    ));
                    if bar.is_hidden() && !json_out {
                        println!("{}", epoch_line(&value));
                    }
                }
                // The total comes with the run; fetch it once.
                "state" if bar.length() == Some(0) => {
                    if let Ok(run) = c
                        .get::<Value>(&format!("/api/v1/runs/{}", segment(id)))
                        .await
                    {
                        bar.set_length(run["epochs_total"].as_u64().unwrap_or(0));
                    }
                }
                "end" => end = value,
                "error" => bail!("{data}"),
                _ => {}
            }
        }
    }
    bar.finish_and_clear();
    if end.is_null() {
        bail!("the event stream ended before the run did; see `maas runs show {id}`");
    }
    Ok(end)
}

fn finish(run: &Value, json_out: bool) -> Result<()> {
    if json_out {
        print_json(run);
    } else {
        print_run(run);
    }
    match run["state"].as_str() {
        Some("succeeded") => Ok(()),
        Some("failed") => bail!("run {} failed: {}", text(run, "id"), text(run, "error")),
        Some(other) => bail!("run {} is {other}", text(run, "id")),
        None => bail!("the server answered without a run"),
    }
}

pub async fn train(g: &Global, args: TrainArgs) -> Result<()> {
    let c = Client::new(&g.server, g.api_key.clone())?;
    let run: Value = match &args.resume {
        Some(id) => {
            c.post(&format!("/api/v1/runs/{}/resume", segment(id)), &json!({}))
                .await?
        }
        None => {
            let spec = match &args.spec {
                Some(p) => read_spec(p)?,
                None => json!({}),
            };
            let body = json!({"dataset": args.dataset, "spec": spec, "model": args.name});
            c.post("/api/v1/runs", &body).await?
        }
    };
    let id = text(&run, "id");
    if args.detach {
        if g.json {
            print_json(&run);
        } else {
            println!("{id}");
        }
        return Ok(());
    }
    if !g.json {
        eprintln!(
            "run {id}: training (Ctrl-C leaves it running; `maas runs cancel {id}` stops it)"
        );
    }
    let end = watch(&c, &id, g.json).await?;
    finish(&end, g.json)
}

pub async fn runs(g: &Global, cmd: RunsCommand) -> Result<()> {
    let c = Client::new(&g.server, g.api_key.clone())?;
    match cmd {
        RunsCommand::List => {
            let runs: Vec<Value> = c.get("/api/v1/runs").await?;
            if g.json {
                print_json(&Value::Array(runs));
                return Ok(());
            }
            let rows = runs
                .iter()
                .map(|r| {
                    vec![
                        text(r, "id"),
                        text(r, "state"),
                        format!("{}:{}", text(r, "dataset"), text(r, "dataset_version")),
                        text(r, "model"),
                        format!("{}/{}", text(r, "epochs_done"), text(r, "epochs_total")),
                        when(r["created_at"].as_str().unwrap_or("")),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &["ID", "STATE", "DATASET", "MODEL", "EPOCHS", "CREATED"],
                    rows
                )
            );
        }
        RunsCommand::Show { id } => {
            let run: Value = c.get(&format!("/api/v1/runs/{}", segment(&id))).await?;
            if g.json {
                print_json(&run);
            } else {
                print_run(&run);
                for e in run["history"].as_array().into_iter().flatten() {
                    println!("{}", epoch_line(e));
                }
            }
        }
        RunsCommand::Watch { id } => {
            let end = watch(&c, &id, g.json).await?;
            finish(&end, g.json)?;
        }
        RunsCommand::Cancel { id } => {
            let run: Value = c
                .post(&format!("/api/v1/runs/{}/cancel", segment(&id)), &json!({}))
                .await?;
            if g.json {
                print_json(&run);
            } else {
                println!("run {id}: cancelling");
            }
        }
    }
    Ok(())
}

pub async fn predict(g: &Global, args: PredictArgs) -> Result<()> {
    let c = Client::new(&g.server, g.api_key.clone())?;
    let raw = if args.rows == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read rows from stdin")?
    } else if args.rows.trim_start().starts_with(['[', '{']) {
        args.rows.clone()
    } else {
        std::fs::read_to_string(&args.rows).with_context(|| format!("cannot read {}", args.rows))?
    };
    let rows: Value = serde_json::from_str(&raw).context("the rows are not valid JSON")?;
    let body = match rows {
        Value::Array(_) => json!({"rows": rows}),
        Value::Object(ref o) if o.contains_key("rows") => rows,
        Value::Object(_) => json!({"rows": [rows]}),
        _ => bail!("the rows must be a JSON array of objects"),
    };
    let out: Value = c
        .post(&format!("/v1/predict/{}", segment(&args.model)), &body)
        .await?;
    if g.json {
        print_json(&out);
        return Ok(());
    }
    for p in out["predictions"].as_array().into_iter().flatten() {
        match p.get("label") {
            Some(label) => {
                let score = p["probabilities"][label.as_str().unwrap_or("")]
                    .as_f64()
                    .unwrap_or(0.0);
                println!("{}\t{score:.4}", label.as_str().unwrap_or(""));
            }
            None => println!("{}", figure(&p["value"])),
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    /// NAME, NAME:VERSION or NAME@ALIAS.
    model: String,
    /// Dataset: NAME or NAME:VERSION.
    #[arg(long)]
    dataset: String,
}

pub async fn eval(g: &Global, args: EvalArgs) -> Result<()> {
    let c = Client::new(&g.server, g.api_key.clone())?;
    let out: Value = c
        .post(
            "/api/v1/evaluations?wait=true",
            &json!({"model": args.model, "dataset": args.dataset}),
        )
        .await?;
    if g.json {
        print_json(&out);
        return Ok(());
    }
    let e = &out["evaluation"];
    println!(
        "{}:{} on {}:{} ({} rows, target '{}')",
        text(&out, "model"),
        text(&out, "version"),
        text(&e["dataset"], "name"),
        text(&e["dataset"], "version"),
        text(e, "rows"),
        text(e, "target"),
    );
    let m = &e["metrics"];
    print_metrics(m);
    let classes: Vec<String> = m["classes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c.as_str().unwrap_or("").to_owned())
        .collect();
    if let Some(per_class) = m["per_class"].as_array() {
        let rows = per_class
            .iter()
            .zip(&classes)
            .map(|(p, name)| {
                vec![
                    name.clone(),
                    figure(&p["precision"]),
                    figure(&p["recall"]),
                    figure(&p["f1"]),
                    text(p, "support"),
                ]
            })
            .collect();
        println!(
            "{}",
            table(&["CLASS", "PRECISION", "RECALL", "F1", "SUPPORT"], rows)
        );
    }
    if let Some(confusion) = m["confusion"].as_array() {
        let mut header = vec!["TRUE \\ PREDICTED".to_owned()];
        header.extend(classes.iter().cloned());
        let rows = confusion
            .iter()
            .zip(&classes)
            .map(|(row, name)| {
                let mut cells = vec![name.clone()];
                cells.extend(row.as_array().into_iter().flatten().map(|n| n.to_string()));
                cells
            })
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        println!("{}", table(&header, rows));
    }
    Ok(())
}

/// The metrics `maas models compare` lines up: the test split's, then each evaluated
/// dataset's latest.
fn metric_rows(v: &Value) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = headline(&v["metrics"]["test"])
        .into_iter()
        .map(|(k, x)| (format!("test {k}"), x))
        .collect();
    for e in v["metrics"]["evaluations"].as_array().into_iter().flatten() {
        let on = format!(
            "{}:{}",
            text(&e["dataset"], "name"),
            text(&e["dataset"], "version")
        );
        for (k, x) in headline(&e["metrics"]) {
            let label = format!("{on} {k}");
            out.retain(|(l, _)| *l != label);
            out.push((label, x));
        }
    }
    out
}

pub async fn compare(g: &Global, a: &str, b: &str) -> Result<()> {
    let c = Client::new(&g.server, g.api_key.clone())?;
    let va: Value = c.get(&format!("/api/v1/refs/{}", segment(a))).await?;
    let vb: Value = c.get(&format!("/api/v1/refs/{}", segment(b))).await?;
    if g.json {
        print_json(&json!([va, vb]));
        return Ok(());
    }
    let name = |v: &Value| format!("{}:{}", text(v, "model"), text(v, "version"));
    let lineage = |v: &Value, key: &str| match &v["lineage"][key] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("name") => {
            format!(
                "{}:{}",
                text(&v["lineage"][key], "name"),
                text(&v["lineage"][key], "version")
            )
        }
        other => other.to_string(),
    };
    let mut rows = vec![
        vec![
            "format".to_owned(),
            text(&va, "format"),
            text(&vb, "format"),
            String::new(),
        ],
        vec![
            "source".to_owned(),
            text(&va, "source"),
            text(&vb, "source"),
            String::new(),
        ],
        vec![
            "dataset".to_owned(),
            lineage(&va, "dataset"),
            lineage(&vb, "dataset"),
            String::new(),
        ],
        vec![
            "seed".to_owned(),
            lineage(&va, "seed"),
            lineage(&vb, "seed"),
            String::new(),
        ],
        vec![
            "best epoch".to_owned(),
            lineage(&va, "best_epoch"),
            lineage(&vb, "best_epoch"),
            String::new(),
        ],
    ];
    let (ma, mb) = (metric_rows(&va), metric_rows(&vb));
    let mut labels: Vec<&String> = ma.iter().map(|(l, _)| l).collect();
    for (l, _) in &mb {
        if !labels.contains(&l) {
            labels.push(l);
        }
    }
    for label in labels {
        let x = ma.iter().find(|(l, _)| l == label).map(|(_, x)| *x);
        let y = mb.iter().find(|(l, _)| l == label).map(|(_, x)| *x);
        let show = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.4}"));
        let diff = match (x, y) {
            (Some(x), Some(y)) => format!("{:+.4}", y - x),
            _ => String::new(),
        };
        rows.push(vec![label.clone(), show(x), show(y), diff]);
    }
    let (ha, hb) = (name(&va), name(&vb));
    println!("{}", table(&["", &ha, &hb, "B - A"], rows));
    Ok(())
}
