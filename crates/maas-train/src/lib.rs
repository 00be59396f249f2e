//! Training-side logic of maas: datasets (CSV and JSONL parsing, schema inference, profiles) and
//! evaluation metrics. Training loops (candle-nn) and preprocessing pipelines build on these.
#![deny(missing_docs)]

pub mod dataset;
pub mod metrics;
