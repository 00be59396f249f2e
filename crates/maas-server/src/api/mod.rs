//! The management API under `/api/v1`.

pub mod audit;
pub mod blobs;
pub mod datasets;
pub mod evaluations;
pub mod keys;
pub mod loaded;
pub mod models;
pub mod pulls;
pub mod runs;

use maas_core::{Error, ModelName};

use crate::error::ApiError;

/// Parses a model name from a path segment.
pub fn model_name(raw: &str) -> Result<ModelName, ApiError> {
    Ok(ModelName::parse(raw)?)
}

/// Parses a dataset reference: `NAME` (its newest version) or `NAME:VERSION`.
pub fn dataset_ref(raw: &str) -> Result<(ModelName, Option<i64>), ApiError> {
    let r = maas_core::ModelRef::parse(raw)
        .map_err(|e| Error::invalid(format!("dataset: {}", e.message)))?;
    match r.selector {
        maas_core::VersionSelector::Latest => Ok((r.name, None)),
        maas_core::VersionSelector::Number(n) => Ok((r.name, Some(n))),
        maas_core::VersionSelector::Alias(_) => {
            Err(Error::invalid("dataset: give NAME or NAME:VERSION").into())
        }
    }
}

/// Parses a version number from a path segment.
pub fn version_number(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| Error::invalid(format!("version '{raw}' is not a positive integer")).into())
}
