//! Training on the shared datasets (testdata/datasets): the accuracy each must reach on its
//! held-out test split, reproducibility from the seed, and runs refused or stopped with a reason.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use maas_train::dataset::{self, FileFormat, Profile, Table};
use maas_train::train::{self, Outcome, TrainSpec};

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
