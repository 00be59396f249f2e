//! Training runs over HTTP: a run trains on an uploaded dataset, streams its epochs as SSE,
//! registers a version with lineage and test metrics, and that version serves raw rows through
//! `/v1/predict` and tensors through `/v2`. Bad runs are refused before they start, failing runs
//! register nothing, and a cancelled run stops.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn upload(app: &TestApp, name: &str, file: &str) -> Value {
    let resp = app
        .req(
            Method::POST,
            &format!("/api/v1/datasets?name={name}&filename={file}"),
            ADMIN_KEY,
        )
        .body(dataset(file))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

async fn start(app: &TestApp, body: Value) -> Value {
    let (status, run) = app
        .call(Method::POST, "/api/v1/runs", ADMIN_KEY, Some(body))
        .await;
    assert_eq!(status, 201, "{run}");
    assert_eq!(run["state"], "queued");
    run
}

/// Reads the run's whole event stream: (event name, data) pairs.
async fn events(app: &TestApp, id: &str) -> Vec<(String, Value)> {
    let resp = app
        .req(Method::GET, &format!("/api/v1/runs/{id}/events"), ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = tokio::time::timeout(Duration::from_secs(300), resp.text())
        .await
        .unwrap()
        .unwrap();
    let mut out = vec![];
    let mut event = String::new();
    for line in body.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_owned();
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((event.clone(), serde_json::from_str(d).unwrap()));
        }
    }
    out
}

async fn wait_for(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..3000 {
        let (_, run) = app.get(&format!("/api/v1/runs/{id}"), ADMIN_KEY).await;
        if done(&run) {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("run {id} did not get there");
}

fn iris_rows() -> Vec<(Value, String)> {
    let text = String::from_utf8(dataset("iris.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            let mut row = serde_json::Map::new();
            for (h, c) in header.iter().zip(&cells).take(4) {
                row.insert((*h).to_owned(), json!(c.parse::<f64>().unwrap()));
            }
            (Value::Object(row), cells[4].to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_run_streams_its_epochs_registers_a_version_and_serves_it() {
    let app = spawn_app().await;
    let ds = upload(&app, "iris", "iris.csv").await;
    let run = start(
        &app,
        json!({"dataset": "iris", "spec": {"mlp": {"hidden": [16]}, "epochs": 60, "batch_size": 16}}),
    )
    .await;
    let id = run["id"].as_str().unwrap();
    let events = events(&app, id).await;
    let epochs: Vec<u64> = events
        .iter()
        .filter(|(e, _)| e == "epoch")
        .map(|(_, d)| d["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, (1..=60).collect::<Vec<_>>());
    let (last, end) = events.last().unwrap();
    assert_eq!(last, "end");
    assert_eq!(end["state"], "succeeded", "{end}");
    assert_eq!(end["epochs_done"], 60);
    assert_eq!(end["history"].as_array().unwrap().len(), 60);
    let result = &end["result"];
    assert_eq!(
        (result["model"].as_str(), result["version"].as_i64()),
        (Some("iris"), Some(1))
    );

    // The version: format, task, metrics and lineage.
    let (status, v) = app.get("/api/v1/models/iris/versions/1", ADMIN_KEY).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["format"], "maas");
    assert_eq!(v["source"], format!("run:{id}"));
    let accuracy = v["metrics"]["test"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.93, "test accuracy {accuracy}");
    assert_eq!(v["lineage"]["dataset"]["digest"], ds["digest"]);
    assert_eq!(v["lineage"]["dataset"]["version"], 1);
    assert_eq!(v["lineage"]["seed"], 42);
    assert_eq!(v["lineage"]["spec"]["epochs"], 60);
    assert_eq!(v["lineage"]["maas_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["lineage"]["split_sizes"]["test"], 30);
    let (_, model) = app.get("/api/v1/models/iris", ADMIN_KEY).await;
    assert_eq!(model["task"], "tabular-classification");

    // Raw rows through /v1/predict.
    let rows = iris_rows();
    let body = json!({"rows": rows.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>()});
    let (status, out) = app
        .call(Method::POST, "/v1/predict/iris", ADMIN_KEY, Some(body))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["version"], 1);
    let predictions = out["predictions"].as_array().unwrap();
    let right = predictions
        .iter()
        .zip(&rows)
        .filter(|(p, (_, truth))| p["label"] == truth.as_str())
        .count();
    assert!(right >= 142, "{right}/150 rows right");
    let p = &predictions[0]["probabilities"];
    let sum: f64 = ["setosa", "versicolor", "virginica"]
        .iter()
        .map(|c| p[c].as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() < 1e-5, "{p}");

    // The same through the Open Inference Protocol, columns as tensors.
    let (_, meta) = app.get("/v2/models/iris", ADMIN_KEY).await;
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "sepal_length", "datatype": "FP32", "shape": [-1]})
    );
    assert_eq!(meta["outputs"][1]["shape"], json!([-1, 3]));
    let column = |name: &str| -> Value {
        json!({"name": name, "datatype": "FP32", "shape": [2],
               "data": [rows[0].0[name].clone(), rows[149].0[name].clone()]})
    };
    let columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"].map(column);
    let infer = json!({ "inputs": columns });
    let (status, out) = app
        .call(
            Method::POST,
            "/v2/models/iris/infer",
            ADMIN_KEY,
            Some(infer),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"][0]["name"], "label");
    assert_eq!(
        out["outputs"][0]["data"][0].as_str(),
        predictions[0]["label"].as_str()
    );
    assert_eq!(
        out["outputs"][0]["data"][1].as_str(),
        predictions[149]["label"].as_str()
    );

    // Rows the model cannot read.
    let bad = |rows: Value| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/v1/predict/iris",
                ADMIN_KEY,
                Some(json!({"rows": rows})),
            )
            .await
        }
    };
    let (status, e) = bad(json!([{"sepal_length": "wide"}])).await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rows[0].sepal_length: must be a number"),
        "{e}"
    );
    let (status, e) = bad(json!([{"sepal_lenght": 5.0}])).await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown column 'sepal_lenght'"),
        "{e}"
    );
    let (status, e) =
        bad(json!([{"sepal_length": 5.0, "sepal_width": 3.0, "petal_length": 1.0}])).await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("column 'petal_width' is missing"),
        "{e}"
    );
    let (status, _) = bad(json!([])).await;
    assert_eq!(status, 400);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/predict/nope",
            ADMIN_KEY,
            Some(json!({"rows": [{}]})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_regression_run_predicts_values_in_the_targets_units() {
    let app = spawn_app().await;
    upload(&app, "diabetes", "diabetes.csv").await;
    let run = start(
        &app,
        json!({"dataset": "diabetes:1", "model": "progression", "spec": {"mlp": {"hidden": [16]}, "epochs": 200, "optimizer": {"kind": "sgd", "lr": 0.01, "momentum": 0.9}, "patience": 30}}),
    )
    .await;
    let id = run["id"].as_str().unwrap();
    let end = wait_for(&app, id, |r| {
        r["state"] != "queued" && r["state"] != "running"
    })
    .await;
    assert_eq!(end["state"], "succeeded", "{end}");
    let r2 = end["result"]["test_metrics"]["r2"].as_f64().unwrap();
    assert!(r2 >= 0.40, "R² {r2}");
    let (_, model) = app.get("/api/v1/models/progression", ADMIN_KEY).await;
    assert_eq!(model["task"], "tabular-regression");
    // The dataset's first row (progression 151), with the categorical-looking sex as a string.
    let row = json!({"age": 59, "sex": "2", "bmi": 32.1, "bp": 101.0, "s1": 157,
                     "s2": 93.2, "s3": 38.0, "s4": 4.0, "s5": 4.8598, "s6": 87});
    let (status, out) = app
        .call(
            Method::POST,
            "/v1/predict/progression",
            ADMIN_KEY,
            Some(json!({"rows": [row]})),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let value = out["predictions"][0]["value"].as_f64().unwrap();
    // A useful model lands near it, in the target's own units (its range is 25..346).
    assert!((100.0..=300.0).contains(&value), "{value}");
}

#[tokio::test]
async fn bad_runs_are_refused_before_they_start() {
    let app = spawn_app().await;
    upload(&app, "iris", "iris.csv").await;
    let post = |body: Value| {
        let app = &app;
        async move {
            app.call(Method::POST, "/api/v1/runs", ADMIN_KEY, Some(body))
                .await
        }
    };
    let (status, e) = post(json!({"dataset": "nope"})).await;
    assert_eq!(status, 404, "{e}");
    let (status, e) = post(json!({"dataset": "iris:7"})).await;
    assert_eq!(status, 404, "{e}");
    let (status, e) = post(json!({"dataset": "iris", "spec": {"epochz": 3}})).await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("spec: unknown field `epochz`"),
        "{e}"
    );
    let (status, e) = post(json!({"dataset": "iris", "spec": {"loss": "mse"}})).await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loss mse is for regression"),
        "{e}"
    );
    let (status, e) = post(json!({"dataset": "iris", "spec": {"optimizer": {"lr": 0}}})).await;
    assert_eq!(status, 400, "{e}");
    // A model of another task cannot take the result.
    upload(&app, "diabetes", "diabetes.csv").await;
    let first = start(&app, json!({"dataset": "diabetes", "spec": {"epochs": 2}})).await;
    wait_for(&app, first["id"].as_str().unwrap(), |r| {
        r["state"] == "succeeded"
    })
    .await;
    let (status, e) = post(json!({"dataset": "iris", "model": "diabetes"})).await;
    assert_eq!(status, 409, "{e}");
    let consumer = app.key("consumer", None).await;
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/runs",
            &consumer,
            Some(json!({"dataset": "iris"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app.get("/api/v1/runs/unknown", ADMIN_KEY).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_diverging_run_fails_with_the_reason_and_registers_nothing() {
    let app = spawn_app().await;
    upload(&app, "diabetes", "diabetes.csv").await;
    let run = start(
        &app,
        json!({"dataset": "diabetes", "spec": {"prep": {"scale": "none"}, "optimizer": {"kind": "sgd", "lr": 10.0}, "epochs": 50}}),
    )
    .await;
    let events = events(&app, run["id"].as_str().unwrap()).await;
    let (_, end) = events.last().unwrap();
    assert_eq!(end["state"], "failed");
    assert!(
        end["error"]
            .as_str()
            .unwrap()
            .contains("lower optimizer.lr"),
        "{end}"
    );
    let (status, _) = app.get("/api/v1/models/diabetes", ADMIN_KEY).await;
    assert_eq!(status, 404);
    assert!(!app
        .data_dir
        .path()
        .join("runs")
        .join(run["id"].as_str().unwrap())
        .exists());
}

#[tokio::test]
async fn a_cancelled_run_stops_and_a_queued_one_waits_for_a_worker() {
    let app = spawn_app().await;
    upload(&app, "digits", "digits.csv").await;
    let spec = json!({"mlp": {"hidden": [256, 256]}, "epochs": 500});
    let first = start(&app, json!({"dataset": "digits", "spec": spec})).await;
    let second = start(&app, json!({"dataset": "digits", "spec": spec})).await;
    let (id1, id2) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );
    wait_for(&app, id1, |r| r["epochs_done"].as_i64() >= Some(1)).await;
    // One training worker: the second run waits.
    let (_, r2) = app.get(&format!("/api/v1/runs/{id2}"), ADMIN_KEY).await;
    assert_eq!(r2["state"], "queued");
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id2}/cancel"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id1}/cancel"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(status, 202);
    let r1 = wait_for(&app, id1, |r| r["state"] == "cancelled").await;
    assert!(r1["epochs_done"].as_i64().unwrap() < 500);
    wait_for(&app, id2, |r| r["state"] == "cancelled").await;
    let (status, e) = app
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id1}/cancel"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(status, 409, "{e}");
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id1}/resume"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = app.get("/api/v1/models/digits", ADMIN_KEY).await;
    assert_eq!(status, 404);
    let (_, list) = app.get("/api/v1/runs", ADMIN_KEY).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_text_classifier_trains_on_minilm_embeddings_and_classifies_texts() {
    let app = spawn_app().await;
    let upload_spec = app.upload_dir(ADMIN_KEY, &minilm_dir()).await;
    let (status, v) = app
        .pull(ADMIN_KEY, json!({"upload": upload_spec, "name": "minilm"}))
        .await;
    assert_eq!(status, 201, "{v}");
    let ds = upload(&app, "tickets", "support-tickets.csv").await;
    assert_eq!(ds["profile"][0]["kind"], "text", "{ds}");
    // Text without an encoder has nothing to train on; an encoder must embed.
    let (status, e) = app
        .call(
            Method::POST,
            "/api/v1/runs",
            ADMIN_KEY,
            Some(json!({"dataset": "tickets", "spec": {"encoder": "tickets"}})),
        )
        .await;
    assert_eq!(status, 404, "{e}");
    upload(&app, "iris", "iris.csv").await;
    let run = start(&app, json!({"dataset": "iris", "spec": {"epochs": 1}})).await;
    wait_for(&app, run["id"].as_str().unwrap(), |r| {
        r["state"] == "succeeded"
    })
    .await;
    let (status, e) = app
        .call(
            Method::POST,
            "/api/v1/runs",
            ADMIN_KEY,
            Some(json!({"dataset": "tickets", "spec": {"encoder": "iris"}})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not an embedding model"),
        "{e}"
    );

    let run = start(
        &app,
        json!({"dataset": "tickets", "model": "ticket-router",
               "spec": {"encoder": "minilm", "mlp": {"hidden": [64]}, "epochs": 60, "optimizer": {"lr": 0.003}, "patience": 15}}),
    )
    .await;
    let id = run["id"].as_str().unwrap();
    let end = wait_for(&app, id, |r| {
        r["state"] != "queued" && r["state"] != "running"
    })
    .await;
    assert_eq!(end["state"], "succeeded", "{end}");
    let accuracy = end["result"]["test_metrics"]["accuracy"].as_f64().unwrap();
    eprintln!("support-tickets test accuracy {accuracy:.4}");
    assert!(accuracy >= 0.95, "support-tickets test accuracy {accuracy}");

    let (_, model) = app.get("/api/v1/models/ticket-router", ADMIN_KEY).await;
    assert_eq!(model["task"], "text-classification");
    let (_, v) = app
        .get("/api/v1/models/ticket-router/versions/1", ADMIN_KEY)
        .await;
    assert_eq!(v["metadata"]["encoder"]["model"], "minilm");
    assert_eq!(v["metadata"]["encoder"]["dims"], 384);
    assert_eq!(v["lineage"]["encoder"]["version"], 1);
    assert_eq!(
        v["metadata"]["signature"]["inputs"],
        json!([{"name": "text", "datatype": "BYTES", "shape": [-1]}])
    );

    let texts = json!({"texts": [
        "I was charged twice for my subscription this month",
        "My package has not arrived and the tracking number does not work",
        "I cannot log in, the password reset email never comes",
        "The app crashes with an error every time I open settings",
    ]});
    let (status, out) = app
        .call(
            Method::POST,
            "/v1/predict/ticket-router",
            ADMIN_KEY,
            Some(texts),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let labels: Vec<&str> = out["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["billing", "shipping", "account", "technical"],
        "{out}"
    );
    // The same through /v2 with a BYTES tensor.
    let infer = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                   "data": ["where is my parcel? it is a week late"]}]});
    let (status, out) = app
        .call(
            Method::POST,
            "/v2/models/ticket-router/infer",
            ADMIN_KEY,
            Some(infer),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"][0]["data"][0], "shipping");
    let (status, e) = app
        .call(
            Method::POST,
            "/v1/predict/ticket-router",
            ADMIN_KEY,
            Some(json!({"texts": ["  "]})),
        )
        .await;
    assert_eq!(status, 400, "{e}");

    // Evaluated on the whole dataset, the metrics are kept on the version.
    let (status, ev) = app
        .call(
            Method::POST,
            "/api/v1/evaluations?wait=true",
            ADMIN_KEY,
            Some(json!({"model": "ticket-router", "dataset": "tickets"})),
        )
        .await;
    assert_eq!(status, 201, "{ev}");
    let e = &ev["evaluation"];
    assert_eq!(e["rows"], 400);
    assert!(e["metrics"]["accuracy"].as_f64().unwrap() >= 0.95, "{e}");
    assert_eq!(e["metrics"]["confusion"].as_array().unwrap().len(), 4);
    let (_, v) = app
        .get("/api/v1/models/ticket-router/versions/1", ADMIN_KEY)
        .await;
    assert_eq!(v["metrics"]["evaluations"][0]["dataset"]["name"], "tickets");
}

#[tokio::test]
async fn evaluations_score_a_version_on_a_dataset_and_are_kept() {
    let app = spawn_app().await;
    upload(&app, "cancer", "breast-cancer.csv").await;
    let run = start(
        &app,
        json!({"dataset": "cancer", "spec": {"mlp": {"hidden": [32]}, "epochs": 60, "optimizer": {"lr": 0.003}}}),
    )
    .await;
    wait_for(&app, run["id"].as_str().unwrap(), |r| {
        r["state"] == "succeeded"
    })
    .await;
    let (status, ev) = app
        .call(
            Method::POST,
            "/api/v1/evaluations?wait=true",
            ADMIN_KEY,
            Some(json!({"model": "cancer:1", "dataset": "cancer:1"})),
        )
        .await;
    assert_eq!(status, 201, "{ev}");
    let m = &ev["evaluation"]["metrics"];
    assert_eq!(ev["evaluation"]["rows"], 569);
    assert!(m["accuracy"].as_f64().unwrap() >= 0.95, "{m}");
    assert!(m["roc_auc"].as_f64().unwrap() >= 0.97, "{m}");
    let confusion: u64 = m["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(confusion, 569);
    // Accuracy agrees with the confusion matrix's diagonal.
    let diagonal = m["confusion"][0][0].as_u64().unwrap() + m["confusion"][1][1].as_u64().unwrap();
    assert!((m["accuracy"].as_f64().unwrap() - diagonal as f64 / 569.0).abs() < 1e-12);
    // Without waiting, a job.
    let (status, job) = app
        .call(
            Method::POST,
            "/api/v1/evaluations",
            ADMIN_KEY,
            Some(json!({"model": "cancer", "dataset": "cancer"})),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["kind"], "evaluate");
    // A dataset without the model's target column, unknown names.
    upload(&app, "iris", "iris.csv").await;
    let (status, e) = app
        .call(
            Method::POST,
            "/api/v1/evaluations?wait=true",
            ADMIN_KEY,
            Some(json!({"model": "cancer", "dataset": "iris"})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has no column"),
        "{e}"
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/evaluations?wait=true",
            ADMIN_KEY,
            Some(json!({"model": "nope", "dataset": "iris"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/evaluations?wait=true",
            ADMIN_KEY,
            Some(json!({"model": "cancer", "dataset": "nope"})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_cnn_trains_on_an_image_zip_and_classifies_image_files() {
    use base64::Engine as _;
    let app = spawn_app().await;
    let files = digit_pngs(usize::MAX);
    let zip = zip_of(&files);
    let resp = app
        .req(
            Method::POST,
            "/api/v1/datasets?name=glyphs&filename=glyphs.zip",
            ADMIN_KEY,
        )
        .body(zip)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let run = start(
        &app,
        json!({"dataset": "glyphs", "model": "glyph-cnn", "spec": {
            "cnn": {"channels": [16, 32]}, "mlp": {"hidden": [64]}, "epochs": 30,
            "optimizer": {"lr": 0.003}, "schedule": {"kind": "cosine"}}}),
    )
    .await;
    let done = wait_for(&app, run["id"].as_str().unwrap(), |r| {
        r["state"] != "queued" && r["state"] != "running"
    })
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let accuracy = done["result"]["test_metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.97, "digit images test accuracy {accuracy}");

    let (_, version) = app
        .get("/api/v1/models/glyph-cnn/versions/1", ADMIN_KEY)
        .await;
    assert_eq!(version["format"], "maas");
    assert_eq!(
        version["metadata"]["architecture"]["kind"], "cnn",
        "{version}"
    );
    assert_eq!(
        version["metadata"]["image"],
        json!({"column": "image", "channels": 1, "size": 8})
    );
    let (_, model) = app.get("/api/v1/models/glyph-cnn", ADMIN_KEY).await;
    assert_eq!(model["task"], "image-classification");

    // /v1/images/classify takes the file (multipart or base64) and ranks the folders' labels.
    let (path, png) = &files[10];
    let label = path.split('/').nth(1).unwrap();
    let (status, out) = app
        .call(
            Method::POST,
            "/v1/images/classify",
            ADMIN_KEY,
            Some(json!({"model": "glyph-cnn", "image": base64::engine::general_purpose::STANDARD.encode(png), "top_k": 3})),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["predictions"].as_array().unwrap().len(), 3);
    assert_eq!(out["predictions"][0]["label"], label, "{out}");
    let form = reqwest::multipart::Form::new()
        .text("model", "glyph-cnn")
        .part(
            "file",
            reqwest::multipart::Part::bytes(png.clone()).file_name("x.png"),
        );
    let resp = app
        .req(Method::POST, "/v1/images/classify", ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let multipart: Value = resp.json().await.unwrap();
    assert_eq!(multipart["predictions"][0], out["predictions"][0]);

    // /v1/predict takes rows whose image cell is the file in base64.
    let rows: Vec<Value> = files[..20]
        .iter()
        .map(|(_, f)| json!({"image": base64::engine::general_purpose::STANDARD.encode(f)}))
        .collect();
    let (status, p) = app
        .call(
            Method::POST,
            "/v1/predict/glyph-cnn",
            ADMIN_KEY,
            Some(json!({"rows": rows})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    let right = p["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&files)
        .filter(|(p, (path, _))| Some(path.split('/').nth(1).unwrap()) == p["label"].as_str())
        .count();
    assert!(right >= 19, "{right} of 20: {p}");

    // /v2 takes the file as a BYTES element (binary extension: 4-byte length, then the bytes).
    let mut raw = (png.len() as u32).to_le_bytes().to_vec();
    raw.extend_from_slice(png);
    let header = json!({
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": raw.len()}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&raw);
    let resp = app
        .req(Method::POST, "/v2/models/glyph-cnn/infer", ADMIN_KEY)
        .header("Inference-Header-Content-Length", header.len())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v2: Value = resp.json().await.unwrap();
    assert_eq!(v2["outputs"][0]["data"][0], label, "{v2}");

    // The whole dataset, evaluated from its zip.
    let (status, ev) = app
        .call(
            Method::POST,
            "/api/v1/evaluations?wait=true",
            ADMIN_KEY,
            Some(json!({"model": "glyph-cnn", "dataset": "glyphs"})),
        )
        .await;
    assert_eq!(status, 201, "{ev}");
    assert_eq!(ev["evaluation"]["rows"], 1797);
    assert!(
        ev["evaluation"]["metrics"]["accuracy"].as_f64().unwrap() >= 0.97,
        "{ev}"
    );

    // Another run on the same model adds version 2 (the model keeps its image task).
    let again = start(
        &app,
        json!({"dataset": "glyphs", "model": "glyph-cnn", "spec": {"cnn": {"channels": [4]}, "epochs": 1}}),
    )
    .await;
    let again = wait_for(&app, again["id"].as_str().unwrap(), |r| {
        r["state"] != "queued" && r["state"] != "running"
    })
    .await;
    assert_eq!(again["result"]["version"], 2, "{again}");

    // A file that is not an image is a 400 naming it, on every route.
    let (status, e) = app
        .call(
            Method::POST,
            "/v1/images/classify",
            ADMIN_KEY,
            Some(json!({"model": "glyph-cnn", "image": base64::engine::general_purpose::STANDARD.encode(b"not a picture")})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("image"),
        "{e}"
    );
    let (status, e) = app
        .call(
            Method::POST,
            "/v1/predict/glyph-cnn",
            ADMIN_KEY,
            Some(json!({"rows": [{"image": "%%%"}]})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rows[0].image"),
        "{e}"
    );
    // Image settings are checked before a run starts.
    let (status, e) = app
        .call(
            Method::POST,
            "/api/v1/runs",
            ADMIN_KEY,
            Some(json!({"dataset": "glyphs", "spec": {"cnn": {"kernel": 2}}})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cnn.kernel"),
        "{e}"
    );
}
