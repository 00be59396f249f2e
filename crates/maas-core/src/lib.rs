//! Domain types of maas: names, references, tasks, formats, roles, digests and the error type.
//!
//! This crate does no I/O and runs no async runtime, so every other crate can depend on it
//! cheaply. Values are parsed once at the edge (`ModelName::parse`, `ModelRef::parse`) and
//! trusted inside: a function that takes a `ModelName` never re-validates it.
#![deny(missing_docs)]

mod digest;
mod entities;
pub mod env;
mod error;
mod kinds;
mod names;

pub use digest::Digest;
pub use entities::{
    check_relative_path, Alias, ApiKeyInfo, ArtifactKind, AuditEntry, AuditVerdict, Dataset,
    DatasetVersion, FileEntry, Manifest, Model, ModelVersion, NewDatasetVersion, NewRun,
    NewVersion, Run, RunUpdate,
};
pub use error::{Error, ErrorKind, Result};
pub use kinds::{Format, Precision, Role, RunState, Task};
pub use names::{AliasName, ModelName, ModelRef, VersionSelector};
