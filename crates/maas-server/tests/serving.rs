//! Loading, pinning and unloading models ahead of traffic, and idle unloading, on the real
//! MiniLM embedding model.
#![cfg(feature = "llama")]
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn pull_minilm(app: &TestApp) {
    let upload = app.upload_dir(ADMIN_KEY, &minilm_dir()).await;
    let (status, v) = app
        .pull(ADMIN_KEY, json!({"upload": upload, "name": "minilm"}))
        .await;
    assert_eq!(status, 201, "{v}");
}

async fn loaded(app: &TestApp) -> Vec<Value> {
    let (status, v) = app.get("/api/v1/loaded", ADMIN_KEY).await;
    assert_eq!(status, 200, "{v}");
    v.as_array().unwrap().clone()
}

#[tokio::test]
async fn models_load_pin_and_unload_on_request() {
    let app = spawn_app().await;
    pull_minilm(&app).await;
    assert!(loaded(&app).await.is_empty());

    let (status, info) = app
        .call(
            Method::POST,
            "/api/v1/loaded",
            ADMIN_KEY,
            Some(json!({"model": "minilm:1", "pin": true})),
        )
        .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["model"], "minilm");
    assert_eq!(info["version"], 1);
    assert_eq!(info["pinned"], true);
    assert_eq!(info["capabilities"], json!(["embed"]));
    assert!(
        info["memory_bytes"].as_u64().unwrap() > 50_000_000,
        "{info}"
    );
    assert_eq!(loaded(&app).await.len(), 1);

    // Consumers may see what is loaded but not change it.
    let consumer = app.key("consumer", None).await;
    let (status, v) = app.get("/api/v1/loaded", &consumer).await;
    assert_eq!((status, v.as_array().unwrap().len()), (200, 1));
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/loaded",
            &consumer,
            Some(json!({"model": "minilm"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .call(Method::DELETE, "/api/v1/loaded/minilm", &consumer, None)
        .await;
    assert_eq!(status, 403);

    // Unpin without reloading, then unload.
    let (status, info) = app
        .call(
            Method::POST,
            "/api/v1/loaded",
            ADMIN_KEY,
            Some(json!({"model": "minilm", "pin": false})),
        )
        .await;
    assert_eq!((status, info["pinned"].clone()), (200, json!(false)));
    let (status, _) = app
        .call(Method::DELETE, "/api/v1/loaded/minilm", ADMIN_KEY, None)
        .await;
    assert_eq!(status, 204);
    assert!(loaded(&app).await.is_empty());
    let (status, e) = app
        .call(Method::DELETE, "/api/v1/loaded/minilm", ADMIN_KEY, None)
        .await;
    assert_eq!(status, 404);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not loaded"));

    // A request loads it again on demand.
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/embeddings",
            ADMIN_KEY,
            Some(json!({"model": "minilm", "input": "back again"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(loaded(&app).await.len(), 1);

    for (body, want) in [
        (json!({"model": "nope"}), 404),
        (json!({"model": "minilm:9"}), 404),
        (json!({"model": "Bad Name!"}), 400),
        (json!({"model": "minilm", "extra": 1}), 400),
    ] {
        let (status, e) = app
            .call(
                Method::POST,
                "/api/v1/loaded",
                ADMIN_KEY,
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, want, "{body}: {e}");
    }
}

#[tokio::test]
async fn idle_models_are_unloaded_and_pinned_ones_stay() {
    let app = spawn_app_with(|c| c.cache.idle_unload = Some(Duration::from_millis(300))).await;
    pull_minilm(&app).await;
    let embed = || async {
        let (status, _) = app
            .call(
                Method::POST,
                "/v1/embeddings",
                ADMIN_KEY,
                Some(json!({"model": "minilm", "input": "hello"})),
            )
            .await;
        assert_eq!(status, 200);
    };
    embed().await;
    assert_eq!(loaded(&app).await.len(), 1);
    // Idle past the limit: the sweep unloads it (polled, never timed).
    let mut gone = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if loaded(&app).await.is_empty() {
            gone = true;
            break;
        }
    }
    assert!(gone, "the idle model was never unloaded");

    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/loaded",
            ADMIN_KEY,
            Some(json!({"model": "minilm", "pin": true})),
        )
        .await;
    assert_eq!(status, 200);
    // Several idle periods and sweeps later, the pinned model is still there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now = loaded(&app).await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0]["pinned"], true);
}
