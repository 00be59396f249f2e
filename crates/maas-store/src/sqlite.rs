//! The embedded registry on SQLite (WAL mode). One writer connection serialises mutations, so
//! a transaction never fails half-way on a lock upgrade; readers run in parallel.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use maas_core::{
    Alias, AliasName, ApiKeyInfo, ArtifactKind, AuditEntry, AuditVerdict, Dataset, DatasetVersion,
    Digest, Error, Format, Model, ModelName, ModelRef, ModelVersion, NewDatasetVersion, NewRun,
    NewVersion, Result, Role, Run, RunState, RunUpdate, Task, VersionSelector,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::audit::{entry_hash, GENESIS_HASH};
use crate::keys::BOOTSTRAP_KEY_ID;
use crate::registry::{Actor, NewKey, Registry, StoredKey};

/// The registry in a SQLite file.
#[derive(Clone)]
pub struct SqliteRegistry {
    writer: SqlitePool,
    reader: SqlitePool,
}

fn db_err(e: sqlx::Error) -> Error {
    tracing::error!(error = %e, "registry database error");
    Error::internal(format!("registry database error: {e}"))
}

fn now_text() -> String {
    ts_text(OffsetDateTime::now_utc())
}

fn ts_text(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn parse_ts(s: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| Error::internal(format!("bad timestamp '{s}' in registry: {e}")))
}

fn parse_opt_ts(s: Option<String>) -> Result<Option<OffsetDateTime>> {
    s.as_deref().map(parse_ts).transpose()
}

fn json_text(v: &serde_json::Value) -> String {
    if v.is_null() {
        "{}".to_owned()
    } else {
        v.to_string()
    }
}

fn parse_json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
}

const VERSION_COLUMNS: &str =
    "v.id, m.name, v.version, v.format, v.artifact_kind, v.artifact_digest, \
     v.artifact_size, v.source, v.metadata, v.metrics, v.lineage, v.created_by, v.created_at";

impl SqliteRegistry {
    /// Opens (creating if needed) the registry at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| {
                Error::internal(format!("cannot open registry {}: {e}", path.display()))
            })?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| {
                Error::internal(format!("cannot migrate registry {}: {e}", path.display()))
            })?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(db_err)?;
        Ok(Self { writer, reader })
    }

    /// Closes both pools, checkpointing the WAL.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.writer.begin().await.map_err(db_err)
    }

    async fn model_row(&self, name: &ModelName) -> Result<(i64, Model)> {
        let row = sqlx::query(
            "SELECT id, name, task, description, created_by, created_at, \
             (SELECT MAX(version) FROM versions WHERE model_id = models.id) AS latest \
             FROM models WHERE name = ?",
        )
        .bind(name.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found(format!("model '{name}' not found")))?;
        let id: i64 = row.get("id");
        let model = self.model_from_row(&row).await?;
        Ok((id, model))
    }

    async fn model_from_row(&self, row: &SqliteRow) -> Result<Model> {
        let id: i64 = row.get("id");
        let aliases = sqlx::query(
            "SELECT a.name, v.version FROM aliases a JOIN versions v ON v.id = a.version_id WHERE a.model_id = ?",
        )
        .bind(id)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?
        .into_iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect();
        Ok(Model {
            name: row.get("name"),
            task: Task::from_str(row.get("task"))?,
            description: row.get("description"),
            created_by: row.get("created_by"),
            created_at: parse_ts(row.get("created_at"))?,
            latest_version: row.get("latest"),
            aliases,
        })
    }

    async fn version_from_row(&self, row: &SqliteRow) -> Result<ModelVersion> {
        let id: i64 = row.get(0);
        let tags: BTreeMap<String, String> =
            sqlx::query("SELECT key, value FROM tags WHERE version_id = ?")
                .bind(id)
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
        let aliases: Vec<String> =
            sqlx::query("SELECT name FROM aliases WHERE version_id = ? ORDER BY name")
                .bind(id)
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?
                .into_iter()
                .map(|r| r.get(0))
                .collect();
        Ok(ModelVersion {
            model: row.get(1),
            version: row.get(2),
            format: Format::from_str(row.get(3))?,
            artifact_kind: ArtifactKind::parse(row.get(4))?,
            artifact_digest: Digest::parse(row.get(5))?,
            artifact_size_bytes: row.get(6),
            source: row.get(7),
            metadata: parse_json(row.get(8)),
            metrics: parse_json(row.get(9)),
            lineage: parse_json(row.get(10)),
            created_by: row.get(11),
            created_at: parse_ts(row.get(12))?,
            tags,
            aliases,
        })
    }

    async fn version_by_number(&self, name: &ModelName, version: i64) -> Result<ModelVersion> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions v JOIN models m ON m.id = v.model_id WHERE m.name = ? AND v.version = ?"
        );
        let row = sqlx::query(&sql)
            .bind(name.as_str())
            .bind(version)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?
            .ok_or_else(|| {
                Error::not_found(format!("version {version} of model '{name}' not found"))
            })?;
        self.version_from_row(&row).await
    }

    fn key_from_row(row: &SqliteRow) -> Result<StoredKey> {
        let models: Option<String> = row.get("models");
        let models = models
            .map(|m| serde_json::from_str::<Vec<String>>(&m))
            .transpose()
            .map_err(|e| Error::internal(format!("bad key scope in registry: {e}")))?;
        Ok(StoredKey {
            info: ApiKeyInfo {
                id: row.get("id"),
                name: row.get("name"),
                role: Role::from_str(row.get("role"))?,
                models,
                created_by: row.get("created_by"),
                created_at: parse_ts(row.get("created_at"))?,
                expires_at: parse_opt_ts(row.get("expires_at"))?,
                revoked_at: parse_opt_ts(row.get("revoked_at"))?,
            },
            secret_hash: row.get("secret_hash"),
        })
    }
}

const DATASET_VERSION_COLUMNS: &str = "d.name, dv.version, dv.format, dv.digest, dv.size_bytes, \
     dv.rows, dv.target, dv.problem, dv.profile, dv.source, dv.created_by, dv.created_at";

fn dataset_version_from_row(row: &SqliteRow) -> Result<DatasetVersion> {
    let profile: String = row.get(8);
    Ok(DatasetVersion {
        dataset: row.get(0),
        version: row.get(1),
        format: row.get(2),
        digest: Digest::parse(row.get(3))?,
        size_bytes: row.get(4),
        rows: row.get(5),
        target: row.get(6),
        problem: row.get(7),
        profile: serde_json::from_str(&profile)
            .map_err(|e| Error::internal(format!("bad dataset profile in registry: {e}")))?,
        source: row.get(9),
        created_by: row.get(10),
        created_at: parse_ts(row.get(11))?,
    })
}

const RUN_COLUMNS: &str =
    "id, dataset, dataset_version, model, spec, state, epochs_done, epochs_total, \
     history, result, error, created_by, created_at, started_at, finished_at";

fn run_from_row(row: &SqliteRow) -> Result<Run> {
    let state: String = row.get(5);
    let result: Option<String> = row.get(9);
    Ok(Run {
        id: row.get(0),
        dataset: row.get(1),
        dataset_version: row.get(2),
        model: row.get(3),
        spec: parse_json(row.get(4)),
        state: RunState::from_str(&state)?,
        epochs_done: row.get(6),
        epochs_total: row.get(7),
        history: parse_json(row.get(8)),
        result: result.as_deref().map(parse_json),
        error: row.get(10),
        created_by: row.get(11),
        created_at: parse_ts(row.get(12))?,
        started_at: parse_opt_ts(row.get(13))?,
        finished_at: parse_opt_ts(row.get(14))?,
    })
}

/// Appends one audit entry inside `tx`, extending the chain and moving its head.
async fn append_audit(
    tx: &mut Transaction<'static, Sqlite>,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<()> {
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)?;
    let (prev_seq, prev_hash) = match head {
        Some(r) => (r.get::<i64, _>(0), r.get::<String, _>(1)),
        None => (0, GENESIS_HASH.to_owned()),
    };
    let seq = prev_seq + 1;
    let at = now_text();
    let detail = json_text(&detail);
    let hash = entry_hash(seq, &at, &actor.0, action, target, &detail, &prev_hash);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(seq)
    .bind(&at)
    .bind(&actor.0)
    .bind(action)
    .bind(target)
    .bind(&detail)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    sqlx::query(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .bind(seq)
    .bind(&hash)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

async fn model_id_in(tx: &mut Transaction<'static, Sqlite>, name: &ModelName) -> Result<i64> {
    sqlx::query_scalar::<_, i64>("SELECT id FROM models WHERE name = ?")
        .bind(name.as_str())
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found(format!("model '{name}' not found")))
}

async fn version_id_in(
    tx: &mut Transaction<'static, Sqlite>,
    model_id: i64,
    name: &ModelName,
    version: i64,
) -> Result<i64> {
    sqlx::query_scalar::<_, i64>("SELECT id FROM versions WHERE model_id = ? AND version = ?")
        .bind(model_id)
        .bind(version)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found(format!("version {version} of model '{name}' not found")))
}

async fn commit(tx: Transaction<'static, Sqlite>) -> Result<()> {
    tx.commit().await.map_err(db_err)
}

#[async_trait]
impl Registry for SqliteRegistry {
    async fn create_model(
        &self,
        name: &ModelName,
        task: Task,
        description: &str,
        actor: &Actor,
    ) -> Result<Model> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "INSERT INTO models (name, task, description, created_by, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO NOTHING",
        )
        .bind(name.as_str())
        .bind(task.as_str())
        .bind(description)
        .bind(&actor.0)
        .bind(now_text())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!("model '{name}' already exists")));
        }
        append_audit(
            &mut tx,
            actor,
            "model.create",
            name.as_str(),
            serde_json::json!({"task": task}),
        )
        .await?;
        commit(tx).await?;
        self.get_model(name).await
    }

    async fn register_version(&self, new: NewVersion, actor: &Actor) -> Result<ModelVersion> {
        let mut tx = self.begin().await?;
        let existing = sqlx::query("SELECT id, task, next_version FROM models WHERE name = ?")
            .bind(new.model.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let (model_id, version) = match existing {
            Some(row) => {
                let task: String = row.get(1);
                if task != new.task.as_str() {
                    return Err(Error::conflict(format!(
                        "model '{}' has task {task}; a version with task {} cannot be added to it",
                        new.model, new.task
                    )));
                }
                (row.get::<i64, _>(0), row.get::<i64, _>(2))
            }
            None => {
                let id = sqlx::query_scalar::<_, i64>(
                    "INSERT INTO models (name, task, description, created_by, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
                )
                .bind(new.model.as_str())
                .bind(new.task.as_str())
                .bind(new.description.clone().unwrap_or_default())
                .bind(&actor.0)
                .bind(now_text())
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
                append_audit(
                    &mut tx,
                    actor,
                    "model.create",
                    new.model.as_str(),
                    serde_json::json!({"task": new.task}),
                )
                .await?;
                (id, 1)
            }
        };
        sqlx::query("UPDATE models SET next_version = ? WHERE id = ?")
            .bind(version + 1)
            .bind(model_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO versions (model_id, version, format, artifact_kind, artifact_digest, artifact_size, source, \
             metadata, metrics, lineage, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(model_id)
        .bind(version)
        .bind(new.format.as_str())
        .bind(new.artifact_kind.as_str())
        .bind(new.artifact_digest.to_string())
        .bind(new.artifact_size_bytes)
        .bind(&new.source)
        .bind(json_text(&new.metadata))
        .bind(json_text(&new.metrics))
        .bind(json_text(&new.lineage))
        .bind(&actor.0)
        .bind(now_text())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        append_audit(
            &mut tx,
            actor,
            "version.register",
            &format!("{}:{version}", new.model),
            serde_json::json!({"source": new.source, "digest": new.artifact_digest, "format": new.format}),
        )
        .await?;
        commit(tx).await?;
        self.version_by_number(&new.model, version).await
    }

    async fn register_dataset_version(
        &self,
        new: NewDatasetVersion,
        actor: &Actor,
    ) -> Result<DatasetVersion> {
        let mut tx = self.begin().await?;
        let existing = sqlx::query_scalar::<_, i64>("SELECT id FROM datasets WHERE name = ?")
            .bind(new.dataset.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let dataset_id = match existing {
            Some(id) => id,
            None => {
                let id = sqlx::query_scalar::<_, i64>(
                    "INSERT INTO datasets (name, description, created_by, created_at) VALUES (?, ?, ?, ?) RETURNING id",
                )
                .bind(new.dataset.as_str())
                .bind(new.description.clone().unwrap_or_default())
                .bind(&actor.0)
                .bind(now_text())
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
                append_audit(
                    &mut tx,
                    actor,
                    "dataset.create",
                    new.dataset.as_str(),
                    serde_json::json!({}),
                )
                .await?;
                id
            }
        };
        let version = sqlx::query_scalar::<_, i64>(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM dataset_versions WHERE dataset_id = ?",
        )
        .bind(dataset_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO dataset_versions (dataset_id, version, format, digest, size_bytes, rows, target, problem, \
             profile, source, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(dataset_id)
        .bind(version)
        .bind(&new.format)
        .bind(new.digest.to_string())
        .bind(new.size_bytes)
        .bind(new.rows)
        .bind(&new.target)
        .bind(&new.problem)
        .bind(json_text(&new.profile))
        .bind(&new.source)
        .bind(&actor.0)
        .bind(now_text())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        append_audit(
            &mut tx,
            actor,
            "dataset.version.register",
            &format!("{}:{version}", new.dataset),
            serde_json::json!({"source": new.source, "digest": new.digest, "rows": new.rows}),
        )
        .await?;
        commit(tx).await?;
        self.dataset_version(&new.dataset, Some(version)).await
    }

    async fn list_datasets(&self) -> Result<Vec<Dataset>> {
        let rows = sqlx::query(
            "SELECT name, description, created_by, created_at, \
             (SELECT MAX(version) FROM dataset_versions WHERE dataset_id = datasets.id) FROM datasets ORDER BY name",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(Dataset {
                    name: r.get(0),
                    description: r.get(1),
                    created_by: r.get(2),
                    created_at: parse_ts(r.get(3))?,
                    latest_version: r.get(4),
                })
            })
            .collect()
    }

    async fn list_dataset_versions(&self, name: &ModelName) -> Result<Vec<DatasetVersion>> {
        let exists = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM datasets WHERE name = ?")
            .bind(name.as_str())
            .fetch_one(&self.reader)
            .await
            .map_err(db_err)?;
        if exists == 0 {
            return Err(Error::not_found(format!("dataset '{name}' not found")));
        }
        let sql = format!(
            "SELECT {DATASET_VERSION_COLUMNS} FROM dataset_versions dv JOIN datasets d ON d.id = dv.dataset_id \
             WHERE d.name = ? ORDER BY dv.version"
        );
        let rows = sqlx::query(&sql)
            .bind(name.as_str())
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter().map(dataset_version_from_row).collect()
    }

    async fn dataset_version(
        &self,
        name: &ModelName,
        version: Option<i64>,
    ) -> Result<DatasetVersion> {
        let sql = format!(
            "SELECT {DATASET_VERSION_COLUMNS} FROM dataset_versions dv JOIN datasets d ON d.id = dv.dataset_id \
             WHERE d.name = ? AND (? IS NULL OR dv.version = ?) ORDER BY dv.version DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(name.as_str())
            .bind(version)
            .bind(version)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?
            .ok_or_else(|| match version {
                Some(v) => Error::not_found(format!("version {v} of dataset '{name}' not found")),
                None => Error::not_found(format!("dataset '{name}' not found")),
            })?;
        dataset_version_from_row(&row)
    }

    async fn create_run(&self, new: NewRun, actor: &Actor) -> Result<Run> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO runs (id, dataset, dataset_version, model, spec, state, epochs_total, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&new.id)
        .bind(new.dataset.as_str())
        .bind(new.dataset_version)
        .bind(new.model.as_str())
        .bind(json_text(&new.spec))
        .bind(RunState::Queued.as_str())
        .bind(new.epochs_total)
        .bind(&actor.0)
        .bind(now_text())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        append_audit(
            &mut tx,
            actor,
            "run.create",
            &new.id,
            serde_json::json!({"dataset": format!("{}:{}", new.dataset, new.dataset_version), "model": new.model.as_str()}),
        )
        .await?;
        commit(tx).await?;
        self.get_run(&new.id).await
    }

    async fn update_run(&self, id: &str, update: RunUpdate, actor: &Actor) -> Result<Run> {
        let mut tx = self.begin().await?;
        let before: Option<String> = sqlx::query_scalar("SELECT state FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let before = before.ok_or_else(|| Error::not_found(format!("run '{id}' not found")))?;
        let now = now_text();
        sqlx::query(
            "UPDATE runs SET state = ?, epochs_done = ?, history = ?, result = ?, error = ?, \
             started_at = CASE WHEN ? THEN ? ELSE started_at END, \
             finished_at = CASE WHEN ? THEN ? ELSE finished_at END WHERE id = ?",
        )
        .bind(update.state.as_str())
        .bind(update.epochs_done)
        .bind(update.history.to_string())
        .bind(update.result.as_ref().map(|r| r.to_string()))
        .bind(&update.error)
        .bind(update.state == RunState::Running && before != RunState::Running.as_str())
        .bind(&now)
        .bind(update.state.is_final())
        .bind(&now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if before != update.state.as_str() {
            append_audit(
                &mut tx,
                actor,
                &format!("run.{}", update.state),
                id,
                serde_json::json!({"epochs_done": update.epochs_done, "error": update.error, "result": update.result}),
            )
            .await?;
        }
        commit(tx).await?;
        self.get_run(id).await
    }

    async fn get_run(&self, id: &str) -> Result<Run> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?
            .ok_or_else(|| Error::not_found(format!("run '{id}' not found")))?;
        run_from_row(&row)
    }

    async fn list_runs(&self, limit: i64) -> Result<Vec<Run>> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id LIMIT ?"
        ))
        .bind(limit)
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter().map(run_from_row).collect()
    }

    async fn interrupt_runs(&self) -> Result<u64> {
        let mut tx = self.begin().await?;
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM runs WHERE state IN ('queued', 'running')")
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
        for id in &ids {
            sqlx::query("UPDATE runs SET state = 'interrupted' WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            append_audit(
                &mut tx,
                &Actor::system(),
                "run.interrupted",
                id,
                serde_json::json!({}),
            )
            .await?;
        }
        commit(tx).await?;
        Ok(ids.len() as u64)
    }

    async fn list_models(&self) -> Result<Vec<Model>> {
        let rows = sqlx::query(
            "SELECT id, name, task, description, created_by, created_at, \
             (SELECT MAX(version) FROM versions WHERE model_id = models.id) AS latest FROM models ORDER BY name",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.model_from_row(row).await?);
        }
        Ok(out)
    }

    async fn get_model(&self, name: &ModelName) -> Result<Model> {
        Ok(self.model_row(name).await?.1)
    }

    async fn delete_model(&self, name: &ModelName, actor: &Actor) -> Result<()> {
        let mut tx = self.begin().await?;
        let model_id = model_id_in(&mut tx, name).await?;
        let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM versions WHERE model_id = ?")
            .bind(model_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        // Aliases first: they reference versions without cascading, on purpose.
        for sql in [
            "DELETE FROM aliases WHERE model_id = ?",
            "DELETE FROM versions WHERE model_id = ?",
            "DELETE FROM models WHERE id = ?",
        ] {
            sqlx::query(sql)
                .bind(model_id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        append_audit(
            &mut tx,
            actor,
            "model.delete",
            name.as_str(),
            serde_json::json!({"versions": versions}),
        )
        .await?;
        commit(tx).await
    }

    async fn list_versions(&self, name: &ModelName) -> Result<Vec<ModelVersion>> {
        let (model_id, _) = self.model_row(name).await?;
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions v JOIN models m ON m.id = v.model_id WHERE v.model_id = ? ORDER BY v.version"
        );
        let rows = sqlx::query(&sql)
            .bind(model_id)
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.version_from_row(row).await?);
        }
        Ok(out)
    }

    async fn resolve(&self, r: &ModelRef) -> Result<ModelVersion> {
        let model = self.get_model(&r.name).await?;
        match &r.selector {
            VersionSelector::Number(n) => self.version_by_number(&r.name, *n).await,
            VersionSelector::Latest => {
                let latest = model.latest_version.ok_or_else(|| {
                    Error::not_found(format!("model '{}' has no versions", r.name))
                })?;
                self.version_by_number(&r.name, latest).await
            }
            VersionSelector::Alias(a) => {
                let version = model.aliases.get(a.as_str()).ok_or_else(|| {
                    Error::not_found(format!("alias '{a}' of model '{}' not found", r.name))
                })?;
                self.version_by_number(&r.name, *version).await
            }
        }
    }

    async fn delete_version(&self, name: &ModelName, version: i64, actor: &Actor) -> Result<()> {
        let mut tx = self.begin().await?;
        let model_id = model_id_in(&mut tx, name).await?;
        let version_id = version_id_in(&mut tx, model_id, name, version).await?;
        let aliases: Vec<String> =
            sqlx::query_scalar("SELECT name FROM aliases WHERE version_id = ? ORDER BY name")
                .bind(version_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
        if !aliases.is_empty() {
            return Err(Error::conflict(format!(
                "version {version} of model '{name}' is aliased as {}; move or delete the alias first",
                aliases.join(", ")
            )));
        }
        sqlx::query("DELETE FROM versions WHERE id = ?")
            .bind(version_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        append_audit(
            &mut tx,
            actor,
            "version.delete",
            &format!("{name}:{version}"),
            serde_json::json!({}),
        )
        .await?;
        commit(tx).await
    }

    async fn set_alias(
        &self,
        name: &ModelName,
        alias: &AliasName,
        version: i64,
        actor: &Actor,
    ) -> Result<Alias> {
        let mut tx = self.begin().await?;
        let model_id = model_id_in(&mut tx, name).await?;
        let version_id = version_id_in(&mut tx, model_id, name, version).await?;
        let previous: Option<i64> = sqlx::query_scalar(
            "SELECT v.version FROM aliases a JOIN versions v ON v.id = a.version_id WHERE a.model_id = ? AND a.name = ?",
        )
        .bind(model_id)
        .bind(alias.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO aliases (model_id, name, version_id, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT(model_id, name) DO UPDATE SET version_id = excluded.version_id, updated_at = excluded.updated_at",
        )
        .bind(model_id)
        .bind(alias.as_str())
        .bind(version_id)
        .bind(now_text())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        append_audit(
            &mut tx,
            actor,
            "alias.set",
            &format!("{name}@{alias}"),
            serde_json::json!({"from": previous, "to": version}),
        )
        .await?;
        commit(tx).await?;
        Ok(Alias {
            model: name.to_string(),
            alias: alias.to_string(),
            version,
        })
    }

    async fn delete_alias(&self, name: &ModelName, alias: &AliasName, actor: &Actor) -> Result<()> {
        let mut tx = self.begin().await?;
        let model_id = model_id_in(&mut tx, name).await?;
        let done = sqlx::query("DELETE FROM aliases WHERE model_id = ? AND name = ?")
            .bind(model_id)
            .bind(alias.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(format!(
                "alias '{alias}' of model '{name}' not found"
            )));
        }
        append_audit(
            &mut tx,
            actor,
            "alias.delete",
            &format!("{name}@{alias}"),
            serde_json::json!({}),
        )
        .await?;
        commit(tx).await
    }

    async fn set_tags(
        &self,
        name: &ModelName,
        version: i64,
        tags: &BTreeMap<String, String>,
        actor: &Actor,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let model_id = model_id_in(&mut tx, name).await?;
        let version_id = version_id_in(&mut tx, model_id, name, version).await?;
        for (key, value) in tags {
            sqlx::query(
                "INSERT INTO tags (version_id, key, value) VALUES (?, ?, ?) ON CONFLICT(version_id, key) DO UPDATE SET value = excluded.value",
            )
            .bind(version_id)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        append_audit(
            &mut tx,
            actor,
            "tags.set",
            &format!("{name}:{version}"),
            serde_json::json!(tags),
        )
        .await?;
        commit(tx).await
    }

    async fn add_evaluation(
        &self,
        name: &ModelName,
        version: i64,
        evaluation: serde_json::Value,
        actor: &Actor,
    ) -> Result<ModelVersion> {
        let mut tx = self.begin().await?;
        let model_id = model_id_in(&mut tx, name).await?;
        let version_id = version_id_in(&mut tx, model_id, name, version).await?;
        let metrics: String = sqlx::query_scalar("SELECT metrics FROM versions WHERE id = ?")
            .bind(version_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        let mut metrics = match parse_json(&metrics) {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let list = metrics
            .entry("evaluations")
            .or_insert_with(|| serde_json::json!([]));
        if !list.is_array() {
            *list = serde_json::json!([]);
        }
        if let Some(list) = list.as_array_mut() {
            list.push(evaluation.clone());
        }
        sqlx::query("UPDATE versions SET metrics = ? WHERE id = ?")
            .bind(serde_json::Value::Object(metrics).to_string())
            .bind(version_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        append_audit(
            &mut tx,
            actor,
            "version.evaluate",
            &format!("{name}:{version}"),
            serde_json::json!({"dataset": evaluation["dataset"], "rows": evaluation["rows"]}),
        )
        .await?;
        commit(tx).await?;
        self.version_by_number(name, version).await
    }

    async fn referenced_artifacts(&self) -> Result<Vec<(ArtifactKind, Digest)>> {
        // Dataset files are single-file artifacts too: garbage collection must keep them.
        let rows = sqlx::query(
            "SELECT DISTINCT artifact_kind, artifact_digest FROM versions \
             UNION SELECT 'file', digest FROM dataset_versions",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| Ok((ArtifactKind::parse(r.get(0))?, Digest::parse(r.get(1))?)))
            .collect()
    }

    async fn create_key(&self, key: NewKey, actor: &Actor) -> Result<ApiKeyInfo> {
        let mut tx = self.begin().await?;
        let models = key.models.as_ref().map(|m| {
            serde_json::to_string(&m.iter().map(ModelName::as_str).collect::<Vec<_>>())
                .unwrap_or_default()
        });
        let done = sqlx::query(
            "INSERT INTO api_keys (id, name, role, models, secret_hash, created_by, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(&models)
        .bind(&key.secret_hash)
        .bind(&actor.0)
        .bind(now_text())
        .bind(key.expires_at.map(ts_text))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(format!(
                "key id '{}' already exists",
                key.id
            )));
        }
        append_audit(
            &mut tx,
            actor,
            "key.create",
            &key.id,
            serde_json::json!({"name": key.name, "role": key.role, "models": key.models, "expires_at": key.expires_at.map(ts_text)}),
        )
        .await?;
        commit(tx).await?;
        self.key_by_id(&key.id)
            .await?
            .map(|k| k.info)
            .ok_or_else(|| Error::internal("key vanished after creation"))
    }

    async fn set_bootstrap_key(&self, secret_hash: Vec<u8>) -> Result<()> {
        let mut tx = self.begin().await?;
        let current: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT secret_hash FROM api_keys WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(BOOTSTRAP_KEY_ID)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        if current.as_deref() == Some(secret_hash.as_slice()) {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO api_keys (id, name, role, models, secret_hash, created_by, created_at) VALUES (?, 'bootstrap admin', 'admin', NULL, ?, 'system', ?) \
             ON CONFLICT(id) DO UPDATE SET secret_hash = excluded.secret_hash, revoked_at = NULL, role = 'admin'",
        )
        .bind(BOOTSTRAP_KEY_ID)
        .bind(&secret_hash)
        .bind(now_text())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        append_audit(
            &mut tx,
            &Actor::system(),
            "key.bootstrap",
            BOOTSTRAP_KEY_ID,
            serde_json::json!({"role": "admin"}),
        )
        .await?;
        commit(tx).await
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<StoredKey>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        row.as_ref().map(Self::key_from_row).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyInfo>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| Self::key_from_row(r).map(|k| k.info))
            .collect()
    }

    async fn revoke_key(&self, id: &str, actor: &Actor) -> Result<ApiKeyInfo> {
        let mut tx = self.begin().await?;
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now_text())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        if done.rows_affected() == 0 {
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM api_keys WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            return Err(match exists {
                Some(_) => Error::conflict(format!("key '{id}' is already revoked")),
                None => Error::not_found(format!("key '{id}' not found")),
            });
        }
        append_audit(&mut tx, actor, "key.revoke", id, serde_json::json!({})).await?;
        commit(tx).await?;
        self.key_by_id(id)
            .await?
            .map(|k| k.info)
            .ok_or_else(|| Error::internal("key vanished after revocation"))
    }

    async fn count_usable_admin_keys(&self) -> Result<i64> {
        let now = now_text();
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
        )
        .bind(now)
        .fetch_one(&self.reader)
        .await
        .map_err(db_err)
    }

    async fn audit_list(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    seq: r.get("seq"),
                    at: parse_ts(r.get("at"))?,
                    actor: r.get("actor"),
                    action: r.get("action"),
                    target: r.get("target"),
                    detail: parse_json(r.get("detail")),
                    prev_hash: r.get("prev_hash"),
                    hash: r.get("hash"),
                })
            })
            .collect()
    }

    async fn audit_verify(&self) -> Result<AuditVerdict> {
        // Read the chain and its head in one snapshot so a concurrent append is not a false alarm.
        let mut conn = self.reader.begin().await.map_err(db_err)?;
        let rows = sqlx::query("SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit_log ORDER BY seq")
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?
            .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)));
        let entries = rows.len() as i64;
        let fail = |problem: String| {
            Ok(AuditVerdict {
                ok: false,
                entries,
                problem: Some(problem),
            })
        };
        let mut prev_hash = GENESIS_HASH.to_owned();
        for (expected_seq, r) in (1_i64..).zip(rows.iter()) {
            let seq: i64 = r.get(0);
            if seq != expected_seq {
                return fail(format!(
                    "entry {expected_seq} is missing (next entry is {seq})"
                ));
            }
            let stored_prev: String = r.get(6);
            if stored_prev != prev_hash {
                return fail(format!("entry {seq} does not link to entry {}", seq - 1));
            }
            let hash = entry_hash(
                seq,
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                &stored_prev,
            );
            let stored_hash: String = r.get(7);
            if hash != stored_hash {
                return fail(format!(
                    "entry {seq} was modified: its content does not match its hash"
                ));
            }
            prev_hash = stored_hash;
        }
        match head {
            None if entries > 0 => return fail("the chain head is missing".to_owned()),
            Some((seq, hash)) if seq != entries || hash != prev_hash => {
                return fail(format!("the chain ends at entry {entries} but its head records entry {seq}: entries were removed"))
            }
            _ => {}
        }
        Ok(AuditVerdict {
            ok: true,
            entries,
            problem: None,
        })
    }
}
