//! Loaded models: loaded on first use, kept within a memory budget (least recently used goes
//! first), and shared by every request to the same version. Loading one model never blocks
//! requests to another: each version has its own slot and the table lock is held only to find it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use maas_core::{ArtifactKind, Error, ErrorKind, ModelVersion, Result, Task};
use maas_engine::{Engine, LoadSpec, LoadedModel};
use maas_store::ArtifactStore;
use tokio::sync::OnceCell;

type Key = (String, i64);

struct Slot {
    loaded: OnceCell<Arc<LoadedModel>>,
    last_used_ms: AtomicU64,
    in_flight: Arc<AtomicUsize>,
}

/// Settings of the cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Compute threads per model.
    pub threads: usize,
    /// Memory the loaded models may hold together.
    pub budget_bytes: u64,
    /// Requests one model may have running or waiting before new ones get 429.
    pub max_queue: usize,
}

/// The loaded-model cache.
pub struct ModelCache {
    engines: Vec<Arc<dyn Engine>>,
    artifacts: ArtifactStore,
    config: CacheConfig,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
}

/// Holds a place in a model's queue; released on drop.
pub struct QueuePermit(Arc<AtomicUsize>);

impl Drop for QueuePermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ModelCache {
    /// A cache over the engines compiled into this build.
    pub fn new(artifacts: ArtifactStore, config: CacheConfig) -> Self {
        let engines: Vec<Arc<dyn Engine>> = vec![
            #[cfg(feature = "llama")]
            Arc::new(maas_engine_llama::LlamaEngine::default()),
        ];
        Self {
            engines,
            artifacts,
            config,
            slots: Mutex::default(),
        }
    }

    fn slot(&self, key: &Key) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    loaded: OnceCell::new(),
                    last_used_ms: AtomicU64::new(now_ms()),
                    in_flight: Arc::default(),
                })
            })
            .clone()
    }

    /// Takes a place in the version's queue, or fails with 429 when it is full.
    pub fn enqueue(&self, version: &ModelVersion) -> Result<QueuePermit> {
        let slot = self.slot(&(version.model.clone(), version.version));
        let before = slot.in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = QueuePermit(slot.in_flight.clone());
        if before >= self.config.max_queue {
            return Err(Error::new(
                ErrorKind::Overloaded,
                format!(
                    "model '{}' has {before} requests queued; try again shortly",
                    version.model
                ),
            ));
        }
        Ok(permit)
    }

    /// The loaded model for `version`, loading it if needed.
    pub async fn get(&self, version: &ModelVersion, task: Task) -> Result<Arc<LoadedModel>> {
        let key = (version.model.clone(), version.version);
        let slot = self.slot(&key);
        let loaded = slot
            .loaded
            .get_or_try_init(|| self.load(version, task))
            .await?
            .clone();
        slot.last_used_ms.store(now_ms(), Ordering::Relaxed);
        self.evict_over_budget(&key);
        Ok(loaded)
    }

    async fn load(&self, version: &ModelVersion, task: Task) -> Result<Arc<LoadedModel>> {
        let engine = self
            .engines
            .iter()
            .find(|e| e.supports(version.format, task))
            .cloned()
            .ok_or_else(|| {
                Error::invalid(format!(
                    "this build has no engine that serves {task} models stored as {}",
                    version.format
                ))
            })?;
        if version.artifact_kind != ArtifactKind::File {
            return Err(Error::invalid(format!(
                "{} serves single-file models; {}:{} is a folder",
                engine.name(),
                version.model,
                version.version
            )));
        }
        // Reads verify: a blob that rotted on disk is refused, not loaded.
        self.artifacts.verify(&version.artifact_digest).await?;
        let path = self
            .artifacts
            .local_path(&version.artifact_digest)
            .ok_or_else(|| {
                Error::internal("models can only be loaded from a local artifact store")
            })?;
        let spec = LoadSpec {
            path,
            format: version.format,
            task,
            threads: self.config.threads,
        };
        let started = std::time::Instant::now();
        let loaded = tokio::task::spawn_blocking(move || engine.load(&spec))
            .await
            .map_err(|e| Error::internal(format!("model load crashed: {e}")))?
            .map_err(|e| {
                Error::internal(format!(
                    "cannot load {}:{}: {e}",
                    version.model, version.version
                ))
            })?;
        tracing::info!(model = %version.model, version = version.version, ms = started.elapsed().as_millis() as u64, "model loaded");
        Ok(Arc::new(loaded))
    }

    fn evict_over_budget(&self, keep: &Key) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let loaded: Vec<(Key, u64, u64)> = slots
                .iter()
                .filter_map(|(k, s)| {
                    s.loaded.get().map(|m| {
                        (
                            k.clone(),
                            m.memory_bytes,
                            s.last_used_ms.load(Ordering::Relaxed),
                        )
                    })
                })
                .collect();
            let total: u64 = loaded.iter().map(|(_, bytes, _)| bytes).sum();
            if total <= self.config.budget_bytes {
                return;
            }
            let Some((victim, _, _)) = loaded
                .iter()
                .filter(|(k, _, _)| k != keep)
                .min_by_key(|(_, _, used)| *used)
            else {
                return;
            };
            tracing::info!(model = %victim.0, version = victim.1, "unloading to stay within the memory budget");
            // Requests still running hold their own reference and finish normally.
            slots.remove(victim);
        }
    }

    /// Versions loaded now, as (model, version).
    pub fn loaded(&self) -> Vec<(String, i64)> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .filter(|(_, s)| s.loaded.initialized())
            .map(|(k, _)| k.clone())
            .collect()
    }
}
