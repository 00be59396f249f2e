//! Where maas keeps what it knows: the model registry, API keys, the audit chain and artifacts.
//!
//! The registry sits behind the [`Registry`] trait because it really has two implementations:
//! embedded SQLite (the default, [`SqliteRegistry`]) and Postgres for scale-out (a later issue).
//! Every mutation appends to the audit chain inside the same transaction, so a change and its
//! audit entry land together or not at all.
//!
//! Artifacts are content-addressed by sha256 in an [`ArtifactStore`] on top of `object_store`
//! (local filesystem by default, S3 later). A blob only becomes visible under its digest after
//! the bytes were hashed and checked; reads hash again.
#![deny(missing_docs)]

mod artifacts;
mod audit;
pub mod keys;
mod registry;
mod sqlite;

pub use artifacts::ArtifactStore;
pub use audit::entry_hash;
pub use registry::{Actor, NewKey, Registry, StoredKey};
pub use sqlite::SqliteRegistry;
