use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::{Digest, Error, Format, ModelName, Role, Task};

/// A registered model: a name under which immutable versions accumulate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Model {
    /// Unique name.
    pub name: String,
    /// What the model does.
    pub task: Task,
    /// Free text.
    pub description: String,
    /// The key (name) that created it.
    pub created_by: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The newest version number, if any version exists.
    pub latest_version: Option<i64>,
    /// Alias name → version number.
    pub aliases: BTreeMap<String, i64>,
}

/// Whether an artifact is one file or a folder stored as a manifest of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// A single file; the digest is the file's.
    File,
    /// A folder; the digest is the manifest's, and the manifest names each file's digest.
    Dir,
}

impl ArtifactKind {
    /// Text form stored in the registry.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::File => "file",
            ArtifactKind::Dir => "dir",
        }
    }
    /// Parses the text form.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "file" => Ok(Self::File),
            "dir" => Ok(Self::Dir),
            other => Err(Error::internal(format!("unknown artifact kind '{other}'"))),
        }
    }
}

/// One immutable version of a model.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelVersion {
    /// The model's name.
    pub model: String,
    /// Monotonic version number, starting at 1, never reused.
    pub version: i64,
    /// Weight format.
    pub format: Format,
    /// File or folder.
    pub artifact_kind: ArtifactKind,
    /// Content digest of the file, or of the manifest for a folder.
    #[schema(value_type = String, example = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
    pub artifact_digest: Digest,
    /// Total size of the artifact's files in bytes.
    pub artifact_size_bytes: i64,
    /// Where it came from, as given to `pull`.
    pub source: String,
    /// Detected facts (architecture, file list, …).
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Evaluation metrics.
    #[schema(value_type = Object)]
    pub metrics: serde_json::Value,
    /// Where it came from in the lifecycle (parent version, dataset, job).
    #[schema(value_type = Object)]
    pub lineage: serde_json::Value,
    /// Key → value labels.
    pub tags: BTreeMap<String, String>,
    /// Aliases pointing at this version.
    pub aliases: Vec<String>,
    /// The key (name) that registered it.
    pub created_by: String,
    /// When it was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What the registry needs to record a new version (the artifact is already stored).
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// The model; created with `task` if it does not exist yet.
    pub model: ModelName,
    /// The task, used when the model is created; must match an existing model's task.
    pub task: Task,
    /// Description for a new model.
    pub description: Option<String>,
    /// Weight format.
    pub format: Format,
    /// File or folder.
    pub artifact_kind: ArtifactKind,
    /// The stored artifact's digest.
    pub artifact_digest: Digest,
    /// Total bytes.
    pub artifact_size_bytes: i64,
    /// Source string as given.
    pub source: String,
    /// Detected metadata.
    pub metadata: serde_json::Value,
    /// Metrics.
    pub metrics: serde_json::Value,
    /// Lineage.
    pub lineage: serde_json::Value,
}

/// An alias and the version it points at.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Alias {
    /// Model name.
    pub model: String,
    /// Alias name.
    pub alias: String,
    /// Version it points at.
    pub version: i64,
}

/// One file of a folder artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    /// Relative path with `/` separators, no `..`.
    pub path: String,
    /// The file's content digest.
    #[schema(value_type = String)]
    pub digest: Digest,
    /// The file's size.
    pub size_bytes: u64,
}

/// A folder artifact: the files, sorted by path. Its canonical JSON is what gets hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Manifest {
    /// Files sorted by path.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Builds a manifest, sorting files and rejecting unsafe or duplicate paths.
    pub fn new(mut files: Vec<FileEntry>) -> Result<Self, Error> {
        for f in &files {
            check_relative_path(&f.path)?;
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(w) = files.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(Error::invalid(format!(
                "file '{}' appears twice in the manifest",
                w[0].path
            )));
        }
        if files.is_empty() {
            return Err(Error::invalid("a folder artifact needs at least one file"));
        }
        Ok(Self { files })
    }
    /// The canonical bytes (compact JSON, files sorted).
    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    /// Total size of all files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size_bytes).sum()
    }
}

/// Rejects absolute paths, `..`, empty segments and backslashes: a manifest can never escape its folder.
pub fn check_relative_path(path: &str) -> Result<(), Error> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad {
        return Err(Error::invalid(format!(
            "file path '{path}' must be relative, without '..' or empty segments"
        )));
    }
    Ok(())
}

/// An API key as listed: never the secret, never its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyInfo {
    /// Public identifier, also the key's prefix.
    pub id: String,
    /// Human label.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Models a consumer key is limited to; `None` means all.
    pub models: Option<Vec<String>>,
    /// Who created it.
    pub created_by: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Expiry, if any.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Revocation time, if revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// One entry of the append-only audit chain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who did it (key id and name).
    pub actor: String,
    /// What was done, e.g. `model.pull`, `alias.set`, `key.revoke`.
    pub action: String,
    /// What it was done to, e.g. `smollm2:3`.
    pub target: String,
    /// Details.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// The previous entry's hash (hex), or 64 zeros for the first.
    pub prev_hash: String,
    /// This entry's hash (hex) over all the fields above.
    pub hash: String,
}

/// The result of checking the audit chain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditVerdict {
    /// True when every entry hashes correctly, links to its predecessor and none is missing.
    pub ok: bool,
    /// Number of entries checked.
    pub entries: i64,
    /// The first problem found, naming the entry.
    pub problem: Option<String>,
}

/// A named collection of training data versions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Dataset {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The key that created it.
    pub created_by: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The newest version number, if any.
    pub latest_version: Option<i64>,
}

/// One immutable version of a dataset: a stored file and what was inferred from it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatasetVersion {
    /// The dataset's name.
    pub dataset: String,
    /// Version number, from 1.
    pub version: i64,
    /// `csv` or `jsonl`.
    pub format: String,
    /// Content digest of the file.
    #[schema(value_type = String)]
    pub digest: Digest,
    /// File size.
    pub size_bytes: i64,
    /// Data rows.
    pub rows: i64,
    /// The column to predict.
    pub target: String,
    /// `classification` or `regression`.
    pub problem: String,
    /// Per-column kinds and statistics.
    #[schema(value_type = Object)]
    pub profile: serde_json::Value,
    /// Where it came from (the uploaded file's name).
    pub source: String,
    /// The key that uploaded it.
    pub created_by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What the registry needs to record a dataset version (the file is already stored).
#[derive(Debug, Clone)]
pub struct NewDatasetVersion {
    /// The dataset; created on first use.
    pub dataset: ModelName,
    /// Description for a new dataset.
    pub description: Option<String>,
    /// `csv` or `jsonl`.
    pub format: String,
    /// The stored file.
    pub digest: Digest,
    /// Its size.
    pub size_bytes: i64,
    /// Data rows.
    pub rows: i64,
    /// Target column.
    pub target: String,
    /// `classification` or `regression`.
    pub problem: String,
    /// Per-column profile.
    pub profile: serde_json::Value,
    /// Source label.
    pub source: String,
}

/// A training run: what it trains on, how, where it is, and what it produced.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Run {
    /// Run id.
    pub id: String,
    /// The dataset it trains on.
    pub dataset: String,
    /// The dataset's version.
    pub dataset_version: i64,
    /// The model the result is registered under.
    pub model: String,
    /// The training spec as given (architecture, optimiser, preprocessing, seed).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// Where it is.
    pub state: crate::RunState,
    /// Epochs finished.
    pub epochs_done: i64,
    /// Most epochs it will run (early stopping may end it sooner).
    pub epochs_total: i64,
    /// Per-epoch figures, oldest first (`epoch`, `lr`, `train_loss`, `val_loss`, `val_score`).
    #[schema(value_type = Vec<Object>)]
    pub history: serde_json::Value,
    /// On success: the registered version and its test metrics.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// On failure: why.
    pub error: Option<String>,
    /// The key that started it.
    pub created_by: String,
    /// When it was submitted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last started running.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

/// What the registry needs to record a new run.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Run id.
    pub id: String,
    /// Dataset.
    pub dataset: ModelName,
    /// Its version.
    pub dataset_version: i64,
    /// Model to register the result under.
    pub model: ModelName,
    /// The spec.
    pub spec: serde_json::Value,
    /// Most epochs.
    pub epochs_total: i64,
}

/// A run's changing part, written as it trains.
#[derive(Debug, Clone)]
pub struct RunUpdate {
    /// New state.
    pub state: crate::RunState,
    /// Epochs finished.
    pub epochs_done: i64,
    /// Per-epoch figures so far.
    pub history: serde_json::Value,
    /// The outcome, on success.
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
}
