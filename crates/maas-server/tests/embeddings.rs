//! `/v1/embeddings` on the real all-MiniLM-L6-v2: pulled as a safetensors folder, converted to
//! GGUF at pull time, served by llama.cpp, and compared with sentence-transformers' own vectors
//! (tests/fixtures/minilm-reference.json, copied from ../shared/fixtures).
#![cfg(feature = "llama")]
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn app_with_minilm() -> TestApp {
    let app = spawn_app().await;
    pull_minilm(&app, json!({"name": "minilm"})).await;
    app
}

/// Uploads the MiniLM folder and pulls it with `fields` (name, precision …); returns the
/// registered version.
async fn pull_minilm(app: &TestApp, fields: Value) -> Value {
    let mut body = fields;
    body["upload"] = app.upload_dir(ADMIN_KEY, &minilm_dir()).await;
    let (status, v) = app.pull(ADMIN_KEY, body).await;
    assert_eq!(status, 201, "{v}");
    v
}

fn reference() -> Vec<(String, Vec<f32>)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/minilm-reference.json");
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["text"].as_str().unwrap().to_owned(),
                floats(&i["embedding"]),
            )
        })
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

async fn embed(app: &TestApp, body: Value) -> (u16, Value) {
    app.call(Method::POST, "/v1/embeddings", ADMIN_KEY, Some(body))
        .await
}

/// Embeds the reference texts with `model` and returns the lowest cosine against
/// sentence-transformers' vectors, after checking the answer's shape.
async fn worst_cosine(app: &TestApp, model: &str) -> f64 {
    let items = reference();
    let texts: Vec<&str> = items.iter().map(|(t, _)| t.as_str()).collect();
    let (status, body) = embed(app, json!({"model": model, "input": texts})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], model);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), items.len());
    let mut worst = (1.0f64, String::new());
    for (i, ((text, expected), got)) in items.iter().zip(data).enumerate() {
        assert_eq!(got["index"], i);
        assert_eq!(got["object"], "embedding");
        let v = floats(&got["embedding"]);
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
        let c = cosine(&v, expected);
        if c < worst.0 {
            worst = (c, text.chars().take(40).collect());
        }
    }
    eprintln!(
        "{model}: worst cosine vs sentence-transformers: {:.7} ({:?})",
        worst.0, worst.1
    );
    // Usage counts tokens read after truncation: the long input is cut at 256.
    let tokens = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(body["usage"]["total_tokens"], tokens);
    assert!(tokens > 256 && tokens < 256 + 16 * 40, "{tokens}");
    worst.0
}

#[tokio::test]
async fn minilm_matches_sentence_transformers() {
    // The default conversion: the half precision this CPU multiplies fastest.
    let app = app_with_minilm().await;
    let (_, version) = app.get("/api/v1/models/minilm/versions/1", ADMIN_KEY).await;
    let default = maas_ingest::convert::fast_half_precision().to_string();
    assert_eq!(
        version["metadata"]["converted"]["weights"], default,
        "{version}"
    );
    let worst = worst_cosine(&app, "minilm").await;
    assert!(worst >= 0.9999, "{default}: cosine {worst} is below 0.9999");

    // bfloat16 keeps 8 significant bits, f16 11 and f32 all 24: the closer the numbers, the
    // closer the match, and the bigger the file.
    let gguf_size = |v: &Value| {
        v["metadata"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == "model.gguf")
            .unwrap()["size_bytes"]
            .as_u64()
            .unwrap()
    };
    let half = gguf_size(&version);
    for (precision, bar) in [("bf16", 0.9999), ("f16", 0.99999), ("f32", 0.99999)] {
        let name = format!("minilm-{precision}");
        let v = pull_minilm(&app, json!({"name": name, "precision": precision})).await;
        assert_eq!(v["metadata"]["converted"]["weights"], precision, "{v}");
        let size = gguf_size(&v);
        if precision == "f32" {
            // The layer matrices double; the embedding tables are f32 either way.
            assert!(size > half + half / 5, "{v}");
        } else {
            assert_eq!(size, half, "{v}");
        }
        let worst = worst_cosine(&app, &name).await;
        assert!(worst >= bar, "{precision}: cosine {worst} is below {bar}");
    }
}

#[tokio::test]
async fn a_precision_is_checked_and_applies_only_to_conversions() {
    let app = spawn_app().await;
    let upload = app.upload_dir(ADMIN_KEY, &minilm_dir()).await;
    let (status, v) = app
        .pull(ADMIN_KEY, json!({"upload": upload, "precision": "q4"}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("precision"),
        "{v}"
    );

    // A GGUF is served as it is: asking for a precision is a mistake, not silently ignored.
    let file = app.upload(ADMIN_KEY, &smollm2_gguf(), "m.gguf").await;
    let upload = json!({"files": [file], "is_dir": false, "label": "m.gguf"});
    let (status, v) = app
        .pull(
            ADMIN_KEY,
            json!({"upload": upload, "name": "chat", "precision": "f16"}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("precision") && message.contains("converted"),
        "{v}"
    );
    let (status, _) = app.get("/api/v1/models/chat", ADMIN_KEY).await;
    assert_eq!(status, 404, "nothing is registered");
    assert!(
        app.staging_files().is_empty(),
        "staging left behind: {:?}",
        app.staging_files()
    );
}

/// A copy of the MiniLM folder whose first FFN matrix holds `value` in its first cell.
fn minilm_with_a_weight_of(value: f32) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for (rel, path) in walk(&minilm_dir(), &minilm_dir()) {
        let to = copy.path().join(&rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&path, &to).unwrap();
    }
    let file = copy.path().join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let (_, t) = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.ends_with("layer.0.intermediate.dense.weight"))
        .unwrap();
    assert_eq!(t["dtype"], "F32");
    let at = 8 + len + t["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(&file, bytes).unwrap();
    copy
}

#[tokio::test]
async fn weights_beyond_half_precision_are_not_rounded_to_infinity() {
    let app = spawn_app().await;
    let dir = minilm_with_a_weight_of(1.0e6);
    let upload = app.upload_dir(ADMIN_KEY, dir.path()).await;

    // Asked for f16, the conversion is refused, naming the tensor, and leaves nothing behind.
    let (status, v) = app
        .pull(
            ADMIN_KEY,
            json!({"upload": upload, "name": "big", "precision": "f16"}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("blk.0.ffn_up.weight") && message.contains("f16"),
        "{v}"
    );
    let (status, _) = app.get("/api/v1/models/big", ADMIN_KEY).await;
    assert_eq!(status, 404, "nothing is registered");
    assert!(
        app.staging_files().is_empty(),
        "staging left behind: {:?}",
        app.staging_files()
    );

    // By default the matrices take bfloat16, which holds it (f16 would have been infinite).
    let (status, v) = app
        .pull(ADMIN_KEY, json!({"upload": upload, "name": "big"}))
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["metadata"]["converted"]["weights"], "bf16", "{v}");
    let (status, body) = embed(&app, json!({"model": "big", "input": "a finite vector"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        floats(&body["data"][0]["embedding"])
            .iter()
            .all(|x| x.is_finite()),
        "{body}"
    );
}

#[tokio::test]
async fn a_server_wide_precision_applies_to_conversions_that_name_none() {
    // `maas serve --convert-precision f32`: an operator on a CPU where f32 is the faster choice.
    let app = spawn_app_with(|c| c.convert_precision = Some(maas_core::Precision::F32)).await;
    let v = pull_minilm(&app, json!({"name": "minilm"})).await;
    assert_eq!(v["metadata"]["converted"]["weights"], "f32", "{v}");

    // A pull that names a precision gets it.
    let v = pull_minilm(&app, json!({"name": "minilm-bf16", "precision": "bf16"})).await;
    assert_eq!(v["metadata"]["converted"]["weights"], "bf16", "{v}");

    // A model that is not converted is pulled as it is: the server's setting is no mistake.
    let file = app.upload(ADMIN_KEY, &smollm2_gguf(), "m.gguf").await;
    let upload = json!({"files": [file], "is_dir": false, "label": "m.gguf"});
    let (status, v) = app
        .pull(ADMIN_KEY, json!({"upload": upload, "name": "chat"}))
        .await;
    assert_eq!(status, 201, "{v}");
    assert!(v["metadata"].get("converted").is_none(), "{v}");

    let (status, body) = embed(&app, json!({"model": "minilm", "input": "a lighthouse"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(floats(&body["data"][0]["embedding"]).len(), 384);
}

#[tokio::test]
async fn concurrent_requests_are_batched_without_changing_results() {
    let app = app_with_minilm().await;
    let items = reference();
    // Alone, one at a time …
    let mut alone = vec![];
    for (text, _) in &items {
        let (status, body) = embed(&app, json!({"model": "minilm", "input": text})).await;
        assert_eq!(status, 200, "{body}");
        alone.push(floats(&body["data"][0]["embedding"]));
    }
    // … and all at once from concurrent clients, so the worker batches them together.
    let together = futures::future::join_all(items.iter().map(|(text, _)| {
        let app = &app;
        async move {
            let (status, body) = embed(app, json!({"model": "minilm", "input": text})).await;
            assert_eq!(status, 200, "{body}");
            floats(&body["data"][0]["embedding"])
        }
    }))
    .await;
    for ((a, b), (text, _)) in alone.iter().zip(&together).zip(&items) {
        let c = cosine(a, b);
        assert!(
            c > 0.99999,
            "{text:?}: batched and alone differ (cosine {c})"
        );
    }
}

#[tokio::test]
async fn base64_encodes_the_same_floats() {
    let app = app_with_minilm().await;
    let input = json!(["Paris is the capital of France.", "a"]);
    let (_, floats_body) = embed(&app, json!({"model": "minilm", "input": input})).await;
    let (status, b64) = embed(
        &app,
        json!({"model": "minilm", "input": input, "encoding_format": "base64", "dimensions": 384}),
    )
    .await;
    assert_eq!(status, 200, "{b64}");
    for i in 0..2 {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64["data"][i]["embedding"].as_str().unwrap())
            .unwrap();
        let decoded: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(decoded, floats(&floats_body["data"][i]["embedding"]));
    }
}

#[tokio::test]
async fn bad_embedding_requests_get_400_naming_the_field() {
    let app = app_with_minilm().await;
    let chat = app
        .upload(
            ADMIN_KEY,
            &smollm2_gguf(),
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        )
        .await;
    let (status, v) = app
        .pull(
            ADMIN_KEY,
            json!({"upload": {"files": [chat], "is_dir": false, "label": "smollm2"}, "name": "smollm2"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");

    let cases = [
        (
            json!({"model": "minilm", "input": []}),
            400,
            "input",
            "empty",
        ),
        (
            json!({"model": "minilm", "input": ["ok", ""]}),
            400,
            "input",
            "input[1]",
        ),
        (
            json!({"model": "minilm", "input": [1, 2, 3]}),
            400,
            "input",
            "token-id",
        ),
        (
            json!({"model": "minilm", "input": {"a": 1}}),
            400,
            "input",
            "string",
        ),
        (
            json!({"model": "minilm", "input": "x", "encoding_format": "hex"}),
            400,
            "encoding_format",
            "base64",
        ),
        (
            json!({"model": "minilm", "input": "x", "dimensions": 100}),
            400,
            "dimensions",
            "384",
        ),
        (
            json!({"model": "minilm", "input": "x", "dimensions": -1}),
            400,
            "dimensions",
            "positive",
        ),
        (
            json!({"model": "minilm", "input": vec!["x"; 2049]}),
            413,
            "input",
            "2048",
        ),
        (
            json!({"model": "smollm2", "input": "x"}),
            400,
            "model",
            "cannot do embeddings",
        ),
    ];
    for (body, want_status, param, needle) in cases {
        let (status, e) = embed(&app, body.clone()).await;
        assert_eq!(status, want_status, "{body}: {e}");
        assert_eq!(e["error"]["param"], param, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {e}"
        );
    }
    let (status, e) = embed(&app, json!({"model": "nope", "input": "x"})).await;
    assert_eq!(status, 404, "{e}");
    assert_eq!(e["error"]["code"], "model_not_found");
    // And the other way round: an embedding model cannot chat.
    let (status, e) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            ADMIN_KEY,
            Some(json!({"model": "minilm", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("embedding"));
    // The model still serves after all that.
    let (status, _) = embed(&app, json!({"model": "minilm", "input": "still here"})).await;
    assert_eq!(status, 200);
}
