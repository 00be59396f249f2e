//! Every auth rule: no key, bad key, roles, model scopes, revocation, expiry.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

async fn with_two_models() -> TestApp {
    let app = spawn_app().await;
    for name in ["alpha", "beta"] {
        let (status, body) = app
            .call(
                Method::POST,
                "/api/v1/models",
                ADMIN_KEY,
                Some(json!({"name": name, "task": "tensor"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    app
}

#[tokio::test]
async fn health_is_open_and_everything_else_needs_a_key() {
    let app = spawn_app().await;
    for path in ["/v2/health/live", "/v2/health/ready"] {
        let r = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    for (method, path) in [
        (Method::GET, "/api/v1/models"),
        (Method::POST, "/api/v1/models"),
        (Method::GET, "/api/v1/keys"),
        (Method::GET, "/api/v1/audit"),
        (Method::POST, "/api/v1/pulls"),
        (Method::GET, "/openapi.json"),
        (
            Method::HEAD,
            "/api/v1/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ] {
        let r = app
            .http
            .request(method.clone(), format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} without a key");
    }
    let r = app
        .http
        .get(format!("{}/api/v1/models", app.url))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(e["error"]["message"].as_str().unwrap().contains("Bearer"));
    let (status, e) = app.get("/api/v1/models", "maas_0123456789ab_wrong").await;
    assert_eq!(status, 401);
    assert_eq!(e["error"]["code"], "unauthorized");
    let (status, _) = app.get("/api/v1/models", "not-the-admin-key-at-all").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn roles_allow_what_they_should_and_nothing_more() {
    let app = with_two_models().await;
    let deployer = app.key("deployer", None).await;
    let consumer = app.key("consumer", None).await;

    // Consumers read.
    assert_eq!(app.get("/api/v1/models", &consumer).await.0, 200);
    assert_eq!(app.get("/api/v1/models/alpha", &consumer).await.0, 200);
    // Consumers do not change anything.
    let (status, e) = app
        .call(
            Method::POST,
            "/api/v1/pulls",
            &consumer,
            Some(json!({"source": "pypi:x"})),
        )
        .await;
    assert_eq!(status, 403, "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("role deployer"));
    assert_eq!(
        app.call(
            Method::POST,
            "/api/v1/models",
            &consumer,
            Some(json!({"name": "c", "task": "tensor"}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        app.call(
            Method::PUT,
            "/api/v1/models/alpha/aliases/prod",
            &consumer,
            Some(json!({"version": 1}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        app.req(
            Method::PUT,
            "/api/v1/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
            &consumer
        )
        .body("x")
        .send()
        .await
        .unwrap()
        .status(),
        403
    );

    // Deployers change models but not keys, the audit log or deletions.
    assert_eq!(
        app.call(
            Method::POST,
            "/api/v1/models",
            &deployer,
            Some(json!({"name": "gamma", "task": "tensor"}))
        )
        .await
        .0,
        201
    );
    assert_eq!(app.get("/api/v1/jobs", &deployer).await.0, 200);
    assert_eq!(app.get("/api/v1/keys", &deployer).await.0, 403);
    assert_eq!(
        app.call(
            Method::POST,
            "/api/v1/keys",
            &deployer,
            Some(json!({"name": "x", "role": "admin"}))
        )
        .await
        .0,
        403
    );
    assert_eq!(app.get("/api/v1/audit", &deployer).await.0, 403);
    assert_eq!(app.get("/api/v1/audit/verify", &deployer).await.0, 403);
    assert_eq!(
        app.call(Method::DELETE, "/api/v1/models/gamma", &deployer, None)
            .await
            .0,
        403
    );

    // Admins do all of it.
    assert_eq!(
        app.call(Method::DELETE, "/api/v1/models/gamma", ADMIN_KEY, None)
            .await
            .0,
        204
    );
    assert_eq!(app.get("/api/v1/models/gamma", ADMIN_KEY).await.0, 404);
}

#[tokio::test]
async fn a_scoped_consumer_sees_only_its_models() {
    let app = with_two_models().await;
    let scoped = app.key("consumer", Some(vec!["alpha"])).await;
    let (status, list) = app.get("/api/v1/models", &scoped).await;
    assert_eq!(status, 200);
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["alpha"]);
    assert_eq!(app.get("/api/v1/models/alpha", &scoped).await.0, 200);
    let (status, e) = app.get("/api/v1/models/beta", &scoped).await;
    assert_eq!(status, 403);
    assert!(e["error"]["message"].as_str().unwrap().contains("'beta'"));
    assert_eq!(
        app.get("/api/v1/models/beta/versions", &scoped).await.0,
        403
    );
    assert_eq!(app.get("/api/v1/refs/beta@prod", &scoped).await.0, 403);

    // Only consumer keys can be scoped, and never to nothing.
    let (status, e) = app
        .call(
            Method::POST,
            "/api/v1/keys",
            ADMIN_KEY,
            Some(json!({"name": "d", "role": "deployer", "models": ["alpha"]})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/keys",
            ADMIN_KEY,
            Some(json!({"name": "c", "role": "consumer", "models": []})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, e) = app
        .call(
            Method::POST,
            "/api/v1/keys",
            ADMIN_KEY,
            Some(json!({"name": "c", "role": "root"})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(e["error"]["message"].as_str().unwrap().starts_with("role:"));
}

#[tokio::test]
async fn keys_are_shown_once_stored_hashed_and_revocable() {
    let app = spawn_app().await;
    let (status, created) = app
        .call(
            Method::POST,
            "/api/v1/keys",
            ADMIN_KEY,
            Some(json!({"name": "ci", "role": "deployer"})),
        )
        .await;
    assert_eq!(status, 201);
    let secret = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(&format!("maas_{id}_")));
    assert_eq!(app.get("/api/v1/models", &secret).await.0, 200);

    // Listing never shows the secret.
    let (_, keys) = app.get("/api/v1/keys", ADMIN_KEY).await;
    assert!(!keys.to_string().contains(&secret[18..]));
    assert!(keys
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("key").is_none() && k.get("secret_hash").is_none()));
    // Nor does the database.
    let db = std::fs::read(app.data_dir.path().join("registry.db")).unwrap();
    let wal = std::fs::read(app.data_dir.path().join("registry.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the key is stored in clear"
        );
    }

    let (status, revoked) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/keys/{id}"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(revoked["revoked_at"].is_string());
    let (status, e) = app.get("/api/v1/models", &secret).await;
    assert_eq!(status, 401);
    assert!(e["error"]["message"].as_str().unwrap().contains("revoked"));
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/v1/keys/{id}"),
            ADMIN_KEY,
            None
        )
        .await
        .0,
        409
    );
    assert_eq!(
        app.call(Method::DELETE, "/api/v1/keys/nope", ADMIN_KEY, None)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn expired_keys_stop_working() {
    let app = spawn_app().await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, created) = app
        .call(
            Method::POST,
            "/api/v1/keys",
            ADMIN_KEY,
            Some(json!({"name": "short", "role": "consumer", "expires_at": soon})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["key"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/api/v1/models", &secret).await.0, 200);
    // Wait until the expiry has passed (this asserts an outcome, not a duration).
    while time::OffsetDateTime::now_utc()
        <= time::OffsetDateTime::parse(&soon, &time::format_description::well_known::Rfc3339)
            .unwrap()
    {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, e) = app.get("/api/v1/models", &secret).await;
    assert_eq!(status, 401);
    assert!(e["error"]["message"].as_str().unwrap().contains("expired"));

    let past = "2020-01-01T00:00:00Z";
    let (status, e) = app
        .call(
            Method::POST,
            "/api/v1/keys",
            ADMIN_KEY,
            Some(json!({"name": "old", "role": "consumer", "expires_at": past})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("expires_at"));
}
