//! Datasets over HTTP: upload (schema inferred and profiled before anything is stored), versions,
//! listing, roles, and files that cannot be read refused with the line or column at fault.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::Value;

async fn upload(app: &TestApp, key: &str, query: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = app
        .req(Method::POST, &format!("/api/v1/datasets?{query}"), key)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn uploads_are_profiled_versioned_and_kept() {
    let app = spawn_app().await;
    let (status, v) = upload(
        &app,
        ADMIN_KEY,
        "name=iris&filename=iris.csv",
        dataset("iris.csv"),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["dataset"], "iris");
    assert_eq!(v["version"], 1);
    assert_eq!(v["rows"], 150);
    assert_eq!(v["format"], "csv");
    assert_eq!(v["target"], "species");
    assert_eq!(v["problem"], "classification");
    let species = &v["profile"][4];
    assert_eq!(species["kind"], "categorical");
    assert_eq!(species["counts"]["setosa"], 50);
    let sepal = &v["profile"][0];
    assert_eq!(
        (
            sepal["kind"].as_str(),
            sepal["min"].as_f64(),
            sepal["max"].as_f64()
        ),
        (Some("numeric"), Some(4.3), Some(7.9))
    );
    assert!((sepal["mean"].as_f64().unwrap() - 5.843333).abs() < 1e-5);

    let (status, v) = upload(
        &app,
        ADMIN_KEY,
        "name=iris&filename=iris.csv&target=sepal_length",
        dataset("iris.csv"),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (v["version"].as_i64(), v["problem"].as_str()),
        (Some(2), Some("regression"))
    );

    let (status, v) = app.get("/api/v1/datasets/iris", ADMIN_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(v["versions"].as_array().unwrap().len(), 2);
    let (_, v) = app.get("/api/v1/datasets/iris/versions/1", ADMIN_KEY).await;
    assert_eq!(v["target"], "species");
    let (_, list) = app.get("/api/v1/datasets", ADMIN_KEY).await;
    assert_eq!(list[0]["name"], "iris");
    assert_eq!(list[0]["latest_version"], 2);
    let (status, _) = app.get("/api/v1/datasets/nope", ADMIN_KEY).await;
    assert_eq!(status, 404);

    // JSONL, text and labels.
    let jsonl: String = String::from_utf8(dataset("support-tickets.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .take(40)
        .map(|l| {
            let (text, label) = l.rsplit_once(',').unwrap();
            format!(
                "{}\n",
                serde_json::json!({"text": text.trim_matches('"'), "label": label})
            )
        })
        .collect();
    let (status, v) = upload(
        &app,
        ADMIN_KEY,
        "name=tickets&filename=t.jsonl&target=label",
        jsonl.into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let text = v["profile"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "text")
        .unwrap();
    assert_eq!(text["kind"], "text");
    assert_eq!(v["target"], "label");

    // The files survive the start-up clean-up (they are referenced).
    let blobs = app.blob_files().len();
    assert!(blobs >= 2);
    let config_dir = app.data_dir.path().to_path_buf();
    let again = spawn_app_with(|c| c.data_dir = config_dir).await;
    assert_eq!(app.blob_files().len(), blobs);
    let (status, _) = again
        .get("/api/v1/datasets/tickets/versions/1", ADMIN_KEY)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unreadable_files_are_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let err = |status: u16, v: &Value| {
        (
            status,
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let (s, v) = upload(&app, ADMIN_KEY, "name=d", b"a,b\n1,2\n3\n".to_vec()).await;
    assert_eq!(
        err(s, &v),
        (400, "line 3 has 1 fields but the header has 2".to_owned())
    );
    let (s, v) = upload(&app, ADMIN_KEY, "name=d", vec![]).await;
    assert_eq!(err(s, &v), (400, "the file is empty".to_owned()));
    let (s, v) = upload(&app, ADMIN_KEY, "name=d&target=label", dataset("iris.csv")).await;
    assert_eq!(s, 400);
    assert!(
        err(s, &v).1.starts_with("unknown target column 'label'"),
        "{v}"
    );
    let (s, v) = upload(
        &app,
        ADMIN_KEY,
        "name=d&filename=x.parquet",
        dataset("iris.csv"),
    )
    .await;
    assert_eq!(s, 400);
    assert!(err(s, &v).1.contains("x.parquet"), "{v}");
    let (s, v) = upload(&app, ADMIN_KEY, "name=Bad%20Name", dataset("iris.csv")).await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = upload(
        &app,
        ADMIN_KEY,
        "name=d&kinds=species:colour",
        dataset("iris.csv"),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        app.blob_files().is_empty(),
        "a refused upload left {:?}",
        app.blob_files()
    );

    let consumer = app.key("consumer", None).await;
    let (s, _) = upload(&app, &consumer, "name=d", dataset("iris.csv")).await;
    assert_eq!(s, 403);
    let (s, _) = app.get("/api/v1/datasets", &consumer).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn image_zips_are_read_as_labelled_images_and_bad_ones_are_refused() {
    let app = spawn_app().await;
    let mut entries = digit_pngs(60);
    entries.push((
        "__MACOSX/digits/0/._0.png".to_owned(),
        b"resource fork".to_vec(),
    ));
    let (status, v) = upload(
        &app,
        ADMIN_KEY,
        "name=glyphs&filename=glyphs.zip",
        zip_of(&entries),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (
            v["format"].as_str(),
            v["rows"].as_i64(),
            v["target"].as_str()
        ),
        (Some("zip"), Some(60), Some("label"))
    );
    assert_eq!(v["problem"], "classification");
    assert_eq!(v["profile"][0]["name"], "image");
    assert_eq!(v["profile"][0]["kind"], "image");
    assert_eq!(v["profile"][0]["distinct"], 60);
    let counts = v["profile"][1]["counts"].as_object().unwrap();
    assert_eq!(counts.len(), 10, "{counts:?}");
    assert_eq!(
        counts.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        60
    );

    let refused = |entries: Vec<(String, Vec<u8>)>| {
        let app = &app;
        async move {
            upload(
                app,
                ADMIN_KEY,
                "name=bad&filename=bad.zip",
                zip_of(&entries),
            )
            .await
        }
    };
    let png = digit_pngs(1).remove(0).1;
    let (status, e) = refused(vec![("0/readme.txt".to_owned(), b"hi".to_vec())]).await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'0/readme.txt' is not an image"),
        "{e}"
    );
    let (status, e) = refused(vec![("loose.png".to_owned(), png.clone())]).await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is not LABEL/FILE"),
        "{e}"
    );
    let (status, e) = refused(vec![(
        "3/fake.png".to_owned(),
        b"not a png at all".to_vec(),
    )])
    .await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'3/fake.png' is not a readable image"),
        "{e}"
    );
    let (status, e) = upload(
        &app,
        ADMIN_KEY,
        "name=bad&filename=bad.zip",
        b"PK not really".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a readable zip"),
        "{e}"
    );
    let (status, _) = app.get("/api/v1/datasets/bad", ADMIN_KEY).await;
    assert_eq!(status, 404);
}
