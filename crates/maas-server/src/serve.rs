//! Start-up, crash recovery, key bootstrap and the listening loop.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use maas_core::Role;
use maas_ingest::Fetcher;
use maas_store::{keys, Actor, ArtifactStore, NewKey, Registry, SqliteRegistry};

use crate::jobs::Jobs;
use crate::state::AppState;

/// Settings of `maas serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free one.
    pub addr: SocketAddr,
    /// Data directory: `registry.db`, `artifacts/`, `tmp/`.
    pub data_dir: PathBuf,
    /// Bootstrap admin key (`MAAS_ADMIN_KEY`).
    pub admin_key: Option<String>,
    /// Largest uploaded blob.
    pub max_blob_bytes: u64,
    /// Pulls running at once.
    pub job_concurrency: usize,
    /// Package index (simple API) for `pypi:` sources.
    pub pypi_index: String,
    /// HF-compatible hub for `hf:` sources.
    pub hf_endpoint: String,
    /// Token for the hub.
    pub hf_token: Option<String>,
    /// Training runs at once (more wait, queued).
    pub train_workers: usize,
    /// Loaded-model cache settings.
    pub cache: crate::CacheConfig,
    /// Weight precision for models converted at pull when the pull names none (None: the
    /// converter's default, bfloat16 layer matrices).
    pub convert_precision: Option<maas_core::Precision>,
}

/// Opens the store, recovers from any crash, and builds the shared state.
pub async fn open_state(config: &ServeConfig) -> anyhow::Result<(AppState, SqliteRegistry)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let registry = SqliteRegistry::open(&config.data_dir.join("registry.db")).await?;
    let artifacts = ArtifactStore::local(&config.data_dir.join("artifacts"))?;
    let staging_dir = config.data_dir.join("tmp");
    recover(&registry, &artifacts, &staging_dir).await?;
    bootstrap_admin(&registry, config.admin_key.as_deref()).await?;
    let models = Arc::new(crate::cache::ModelCache::new(
        artifacts.clone(),
        config.cache.clone(),
    ));
    if let Some(every) = models.idle_sweep_every() {
        // Holds only a weak reference: the sweep ends with the state.
        let weak = Arc::downgrade(&models);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(models) = weak.upgrade() else { return };
                models.unload_idle();
            }
        });
    }
    let state = AppState {
        models,
        registry: Arc::new(registry.clone()),
        artifacts,
        fetcher: Arc::new(Fetcher::new(
            &config.pypi_index,
            &config.hf_endpoint,
            config.hf_token.clone(),
        )?),
        jobs: Jobs::new(config.job_concurrency),
        runs: crate::runs::Runs::new(config.train_workers, config.data_dir.join("runs")),
        staging_dir,
        max_blob_bytes: config.max_blob_bytes,
        convert_precision: config.convert_precision,
    };
    Ok((state, registry))
}

/// Removes what an interrupted pull or upload left: staging folders, half-written blobs and
/// blobs no version refers to.
async fn recover(
    registry: &SqliteRegistry,
    artifacts: &ArtifactStore,
    staging_dir: &std::path::Path,
) -> anyhow::Result<()> {
    if staging_dir.exists() {
        std::fs::remove_dir_all(staging_dir)
            .with_context(|| format!("cannot clean {}", staging_dir.display()))?;
    }
    std::fs::create_dir_all(staging_dir)?;
    artifacts.clean_staging().await?;
    let removed = artifacts
        .collect_garbage(&registry.referenced_artifacts().await?)
        .await?;
    if removed > 0 {
        tracing::info!(removed, "removed artifacts that no version refers to");
    }
    let interrupted = registry.interrupt_runs().await?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "training runs were cut off by the last stop; resume them with `maas train --resume ID`"
        );
    }
    Ok(())
}

async fn bootstrap_admin(registry: &SqliteRegistry, admin_key: Option<&str>) -> anyhow::Result<()> {
    if let Some(key) = admin_key {
        if key.len() < 16 {
            bail!("MAAS_ADMIN_KEY is too short: use at least 16 characters");
        }
        registry.set_bootstrap_key(keys::hash(key)).await?;
        return Ok(());
    }
    if registry.count_usable_admin_keys().await? > 0 {
        return Ok(());
    }
    let generated = keys::generate();
    let new = NewKey {
        id: generated.id,
        name: "initial admin".to_owned(),
        role: Role::Admin,
        models: None,
        secret_hash: keys::hash(&generated.secret),
        expires_at: None,
    };
    registry.create_key(new, &Actor::system()).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "maas: created an admin key; it is shown only this once:\n\n    {}\n",
        generated.secret
    )?;
    out.flush()?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let lock_path = config.data_dir.join("maas.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "data dir {} is in use by another maas server",
            config.data_dir.display()
        );
    }
    let (state, registry) = open_state(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let local = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "maas: listening on http://{local} (data in {})",
            config.data_dir.display()
        )?;
        out.flush()?;
    }
    let runs = state.runs.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Training stops after its current epoch and stays resumable. This comes before the
        // server waits for open connections: a client following a run holds its event stream
        // open until the run ends.
        runs.interrupt_all(std::time::Duration::from_secs(30)).await;
    };
    axum::serve(listener, crate::app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    registry.close().await;
    drop(lock);
    Ok(())
}
