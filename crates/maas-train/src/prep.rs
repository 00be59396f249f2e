//! Preprocessing that is fitted on the training rows and saved with the model, so serving
//! transforms a request exactly as training did: missing values dropped or imputed (mean, median,
//! most frequent), duplicates removed, categoricals one-hot encoded, numbers z-scored or
//! min-max scaled; plus the deterministic train/validation/test split (stratified for
//! classification).

use std::collections::{BTreeMap, HashMap, HashSet};

use maas_core::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::dataset::{Kind, Profile, Table};

/// What to do with a missing feature value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// Drop rows with any missing feature.
    #[default]
    Drop,
    /// Numbers: the training mean; categories: the most frequent.
    Mean,
    /// Numbers: the training median; categories: the most frequent.
    Median,
    /// The most frequent training value.
    MostFrequent,
}

/// How numeric features are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// Kept as they are.
    None,
    /// (x - mean) / std of the training rows.
    #[default]
    Zscore,
    /// (x - min) / (max - min) of the training rows.
    Minmax,
}

/// A run's preprocessing and split settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrepSpec {
    /// Missing feature values.
    pub missing: Missing,
    /// Remove rows that repeat an earlier row exactly.
    pub dedupe: bool,
    /// Numeric scaling.
    pub scale: Scale,
    /// Share of rows held out for the test split.
    pub test_fraction: f64,
    /// Share of rows held out for validation (early stopping).
    pub validation_fraction: f64,
    /// Seed of the split (and of training).
    pub seed: u64,
}

impl Default for PrepSpec {
    fn default() -> Self {
        Self {
            missing: Missing::Drop,
            dedupe: true,
            scale: Scale::Zscore,
            test_fraction: 0.2,
            validation_fraction: 0.1,
            seed: 42,
        }
    }
}

/// Rows removed before splitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cleaned {
    /// Rows dropped for a missing feature value.
    pub missing: usize,
    /// Rows dropped as duplicates.
    pub duplicates: usize,
}

/// Drops rows as `spec` says (missing values when `missing` is `Drop`, duplicates when
/// `dedupe`), keeping the rest in order.
pub fn clean(table: &Table, spec: &PrepSpec) -> (Table, Cleaned) {
    let mut seen = HashSet::new();
    let mut report = Cleaned {
        missing: 0,
        duplicates: 0,
    };
    let rows = table
        .rows
        .iter()
        .filter(|row| {
            if spec.missing == Missing::Drop && row.iter().any(Option::is_none) {
                report.missing += 1;
                return false;
            }
            if spec.dedupe && !seen.insert((*row).clone()) {
                report.duplicates += 1;
                return false;
            }
            true
        })
        .cloned()
        .collect();
    (
        Table {
            columns: table.columns.clone(),
            rows,
            fixed: table.fixed.clone(),
        },
        report,
    )
}

/// Row indices of each split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Rows to fit on.
    pub train: Vec<usize>,
    /// Rows for early stopping.
    pub validation: Vec<usize>,
    /// Rows for the final metrics.
    pub test: Vec<usize>,
}

/// Splits `n` rows deterministically from `spec.seed`. With `labels` (classification) the
/// split is stratified: each class is shuffled and divided in the same proportions, so every
/// class with enough rows appears in every split.
pub fn split(n: usize, labels: Option<(&[usize], &[String])>, spec: &PrepSpec) -> Result<Split> {
    let fractions_ok = (0.0..1.0).contains(&spec.test_fraction)
        && (0.0..1.0).contains(&spec.validation_fraction)
        && spec.test_fraction + spec.validation_fraction < 1.0;
    if !fractions_ok {
        return Err(Error::invalid(format!(
            "test_fraction ({}) and validation_fraction ({}) must each be in [0, 1) and leave rows to train on",
            spec.test_fraction, spec.validation_fraction
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let groups: Vec<Vec<usize>> = match labels {
        None => vec![(0..n).collect()],
        Some((labels, names)) => {
            let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (row, label) in labels.iter().enumerate() {
                by_class.entry(*label).or_default().push(row);
            }
            if let Some((label, _)) = by_class.iter().find(|(_, rows)| rows.len() < 2) {
                return Err(Error::invalid(format!(
                    "label '{}' has one sample; a stratified split needs at least 2 of each label (drop it or add rows)",
                    names.get(*label).map(String::as_str).unwrap_or("?")
                )));
            }
            by_class.into_values().collect()
        }
    };
    let mut out = Split {
        train: vec![],
        validation: vec![],
        test: vec![],
    };
    for mut rows in groups {
        rows.shuffle(&mut rng);
        let len = rows.len() as f64;
        let test = (len * spec.test_fraction).round() as usize;
        let validation = (len * spec.validation_fraction).round() as usize;
        let test = test.min(rows.len().saturating_sub(1));
        let validation = validation.min(rows.len() - test - 1);
        out.test.extend_from_slice(&rows[..test]);
        out.validation
            .extend_from_slice(&rows[test..test + validation]);
        out.train.extend_from_slice(&rows[test + validation..]);
    }
    // One order for each split whatever the class grouping: shuffled, from the seed.
    out.train.shuffle(&mut rng);
    out.validation.sort_unstable();
    out.test.sort_unstable();
    Ok(out)
}

/// One fitted input feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Feature {
    /// A number, filled when missing, then `(x - shift) / scale`.
    Numeric {
        /// Column name.
        column: String,
        /// Value used when missing (None: a missing value is an error).
        fill: Option<f64>,
        /// Subtracted.
        shift: f64,
        /// Divided by.
        scale: f64,
    },
    /// A text column's embedding from a pretrained encoder model, as is (the encoder normalises).
    Embedding {
        /// Column name.
        column: String,
        /// Length of the vector.
        dims: usize,
    },
    /// An image file, as [`crate::images::pixels`] turns it into `channels × size × size` inputs.
    Image {
        /// Column name.
        column: String,
        /// 1 (grey) or 3 (RGB).
        channels: usize,
        /// Side of the square it is resized to.
        size: usize,
    },
    /// One 0/1 input per category seen in training; an unseen category is all zeros.
    OneHot {
        /// Column name.
        column: String,
        /// Categories in training, sorted.
        categories: Vec<String>,
        /// Value used when missing (None: a missing value is an error).
        fill: Option<String>,
    },
}

impl Feature {
    /// How many network inputs it takes.
    pub fn width(&self) -> usize {
        match self {
            Feature::Numeric { .. } => 1,
            Feature::OneHot { categories, .. } => categories.len(),
            Feature::Embedding { dims, .. } => *dims,
            Feature::Image { channels, size, .. } => channels * size * size,
        }
    }
}

/// One cell of a row to encode.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Absent or null: filled as the pipeline was fitted to, or refused.
    Missing,
    /// A number.
    Number(f64),
    /// Text: a category, or a number still to parse.
    Text(String),
    /// A text column's embedding, or an image's pixels.
    Vector(Vec<f32>),
}

/// Embeddings of text columns (or pixels of image columns), by column and then by cell: what an
/// encoder model made of each distinct text, or each image file, before training.
pub type Encoded = BTreeMap<String, HashMap<String, Vec<f32>>>;

/// Channels and side of an image input of `len` values: `size²` is grey, `3·size²` is RGB
/// (`3·s²` is never a square, so the two cannot be confused).
pub fn image_shape(len: usize) -> Option<(usize, usize)> {
    let side = |n: usize| {
        let s = (n as f64).sqrt().round() as usize;
        (s > 0 && s * s == n).then_some(s)
    };
    match side(len) {
        Some(s) => Some((1, s)),
        None if len.is_multiple_of(3) => side(len / 3).map(|s| (3, s)),
        None => None,
    }
}

/// A number as a category name: integers without a fraction (`3`, not `3.0`).
pub fn number_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

/// The fitted transform from a row of cells to the model's input vector. Serialised with the
/// model so serving applies it unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Features, in input order.
    pub features: Vec<Feature>,
    /// The target column.
    pub target: String,
    /// Class names (classification), index = label.
    pub classes: Option<Vec<String>>,
    /// Regression: the target's training mean and standard deviation. The network learns
    /// `(y - mean) / std`, so one learning rate suits targets of any scale; predictions are
    /// mapped back with [`Pipeline::unscale`].
    #[serde(default)]
    pub target_scale: Option<(f64, f64)>,
}

fn column_index(table: &Table, name: &str) -> Result<usize> {
    table
        .columns
        .iter()
        .position(|c| c == name)
        .ok_or_else(|| Error::invalid(format!("the data has no column '{name}'")))
}

/// The distinct values of column `col`, sorted: the class names, index = label.
pub fn classes(table: &Table, col: usize) -> Vec<String> {
    let mut classes: Vec<String> = table.rows.iter().filter_map(|r| r[col].clone()).collect();
    classes.sort_unstable();
    classes.dedup();
    classes
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn most_frequent<'a>(values: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    // Ties go to the first in sorted order, so the choice is deterministic.
    counts
        .into_iter()
        .fold(None, |best: Option<(&str, usize)>, (v, n)| match best {
            Some((_, m)) if m >= n => best,
            _ => Some((v, n)),
        })
        .map(|(v, _)| v.to_owned())
}

impl Pipeline {
    /// Fits the features on `train` rows of `table`. Numeric and categorical columns other than
    /// the target become features; text columns are left out (a text model encodes them).
    pub fn fit(
        table: &Table,
        profile: &Profile,
        train: &[usize],
        spec: &PrepSpec,
    ) -> Result<Pipeline> {
        Self::fit_encoded(table, profile, train, spec, &Encoded::new())
    }

    /// As [`Pipeline::fit`], and text columns with embeddings in `encoded` become
    /// [`Feature::Embedding`] inputs.
    pub fn fit_encoded(
        table: &Table,
        profile: &Profile,
        train: &[usize],
        spec: &PrepSpec,
        encoded: &Encoded,
    ) -> Result<Pipeline> {
        if train.is_empty() {
            return Err(Error::invalid("no rows left to train on"));
        }
        let mut features = vec![];
        for col in &profile.columns {
            if col.name == profile.target {
                continue;
            }
            if col.kind == Kind::Text {
                if let Some(dims) = encoded
                    .get(&col.name)
                    .and_then(|m| m.values().next())
                    .map(Vec::len)
                {
                    features.push(Feature::Embedding {
                        column: col.name.clone(),
                        dims,
                    });
                }
                continue;
            }
            if col.kind == Kind::Image {
                let Some(len) = encoded
                    .get(&col.name)
                    .and_then(|m| m.values().next())
                    .map(Vec::len)
                else {
                    continue;
                };
                let (channels, size) = image_shape(len).ok_or_else(|| {
                    Error::internal(format!(
                        "column '{}': {len} values are not an image",
                        col.name
                    ))
                })?;
                features.push(Feature::Image {
                    column: col.name.clone(),
                    channels,
                    size,
                });
                continue;
            }
            let i = column_index(table, &col.name)?;
            let present: Vec<&str> = train
                .iter()
                .filter_map(|r| table.rows[*r][i].as_deref())
                .collect();
            match col.kind {
                Kind::Numeric => {
                    let xs: Vec<f64> = present
                        .iter()
                        .map(|v| {
                            v.trim().parse::<f64>().map_err(|_| {
                                Error::invalid(format!(
                                    "column '{}' is numeric, but holds '{v}'",
                                    col.name
                                ))
                            })
                        })
                        .collect::<Result<_>>()?;
                    let n = xs.len().max(1) as f64;
                    let mean = xs.iter().sum::<f64>() / n;
                    let fill = match spec.missing {
                        Missing::Drop => None,
                        Missing::Mean => Some(mean),
                        Missing::Median => Some(median(xs.clone())),
                        Missing::MostFrequent => most_frequent(present.iter().copied())
                            .and_then(|v| v.trim().parse().ok()),
                    };
                    let (shift, scale) = match spec.scale {
                        Scale::None => (0.0, 1.0),
                        Scale::Zscore => {
                            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                            (mean, if var > 0.0 { var.sqrt() } else { 1.0 })
                        }
                        Scale::Minmax => {
                            let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
                            let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                            if min.is_finite() && max > min {
                                (min, max - min)
                            } else {
                                (0.0, 1.0)
                            }
                        }
                    };
                    features.push(Feature::Numeric {
                        column: col.name.clone(),
                        fill,
                        shift,
                        scale,
                    });
                }
                Kind::Categorical => {
                    let mut categories: Vec<String> =
                        present.iter().map(|v| (*v).to_owned()).collect();
                    categories.sort_unstable();
                    categories.dedup();
                    let fill = match spec.missing {
                        Missing::Drop => None,
                        _ => most_frequent(present.iter().copied()),
                    };
                    features.push(Feature::OneHot {
                        column: col.name.clone(),
                        categories,
                        fill,
                    });
                }
                Kind::Text | Kind::Image => {}
            }
        }
        let classes = match profile.problem {
            crate::dataset::Problem::Classification => {
                Some(classes(table, column_index(table, &profile.target)?))
            }
            crate::dataset::Problem::Regression => None,
        };
        let target_scale = match &classes {
            Some(_) => None,
            None => {
                let t = column_index(table, &profile.target)?;
                let ys: Vec<f64> = train
                    .iter()
                    .filter_map(|r| table.rows[*r][t].as_deref())
                    .filter_map(|v| v.trim().parse::<f64>().ok())
                    .collect();
                let n = ys.len().max(1) as f64;
                let mean = ys.iter().sum::<f64>() / n;
                let std = (ys.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / n).sqrt();
                Some((mean, if std > 0.0 { std } else { 1.0 }))
            }
        };
        Ok(Pipeline {
            features,
            target: profile.target.clone(),
            classes,
            target_scale,
        })
    }

    /// A regression prediction in the target's own units.
    pub fn unscale(&self, y: f32) -> f32 {
        match self.target_scale {
            Some((mean, std)) => (f64::from(y) * std + mean) as f32,
            None => y,
        }
    }

    /// Length of the input vector.
    pub fn width(&self) -> usize {
        self.features.iter().map(Feature::width).sum()
    }

    /// The input vector of one row, cells (text as read from a file) looked up by column name.
    pub fn transform(&self, cell: &dyn Fn(&str) -> Option<String>) -> Result<Vec<f32>> {
        self.encode(&|column| cell(column).map_or(Value::Missing, Value::Text))
    }

    /// The input vector of one row whose cells may be numbers already (a served request).
    pub fn encode(&self, cell: &dyn Fn(&str) -> Value) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.width());
        for f in &self.features {
            match f {
                Feature::Numeric {
                    column,
                    fill,
                    shift,
                    scale,
                } => {
                    let x = match cell(column) {
                        Value::Number(x) => x,
                        Value::Vector(_) => {
                            return Err(Error::invalid(format!(
                                "column '{column}' must be a number, got a vector"
                            )))
                        }
                        Value::Text(v) => v.trim().parse::<f64>().map_err(|_| {
                            Error::invalid(format!("column '{column}' must be a number, got '{v}'"))
                        })?,
                        Value::Missing => fill.ok_or_else(|| {
                            Error::invalid(format!("column '{column}' is missing"))
                        })?,
                    };
                    if !x.is_finite() {
                        return Err(Error::invalid(format!(
                            "column '{column}' must be a finite number, got {x}"
                        )));
                    }
                    out.push(((x - shift) / scale) as f32);
                }
                Feature::OneHot {
                    column,
                    categories,
                    fill,
                } => {
                    let v = match cell(column) {
                        Value::Text(v) => v,
                        Value::Number(x) => number_text(x),
                        Value::Vector(_) => {
                            return Err(Error::invalid(format!(
                                "column '{column}' must be a category, got a vector"
                            )))
                        }
                        Value::Missing => fill.clone().ok_or_else(|| {
                            Error::invalid(format!("column '{column}' is missing"))
                        })?,
                    };
                    out.extend(categories.iter().map(|c| if *c == v { 1.0 } else { 0.0 }));
                }
                Feature::Image {
                    column,
                    channels,
                    size,
                } => match cell(column) {
                    Value::Vector(v) if v.len() == channels * size * size => out.extend(v),
                    Value::Missing => {
                        return Err(Error::invalid(format!("column '{column}' is missing")))
                    }
                    _ => {
                        return Err(Error::invalid(format!(
                            "column '{column}' must be an image (PNG, JPEG or WebP file)"
                        )))
                    }
                },
                Feature::Embedding { column, dims } => match cell(column) {
                    Value::Vector(v) if v.len() == *dims => out.extend(v),
                    Value::Vector(v) => {
                        return Err(Error::invalid(format!(
                            "column '{column}' must embed to {dims} values, got {}",
                            v.len()
                        )))
                    }
                    Value::Missing => {
                        return Err(Error::invalid(format!("column '{column}' is missing")))
                    }
                    _ => {
                        return Err(Error::invalid(format!(
                            "column '{column}' is text for the model's encoder; it was not encoded"
                        )))
                    }
                },
            }
        }
        Ok(out)
    }

    /// Inputs and targets of `rows` of `table`: the flat row-major input matrix, and the class
    /// index (classification) or scaled value (regression) of each row.
    pub fn matrix(&self, table: &Table, rows: &[usize]) -> Result<(Vec<f32>, Vec<f32>)> {
        self.matrix_encoded(table, rows, &Encoded::new())
    }

    /// As [`Pipeline::matrix`], with the embeddings of text columns taken from `encoded`.
    pub fn matrix_encoded(
        &self,
        table: &Table,
        rows: &[usize],
        encoded: &Encoded,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let index: BTreeMap<&str, usize> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        let t = *index
            .get(self.target.as_str())
            .ok_or_else(|| Error::invalid(format!("the data has no column '{}'", self.target)))?;
        let mut x = Vec::with_capacity(rows.len() * self.width());
        let mut y = Vec::with_capacity(rows.len());
        for &r in rows {
            let row = &table.rows[r];
            let cell = |name: &str| {
                let Some(text) = index.get(name).and_then(|i| row[*i].clone()) else {
                    return Value::Missing;
                };
                match encoded.get(name).and_then(|m| m.get(&text)) {
                    Some(v) => Value::Vector(v.clone()),
                    None => Value::Text(text),
                }
            };
            x.extend(
                self.encode(&cell)
                    .map_err(|e| Error::invalid(format!("line {}: {}", r + 2, e.message)))?,
            );
            let target = row[t]
                .as_deref()
                .ok_or_else(|| Error::invalid(format!("line {}: the target is missing", r + 2)))?;
            y.push(match &self.classes {
                Some(classes) => classes.iter().position(|c| c == target).unwrap_or(0) as f32,
                None => {
                    let y = target.trim().parse::<f64>().map_err(|_| {
                        Error::invalid(format!("line {}: target '{target}' is not a number", r + 2))
                    })?;
                    let (mean, std) = self.target_scale.unwrap_or((0.0, 1.0));
                    ((y - mean) / std) as f32
                }
            });
        }
        Ok((x, y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{parse, profile, FileFormat};

    fn table(text: &str) -> Table {
        parse(text.as_bytes(), FileFormat::Csv).unwrap()
    }

    #[test]
    fn cleaning_drops_missing_and_duplicate_rows() {
        let t = table("a,b\n1,x\n1,x\n,y\n2,y\n");
        let (kept, report) = clean(&t, &PrepSpec::default());
        assert_eq!(kept.rows.len(), 2);
        assert_eq!(
            report,
            Cleaned {
                missing: 1,
                duplicates: 1
            }
        );
        let spec = PrepSpec {
            missing: Missing::Mean,
            dedupe: false,
            ..PrepSpec::default()
        };
        assert_eq!(clean(&t, &spec).0.rows.len(), 4);
    }

    #[test]
    fn a_stratified_split_is_deterministic_and_keeps_class_shares() {
        let labels: Vec<usize> = (0..100).map(|i| usize::from(i % 4 == 0)).collect();
        let names = vec!["a".to_owned(), "b".to_owned()];
        let spec = PrepSpec::default();
        let s = split(100, Some((&labels, &names)), &spec).unwrap();
        assert_eq!(s, split(100, Some((&labels, &names)), &spec).unwrap());
        // Class a (75 rows): 15 test, 8 validation (7.5 rounds up), 52 train; class b (25 rows):
        // 5 test, 3 validation (2.5 rounds up), 17 train.
        assert_eq!(
            (s.train.len(), s.validation.len(), s.test.len()),
            (69, 11, 20)
        );
        assert_eq!(s.test.iter().filter(|r| labels[**r] == 1).count(), 5);
        let mut all: Vec<usize> = s
            .train
            .iter()
            .chain(&s.validation)
            .chain(&s.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        let other = split(
            100,
            Some((&labels, &names)),
            &PrepSpec {
                seed: 7,
                ..spec.clone()
            },
        )
        .unwrap();
        assert_ne!(other.test, s.test);

        let lonely = [0, 0, 1];
        let err = split(3, Some((&lonely, &names)), &spec).unwrap_err();
        assert!(
            err.message.starts_with("label 'b' has one sample"),
            "{}",
            err.message
        );
        let bad = PrepSpec {
            test_fraction: 0.6,
            validation_fraction: 0.5,
            ..spec
        };
        assert!(split(10, None, &bad).is_err());
    }

    #[test]
    fn the_pipeline_is_fitted_on_train_rows_only_and_transforms_rows() {
        let t = table("x,colour,note,y\n1,red,some words here,a\n3,blue,more words there,b\n100,green,x,a\n5,red,last words,b\n");
        let p = profile(
            &t,
            None,
            &BTreeMap::from([
                ("note".to_owned(), Kind::Text),
                ("colour".to_owned(), Kind::Categorical),
            ]),
        )
        .unwrap();
        let spec = PrepSpec {
            missing: Missing::Mean,
            ..PrepSpec::default()
        };
        // Row 2 (x = 100, green) is not a training row: it does not move the statistics.
        let pipe = Pipeline::fit(&t, &p, &[0, 1, 3], &spec).unwrap();
        assert_eq!(pipe.width(), 1 + 2);
        assert_eq!(pipe.classes, Some(vec!["a".to_owned(), "b".to_owned()]));
        let Feature::Numeric {
            shift, scale, fill, ..
        } = &pipe.features[0]
        else {
            panic!()
        };
        assert_eq!(*shift, 3.0);
        assert!((scale - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(*fill, Some(3.0));
        let (x, y) = pipe.matrix(&t, &[2, 0]).unwrap();
        let z = ((100.0 - 3.0) / (8.0f64 / 3.0).sqrt()) as f32;
        // green was never seen in training: all zeros.
        assert_eq!(
            x,
            vec![
                z,
                0.0,
                0.0,
                ((1.0 - 3.0) / (8.0f64 / 3.0).sqrt()) as f32,
                0.0,
                1.0
            ]
        );
        assert_eq!(y, vec![0.0, 0.0]);
        // Missing x is filled with the training mean.
        let row = pipe
            .transform(&|c| (c == "colour").then(|| "blue".to_owned()))
            .unwrap();
        assert_eq!(row, vec![0.0, 1.0, 0.0]);
        let saved: Pipeline = serde_json::from_str(&serde_json::to_string(&pipe).unwrap()).unwrap();
        assert_eq!(saved, pipe);
        let err = pipe
            .transform(&|c| (c == "x").then(|| "ten".to_owned()))
            .unwrap_err();
        assert_eq!(err.message, "column 'x' must be a number, got 'ten'");
    }
}
