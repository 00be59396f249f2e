use std::path::PathBuf;
use std::sync::Arc;

use maas_ingest::Fetcher;
use maas_store::{ArtifactStore, Registry};

use crate::cache::ModelCache;
use crate::jobs::Jobs;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Models, versions, aliases, keys, audit.
    pub registry: Arc<dyn Registry>,
    /// Content-addressed blobs.
    pub artifacts: ArtifactStore,
    /// Network access for remote sources.
    pub fetcher: Arc<Fetcher>,
    /// Long-running work.
    pub jobs: Jobs,
    /// Where pulls stage their files (emptied at start-up).
    pub staging_dir: PathBuf,
    /// Largest single uploaded blob.
    pub max_blob_bytes: u64,
    /// Training runs in progress.
    pub runs: crate::runs::Runs,
    /// Loaded models.
    pub models: Arc<ModelCache>,
    /// Weight precision of conversions whose pull names none (`serve --convert-precision`).
    pub convert_precision: Option<maas_core::Precision>,
}
