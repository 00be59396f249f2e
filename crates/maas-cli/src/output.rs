//! Printing for people: tables, sizes, short digests.

use comfy_table::presets::NOTHING;
use comfy_table::Table;

pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(header.iter().copied());
    for row in rows {
        t.add_row(row);
    }
    // comfy-table pads the first column with a leading space in this preset; trim each line.
    t.to_string()
        .lines()
        .map(|l| l.trim_end().strip_prefix(' ').unwrap_or(l).to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn short_digest(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

pub fn text(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        // Timestamps read better to the second.
        Some(serde_json::Value::String(s)) if key.ends_with("_at") || key == "at" => when(s),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// `2026-11-29T02:05:19.853115636Z` → `2026-11-29 02:05:19Z`.
pub fn when(rfc3339: &str) -> String {
    match rfc3339.split_once('.') {
        Some((head, _)) if head.len() == 19 => format!("{}Z", head.replacen('T', " ", 1)),
        _ => rfc3339.replacen('T', " ", 1),
    }
}

pub fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(92_871_040), "92.9 MB");
        assert_eq!(
            when("2026-11-29T02:05:19.853115636Z"),
            "2026-11-29 02:05:19Z"
        );
    }
}
