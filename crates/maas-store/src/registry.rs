use std::collections::BTreeMap;

use async_trait::async_trait;
use maas_core::{
    Alias, AliasName, ApiKeyInfo, ArtifactKind, AuditEntry, AuditVerdict, Dataset, DatasetVersion,
    Digest, Model, ModelName, ModelRef, ModelVersion, NewDatasetVersion, NewRun, NewVersion,
    Result, Role, Run, RunUpdate, Task,
};
use time::OffsetDateTime;

/// Who performs a mutation: the id of the API key used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    /// The server itself (bootstrap, maintenance).
    pub fn system() -> Self {
        Self("system".to_owned())
    }
}

/// A key to create. `secret_hash` is [`crate::keys::hash`] of the key text.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Public id.
    pub id: String,
    /// Human label.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Model scope for consumers.
    pub models: Option<Vec<ModelName>>,
    /// sha256 of the key text.
    pub secret_hash: Vec<u8>,
    /// Expiry.
    pub expires_at: Option<OffsetDateTime>,
}

/// A key as stored, with its hash, for authentication.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Listing view.
    pub info: ApiKeyInfo,
    /// sha256 of the key text.
    pub secret_hash: Vec<u8>,
}

/// The model registry, API keys and audit chain. Every mutation records an audit entry in the
/// same transaction.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Creates an empty model; 409 if the name is taken.
    async fn create_model(
        &self,
        name: &ModelName,
        task: Task,
        description: &str,
        actor: &Actor,
    ) -> Result<Model>;
    /// Records a new version (creating the model on first use). The artifact must already be stored.
    async fn register_version(&self, new: NewVersion, actor: &Actor) -> Result<ModelVersion>;
    /// Records a new dataset version (creating the dataset on first use). The file must already
    /// be stored.
    async fn register_dataset_version(
        &self,
        new: NewDatasetVersion,
        actor: &Actor,
    ) -> Result<DatasetVersion>;
    /// All datasets, by name.
    async fn list_datasets(&self) -> Result<Vec<Dataset>>;
    /// A dataset's versions, oldest first; 404 if the dataset does not exist.
    async fn list_dataset_versions(&self, name: &ModelName) -> Result<Vec<DatasetVersion>>;
    /// One version of a dataset, or its newest when `version` is None.
    async fn dataset_version(
        &self,
        name: &ModelName,
        version: Option<i64>,
    ) -> Result<DatasetVersion>;
    /// Records a new queued training run.
    async fn create_run(&self, new: NewRun, actor: &Actor) -> Result<Run>;
    /// Writes a run's progress; a change to a final state (or to running) is audited.
    async fn update_run(&self, id: &str, update: RunUpdate, actor: &Actor) -> Result<Run>;
    /// One run; 404 if unknown.
    async fn get_run(&self, id: &str) -> Result<Run>;
    /// Runs, newest first, at most `limit`.
    async fn list_runs(&self, limit: i64) -> Result<Vec<Run>>;
    /// Marks runs a previous process left queued or running as interrupted; returns how many.
    async fn interrupt_runs(&self) -> Result<u64>;
    /// All models, by name.
    async fn list_models(&self) -> Result<Vec<Model>>;
    /// One model.
    async fn get_model(&self, name: &ModelName) -> Result<Model>;
    /// Deletes a model, its versions, aliases and tags.
    async fn delete_model(&self, name: &ModelName, actor: &Actor) -> Result<()>;
    /// A model's versions, oldest first.
    async fn list_versions(&self, name: &ModelName) -> Result<Vec<ModelVersion>>;
    /// Resolves `name`, `name:N` or `name@alias` to a version.
    async fn resolve(&self, r: &ModelRef) -> Result<ModelVersion>;
    /// Deletes one version; refused while an alias points at it.
    async fn delete_version(&self, name: &ModelName, version: i64, actor: &Actor) -> Result<()>;
    /// Points `alias` at `version` (creating or moving it) in one transaction.
    async fn set_alias(
        &self,
        name: &ModelName,
        alias: &AliasName,
        version: i64,
        actor: &Actor,
    ) -> Result<Alias>;
    /// Removes an alias.
    async fn delete_alias(&self, name: &ModelName, alias: &AliasName, actor: &Actor) -> Result<()>;
    /// Sets tags on a version, all in one transaction.
    async fn set_tags(
        &self,
        name: &ModelName,
        version: i64,
        tags: &BTreeMap<String, String>,
        actor: &Actor,
    ) -> Result<()>;
    /// Appends an evaluation to a version's metrics (`metrics.evaluations`, oldest first). The
    /// version's artifact and lineage stay as they were; the change is audited.
    async fn add_evaluation(
        &self,
        name: &ModelName,
        version: i64,
        evaluation: serde_json::Value,
        actor: &Actor,
    ) -> Result<ModelVersion>;
    /// Every artifact digest a version refers to (for garbage collection).
    async fn referenced_artifacts(&self) -> Result<Vec<(ArtifactKind, Digest)>>;

    /// Creates an API key.
    async fn create_key(&self, key: NewKey, actor: &Actor) -> Result<ApiKeyInfo>;
    /// Installs or replaces the bootstrap admin key's hash.
    async fn set_bootstrap_key(&self, secret_hash: Vec<u8>) -> Result<()>;
    /// Finds a key by id, revoked or not.
    async fn key_by_id(&self, id: &str) -> Result<Option<StoredKey>>;
    /// All keys.
    async fn list_keys(&self) -> Result<Vec<ApiKeyInfo>>;
    /// Revokes a key.
    async fn revoke_key(&self, id: &str, actor: &Actor) -> Result<ApiKeyInfo>;
    /// Number of admin keys that are neither revoked nor expired.
    async fn count_usable_admin_keys(&self) -> Result<i64>;

    /// Audit entries with `seq > after`, oldest first, at most `limit`.
    async fn audit_list(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>>;
    /// Checks the whole chain.
    async fn audit_verify(&self) -> Result<AuditVerdict>;
}
