//! Loaded models: loaded on first use (or explicitly), kept within a memory budget (least
//! recently used goes first; pinned models never), unloaded after sitting idle, and shared by
//! every request to the same version. Loading one model never blocks requests to another: each
//! version has its own slot and the table lock is held only to find it. Unloading drops the
//! cache's reference; requests still running hold their own and finish normally.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use maas_core::{ArtifactKind, Error, ErrorKind, Format, ModelVersion, Result, Task};
use maas_engine::{Batching, Engine, LoadSpec, LoadedModel};
use maas_store::ArtifactStore;
use tokio::sync::OnceCell;

type Key = (String, i64);

struct Slot {
    loaded: OnceCell<Arc<LoadedModel>>,
    last_used_ms: AtomicU64,
    loaded_at_ms: AtomicU64,
    in_flight: Arc<AtomicUsize>,
    pinned: AtomicBool,
}

/// A loaded model as the API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LoadedInfo {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: i64,
    /// Bytes it holds.
    pub memory_bytes: u64,
    /// What it can do (generate, embed …).
    pub capabilities: Vec<String>,
    /// Never unloaded for memory or idleness while pinned.
    pub pinned: bool,
    /// Requests running or queued.
    pub in_flight: usize,
    /// Unix milliseconds of the load.
    pub loaded_at_ms: u64,
    /// Unix milliseconds of the last request.
    pub last_used_ms: u64,
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
    /// Continuous batching of generation, dynamic batching of embeddings.
    pub batching: Batching,
    /// A model unused this long is unloaded (unless pinned); None keeps models loaded.
    pub idle_unload: Option<std::time::Duration>,
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

/// The server's batching, with the version's own settings (`metadata.serving.batching`:
/// `max_batch_size`, `max_delay_ms`) in place of the defaults they name. Tensor (ONNX) models
/// batch only when their settings ask: on CPU, tract runs a ResNet batch of 8 at 152 ms per image
/// against 96 ms alone, and serving open-nsfw with batching halved throughput (bench/results).
fn batching_for(version: &ModelVersion, default: Batching) -> Batching {
    let own = &version.metadata["serving"]["batching"];
    let mut b = default;
    if version.format == Format::Onnx {
        b.max_inputs = 1;
    }
    if let Some(n) = own["max_batch_size"].as_u64() {
        b.max_inputs = usize::try_from(n).unwrap_or(usize::MAX).max(1);
    }
    if let Some(ms) = own["max_delay_ms"].as_u64() {
        b.max_wait = std::time::Duration::from_millis(ms);
    }
    b
}

impl ModelCache {
    /// A cache over the engines compiled into this build.
    pub fn new(artifacts: ArtifactStore, config: CacheConfig) -> Self {
        let engines: Vec<Arc<dyn Engine>> = vec![
            #[cfg(feature = "llama")]
            Arc::new(maas_engine_llama::LlamaEngine::default()),
            #[cfg(feature = "tract")]
            Arc::new(maas_engine_tract::TractEngine),
            Arc::new(maas_train::model::TrainedEngine),
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
                    loaded_at_ms: AtomicU64::new(0),
                    in_flight: Arc::default(),
                    pinned: AtomicBool::new(false),
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
            .get_or_try_init(|| async {
                let loaded = self.load(version, task).await?;
                slot.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
                Ok::<_, Error>(loaded)
            })
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
        let digest = self.weights_blob(version).await?;
        // Reads verify: a blob that rotted on disk is refused, not loaded.
        self.artifacts.verify(&digest).await?;
        let path = self.artifacts.local_path(&digest).ok_or_else(|| {
            Error::internal("models can only be loaded from a local artifact store")
        })?;
        let spec = LoadSpec {
            path,
            format: version.format,
            task,
            threads: self.config.threads,
            batching: batching_for(version, self.config.batching),
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

    /// The blob holding the weights: the artifact itself, or for a folder the one file of its
    /// format inside (a converted model keeps its original files beside the GGUF).
    async fn weights_blob(&self, version: &ModelVersion) -> Result<maas_core::Digest> {
        let suffix = match (version.artifact_kind, version.format) {
            (ArtifactKind::File, _) => return Ok(version.artifact_digest),
            (ArtifactKind::Dir, Format::Gguf) => ".gguf",
            (ArtifactKind::Dir, Format::Onnx) => ".onnx",
            (ArtifactKind::Dir, format) => {
                return Err(Error::invalid(format!(
                    "{}:{} is a {format} folder; this build serves it only once converted",
                    version.model, version.version
                )))
            }
        };
        let manifest = self
            .artifacts
            .get_manifest(&version.artifact_digest)
            .await?;
        let mut found = manifest.files.iter().filter(|f| f.path.ends_with(suffix));
        match (found.next(), found.next()) {
            (Some(f), None) => Ok(f.digest),
            _ => Err(Error::invalid(format!(
                "{}:{} is a folder without exactly one {suffix} file",
                version.model, version.version
            ))),
        }
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
                .filter(|(k, _, _)| {
                    !slots
                        .get(k)
                        .is_some_and(|s| s.pinned.load(Ordering::Relaxed))
                })
                .min_by_key(|(_, _, used)| *used)
            else {
                return;
            };
            tracing::info!(model = %victim.0, version = victim.1, "unloading to stay within the memory budget");
            // Requests still running hold their own reference and finish normally.
            slots.remove(victim);
        }
    }

    /// Loads `version` now (if it is not already) and sets whether it is pinned.
    pub async fn load_now(
        &self,
        version: &ModelVersion,
        task: Task,
        pin: Option<bool>,
    ) -> Result<LoadedInfo> {
        let key = (version.model.clone(), version.version);
        if let Some(pin) = pin {
            self.slot(&key).pinned.store(pin, Ordering::Relaxed);
        }
        self.get(version, task).await?;
        self.info(&key).ok_or_else(|| {
            Error::internal("the model was unloaded again at once; raise --model-memory-mib")
        })
    }

    /// Unloads a version; false if it was not loaded.
    pub fn unload(&self, model: &str, version: i64) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let key = (model.to_owned(), version);
        let was_loaded = slots.get(&key).is_some_and(|s| s.loaded.initialized());
        if was_loaded {
            slots.remove(&key);
            tracing::info!(model, version, "unloaded on request");
        }
        was_loaded
    }

    /// Unloads every model idle longer than the configured time; returns how many.
    pub fn unload_idle(&self) -> usize {
        let Some(idle) = self.config.idle_unload else {
            return 0;
        };
        let cutoff = now_ms().saturating_sub(idle.as_millis() as u64);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let before = slots.len();
        slots.retain(|(model, version), s| {
            let idle = s.loaded.initialized()
                && !s.pinned.load(Ordering::Relaxed)
                && s.in_flight.load(Ordering::Acquire) == 0
                && s.last_used_ms.load(Ordering::Relaxed) < cutoff;
            if idle {
                tracing::info!(model, version, "unloaded after sitting idle");
            }
            !idle
        });
        before - slots.len()
    }

    /// How often the idle sweep should run: often enough to unload within ~10% of the time.
    pub fn idle_sweep_every(&self) -> Option<std::time::Duration> {
        self.config.idle_unload.map(|d| {
            (d / 10).clamp(
                std::time::Duration::from_millis(100),
                std::time::Duration::from_secs(30),
            )
        })
    }

    fn info(&self, key: &Key) -> Option<LoadedInfo> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let s = slots.get(key)?;
        let loaded = s.loaded.get()?;
        Some(LoadedInfo {
            model: key.0.clone(),
            version: key.1,
            memory_bytes: loaded.memory_bytes,
            capabilities: loaded
                .capabilities()
                .iter()
                .map(|c| format!("{c:?}").to_ascii_lowercase())
                .collect(),
            pinned: s.pinned.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Acquire),
            loaded_at_ms: s.loaded_at_ms.load(Ordering::Relaxed),
            last_used_ms: s.last_used_ms.load(Ordering::Relaxed),
        })
    }

    /// Versions loaded now, sorted by model and version.
    pub fn loaded(&self) -> Vec<LoadedInfo> {
        let keys: Vec<Key> = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.keys().cloned().collect()
        };
        let mut out: Vec<LoadedInfo> = keys.iter().filter_map(|k| self.info(k)).collect();
        out.sort_by(|a, b| (&a.model, a.version).cmp(&(&b.model, b.version)));
        out
    }
}
