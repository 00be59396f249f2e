//! `maas`: one binary. `maas serve` runs the server; every other command is a client of its
//! HTTP API (`--server`/`MAAS_URL`, `--api-key`/`MAAS_API_KEY`), printing tables for people and
//! JSON with `--json`. Errors are one line on stderr and a non-zero exit code.

mod client;
mod commands;
mod datasets;
mod output;
mod pull;
mod run;
mod serving;
mod tensors;
mod train;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use maas_core::env;

#[derive(Parser)]
#[command(
    name = "maas",
    version,
    about = "Model-as-a-Service: pull, version, serve and audit models"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct Global {
    /// Server URL.
    #[arg(long, global = true, env = env::MAAS_URL, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// API key.
    #[arg(long, global = true, env = env::MAAS_API_KEY, hide_env_values = true)]
    api_key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded SQLite registry and local artifacts).
    Serve(ServeArgs),
    /// Register a new model version from a local file or folder, an http(s) URL,
    /// pypi:PACKAGE[==VERSION] or hf:ORG/REPO[@REV][/PATH].
    Pull(pull::PullArgs),
    /// Chat with a text-generation model once, streaming the answer.
    Run(run::RunArgs),
    /// Chat interactively with a text-generation model (/reset, /exit).
    Chat(run::ChatArgs),
    /// Print the embedding of each text.
    Embed(run::EmbedArgs),
    /// Run a tensor model on an Open Inference Protocol request (JSON file).
    Infer(tensors::InferArgs),
    /// Classify an image with an image-classification model.
    Classify(tensors::ClassifyArgs),
    /// Upload, list and show datasets (training data with an inferred schema).
    #[command(subcommand)]
    Datasets(datasets::DatasetsCommand),
    /// Train a model on a dataset (a spec file says how) and follow the run.
    Train(train::TrainArgs),
    /// List, show, watch and cancel training runs.
    #[command(subcommand)]
    Runs(train::RunsCommand),
    /// Predict labels or values for raw rows with a trained model.
    Predict(train::PredictArgs),
    /// Evaluate a model version on a dataset (metrics kept on the version).
    Eval(train::EvalArgs),
    /// List the models loaded in memory.
    Ps,
    /// Load a model into memory ahead of traffic (--pin keeps it there).
    Load(serving::LoadArgs),
    /// Unload a model from memory.
    Unload(serving::UnloadArgs),
    /// List, show and delete models and versions.
    #[command(subcommand)]
    Models(commands::ModelsCommand),
    /// Point aliases (production, staging, …) at versions.
    #[command(subcommand)]
    Alias(commands::AliasCommand),
    /// Set tags on a version: maas tag NAME:VERSION KEY=VALUE…
    Tag(commands::TagArgs),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(commands::KeysCommand),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(commands::AuditCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = env::MAAS_ADDR, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Data directory (registry.db, artifacts/).
    #[arg(long, env = env::MAAS_DATA_DIR, default_value = "./maas-data")]
    data_dir: PathBuf,
    /// Largest file a client may upload, in bytes.
    #[arg(long, default_value_t = 64 << 30)]
    max_upload_bytes: u64,
    /// Pulls that may run at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Training runs that may run at once; more wait in a queue.
    #[arg(long, default_value_t = 1)]
    train_workers: usize,
    /// Threads each training run's tensor maths uses (RAYON_NUM_THREADS, when that is unset).
    /// Small-batch steps are fastest on one thread; more workers train more runs at once.
    #[arg(long, default_value_t = 1)]
    train_threads: usize,
    /// Package index (simple API) for pypi: sources [default: pip's PIP_INDEX_URL, else PyPI].
    #[arg(long, env = env::MAAS_PYPI_INDEX)]
    pypi_index: Option<String>,
    /// HF-compatible hub for hf: sources.
    #[arg(long, env = env::MAAS_HF_ENDPOINT, default_value = "https://huggingface.co")]
    hf_endpoint: String,
    /// Compute threads per loaded model [default: the machine's cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Memory loaded models may hold together, in MiB; the least recently used is unloaded first.
    #[arg(long, default_value_t = 8192)]
    model_memory_mib: u64,
    /// Requests one model may have running or waiting before new ones get 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Generation requests one model decodes together (continuous batching); each holds a
    /// context of the model's length in memory.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Unload a model after this many seconds without requests (0: keep models loaded).
    /// Pinned models stay.
    #[arg(long, default_value_t = 1800)]
    idle_unload_secs: u64,
    /// Most inputs one embedding batch (or rows one tensor batch) gathers from concurrent
    /// requests.
    #[arg(long, default_value_t = 64)]
    batch_max_inputs: usize,
    /// Longest an embedding or tensor request waits for others to share its batch, in
    /// milliseconds (a version's own serving settings may say otherwise).
    #[arg(long, default_value_t = 2)]
    batch_wait_ms: u64,
    /// Weight precision (f32, f16, bf16) for models converted at pull (safetensors BERT
    /// embedding folders) when the pull names none [default: f16 files keep f16, bf16 files
    /// bf16; f32 files get bf16 on AMD CPUs with AVX512-BF16, f16 elsewhere].
    #[arg(long)]
    convert_precision: Option<maas_core::Precision>,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env::MAAS_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let g = cli.global;
    match cli.command {
        Command::Serve(args) => {
            init_tracing();
            let config = maas_server::ServeConfig {
                addr: args.addr,
                data_dir: args.data_dir,
                admin_key: std::env::var(env::MAAS_ADMIN_KEY)
                    .ok()
                    .filter(|k| !k.is_empty()),
                max_blob_bytes: args.max_upload_bytes,
                job_concurrency: args.jobs,
                train_workers: args.train_workers,
                pypi_index: args
                    .pypi_index
                    .unwrap_or_else(maas_server::default_pypi_index),
                hf_endpoint: args.hf_endpoint,
                hf_token: std::env::var(env::MAAS_HF_TOKEN)
                    .ok()
                    .filter(|t| !t.is_empty()),
                cache: maas_server::CacheConfig {
                    threads: args.threads.unwrap_or_else(|| {
                        std::thread::available_parallelism()
                            .map(|n| n.get())
                            .unwrap_or(2)
                    }),
                    budget_bytes: args.model_memory_mib << 20,
                    max_queue: args.max_queue,
                    batching: maas_server::Batching {
                        sequences: args.parallel.clamp(1, 64),
                        max_inputs: args.batch_max_inputs.max(1),
                        max_wait: std::time::Duration::from_millis(args.batch_wait_ms),
                    },
                    idle_unload: (args.idle_unload_secs > 0)
                        .then(|| std::time::Duration::from_secs(args.idle_unload_secs)),
                },
                convert_precision: args.convert_precision,
            };
            maas_server::serve(config).await
        }
        Command::Pull(args) => pull::run(&g, args).await,
        Command::Run(args) => run::run(&g, args).await,
        Command::Chat(args) => run::chat(&g, args).await,
        Command::Embed(args) => run::embed(&g, args).await,
        Command::Infer(args) => tensors::infer(&g, args).await,
        Command::Classify(args) => tensors::classify(&g, args).await,
        Command::Datasets(cmd) => datasets::run(&g, cmd).await,
        Command::Train(args) => train::train(&g, args).await,
        Command::Runs(cmd) => train::runs(&g, cmd).await,
        Command::Predict(args) => train::predict(&g, args).await,
        Command::Eval(args) => train::eval(&g, args).await,
        Command::Ps => serving::ps(&g).await,
        Command::Load(args) => serving::load(&g, args).await,
        Command::Unload(args) => serving::unload(&g, args).await,
        Command::Models(cmd) => commands::models(&g, cmd).await,
        Command::Alias(cmd) => commands::alias(&g, cmd).await,
        Command::Tag(args) => commands::tag(&g, args).await,
        Command::Keys(cmd) => commands::keys(&g, cmd).await,
        Command::Audit(cmd) => commands::audit(&g, cmd).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve(args) = &cli.command {
        // candle and gemm read their thread count from RAYON_NUM_THREADS on every operation. Set
        // here, before any thread exists. Splitting a 32-row step over threads lost to one thread
        // by 1.4-2x on 2 cores (digits, MLP 512x256: 11-12k vs 16-18k samples/s).
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            std::env::set_var("RAYON_NUM_THREADS", args.train_threads.max(1).to_string());
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("maas: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maas: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
