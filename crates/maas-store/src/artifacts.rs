//! Content-addressed artifact storage on `object_store`.
//!
//! Layout under the store root: `blobs/sha256/<2 hex>/<64 hex>` for committed blobs and
//! `tmp/<uuid>` for uploads in flight. A blob is written to `tmp/`, hashed as it streams,
//! checked against the expected digest, and only then renamed to its digest path, so a reader
//! never sees half an artifact. `tmp/` is emptied at start-up.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use maas_core::{ArtifactKind, Digest, Error, ErrorKind, Manifest, Result};
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

const PART_BYTES: usize = 8 << 20;

/// A content-addressed blob store.
#[derive(Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
}

fn store_err(e: object_store::Error) -> Error {
    Error::internal(format!("artifact store error: {e}"))
}

fn blob_path(d: &Digest) -> ObjectPath {
    let hex = d.hex();
    ObjectPath::from(format!("blobs/sha256/{}/{hex}", &hex[..2]))
}

impl ArtifactStore {
    /// A store on the local filesystem under `root` (created if missing).
    pub fn local(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| {
            Error::internal(format!(
                "cannot create artifact dir {}: {e}",
                root.display()
            ))
        })?;
        let root = root.canonicalize().map_err(|e| {
            Error::internal(format!(
                "cannot resolve artifact dir {}: {e}",
                root.display()
            ))
        })?;
        let fs = LocalFileSystem::new_with_prefix(&root).map_err(store_err)?;
        Ok(Self {
            store: Arc::new(fs),
            local_root: Some(root),
        })
    }

    /// Streams bytes into the store. The blob becomes visible under its digest only if the
    /// stream ends cleanly, stays within `max_bytes`, and matches `expected` when given.
    pub async fn put_stream<S, E>(
        &self,
        mut stream: S,
        expected: Option<Digest>,
        max_bytes: Option<u64>,
    ) -> Result<(Digest, u64)>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let staged = ObjectPath::from(format!("tmp/{}", uuid::Uuid::new_v4()));
        let mut writer = BufWriter::with_capacity(self.store.clone(), staged.clone(), PART_BYTES);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let written: Result<()> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk
                    .map_err(|e| Error::upstream(format!("reading the artifact failed: {e}")))?;
                size += chunk.len() as u64;
                if let Some(max) = max_bytes.filter(|max| size > *max) {
                    return Err(Error::new(
                        ErrorKind::PayloadTooLarge,
                        format!("artifact is larger than the limit of {max} bytes"),
                    ));
                }
                hasher.update(&chunk);
                writer
                    .write_all(&chunk)
                    .await
                    .map_err(|e| Error::internal(format!("writing the artifact failed: {e}")))?;
            }
            writer
                .shutdown()
                .await
                .map_err(|e| Error::internal(format!("writing the artifact failed: {e}")))
        }
        .await;
        if let Err(e) = written {
            let _ = writer.abort().await;
            let _ = self.store.delete(&staged).await;
            return Err(e);
        }
        let digest = Digest::from_bytes(hasher.finalize().into());
        if let Some(expected) = expected.filter(|e| *e != digest) {
            let _ = self.store.delete(&staged).await;
            return Err(Error::invalid(format!(
                "digest mismatch: expected {expected}, got {digest}"
            )));
        }
        let dest = blob_path(&digest);
        if self.store.head(&dest).await.is_ok() {
            // Same content already stored: keep the existing blob.
            let _ = self.store.delete(&staged).await;
        } else {
            self.store.rename(&staged, &dest).await.map_err(store_err)?;
        }
        Ok((digest, size))
    }

    /// Stores a local file, checking `expected` if given.
    pub async fn put_file(&self, path: &Path, expected: Option<Digest>) -> Result<(Digest, u64)> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::internal(format!("cannot open {}: {e}", path.display())))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
        self.put_stream(stream, expected, None).await
    }

    /// Stores a small in-memory blob.
    pub async fn put_bytes(&self, bytes: Bytes) -> Result<Digest> {
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(bytes)]);
        Ok(self.put_stream(stream, None, None).await?.0)
    }

    /// Stores a folder manifest and returns its digest.
    pub async fn put_manifest(&self, manifest: &Manifest) -> Result<Digest> {
        self.put_bytes(Bytes::from(manifest.to_canonical_json()))
            .await
    }

    /// Whether a blob exists.
    pub async fn contains(&self, digest: &Digest) -> Result<bool> {
        match self.store.head(&blob_path(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Reads a whole blob and checks its digest.
    pub async fn get_verified(&self, digest: &Digest) -> Result<Bytes> {
        let bytes = match self.store.get(&blob_path(digest)).await {
            Ok(got) => got.bytes().await.map_err(store_err)?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::not_found(format!("artifact {digest} not found")))
            }
            Err(e) => return Err(store_err(e)),
        };
        let actual = Digest::from_bytes(Sha256::digest(&bytes).into());
        if actual != *digest {
            return Err(Error::internal(format!(
                "artifact {digest} is corrupt: its content hashes to {actual}"
            )));
        }
        Ok(bytes)
    }

    /// Streams a blob through sha256 and returns its size if it is intact.
    pub async fn verify(&self, digest: &Digest) -> Result<u64> {
        let got = self
            .store
            .get(&blob_path(digest))
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    Error::not_found(format!("artifact {digest} not found"))
                }
                e => store_err(e),
            })?;
        let mut stream = got.into_stream();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(store_err)? {
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        let actual = Digest::from_bytes(hasher.finalize().into());
        if actual != *digest {
            return Err(Error::internal(format!(
                "artifact {digest} is corrupt: its content hashes to {actual}"
            )));
        }
        Ok(size)
    }

    /// Reads and parses a folder manifest.
    pub async fn get_manifest(&self, digest: &Digest) -> Result<Manifest> {
        let bytes = self.get_verified(digest).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::internal(format!("manifest {digest} is unreadable: {e}")))
    }

    /// The file path of a blob when the store is on the local filesystem (for engines that mmap).
    pub fn local_path(&self, digest: &Digest) -> Option<PathBuf> {
        self.local_root
            .as_ref()
            .map(|root| root.join(blob_path(digest).as_ref()))
    }

    /// Every committed blob.
    pub async fn list(&self) -> Result<Vec<Digest>> {
        let prefix = ObjectPath::from("blobs/sha256");
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(store_err)?;
        Ok(metas
            .iter()
            .filter_map(|m| m.location.filename().and_then(|f| Digest::parse(f).ok()))
            .collect())
    }

    /// Removes uploads that never finished (after a crash). Call before serving.
    pub async fn clean_staging(&self) -> Result<()> {
        if let Some(root) = &self.local_root {
            let tmp = root.join("tmp");
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp)
                    .map_err(|e| Error::internal(format!("cannot clean {}: {e}", tmp.display())))?;
            }
            return Ok(());
        }
        let prefix = ObjectPath::from("tmp");
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(store_err)?;
        for m in metas {
            self.store.delete(&m.location).await.map_err(store_err)?;
        }
        Ok(())
    }

    /// Deletes every blob that no version refers to, directly or through a folder manifest.
    /// Returns how many were deleted. Call only while no pull is in flight (at start-up).
    pub async fn collect_garbage(&self, referenced: &[(ArtifactKind, Digest)]) -> Result<usize> {
        let mut keep: HashSet<Digest> = HashSet::new();
        for (kind, digest) in referenced {
            keep.insert(*digest);
            if *kind == ArtifactKind::Dir {
                match self.get_manifest(digest).await {
                    Ok(m) => keep.extend(m.files.iter().map(|f| f.digest)),
                    Err(e) => {
                        tracing::warn!(%digest, error = %e, "cannot read manifest during garbage collection")
                    }
                }
            }
        }
        let mut deleted = 0;
        for digest in self.list().await? {
            if !keep.contains(&digest) {
                self.store
                    .delete(&blob_path(&digest))
                    .await
                    .map_err(store_err)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blob_is_stored_under_its_digest_and_read_back_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let d = store.put_bytes(Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(
            d.hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(&store.get_verified(&d).await.unwrap()[..], b"hello");
        assert_eq!(store.list().await.unwrap(), vec![d]);
        let path = store.local_path(&d).unwrap();
        std::fs::write(&path, b"hellp").unwrap();
        let err = store.get_verified(&d).await.unwrap_err();
        assert!(err.message.contains("corrupt"), "{}", err.message);
    }

    #[tokio::test]
    async fn digest_mismatch_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let wrong = Digest::from_bytes([7; 32]);
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"data"))]);
        let err = store
            .put_stream(stream, Some(wrong), None)
            .await
            .unwrap_err();
        assert!(err.message.contains("digest mismatch"), "{}", err.message);
        assert!(store.list().await.unwrap().is_empty());
        let leftovers: Vec<_> = walk(dir.path());
        assert!(leftovers.is_empty(), "left files behind: {leftovers:?}");
    }

    #[tokio::test]
    async fn oversize_stream_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 100]))]);
        let err = store.put_stream(stream, None, Some(10)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::PayloadTooLarge);
        assert!(walk(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn garbage_collection_keeps_manifest_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let a = store.put_bytes(Bytes::from_static(b"a")).await.unwrap();
        let orphan = store
            .put_bytes(Bytes::from_static(b"orphan"))
            .await
            .unwrap();
        let manifest = Manifest::new(vec![maas_core::FileEntry {
            path: "a.txt".into(),
            digest: a,
            size_bytes: 1,
        }])
        .unwrap();
        let m = store.put_manifest(&manifest).await.unwrap();
        let deleted = store
            .collect_garbage(&[(ArtifactKind::Dir, m)])
            .await
            .unwrap();
        assert_eq!(deleted, 1);
        assert!(!store.contains(&orphan).await.unwrap());
        assert!(store.contains(&a).await.unwrap() && store.contains(&m).await.unwrap());
    }

    fn walk(p: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        for e in std::fs::read_dir(p).unwrap().flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }
}
