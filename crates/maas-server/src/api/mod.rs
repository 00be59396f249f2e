//! The management API under `/api/v1`.

pub mod audit;
pub mod blobs;
pub mod datasets;
pub mod keys;
pub mod loaded;
pub mod models;
pub mod pulls;

use maas_core::{Error, ModelName};

use crate::error::ApiError;

/// Parses a model name from a path segment.
pub fn model_name(raw: &str) -> Result<ModelName, ApiError> {
    Ok(ModelName::parse(raw)?)
}

/// Parses a version number from a path segment.
pub fn version_number(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| Error::invalid(format!("version '{raw}' is not a positive integer")).into())
}
