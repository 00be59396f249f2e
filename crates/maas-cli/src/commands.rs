//! Registry, key and audit commands.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use maas_core::{ModelRef, VersionSelector};
use serde_json::{json, Value};

use crate::client::{segment, Client};
use crate::output::{print_json, short_digest, size, table, text};
use crate::Global;

fn client(g: &Global) -> Result<Client> {
    Client::new(&g.server, g.api_key.clone())
}

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// List models.
    List,
    /// Create an empty model with a task and description (pull creates models on demand too).
    Create {
        /// Model name.
        name: String,
        /// text-generation, embedding, speech-to-text, image-classification, …
        #[arg(long)]
        task: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show a model and its versions (NAME), or one version (NAME:VERSION, NAME@ALIAS).
    Show {
        /// NAME, NAME:VERSION or NAME@ALIAS.
        reference: String,
    },
    /// Delete a whole model (NAME) or one version (NAME:VERSION). Needs an admin key.
    Delete {
        /// NAME or NAME:VERSION.
        reference: String,
    },
    /// Two versions side by side: lineage, test metrics and evaluations (B - A).
    Compare {
        /// NAME, NAME:VERSION or NAME@ALIAS.
        a: String,
        /// NAME, NAME:VERSION or NAME@ALIAS.
        b: String,
    },
}

#[derive(Subcommand)]
pub enum AliasCommand {
    /// Point ALIAS of MODEL at VERSION (creating or moving it).
    Set {
        model: String,
        alias: String,
        version: i64,
    },
    /// Remove an alias.
    Delete { model: String, alias: String },
}

#[derive(Args)]
pub struct TagArgs {
    /// NAME:VERSION.
    reference: String,
    /// KEY=VALUE pairs.
    #[arg(required = true)]
    tags: Vec<String>,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        /// admin, deployer or consumer.
        #[arg(long)]
        role: String,
        /// A label for the key.
        #[arg(long, default_value = "cli")]
        name: String,
        /// For consumer keys: the only models it may use (comma-separated).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Lifetime, e.g. 90d, 12h, 30m.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List keys.
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Show audit entries, oldest first.
    List {
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Check the hash chain; exits non-zero if any entry was edited or removed.
    Verify,
}

fn aliases_text(model: &Value) -> String {
    model
        .get("aliases")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}→{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

fn version_rows(versions: &[Value]) -> Vec<Vec<String>> {
    versions
        .iter()
        .map(|v| {
            let aliases = v.get("aliases").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            vec![
                text(v, "version"),
                text(v, "format"),
                size(
                    v.get("artifact_size_bytes")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                ),
                short_digest(&text(v, "artifact_digest")),
                aliases
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| "-".to_owned()),
                text(v, "source"),
                text(v, "created_at"),
            ]
        })
        .collect()
}

pub fn print_version(v: &Value) {
    println!("{}:{}", text(v, "model"), text(v, "version"));
    for key in [
        "format",
        "artifact_kind",
        "artifact_digest",
        "source",
        "created_by",
        "created_at",
    ] {
        println!("  {key:<16}{}", text(v, key));
    }
    println!(
        "  {:<16}{}",
        "size",
        size(
            v.get("artifact_size_bytes")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        )
    );
    for key in ["aliases", "tags", "metrics", "lineage", "metadata"] {
        if let Some(value) = v.get(key).filter(|x| {
            !x.is_null()
                && x.as_object().is_none_or(|o| !o.is_empty())
                && x.as_array().is_none_or(|a| !a.is_empty())
        }) {
            println!(
                "  {key:<16}{}",
                serde_json::to_string(value).unwrap_or_default()
            );
        }
    }
}

pub async fn models(g: &Global, cmd: ModelsCommand) -> Result<()> {
    let c = client(g)?;
    match cmd {
        ModelsCommand::List => {
            let models: Vec<Value> = c.get("/api/v1/models").await?;
            if g.json {
                print_json(&Value::Array(models));
                return Ok(());
            }
            let rows = models
                .iter()
                .map(|m| {
                    vec![
                        text(m, "name"),
                        text(m, "task"),
                        text(m, "latest_version"),
                        aliases_text(m),
                        text(m, "created_at"),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["NAME", "TASK", "LATEST", "ALIASES", "CREATED"], rows)
            );
        }
        ModelsCommand::Create {
            name,
            task,
            description,
        } => {
            let model: Value = c
                .post(
                    "/api/v1/models",
                    &json!({"name": name, "task": task, "description": description}),
                )
                .await?;
            if g.json {
                print_json(&model);
            } else {
                println!(
                    "created model {} ({})",
                    text(&model, "name"),
                    text(&model, "task")
                );
            }
        }
        ModelsCommand::Show { reference } => {
            let r = ModelRef::parse(&reference)?;
            if r.selector == VersionSelector::Latest {
                let model: Value = c
                    .get(&format!("/api/v1/models/{}", segment(r.name.as_str())))
                    .await?;
                if g.json {
                    print_json(&model);
                    return Ok(());
                }
                println!("{}  ({})", text(&model, "name"), text(&model, "task"));
                let description = text(&model, "description");
                if !description.is_empty() && description != "-" {
                    println!("  {description}");
                }
                println!(
                    "  created {} by {}",
                    text(&model, "created_at"),
                    text(&model, "created_by")
                );
                let versions = model
                    .get("versions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                println!();
                println!(
                    "{}",
                    table(
                        &["VERSION", "FORMAT", "SIZE", "DIGEST", "ALIASES", "SOURCE", "CREATED"],
                        version_rows(&versions)
                    )
                );
            } else {
                let v: Value = c
                    .get(&format!("/api/v1/refs/{}", segment(&reference)))
                    .await?;
                if g.json {
                    print_json(&v);
                } else {
                    print_version(&v);
                }
            }
        }
        ModelsCommand::Compare { a, b } => crate::train::compare(g, &a, &b).await?,
        ModelsCommand::Delete { reference } => {
            let r = ModelRef::parse(&reference)?;
            let path = match r.selector {
                VersionSelector::Latest => format!("/api/v1/models/{}", segment(r.name.as_str())),
                VersionSelector::Number(n) => {
                    format!("/api/v1/models/{}/versions/{n}", segment(r.name.as_str()))
                }
                VersionSelector::Alias(_) => {
                    bail!("delete takes NAME or NAME:VERSION, not an alias: '{reference}'")
                }
            };
            c.delete(&path).await?;
            if g.json {
                print_json(&json!({"deleted": reference}));
            } else {
                println!("deleted {reference}");
            }
        }
    }
    Ok(())
}

pub async fn alias(g: &Global, cmd: AliasCommand) -> Result<()> {
    let c = client(g)?;
    match cmd {
        AliasCommand::Set {
            model,
            alias,
            version,
        } => {
            let path = format!(
                "/api/v1/models/{}/aliases/{}",
                segment(&model),
                segment(&alias)
            );
            let a: Value = c.put(&path, &json!({"version": version})).await?;
            if g.json {
                print_json(&a);
            } else {
                println!("{model}@{alias} → {model}:{version}");
            }
        }
        AliasCommand::Delete { model, alias } => {
            c.delete(&format!(
                "/api/v1/models/{}/aliases/{}",
                segment(&model),
                segment(&alias)
            ))
            .await?;
            if g.json {
                print_json(&json!({"deleted": format!("{model}@{alias}")}));
            } else {
                println!("deleted {model}@{alias}");
            }
        }
    }
    Ok(())
}

pub async fn tag(g: &Global, args: TagArgs) -> Result<()> {
    let r = ModelRef::parse(&args.reference)?;
    let VersionSelector::Number(version) = r.selector else {
        bail!("tag takes NAME:VERSION, got '{}'", args.reference);
    };
    let mut tags = serde_json::Map::new();
    for pair in &args.tags {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("tag '{pair}' is not KEY=VALUE"))?;
        tags.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    let path = format!(
        "/api/v1/models/{}/versions/{version}/tags",
        segment(r.name.as_str())
    );
    let v: Value = client(g)?.put(&path, &Value::Object(tags)).await?;
    if g.json {
        print_json(&v);
    } else {
        println!(
            "{}:{version} tags {}",
            r.name,
            serde_json::to_string(&v["tags"]).unwrap_or_default()
        );
    }
    Ok(())
}

/// Parses `90d`, `12h`, `30m` or `45s`.
fn parse_duration(s: &str) -> Result<Duration> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .with_context(|| format!("--expires-in '{s}' must look like 90d, 12h, 30m or 45s"))?;
    let seconds = match unit {
        "d" => n * 86_400,
        "h" => n * 3_600,
        "m" => n * 60,
        "s" | "" => n,
        _ => bail!("--expires-in '{s}' must look like 90d, 12h, 30m or 45s"),
    };
    if seconds == 0 {
        bail!("--expires-in must be longer than zero");
    }
    Ok(Duration::from_secs(seconds))
}

fn key_status(k: &Value) -> String {
    if !k["revoked_at"].is_null() {
        return "revoked".to_owned();
    }
    let expired = k["expires_at"]
        .as_str()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .is_some_and(|t| t <= time::OffsetDateTime::now_utc());
    if expired { "expired" } else { "active" }.to_owned()
}

pub async fn keys(g: &Global, cmd: KeysCommand) -> Result<()> {
    let c = client(g)?;
    match cmd {
        KeysCommand::Create {
            role,
            name,
            models,
            expires_in,
        } => {
            let expires_at = expires_in
                .map(|d| parse_duration(&d))
                .transpose()?
                .map(|d| {
                    let t = time::OffsetDateTime::now_utc() + d;
                    t.format(&time::format_description::well_known::Rfc3339)
                })
                .transpose()?;
            let body =
                json!({"name": name, "role": role, "models": models, "expires_at": expires_at});
            let created: Value = c.post("/api/v1/keys", &body).await?;
            if g.json {
                print_json(&created);
            } else {
                println!(
                    "created {} key {} ({}); it is shown only this once:\n\n    {}\n",
                    text(&created, "role"),
                    text(&created, "id"),
                    text(&created, "name"),
                    text(&created, "key")
                );
            }
        }
        KeysCommand::List => {
            let keys: Vec<Value> = c.get("/api/v1/keys").await?;
            if g.json {
                print_json(&Value::Array(keys));
                return Ok(());
            }
            let rows = keys
                .iter()
                .map(|k| {
                    let models = k["models"]
                        .as_array()
                        .map(|m| {
                            m.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_else(|| "*".to_owned());
                    vec![
                        text(k, "id"),
                        text(k, "name"),
                        text(k, "role"),
                        models,
                        text(k, "expires_at"),
                        key_status(k),
                        text(k, "created_at"),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &["ID", "NAME", "ROLE", "MODELS", "EXPIRES", "STATUS", "CREATED"],
                    rows
                )
            );
        }
        KeysCommand::Revoke { id } => {
            let revoked: Value = c
                .json(c.request(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/keys/{}", segment(&id)),
                ))
                .await?;
            if g.json {
                print_json(&revoked);
            } else {
                println!("revoked key {id}");
            }
        }
    }
    Ok(())
}

pub async fn audit(g: &Global, cmd: AuditCommand) -> Result<()> {
    let c = client(g)?;
    match cmd {
        AuditCommand::List { after, limit } => {
            let entries: Vec<Value> = c
                .get(&format!("/api/v1/audit?after={after}&limit={limit}"))
                .await?;
            if g.json {
                print_json(&Value::Array(entries));
                return Ok(());
            }
            let rows = entries
                .iter()
                .map(|e| {
                    vec![
                        text(e, "seq"),
                        text(e, "at"),
                        text(e, "actor"),
                        text(e, "action"),
                        text(e, "target"),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["SEQ", "AT", "ACTOR", "ACTION", "TARGET"], rows)
            );
        }
        AuditCommand::Verify => {
            let verdict: Value = c.get("/api/v1/audit/verify").await?;
            if g.json {
                print_json(&verdict);
            } else if verdict["ok"].as_bool() == Some(true) {
                println!("audit chain intact: {} entries", text(&verdict, "entries"));
            }
            if verdict["ok"].as_bool() != Some(true) {
                bail!("audit chain broken: {}", text(&verdict, "problem"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1_800));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("5w").is_err());
    }
}
