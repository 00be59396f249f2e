//! Training runs: queued on a bounded pool of training workers, trained on a blocking thread one
//! epoch at a time, each epoch's figures written to the registry and announced to watchers, a
//! checkpoint written (atomically) after every epoch so a run cut off by a crash or a stop resumes
//! where it was, and the result registered as a new model version with its lineage and test
//! metrics. Nothing is registered unless the run succeeds.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use maas_core::{Error, ModelName, NewVersion, Result, Run, RunState, RunUpdate};
use maas_store::Actor;
use maas_train::dataset::{self, FileFormat, Kind};
use maas_train::model::TrainedModel;
use maas_train::prep::Encoded;
use maas_train::train::{EpochStats, Outcome, TrainSpec, Trainer};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::state::AppState;

const GO: u8 = 0;
const CANCEL: u8 = 1;
const INTERRUPT: u8 = 2;

#[derive(Clone)]
struct Control {
    stop: Arc<AtomicU8>,
    changed: watch::Sender<u64>,
}

/// The training worker pool and the runs it is working on.
#[derive(Clone)]
pub struct Runs {
    slots: Arc<Semaphore>,
    dir: PathBuf,
    active: Arc<Mutex<HashMap<String, Control>>>,
}

enum Ending {
    Finished(Box<Outcome>),
    Stopped(u8),
}

enum Event {
    /// The history a resumed run starts from.
    Restored(Vec<EpochStats>),
    Epoch(EpochStats),
}

impl Runs {
    /// A pool training at most `workers` runs at once; checkpoints live under `dir`.
    pub fn new(workers: usize, dir: PathBuf) -> Runs {
        Runs {
            slots: Arc::new(Semaphore::new(workers.max(1))),
            dir,
            active: Arc::default(),
        }
    }

    fn checkpoint_path(&self, id: &str) -> PathBuf {
        self.dir.join(id).join("checkpoint.safetensors")
    }

    /// Starts (or resumes) `run` in the background; false if it is already active here.
    pub fn start(&self, state: AppState, run: Run, resume: bool) -> bool {
        let control = Control {
            stop: Arc::default(),
            changed: watch::channel(0).0,
        };
        match self.active.lock() {
            Ok(mut active) if !active.contains_key(&run.id) => {
                active.insert(run.id.clone(), control.clone());
            }
            _ => return false,
        }
        let runs = self.clone();
        tokio::spawn(async move {
            let id = run.id.clone();
            let ending = tokio::spawn(drive(
                state.clone(),
                runs.clone(),
                run,
                resume,
                control.clone(),
            ))
            .await
            .unwrap_or_else(|e| Err(Error::internal(format!("the run crashed: {e}"))));
            let current = state.registry.get_run(&id).await;
            let (history, done) = current
                .map(|r| (r.history, r.epochs_done))
                .unwrap_or((serde_json::json!([]), 0));
            let update = |state, result, error| RunUpdate {
                state,
                epochs_done: done,
                history: history.clone(),
                result,
                error,
            };
            let update = match ending {
                Ok((Ending::Finished(_), result)) => {
                    update(RunState::Succeeded, Some(result), None)
                }
                Ok((Ending::Stopped(CANCEL), _)) => update(RunState::Cancelled, None, None),
                Ok((Ending::Stopped(_), _)) => update(RunState::Interrupted, None, None),
                Err(e) => {
                    tracing::warn!(run = %id, error = %e, "training run failed");
                    update(RunState::Failed, None, Some(e.message))
                }
            };
            let final_state = update.state;
            if let Err(e) = state
                .registry
                .update_run(&id, update, &Actor::system())
                .await
            {
                tracing::error!(run = %id, error = %e, "cannot record the run's end");
            }
            if final_state != RunState::Interrupted {
                runs.forget(&id);
            }
            if let Ok(mut active) = runs.active.lock() {
                active.remove(&id);
            }
            control.changed.send_modify(|n| *n += 1);
        });
        true
    }

    /// Removes what is kept to resume run `id` (once it can no longer resume).
    pub fn forget(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.dir.join(id));
    }

    /// Asks an active run to stop; false if it is not running or queued here.
    pub fn cancel(&self, id: &str) -> bool {
        self.signal(id, CANCEL)
    }

    fn signal(&self, id: &str, what: u8) -> bool {
        let Ok(active) = self.active.lock() else {
            return false;
        };
        match active.get(id) {
            Some(c) => {
                c.stop.store(what, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Whether `id` is queued or running here.
    pub fn is_active(&self, id: &str) -> bool {
        self.active.lock().is_ok_and(|a| a.contains_key(id))
    }

    /// A receiver that changes whenever the run records progress or ends.
    pub fn subscribe(&self, id: &str) -> Option<watch::Receiver<u64>> {
        self.active
            .lock()
            .ok()?
            .get(id)
            .map(|c| c.changed.subscribe())
    }

    /// Stops every run after its current epoch, leaving each resumable, and waits (at most
    /// `patience`) for them to write their state.
    pub async fn interrupt_all(&self, patience: std::time::Duration) {
        let ids: Vec<String> = self
            .active
            .lock()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        for id in &ids {
            self.signal(id, INTERRUPT);
        }
        let deadline = tokio::time::Instant::now() + patience;
        while self.active.lock().is_ok_and(|a| !a.is_empty())
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Reads a stored dataset version into a table and the profile training needs (the kinds
/// recorded at upload, so a re-read infers nothing differently).
pub async fn load_dataset(
    state: &AppState,
    name: &ModelName,
    version: i64,
) -> Result<(maas_core::DatasetVersion, dataset::Table, dataset::Profile)> {
    let dv = state.registry.dataset_version(name, Some(version)).await?;
    let bytes = state.artifacts.get_verified(&dv.digest).await?;
    let format = match dv.format.as_str() {
        "jsonl" => FileFormat::Jsonl,
        "zip" => FileFormat::Zip,
        _ => FileFormat::Csv,
    };
    let kinds: BTreeMap<String, Kind> = dv
        .profile
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c.get("name")?.as_str()?.to_owned(),
                serde_json::from_value(c.get("kind")?.clone()).ok()?,
            ))
        })
        .collect();
    let target = dv.target.clone();
    let (table, profile) = tokio::task::spawn_blocking(move || {
        let table = dataset::parse(&bytes, format)?;
        let profile = dataset::profile(&table, Some(&target), &kinds)?;
        Ok::<_, Error>((table, profile))
    })
    .await
    .map_err(|e| Error::internal(format!("reading the dataset crashed: {e}")))??;
    Ok((dv, table, profile))
}

/// Resolves the embedding model a spec names; 400 unless it is one.
pub async fn encoder_version(state: &AppState, name: &str) -> Result<maas_core::ModelVersion> {
    let r = maas_core::ModelRef::parse(name)
        .map_err(|e| Error::invalid(format!("encoder: {}", e.message)))?;
    let model = state.registry.get_model(&r.name).await?;
    if model.task != maas_core::Task::Embedding {
        return Err(Error::invalid(format!(
            "encoder: model '{}' is a {} model, not an embedding model",
            r.name, model.task
        )));
    }
    state.registry.resolve(&r).await
}

/// Texts to embed in one call.
const EMBED_CHUNK: usize = 64;

/// Embeds `texts` with the loaded `version`, in chunks, off the async runtime. It holds a place
/// in the encoder's queue as `/v1/embeddings` requests do, so its bound (429) holds for text
/// classifiers too.
pub async fn embed(
    state: &AppState,
    version: &maas_core::ModelVersion,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>> {
    let permit = state.models.enqueue(version)?;
    let loaded = state
        .models
        .get(version, maas_core::Task::Embedding)
        .await?;
    let embedder = loaded
        .embedder
        .clone()
        .ok_or_else(|| Error::invalid(format!("model '{}' cannot embed text", version.model)))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(EMBED_CHUNK) {
            let e = embedder
                .embed(chunk)
                .map_err(|e| Error::invalid(format!("encoder: {e}")))?;
            out.extend(e.vectors);
        }
        Ok::<_, Error>(out)
    })
    .await
    .map_err(|e| Error::internal(format!("embedding crashed: {e}")))?
}

/// Embeds every distinct text of the dataset's text columns with the spec's encoder, once.
async fn encode_texts(
    state: &AppState,
    name: &str,
    table: &dataset::Table,
    profile: &dataset::Profile,
) -> Result<(Encoded, serde_json::Value)> {
    let version = encoder_version(state, name).await?;
    let mut encoded = Encoded::new();
    let mut dims = 0;
    for col in profile
        .columns
        .iter()
        .filter(|c| c.kind == Kind::Text && c.name != profile.target)
    {
        let i = table
            .columns
            .iter()
            .position(|c| *c == col.name)
            .ok_or_else(|| Error::internal("a profiled column is not in the table"))?;
        let mut texts: Vec<String> = table.rows.iter().filter_map(|r| r[i].clone()).collect();
        texts.sort_unstable();
        texts.dedup();
        let vectors = embed(state, &version, texts.clone()).await?;
        dims = vectors.first().map_or(0, Vec::len);
        encoded.insert(col.name.clone(), texts.into_iter().zip(vectors).collect());
    }
    if encoded.is_empty() {
        return Err(Error::invalid(
            "encoder: the dataset has no text column to encode",
        ));
    }
    let info = serde_json::json!({
        "model": version.model,
        "version": version.version,
        "digest": version.artifact_digest,
        "columns": encoded.keys().collect::<Vec<_>>(),
        "dims": dims,
    });
    Ok((encoded, info))
}

/// The dataset's image column (an image zip's `image`), if it has one.
pub fn image_column(profile: &dataset::Profile) -> Option<&str> {
    profile
        .columns
        .iter()
        .find(|c| c.kind == Kind::Image && c.name != profile.target)
        .map(|c| c.name.as_str())
}

/// Every image of an image dataset as the network's input pixels, sized as `spec` says (or as
/// the images are), off the async runtime.
async fn encode_images(
    state: &AppState,
    dv: &maas_core::DatasetVersion,
    spec: &maas_train::images::ImageSpec,
    column: &str,
) -> Result<(
    std::collections::HashMap<String, Vec<f32>>,
    serde_json::Value,
)> {
    let bytes = state.artifacts.get_verified(&dv.digest).await?;
    let spec = spec.clone();
    let (size, channels, pixels) = tokio::task::spawn_blocking(move || {
        let files = dataset::zip_images(&bytes)?;
        maas_train::images::encode_all(&files, &spec)
    })
    .await
    .map_err(|e| Error::internal(format!("decoding the images crashed: {e}")))??;
    let info = serde_json::json!({"column": column, "channels": channels, "size": size});
    Ok((pixels, info))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

async fn drive(
    state: AppState,
    runs: Runs,
    run: Run,
    resume: bool,
    control: Control,
) -> Result<(Ending, serde_json::Value)> {
    let _slot = runs
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::internal("the training pool is closed"))?;
    let stop = control.stop.load(Ordering::Acquire);
    if stop != GO {
        return Ok((Ending::Stopped(stop), serde_json::Value::Null));
    }
    let actor = Actor::system();
    let mut history: Vec<EpochStats> = if resume {
        serde_json::from_value(run.history.clone()).unwrap_or_default()
    } else {
        vec![]
    };
    let progress = |history: &[EpochStats]| RunUpdate {
        state: RunState::Running,
        epochs_done: history.len() as i64,
        history: serde_json::to_value(history).unwrap_or_default(),
        result: None,
        error: None,
    };
    state
        .registry
        .update_run(&run.id, progress(&history), &actor)
        .await?;
    control.changed.send_modify(|n| *n += 1);

    let spec: TrainSpec = serde_json::from_value(run.spec.clone())
        .map_err(|e| Error::invalid(format!("spec: {e}")))?;
    let dataset_name = ModelName::parse(&run.dataset)?;
    let (dv, table, profile) = load_dataset(&state, &dataset_name, run.dataset_version).await?;

    let (mut encoded, encoder) = match &spec.encoder {
        Some(name) => encode_texts(&state, name, &table, &profile).await?,
        None => (Encoded::new(), serde_json::Value::Null),
    };
    // Image files come with image-zip datasets; elsewhere an image column is not an input.
    let image = match image_column(&profile).filter(|_| dv.format == "zip") {
        Some(column) => {
            let (pixels, info) = encode_images(&state, &dv, &spec.image, column).await?;
            encoded.insert(column.to_owned(), pixels);
            info
        }
        None => serde_json::Value::Null,
    };
    let (events, mut inbox) = mpsc::unbounded_channel();
    let checkpoint = runs.checkpoint_path(&run.id);
    let (stop, train_spec) = (control.stop.clone(), spec.clone());
    // On a pool of its own, so candle's parallel loops run on the training thread.
    let work = tokio::task::spawn_blocking(move || {
        maas_train::train::on_pool(move || -> Result<Ending> {
            let mut trainer = Trainer::with_encoded(&table, &profile, &train_spec, &encoded)?;
            if resume {
                match std::fs::read(&checkpoint) {
                    Ok(bytes) => {
                        trainer.restore(&bytes)?;
                        let _ = events.send(Event::Restored(trainer.history().to_vec()));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        // Cut off before its first checkpoint: it starts again from epoch 1.
                        let _ = events.send(Event::Restored(vec![]));
                    }
                    Err(e) => {
                        return Err(Error::internal(format!(
                            "cannot read checkpoint {}: {e}",
                            checkpoint.display()
                        )))
                    }
                }
            }
            while !trainer.is_done() {
                let what = stop.load(Ordering::Acquire);
                if what != GO {
                    return Ok(Ending::Stopped(what));
                }
                let Some(stats) = trainer.next_epoch()? else {
                    break;
                };
                write_atomically(&checkpoint, &trainer.checkpoint()?).map_err(|e| {
                    Error::internal(format!(
                        "cannot write checkpoint {}: {e}",
                        checkpoint.display()
                    ))
                })?;
                let _ = events.send(Event::Epoch(stats));
            }
            Ok(Ending::Finished(Box::new(trainer.finish()?)))
        })?
    });
    while let Some(event) = inbox.recv().await {
        match event {
            Event::Restored(h) => history = h,
            Event::Epoch(stats) => history.push(stats),
        }
        state
            .registry
            .update_run(&run.id, progress(&history), &actor)
            .await?;
        control.changed.send_modify(|n| *n += 1);
    }
    let ending = work
        .await
        .map_err(|e| Error::internal(format!("training crashed: {e}")))??;
    let Ending::Finished(outcome) = ending else {
        return Ok((ending, serde_json::Value::Null));
    };
    let result = register(&state, &run, &spec, &dv, &outcome, encoder, image).await?;
    Ok((Ending::Finished(outcome), result))
}

/// Stores the trained model and registers it as a new version of the run's model.
async fn register(
    state: &AppState,
    run: &Run,
    spec: &TrainSpec,
    dv: &maas_core::DatasetVersion,
    outcome: &Outcome,
    encoder: serde_json::Value,
    image: serde_json::Value,
) -> Result<serde_json::Value> {
    let model = TrainedModel {
        pipeline: outcome.pipeline.clone(),
        network: outcome.network.clone(),
    };
    let bytes = model.to_bytes()?;
    let size = bytes.len() as i64;
    let digest = state.artifacts.put_bytes(bytes.into()).await?;
    let mut signature = model.signature();
    // Callers send an encoded column's text; the server embeds it with the pinned encoder.
    for (column, _) in model.embedded_columns() {
        if let Some(input) = signature.inputs.iter_mut().find(|i| i.name == column) {
            input.datatype = "BYTES".to_owned();
            input.shape = vec![-1];
        }
    }
    let net = &outcome.network;
    let mut sizes: Vec<usize> = net.layers.first().map(|l| l.inputs).into_iter().collect();
    sizes.extend(net.layers.iter().map(|l| l.outputs));
    let architecture = match net.convs.is_empty() {
        true => serde_json::json!({"kind": "mlp", "sizes": sizes, "activation": net.activation}),
        false => serde_json::json!({
            "kind": "cnn",
            "input": net.image,
            "convs": net.convs.iter().map(|c| serde_json::json!({"channels": c.outputs, "kernel": c.kernel})).collect::<Vec<_>>(),
            "sizes": sizes,
            "activation": net.activation,
        }),
    };
    let metadata = serde_json::json!({
        "signature": crate::serving::signature_to_metadata(&signature),
        "classes": outcome.pipeline.classes,
        "target": outcome.pipeline.target,
        "architecture": architecture,
        "pipeline": outcome.pipeline,
        "encoder": encoder,
        "image": image,
    });
    let new = NewVersion {
        model: ModelName::parse(&run.model)?,
        task: model.task(),
        description: Some(format!("trained on dataset {}", dv.dataset)),
        format: maas_core::Format::Maas,
        artifact_kind: maas_core::ArtifactKind::File,
        artifact_digest: digest,
        artifact_size_bytes: size,
        source: format!("run:{}", run.id),
        metadata,
        metrics: serde_json::json!({"test": outcome.test_metrics}),
        lineage: serde_json::json!({
            "run": run.id,
            "dataset": {"name": dv.dataset, "version": dv.version, "digest": dv.digest},
            "spec": spec,
            "seed": spec.prep.seed,
            "maas_version": env!("CARGO_PKG_VERSION"),
            "best_epoch": outcome.best_epoch,
            "epochs_run": outcome.history.len(),
            "split_sizes": {"train": outcome.split_sizes[0], "validation": outcome.split_sizes[1], "test": outcome.split_sizes[2]},
            "rows_dropped": outcome.cleaned,
            "encoder": encoder,
        }),
    };
    let actor = Actor(run.created_by.clone());
    let version = state.registry.register_version(new, &actor).await?;
    Ok(serde_json::json!({
        "model": version.model,
        "version": version.version,
        "test_metrics": outcome.test_metrics,
        "best_epoch": outcome.best_epoch,
    }))
}
