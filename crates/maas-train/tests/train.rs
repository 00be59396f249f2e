//! Training on the shared datasets (testdata/datasets): the accuracy each must reach on its
//! held-out test split, reproducibility from the seed, and runs refused or stopped with a reason.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;

use maas_core::Format;
use maas_engine::{Batching, Engine, LoadSpec, Tensor, TensorData, TensorModel};
use maas_train::dataset::{self, FileFormat, Profile, Table};
use maas_train::model::{TrainedEngine, TrainedModel};
use maas_train::train::{self, Outcome, TrainSpec, Trainer};

fn load(name: &str) -> (Table, Profile) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/datasets")
        .join(name);
    let table = dataset::parse(&std::fs::read(path).unwrap(), FileFormat::Csv).unwrap();
    let profile = dataset::profile(&table, None, &BTreeMap::new()).unwrap();
    (table, profile)
}

fn spec(toml: &str) -> TrainSpec {
    serde_json::from_value(serde_json::from_str::<serde_json::Value>(toml).unwrap()).unwrap()
}

fn run(name: &str, s: &TrainSpec) -> Outcome {
    let (table, profile) = load(name);
    train::fit(&table, &profile, s, &mut |_| true).unwrap()
}

fn accuracy(o: &Outcome) -> f64 {
    let a = o.test_metrics["accuracy"].as_f64().unwrap();
    eprintln!("test accuracy {a:.4} (best epoch {})", o.best_epoch);
    a
}

#[test]
fn iris_reaches_0_93() {
    let o = run(
        "iris.csv",
        &spec(
            r#"{"mlp": {"hidden": [16]}, "epochs": 150, "batch_size": 16, "optimizer": {"lr": 0.01}}"#,
        ),
    );
    assert!(accuracy(&o) >= 0.93, "iris test accuracy {}", accuracy(&o));
    assert_eq!(
        o.split_sizes.iter().sum::<usize>(),
        150 - o.cleaned.duplicates
    );
}

#[test]
fn breast_cancer_reaches_0_95() {
    let o = run(
        "breast-cancer.csv",
        &spec(r#"{"mlp": {"hidden": [32]}, "epochs": 60, "optimizer": {"lr": 0.003}}"#),
    );
    assert!(
        accuracy(&o) >= 0.95,
        "breast-cancer test accuracy {}",
        accuracy(&o)
    );
    assert!(
        o.test_metrics["roc_auc"].as_f64().unwrap() > 0.97,
        "{}",
        o.test_metrics
    );
}

#[test]
fn digits_reaches_0_97() {
    let o = run(
        "digits.csv",
        &spec(
            r#"{"mlp": {"hidden": [128]}, "epochs": 60, "optimizer": {"lr": 0.003}, "schedule": {"kind": "cosine"}}"#,
        ),
    );
    assert!(
        accuracy(&o) >= 0.97,
        "digits test accuracy {}",
        accuracy(&o)
    );
}

#[test]
fn diabetes_regression_reaches_r2_0_40() {
    let o = run(
        "diabetes.csv",
        &spec(
            r#"{"mlp": {"hidden": [16]}, "epochs": 200, "optimizer": {"kind": "sgd", "lr": 0.01, "momentum": 0.9}, "patience": 30}"#,
        ),
    );
    let r2 = o.test_metrics["r2"].as_f64().unwrap();
    eprintln!("diabetes test R² {r2:.4}, RMSE {}", o.test_metrics["rmse"]);
    assert!(r2 >= 0.40, "diabetes test R² {r2}");
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_does_not() {
    let s = spec(r#"{"mlp": {"hidden": [16], "dropout": 0.1}, "epochs": 20}"#);
    let a = run("iris.csv", &s);
    let b = run("iris.csv", &s);
    assert_eq!(a.network, b.network);
    assert_eq!(a.test_metrics, b.test_metrics);
    let mut other = s.clone();
    other.prep.seed = 7;
    assert_ne!(run("iris.csv", &other).network, a.network);
}

#[test]
fn a_diverging_run_fails_naming_the_setting() {
    let (table, profile) = load("diabetes.csv");
    let s = spec(
        r#"{"prep": {"scale": "none"}, "optimizer": {"kind": "sgd", "lr": 10.0}, "epochs": 50}"#,
    );
    let err = train::fit(&table, &profile, &s, &mut |_| true).unwrap_err();
    assert!(
        err.message.contains("lower optimizer.lr (now 10)"),
        "{}",
        err.message
    );
}

#[test]
fn bad_specs_and_cancellation_are_reported() {
    let (table, profile) = load("iris.csv");
    let err = |json: &str| {
        train::fit(&table, &profile, &spec(json), &mut |_| true)
            .unwrap_err()
            .message
    };
    assert_eq!(
        err(r#"{"loss": "mse"}"#),
        "loss mse is for regression; this dataset's target is a class label"
    );
    assert_eq!(
        err(r#"{"mlp": {"activation": "swish"}}"#),
        "mlp.activation must be relu or tanh, got 'swish'"
    );
    assert!(
        err(r#"{"optimizer": {"lr": -1}}"#).starts_with("optimizer.lr must be a positive number")
    );
    let mut epochs = 0;
    let cancelled = train::fit(&table, &profile, &spec(r#"{"epochs": 50}"#), &mut |e| {
        epochs = e.epoch;
        e.epoch < 3
    })
    .unwrap_err();
    assert_eq!(epochs, 3);
    assert_eq!(cancelled.message, "the run was cancelled in epoch 3");
}

fn resume_matches(json: &str) {
    let (table, profile) = load("iris.csv");
    let s = spec(json);
    let whole = train::fit(&table, &profile, &s, &mut |_| true).unwrap();

    let mut first = Trainer::new(&table, &profile, &s).unwrap();
    for _ in 0..7 {
        first.next_epoch().unwrap();
    }
    let checkpoint = first.checkpoint().unwrap();
    drop(first);
    let mut resumed = Trainer::new(&table, &profile, &s).unwrap();
    resumed.restore(&checkpoint).unwrap();
    assert_eq!(resumed.epochs_done(), 7);
    while resumed.next_epoch().unwrap().is_some() {}
    let resumed = resumed.finish().unwrap();
    assert_eq!(resumed.network, whole.network, "{json}");
    assert_eq!(resumed.history, whole.history);
    assert_eq!(resumed.test_metrics, whole.test_metrics);
}

#[test]
fn a_run_resumed_from_a_checkpoint_ends_exactly_as_an_uninterrupted_one() {
    resume_matches(r#"{"mlp": {"hidden": [16], "dropout": 0.1}, "epochs": 15}"#);
    resume_matches(
        r#"{"mlp": {"hidden": [8]}, "epochs": 15, "optimizer": {"kind": "sgd", "lr": 0.05, "momentum": 0.9}}"#,
    );
    resume_matches(r#"{"epochs": 15, "optimizer": {"kind": "adam", "weight_decay": 0.01}}"#);
}

#[test]
fn a_checkpoint_of_another_run_is_refused() {
    let (table, profile) = load("iris.csv");
    let mut a = Trainer::new(&table, &profile, &spec(r#"{"epochs": 5}"#)).unwrap();
    a.next_epoch().unwrap();
    let checkpoint = a.checkpoint().unwrap();
    let mut b = Trainer::new(&table, &profile, &spec(r#"{"epochs": 6}"#)).unwrap();
    let err = b.restore(&checkpoint).unwrap_err();
    assert!(
        err.message.contains("belongs to another run"),
        "{}",
        err.message
    );
    assert!(b.restore(b"garbage").is_err());
    assert_eq!(b.epochs_done(), 0);
}

fn served(outcome: &Outcome) -> (TrainedModel, std::sync::Arc<dyn TensorModel>) {
    let model = TrainedModel {
        pipeline: outcome.pipeline.clone(),
        network: outcome.network.clone(),
    };
    let bytes = model.to_bytes().unwrap();
    assert_eq!(TrainedModel::from_bytes(&bytes).unwrap(), model);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let loaded = TrainedEngine
        .load(&LoadSpec {
            path,
            format: Format::Maas,
            task: model.task(),
            threads: 1,
            batching: Batching::default(),
        })
        .unwrap();
    (model, loaded.tensor.unwrap())
}

fn column(table: &Table, name: &str) -> Vec<String> {
    let i = table.columns.iter().position(|c| c == name).unwrap();
    table.rows.iter().map(|r| r[i].clone().unwrap()).collect()
}

#[test]
fn a_trained_classifier_serves_labels_and_probabilities_from_raw_columns() {
    let (table, profile) = load("iris.csv");
    let o = run(
        "iris.csv",
        &spec(r#"{"mlp": {"hidden": [16]}, "epochs": 60}"#),
    );
    let (model, served) = served(&o);
    let sig = served.signature();
    let names: Vec<&str> = sig.inputs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, &table.columns[..4]);
    let inputs: Vec<Tensor> = sig
        .inputs
        .iter()
        .map(|s| {
            let values: Vec<f32> = column(&table, &s.name)
                .iter()
                .map(|v| v.parse().unwrap())
                .collect();
            Tensor::new(&s.name, vec![values.len()], TensorData::F32(values)).unwrap()
        })
        .collect();
    let out = served.infer(inputs.clone()).unwrap();
    let TensorData::Bytes(labels) = &out[0].data else {
        panic!("{:?}", out[0])
    };
    let TensorData::F32(probs) = &out[1].data else {
        panic!("{:?}", out[1])
    };
    assert_eq!(out[1].shape, vec![150, 3]);
    for p in probs.chunks(3) {
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let truth = column(&table, &profile.target);
    let right = labels
        .iter()
        .zip(&truth)
        .filter(|(l, t)| l.as_slice() == t.as_bytes())
        .count();
    assert!(right >= 140, "{right}/150 right");
    // A row alone gets the answer it gets in a batch (to 1e-6: the matrix kernels differ by size).
    let first: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            let TensorData::F32(v) = &t.data else {
                unreachable!()
            };
            Tensor::new(&t.name, vec![1], TensorData::F32(vec![v[0]])).unwrap()
        })
        .collect();
    let one = served.infer(first).unwrap();
    let TensorData::F32(p1) = &one[1].data else {
        unreachable!()
    };
    for (a, b) in p1.iter().zip(&probs[..3]) {
        assert!((a - b).abs() < 1e-6, "{p1:?} vs {:?}", &probs[..3]);
    }
    assert_eq!(model.task(), maas_core::Task::TabularClassification);
    // A missing column (training dropped rows with missing values: nothing to fill with).
    let err = served.infer(inputs[..3].to_vec()).unwrap_err().to_string();
    assert!(err.contains("input 'petal_width' is missing"), "{err}");
    let mut ragged = inputs.clone();
    ragged[0] = Tensor::new(&ragged[0].name, vec![1], TensorData::F32(vec![5.0])).unwrap();
    let err = served.infer(ragged).unwrap_err().to_string();
    assert!(err.contains("same number of rows"), "{err}");
}

#[test]
fn a_trained_regressor_serves_values_in_the_targets_units() {
    let (table, profile) = load("diabetes.csv");
    let o = run(
        "diabetes.csv",
        &spec(
            r#"{"mlp": {"hidden": [16]}, "epochs": 60, "optimizer": {"kind": "sgd", "lr": 0.01, "momentum": 0.9}, "patience": 20}"#,
        ),
    );
    let (_, served) = served(&o);
    assert_eq!(served.signature().outputs[0].name, "value");
    let inputs: Vec<Tensor> = served
        .signature()
        .inputs
        .iter()
        .map(|s| {
            let values: Vec<f32> = column(&table, &s.name)
                .iter()
                .map(|v| v.parse().unwrap())
                .collect();
            Tensor::new(&s.name, vec![values.len()], TensorData::F32(values)).unwrap()
        })
        .collect();
    let out = served.infer(inputs).unwrap();
    let TensorData::F32(values) = &out[0].data else {
        panic!()
    };
    let truth: Vec<f64> = column(&table, &profile.target)
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    let pred: Vec<f64> = values.iter().map(|v| f64::from(*v)).collect();
    let r2 = maas_train::metrics::regression(&truth, &pred).r2;
    assert!(r2 > 0.4, "R² over all rows {r2}");
}

#[test]
fn gaussian_noise_augments_training_rows_reproducibly() {
    let plain = spec(r#"{"mlp": {"hidden": [16]}, "epochs": 150, "batch_size": 16}"#);
    let mut noisy = plain.clone();
    noisy.augment.noise = 0.1;
    let a = run("iris.csv", &noisy);
    assert!(accuracy(&a) >= 0.93, "iris with noise {}", accuracy(&a));
    assert_eq!(run("iris.csv", &noisy).network, a.network);
    assert_ne!(run("iris.csv", &plain).network, a.network);
    resume_matches(r#"{"mlp": {"hidden": [8]}, "epochs": 15, "augment": {"noise": 0.2}}"#);
    let (table, profile) = load("iris.csv");
    let err = train::fit(
        &table,
        &profile,
        &spec(r#"{"augment": {"noise": -1}}"#),
        &mut |_| true,
    )
    .unwrap_err();
    assert!(
        err.message.starts_with("augment.noise must be"),
        "{}",
        err.message
    );
}

/// digits.csv as 8x8 grey PNGs in a zip of label folders, read as an image dataset: the table,
/// its profile and the pixels of every file (as the server prepares them).
fn digit_images() -> (
    Table,
    Profile,
    maas_train::prep::Encoded,
    Vec<(String, Vec<u8>)>,
) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/datasets/digits.csv");
    let text = std::fs::read_to_string(path).unwrap();
    let files: Vec<(String, Vec<u8>)> = text
        .lines()
        .skip(1)
        .enumerate()
        .map(|(i, line)| {
            let cells: Vec<&str> = line.split(',').collect();
            let pixels: Vec<u8> = cells[..64]
                .iter()
                .map(|v| (v.parse::<f32>().unwrap() * 15.9) as u8)
                .collect();
            let img = image::GrayImage::from_raw(8, 8, pixels).unwrap();
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png).unwrap();
            (format!("digits/{}/{i:04}.png", cells[64]), png.into_inner())
        })
        .collect();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in &files {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut zip, bytes).unwrap();
    }
    let bytes = zip.finish().unwrap().into_inner();
    let table = dataset::parse(&bytes, FileFormat::Zip).unwrap();
    let profile = dataset::profile(&table, None, &BTreeMap::new()).unwrap();
    let images = dataset::zip_images(&bytes).unwrap();
    let (size, channels, pixels) =
        maas_train::images::encode_all(&images, &Default::default()).unwrap();
    assert_eq!((size, channels), (8, 1));
    let encoded = BTreeMap::from([("image".to_owned(), pixels)]);
    (table, profile, encoded, files)
}

#[test]
fn a_cnn_on_digit_images_reaches_0_97_and_serves_image_files() {
    let (table, profile, encoded, files) = digit_images();
    let s = spec(
        r#"{"cnn": {"channels": [16, 32]}, "mlp": {"hidden": [64]}, "epochs": 30, "batch_size": 32,
            "optimizer": {"lr": 0.003}, "schedule": {"kind": "cosine"}}"#,
    );
    let mut trainer = Trainer::with_encoded(&table, &profile, &s, &encoded).unwrap();
    while trainer.next_epoch().unwrap().is_some() {}
    let o = trainer.finish().unwrap();
    assert!(
        accuracy(&o) >= 0.97,
        "digit images test accuracy {}",
        accuracy(&o)
    );
    let shapes = o.network.shapes();
    assert_eq!(shapes.convs, vec![(16, 1, 3), (32, 16, 3)]);
    assert_eq!(shapes.layers, vec![(64, 32 * 2 * 2), (10, 64)]);

    // Served, it takes the PNG files themselves and labels them as the folders do.
    let (model, served) = served(&o);
    assert_eq!(model.task(), maas_core::Task::ImageClassification);
    let sig = served.signature();
    assert_eq!(
        (sig.inputs[0].name.as_str(), sig.inputs[0].datatype.as_str()),
        ("image", "BYTES")
    );
    let bytes: Vec<Vec<u8>> = files.iter().map(|(_, b)| b.clone()).collect();
    let out = served
        .infer(vec![Tensor::new(
            "image",
            vec![bytes.len()],
            TensorData::Bytes(bytes),
        )
        .unwrap()])
        .unwrap();
    let TensorData::Bytes(labels) = &out[0].data else {
        panic!("{:?}", out[0])
    };
    let right = labels
        .iter()
        .zip(&files)
        .filter(|(l, (path, _))| path.split('/').nth(1) == Some(std::str::from_utf8(l).unwrap()))
        .count();
    assert!(
        right as f64 / files.len() as f64 >= 0.97,
        "{right} of {} right",
        files.len()
    );
    let err = served
        .infer(vec![Tensor::new(
            "image",
            vec![1],
            TensorData::Bytes(vec![b"not a png".to_vec()]),
        )
        .unwrap()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 0") && err.contains("image"), "{err}");
}

#[test]
fn augmented_image_runs_are_reproducible_and_resume_exactly() {
    let (table, profile, encoded, _) = digit_images();
    let s = spec(
        r#"{"cnn": {"channels": [8]}, "mlp": {"hidden": [32]}, "epochs": 4,
            "augment": {"shift": 1, "rotate": 10, "noise": 0.05}}"#,
    );
    let fit = || {
        let mut t = Trainer::with_encoded(&table, &profile, &s, &encoded).unwrap();
        while t.next_epoch().unwrap().is_some() {}
        t.finish().unwrap()
    };
    let whole = fit();
    assert_eq!(
        whole.network,
        fit().network,
        "the same seed trains the same weights"
    );
    let plain = {
        let mut plain = s.clone();
        plain.augment = Default::default();
        let mut t = Trainer::with_encoded(&table, &profile, &plain, &encoded).unwrap();
        while t.next_epoch().unwrap().is_some() {}
        t.finish().unwrap()
    };
    assert_ne!(
        plain.history, whole.history,
        "augmentation changes training"
    );

    let mut first = Trainer::with_encoded(&table, &profile, &s, &encoded).unwrap();
    first.next_epoch().unwrap();
    first.next_epoch().unwrap();
    let checkpoint = first.checkpoint().unwrap();
    let mut resumed = Trainer::with_encoded(&table, &profile, &s, &encoded).unwrap();
    resumed.restore(&checkpoint).unwrap();
    while resumed.next_epoch().unwrap().is_some() {}
    let resumed = resumed.finish().unwrap();
    assert_eq!(resumed.network, whole.network);
    assert_eq!(resumed.history, whole.history);

    // Image settings on a table without images, and the reverse, are refused by name.
    let (iris, iris_profile) = load("iris.csv");
    for (bad, says) in [
        (r#"{"cnn": {}}"#, "cnn is for image datasets"),
        (r#"{"augment": {"shift": 2}}"#, "augment.shift"),
    ] {
        let e = Trainer::new(&iris, &iris_profile, &spec(bad))
            .err()
            .unwrap()
            .message;
        assert!(e.contains(says), "{bad}: {e}");
    }
    for (bad, says) in [
        (r#"{"cnn": {"kernel": 4}}"#, "cnn.kernel"),
        (r#"{"cnn": {"channels": []}}"#, "cnn.channels"),
        (r#"{"augment": {"rotate": 400}}"#, "augment.rotate"),
        (r#"{"image": {"channels": 2}}"#, "image.channels"),
    ] {
        let e = Trainer::with_encoded(&table, &profile, &spec(bad), &encoded)
            .err()
            .unwrap()
            .message;
        assert!(e.contains(says), "{bad}: {e}");
    }
}
