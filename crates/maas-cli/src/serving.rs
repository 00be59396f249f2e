//! `maas ps`, `maas load` and `maas unload`: which models are in memory, and putting them there
//! (or taking them out) ahead of traffic.

use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};

use crate::client::{segment, Client};
use crate::output::{print_json, size, table, text};
use crate::Global;

#[derive(Args)]
pub struct LoadArgs {
    /// NAME, NAME:VERSION or NAME@ALIAS.
    model: String,
    /// Keep it loaded regardless of memory pressure and idle time.
    #[arg(long, conflicts_with = "unpin")]
    pin: bool,
    /// Release a pin.
    #[arg(long)]
    unpin: bool,
}

#[derive(Args)]
pub struct UnloadArgs {
    /// NAME, NAME:VERSION or NAME@ALIAS.
    model: String,
}

fn ago(ms: &Value) -> String {
    let Some(then) = ms.as_u64() else {
        return "-".to_owned();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(then);
    let secs = now.saturating_sub(then) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

fn rows(loaded: &[Value]) -> Vec<Vec<String>> {
    loaded
        .iter()
        .map(|m| {
            let caps = m["capabilities"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                format!("{}:{}", text(m, "model"), text(m, "version")),
                size(m["memory_bytes"].as_u64().unwrap_or(0)),
                caps,
                if m["pinned"] == true { "yes" } else { "no" }.to_owned(),
                text(m, "in_flight"),
                ago(&m["last_used_ms"]),
            ]
        })
        .collect()
}

const HEADER: [&str; 6] = ["MODEL", "MEMORY", "CAN", "PINNED", "IN FLIGHT", "LAST USED"];

pub async fn ps(g: &Global) -> Result<()> {
    let c = Client::new(&g.server, g.api_key.clone())?;
    let loaded: Vec<Value> = c.get("/api/v1/loaded").await?;
    if g.json {
        print_json(&Value::Array(loaded));
    } else {
        println!("{}", table(&HEADER, rows(&loaded)));
    }
    Ok(())
}

pub async fn load(g: &Global, args: LoadArgs) -> Result<()> {
    let c = Client::new(&g.server, g.api_key.clone())?;
    let pin = if args.pin {
        Some(true)
    } else if args.unpin {
        Some(false)
    } else {
        None
    };
    let info: Value = c
        .post("/api/v1/loaded", &json!({"model": args.model, "pin": pin}))
        .await?;
    if g.json {
        print_json(&info);
    } else {
        println!("{}", table(&HEADER, rows(&[info])));
    }
    Ok(())
}

pub async fn unload(g: &Global, args: UnloadArgs) -> Result<()> {
    let c = Client::new(&g.server, g.api_key.clone())?;
    c.delete(&format!("/api/v1/loaded/{}", segment(&args.model)))
        .await?;
    if !g.json {
        println!("unloaded {}", args.model);
    }
    Ok(())
}
