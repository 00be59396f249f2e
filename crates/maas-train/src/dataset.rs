//! Datasets: CSV (with a header row) and JSONL parsed into a table of text cells, each column's
//! kind inferred (numeric, categorical or text), and a profile of every column; image datasets as a
//! zip of `LABEL/NAME.png` folders, read as a table of (image path, label). Every problem is
//! reported with the row and column (or zip entry) it is in.

use std::collections::BTreeMap;

use maas_core::{Error, Result};
use serde::Serialize;

/// File formats a dataset can be uploaded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// A zip of images in one folder per label.
    Zip,
}

impl FileFormat {
    /// The format a file name says (`.csv`, `.jsonl`/`.ndjson`).
    pub fn from_name(name: &str) -> Option<FileFormat> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(FileFormat::Csv)
        } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
            Some(FileFormat::Jsonl)
        } else if lower.ends_with(".zip") {
            Some(FileFormat::Zip)
        } else {
            None
        }
    }
}

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Numbers.
    Numeric,
    /// A few distinct values, each repeated.
    Categorical,
    /// Free text.
    Text,
    /// An image (a path inside the dataset's zip).
    Image,
}

/// A parsed table: column names and rows of cells (None where the value is missing).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column names, in file order.
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<Option<String>>>,
    /// Kinds the file's format fixes (an image zip's `image` column), not inferred.
    pub fixed: BTreeMap<String, Kind>,
}

/// Spellings of a missing value (compared case-insensitively), as pandas reads them.
fn is_missing(cell: &str) -> bool {
    let t = cell.trim();
    t.is_empty()
        || ["na", "n/a", "nan", "null", "none"]
            .iter()
            .any(|m| t.eq_ignore_ascii_case(m))
}

fn cell(raw: &str) -> Option<String> {
    (!is_missing(raw)).then(|| raw.to_owned())
}

/// Image files an image dataset may hold.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp"];

/// Largest image in an image dataset, in pixels (checked from each file's header).
const MAX_DATASET_IMAGE_PIXELS: u64 = 50_000_000;

/// A zip of `LABEL/NAME.ext` images, possibly all under one top folder: a table with columns
/// `image` (the entry's path) and `label`. Every image's header is read, so a file that is not an
/// image, or is too large, is refused naming the entry.
fn parse_zip(bytes: &[u8]) -> Result<Table> {
    let bad = |m: String| Error::invalid(m);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| bad(format!("the file is not a readable zip: {e}")))?;
    let mut paths = vec![];
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| bad(format!("zip entry {i} cannot be read: {e}")))?;
        let name = entry.name().to_owned();
        if entry.is_dir() || hidden(&name) {
            continue;
        }
        paths.push((i, name));
    }
    if paths.is_empty() {
        return Err(bad("the zip holds no images".to_owned()));
    }
    // One folder that holds everything is a wrapper, not a label.
    let first = paths[0].1.split('/').next().unwrap_or("").to_owned();
    let wrapped = paths
        .iter()
        .all(|(_, p)| p.split('/').count() == 3 && p.starts_with(&format!("{first}/")));
    let mut rows = vec![];
    for (i, path) in paths {
        let parts: Vec<&str> = path.split('/').collect();
        let parts = if wrapped { &parts[1..] } else { &parts[..] };
        let [label, file] = parts else {
            return Err(bad(format!(
                "zip entry '{path}' is not LABEL/FILE: put each image in a folder named after its label"
            )));
        };
        let ext = file.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        if !ext
            .as_deref()
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e))
        {
            return Err(bad(format!(
                "zip entry '{path}' is not an image ({})",
                IMAGE_EXTENSIONS.join(", ")
            )));
        }
        let mut data = vec![];
        std::io::Read::read_to_end(
            &mut archive
                .by_index(i)
                .map_err(|e| bad(format!("zip entry '{path}' cannot be read: {e}")))?,
            &mut data,
        )
        .map_err(|e| bad(format!("zip entry '{path}' cannot be read: {e}")))?;
        let (w, h) = image::ImageReader::new(std::io::Cursor::new(&data))
            .with_guessed_format()
            .ok()
            .and_then(|r| r.into_dimensions().ok())
            .ok_or_else(|| bad(format!("zip entry '{path}' is not a readable image")))?;
        if u64::from(w) * u64::from(h) > MAX_DATASET_IMAGE_PIXELS {
            return Err(bad(format!(
                "zip entry '{path}' is {w}x{h}, more than {MAX_DATASET_IMAGE_PIXELS} pixels"
            )));
        }
        rows.push(vec![Some(path.clone()), Some((*label).to_owned())]);
    }
    Ok(Table {
        columns: vec!["image".to_owned(), "label".to_owned()],
        rows,
        // A folder per label: the labels are classes even when they are numbers.
        fixed: BTreeMap::from([
            ("image".to_owned(), Kind::Image),
            ("label".to_owned(), Kind::Categorical),
        ]),
    })
}

/// The image files of an image dataset's zip, by the path its `image` column holds.
pub fn zip_images(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>> {
    let bad = |m: String| Error::invalid(m);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| bad(format!("the file is not a readable zip: {e}")))?;
    let mut files = BTreeMap::new();
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| bad(format!("zip entry {i} cannot be read: {e}")))?;
        let name = entry.name().to_owned();
        if entry.is_dir() || hidden(&name) {
            continue;
        }
        let mut data = vec![];
        std::io::Read::read_to_end(&mut entry, &mut data)
            .map_err(|e| bad(format!("zip entry '{name}' cannot be read: {e}")))?;
        files.insert(name, data);
    }
    Ok(files)
}

/// Entries a zip tool adds that are not part of the data (`.DS_Store`, `__MACOSX/`).
fn hidden(name: &str) -> bool {
    name.split('/')
        .any(|seg| seg.starts_with('.') || seg == "__MACOSX")
}

/// Parses `bytes` as `format`.
pub fn parse(bytes: &[u8], format: FileFormat) -> Result<Table> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::invalid("the file is empty"));
    }
    let table = match format {
        FileFormat::Csv => parse_csv(bytes)?,
        FileFormat::Jsonl => parse_jsonl(bytes)?,
        FileFormat::Zip => parse_zip(bytes)?,
    };
    if table.rows.is_empty() {
        return Err(Error::invalid("the file has a header but no rows"));
    }
    Ok(table)
}

fn parse_csv(bytes: &[u8]) -> Result<Table> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| Error::invalid(format!("cannot read the header row: {e}")))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    check_columns(&columns)?;
    let mut rows = vec![];
    for (i, record) in reader.records().enumerate() {
        // Line numbers count the header as line 1.
        let line = i + 2;
        let record = record.map_err(|e| Error::invalid(format!("line {line}: {e}")))?;
        if record.len() == 1 && record.get(0).is_some_and(|c| c.trim().is_empty()) {
            continue;
        }
        if record.len() != columns.len() {
            return Err(Error::invalid(format!(
                "line {line} has {} fields but the header has {}",
                record.len(),
                columns.len()
            )));
        }
        rows.push(record.iter().map(cell).collect());
    }
    Ok(Table {
        columns,
        rows,
        fixed: BTreeMap::new(),
    })
}

fn check_columns(columns: &[String]) -> Result<()> {
    if let Some(i) = columns.iter().position(String::is_empty) {
        return Err(Error::invalid(format!(
            "column {} of the header has no name",
            i + 1
        )));
    }
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].contains(c) {
            return Err(Error::invalid(format!(
                "column '{c}' appears twice in the header"
            )));
        }
    }
    Ok(())
}

fn parse_jsonl(bytes: &[u8]) -> Result<Table> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::invalid(format!("the file is not UTF-8: {e}")))?;
    let mut columns: Vec<String> = vec![];
    let mut objects = vec![];
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        // An IndexMap keeps the keys in the order the line has them.
        let object: indexmap::IndexMap<String, serde_json::Value> = serde_json::from_str(line)
            .map_err(|e| {
                if e.is_data() {
                    Error::invalid(format!("line {line_no} is not a JSON object"))
                } else {
                    Error::invalid(format!("line {line_no} is not JSON: {e}"))
                }
            })?;
        for key in object.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
        objects.push((line_no, object));
    }
    let mut rows = Vec::with_capacity(objects.len());
    for (line_no, object) in objects {
        let row = columns
            .iter()
            .map(|c| match object.get(c) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(cell(s)),
                Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
                Some(serde_json::Value::Bool(b)) => Ok(Some(b.to_string())),
                Some(_) => Err(Error::invalid(format!(
                    "line {line_no}, column '{c}': nested values are not supported; flatten them"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        rows.push(row);
    }
    Ok(Table {
        columns,
        rows,
        fixed: BTreeMap::new(),
    })
}

fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// One column's inferred kind and profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnProfile {
    /// Name.
    pub name: String,
    /// Inferred (or declared) kind.
    pub kind: Kind,
    /// Values present.
    pub count: usize,
    /// Values missing.
    pub missing: usize,
    /// Distinct values present.
    pub distinct: usize,
    /// Numeric columns: smallest value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Numeric columns: largest value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Numeric columns: mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// Numeric columns: sample standard deviation (n - 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// Categorical columns (and the target): how often each value occurs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<BTreeMap<String, usize>>,
}

/// What a model trained on the dataset would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Problem {
    /// Predict one of a few labels.
    Classification,
    /// Predict a number.
    Regression,
}

/// A dataset's schema and profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    /// Rows.
    pub rows: usize,
    /// Every column, in file order.
    pub columns: Vec<ColumnProfile>,
    /// The column to predict.
    pub target: String,
    /// Classification or regression, from the target's kind.
    pub problem: Problem,
}

/// A non-numeric column with at most this many distinct values, each seen twice on average,
/// is categorical; otherwise text.
const MAX_CATEGORIES: usize = 50;
/// A numeric target with at most this many distinct whole values is a set of class labels.
const MAX_NUMERIC_CLASSES: usize = 20;

fn infer_kind(table: &Table, col: usize) -> Result<Kind> {
    let present: Vec<(usize, &str)> = table
        .rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r[col].as_deref().map(|v| (i, v)))
        .collect();
    let numeric = present.iter().filter(|(_, v)| number(v).is_some()).count();
    if !present.is_empty() && numeric == present.len() {
        return Ok(Kind::Numeric);
    }
    // Mostly numbers with a stray word is a data error, not a text column.
    if numeric * 10 >= present.len() * 9 && numeric > 0 {
        if let Some((row, bad)) = present.iter().find(|(_, v)| number(v).is_none()) {
            return Err(Error::invalid(format!(
                "column '{}' is numeric, but line {} holds '{bad}'; fix the value, or declare the column categorical",
                table.columns[col],
                row + 2
            )));
        }
    }
    let mut distinct: Vec<&str> = present.iter().map(|(_, v)| *v).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() <= MAX_CATEGORIES && distinct.len() * 2 <= present.len() {
        Ok(Kind::Categorical)
    } else {
        Ok(Kind::Text)
    }
}

/// Infers each column's kind (`declared` overrides it by column name), checks the target and
/// profiles the table. The target defaults to the last column.
pub fn profile(
    table: &Table,
    target: Option<&str>,
    declared: &BTreeMap<String, Kind>,
) -> Result<Profile> {
    for name in declared.keys() {
        if !table.columns.contains(name) {
            return Err(Error::invalid(format!(
                "a kind is declared for column '{name}', which the file does not have"
            )));
        }
    }
    let target = match target {
        Some(t) => t.to_owned(),
        None => table
            .columns
            .last()
            .cloned()
            .ok_or_else(|| Error::invalid("the file has no columns"))?,
    };
    let target_index = table
        .columns
        .iter()
        .position(|c| *c == target)
        .ok_or_else(|| {
            Error::invalid(format!(
                "unknown target column '{target}'; the columns are {}",
                table.columns.join(", ")
            ))
        })?;
    let mut columns = Vec::with_capacity(table.columns.len());
    for (i, name) in table.columns.iter().enumerate() {
        let kind = match declared.get(name).or(table.fixed.get(name)) {
            Some(k) => *k,
            None => infer_kind(table, i)?,
        };
        columns.push(column_profile(table, i, kind)?);
    }
    let t = &columns[target_index];
    if t.missing > 0 {
        let row = table
            .rows
            .iter()
            .position(|r| r[target_index].is_none())
            .unwrap_or(0);
        return Err(Error::invalid(format!(
            "the target column '{target}' is missing on line {} ({} rows in all); drop those rows",
            row + 2,
            t.missing
        )));
    }
    let problem = match t.kind {
        Kind::Categorical => Problem::Classification,
        Kind::Numeric
            if t.distinct <= MAX_NUMERIC_CLASSES
                && table
                    .rows
                    .iter()
                    .filter_map(|r| r[target_index].as_deref().and_then(number))
                    .all(|x| x.fract() == 0.0) =>
        {
            Problem::Classification
        }
        Kind::Numeric => Problem::Regression,
        Kind::Image => {
            return Err(Error::invalid(format!(
                "the target column '{target}' holds images; a target must be labels or numbers"
            )))
        }
        Kind::Text => {
            return Err(Error::invalid(format!(
                "the target column '{target}' holds free text ({} distinct values); a target must be labels or numbers",
                t.distinct
            )))
        }
    };
    if problem == Problem::Classification {
        let mut target_profile = columns[target_index].clone();
        if target_profile.counts.is_none() {
            target_profile.counts = Some(value_counts(table, target_index));
        }
        columns[target_index] = target_profile;
    }
    Ok(Profile {
        rows: table.rows.len(),
        columns,
        target,
        problem,
    })
}

fn value_counts(table: &Table, col: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for v in table.rows.iter().filter_map(|r| r[col].as_deref()) {
        *counts.entry(v.to_owned()).or_insert(0) += 1;
    }
    counts
}

fn column_profile(table: &Table, col: usize, kind: Kind) -> Result<ColumnProfile> {
    let name = table.columns[col].clone();
    let values: Vec<&str> = table
        .rows
        .iter()
        .filter_map(|r| r[col].as_deref())
        .collect();
    let missing = table.rows.len() - values.len();
    let counts = value_counts(table, col);
    let mut p = ColumnProfile {
        name: name.clone(),
        kind,
        count: values.len(),
        missing,
        distinct: counts.len(),
        min: None,
        max: None,
        mean: None,
        std: None,
        counts: None,
    };
    match kind {
        Kind::Numeric => {
            let mut xs = Vec::with_capacity(values.len());
            for (i, row) in table.rows.iter().enumerate() {
                let Some(v) = row[col].as_deref() else {
                    continue;
                };
                xs.push(number(v).ok_or_else(|| {
                    Error::invalid(format!(
                        "column '{name}' is numeric, but line {} holds '{v}'",
                        i + 2
                    ))
                })?);
            }
            if !xs.is_empty() {
                let n = xs.len() as f64;
                let mean = xs.iter().sum::<f64>() / n;
                let var = if xs.len() > 1 {
                    xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
                } else {
                    0.0
                };
                p.min = xs.iter().copied().reduce(f64::min);
                p.max = xs.iter().copied().reduce(f64::max);
                p.mean = Some(mean);
                p.std = Some(var.sqrt());
            }
        }
        Kind::Categorical => p.counts = Some(counts),
        Kind::Text | Kind::Image => {}
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str) -> Result<Table> {
        parse(text.as_bytes(), FileFormat::Csv)
    }

    #[test]
    fn kinds_profiles_and_the_problem_are_inferred() {
        let table = csv("size,colour,note,label\n1,red,hello there friend,a\n2,red,this is another note,b\n3,blue,,a\nNA,red,and a third one,b\n").unwrap();
        let p = profile(&table, None, &BTreeMap::new()).unwrap();
        assert_eq!(p.rows, 4);
        assert_eq!(p.target, "label");
        assert_eq!(p.problem, Problem::Classification);
        let size = &p.columns[0];
        assert_eq!((size.kind, size.count, size.missing), (Kind::Numeric, 3, 1));
        assert_eq!(
            (size.min, size.max, size.mean, size.std),
            (Some(1.0), Some(3.0), Some(2.0), Some(1.0))
        );
        assert_eq!(p.columns[1].kind, Kind::Categorical);
        assert_eq!(p.columns[1].counts.as_ref().unwrap()["red"], 3);
        assert_eq!((p.columns[2].kind, p.columns[2].missing), (Kind::Text, 1));
        assert_eq!(p.columns[3].counts.as_ref().unwrap()["b"], 2);
    }

    #[test]
    fn a_numeric_target_is_regression_unless_it_looks_like_labels() {
        let t = csv("x,y\n1,0\n2,1\n3,1\n").unwrap();
        assert_eq!(
            profile(&t, None, &BTreeMap::new()).unwrap().problem,
            Problem::Classification
        );
        let t = csv("x,y\n1,0.5\n2,1.25\n3,7\n").unwrap();
        assert_eq!(
            profile(&t, Some("y"), &BTreeMap::new()).unwrap().problem,
            Problem::Regression
        );
    }

    #[test]
    fn problems_are_named_with_their_line_and_column() {
        assert_eq!(csv("").unwrap_err().message, "the file is empty");
        assert_eq!(
            csv("a,b\n").unwrap_err().message,
            "the file has a header but no rows"
        );
        assert_eq!(
            csv("a,b\n1,2\n3\n").unwrap_err().message,
            "line 3 has 1 fields but the header has 2"
        );
        assert_eq!(
            csv("a,a\n1,2\n").unwrap_err().message,
            "column 'a' appears twice in the header"
        );
        let rows: String = (0..20).map(|i| format!("{i},x\n")).collect();
        let t = csv(&format!("n,y\n{rows}oops,x\n")).unwrap();
        assert_eq!(
            profile(&t, Some("y"), &BTreeMap::new()).unwrap_err().message,
            "column 'n' is numeric, but line 22 holds 'oops'; fix the value, or declare the column categorical"
        );
        let declared = BTreeMap::from([("n".to_owned(), Kind::Categorical)]);
        assert!(profile(&t, Some("y"), &declared).is_ok());
        assert_eq!(
            profile(&t, Some("label"), &BTreeMap::new())
                .unwrap_err()
                .message,
            "unknown target column 'label'; the columns are n, y"
        );
        let t = csv("x,y\n1,a\n2,\n").unwrap();
        assert!(profile(&t, None, &BTreeMap::new())
            .unwrap_err()
            .message
            .starts_with("the target column 'y' is missing on line 3"));
    }

    #[test]
    fn jsonl_reads_like_csv() {
        let t = parse(
            b"{\"text\": \"hi\", \"n\": 1}\n\n{\"n\": 2.5, \"text\": null, \"extra\": true}\n",
            FileFormat::Jsonl,
        )
        .unwrap();
        assert_eq!(t.columns, vec!["text", "n", "extra"]);
        assert_eq!(
            t.rows[1],
            vec![None, Some("2.5".to_owned()), Some("true".to_owned())]
        );
        let err = parse(b"{\"a\": [1]}\n", FileFormat::Jsonl).unwrap_err();
        assert_eq!(
            err.message,
            "line 1, column 'a': nested values are not supported; flatten them"
        );
        assert_eq!(
            parse(b"[1]\n", FileFormat::Jsonl).unwrap_err().message,
            "line 1 is not a JSON object"
        );
    }

    #[test]
    fn the_shared_datasets_profile_as_expected() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/datasets");
        let read = |name: &str| {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let t = parse(&bytes, FileFormat::Csv).unwrap();
            profile(&t, None, &BTreeMap::new()).unwrap()
        };
        let iris = read("iris.csv");
        assert_eq!((iris.rows, iris.problem), (150, Problem::Classification));
        assert_eq!(iris.columns[4].counts.as_ref().unwrap().len(), 3);
        let diabetes = read("diabetes.csv");
        assert_eq!(
            (diabetes.target.as_str(), diabetes.problem),
            ("progression", Problem::Regression)
        );
        let tickets = read("support-tickets.csv");
        assert_eq!(tickets.columns[0].kind, Kind::Text);
        assert_eq!(tickets.columns[1].counts.as_ref().unwrap().len(), 4);
        let digits = read("digits.csv");
        assert_eq!(
            (digits.rows, digits.problem),
            (1797, Problem::Classification)
        );
    }
}
