//! Training-side logic of maas: datasets (CSV and JSONL parsing, schema inference, profiles),
//! preprocessing fitted on the training split and saved with the model, the deterministic
//! (stratified) split, and evaluation metrics. Training loops (candle-nn) build on these.
#![deny(missing_docs)]

pub mod dataset;
pub mod images;
pub mod metrics;
pub mod model;
pub mod prep;
pub mod train;
pub mod weights;
