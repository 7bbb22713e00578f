//! Artifact stores: where models and other run files are kept. A local directory (the embedded
//! default) or `s3://bucket/prefix` through aws-sdk-s3, with endpoint, region and credentials from
//! the standard AWS environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, …), so the
//! same code talks to AWS or to a local S3 server such as moto. With a custom endpoint, requests
//! use path-style addressing (`http://host/bucket/key`), which local servers need.

use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

/// Errors from an artifact store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key is empty, absolute or climbs out of the store with `..`.
    #[error("artifact path {0:?} is not a relative path inside the store")]
    BadKey(String),
    /// No object under that key.
    #[error("artifact {0} not found")]
    NotFound(String),
    /// The root is neither a directory path nor `s3://bucket[/prefix]`.
    #[error("artifact root {0:?}: expected a directory path or s3://bucket/prefix")]
    BadRoot(String),
    /// Local file system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// S3 said no, or could not be reached.
    #[error("s3://{bucket}/{key}: {message}")]
    S3 {
        /// Bucket.
        bucket: String,
        /// Object key.
        key: String,
        /// What the SDK reported.
        message: String,
    },
}

/// An object in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store's root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A local directory or an S3 prefix.
#[derive(Debug, Clone)]
pub enum ArtifactStore {
    /// Files under a directory.
    Local {
        /// The directory.
        root: PathBuf,
    },
    /// Objects under `s3://bucket/prefix/`.
    S3 {
        /// The SDK client.
        client: aws_sdk_s3::Client,
        /// Bucket name.
        bucket: String,
        /// Key prefix without trailing `/` (may be empty).
        prefix: String,
    },
}

impl ArtifactStore {
    /// Opens `root`: a directory path (created if needed) or `s3://bucket[/prefix]`.
    pub async fn open(root: &str) -> Result<Self, StoreError> {
        if let Some(rest) = root.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StoreError::BadRoot(root.to_owned()));
            }
            let shared = aws_config::load_from_env().await;
            let mut config = aws_sdk_s3::config::Builder::from(&shared);
            if shared.endpoint_url().is_some() {
                config = config.force_path_style(true);
            }
            let client = aws_sdk_s3::Client::from_conf(config.build());
            return Ok(Self::S3 { client, bucket: bucket.to_owned(), prefix: prefix.trim_end_matches('/').to_owned() });
        }
        if root.contains("://") && !root.starts_with("file://") {
            return Err(StoreError::BadRoot(root.to_owned()));
        }
        let root = PathBuf::from(root.strip_prefix("file://").unwrap_or(root));
        tokio::fs::create_dir_all(&root).await.map_err(|source| StoreError::Io { path: root.clone(), source })?;
        Ok(Self::Local { root })
    }

    /// The URI of a key, for display and lineage (`/dir/key` or `s3://bucket/prefix/key`).
    pub fn uri(&self, key: &str) -> String {
        match self {
            Self::Local { root } => root.join(key).display().to_string(),
            Self::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{}", self.s3_key(prefix, key)),
        }
    }

    fn s3_key(&self, prefix: &str, key: &str) -> String {
        if prefix.is_empty() { key.to_owned() } else { format!("{prefix}/{key}") }
    }

    /// Writes an object (atomically on local disk: temporary file, then rename).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        check_key(key)?;
        match self {
            Self::Local { root } => {
                let path = root.join(key);
                let io = |source, path: &Path| StoreError::Io { path: path.to_path_buf(), source };
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await.map_err(|e| io(e, dir))?;
                }
                let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
                tokio::fs::write(&tmp, &data).await.map_err(|e| io(e, &tmp))?;
                tokio::fs::rename(&tmp, &path).await.map_err(|e| io(e, &path))
            }
            Self::S3 { client, bucket, prefix } => {
                let s3_key = self.s3_key(prefix, key);
                client
                    .put_object()
                    .bucket(bucket)
                    .key(&s3_key)
                    .body(ByteStream::from(data))
                    .send()
                    .await
                    .map_err(|e| StoreError::S3 { bucket: bucket.clone(), key: s3_key, message: describe(&e) })?;
                Ok(())
            }
        }
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        check_key(key)?;
        match self {
            Self::Local { root } => {
                let path = root.join(key);
                match tokio::fs::read(&path).await {
                    Ok(data) => Ok(Bytes::from(data)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound(self.uri(key))),
                    Err(source) => Err(StoreError::Io { path, source }),
                }
            }
            Self::S3 { client, bucket, prefix } => {
                let s3_key = self.s3_key(prefix, key);
                let failed = |message: String| StoreError::S3 { bucket: bucket.clone(), key: s3_key.clone(), message };
                let output = match client.get_object().bucket(bucket).key(&s3_key).send().await {
                    Ok(output) => output,
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                        return Err(StoreError::NotFound(self.uri(key)));
                    }
                    Err(e) => return Err(failed(describe(&e))),
                };
                let data = output.body.collect().await.map_err(|e| failed(e.to_string()))?;
                Ok(data.into_bytes())
            }
        }
    }

    /// Objects whose key starts with `prefix` (a directory-like prefix such as `run/artifacts/`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        match self {
            Self::Local { root } => {
                let mut out = Vec::new();
                let mut pending = vec![root.clone()];
                while let Some(dir) = pending.pop() {
                    let mut entries = match tokio::fs::read_dir(&dir).await {
                        Ok(entries) => entries,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(source) => return Err(StoreError::Io { path: dir, source }),
                    };
                    while let Some(entry) =
                        entries.next_entry().await.map_err(|source| StoreError::Io { path: dir.clone(), source })?
                    {
                        let path = entry.path();
                        let meta =
                            entry.metadata().await.map_err(|source| StoreError::Io { path: path.clone(), source })?;
                        if meta.is_dir() {
                            pending.push(path);
                        } else if let Ok(relative) = path.strip_prefix(root) {
                            let key = relative.to_string_lossy().replace('\\', "/");
                            if key.starts_with(prefix) && !key.contains(".tmp.") {
                                out.push(ObjectInfo { key, size: meta.len() });
                            }
                        }
                    }
                }
                out.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(out)
            }
            Self::S3 { client, bucket, prefix: root_prefix } => {
                let full = self.s3_key(root_prefix, prefix);
                let strip = if root_prefix.is_empty() { 0 } else { root_prefix.len() + 1 };
                let mut out = Vec::new();
                let mut pages = client.list_objects_v2().bucket(bucket).prefix(&full).into_paginator().send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| StoreError::S3 {
                        bucket: bucket.clone(),
                        key: full.clone(),
                        message: describe(&e),
                    })?;
                    for object in page.contents() {
                        if let Some(key) = object.key() {
                            out.push(ObjectInfo {
                                key: key[strip.min(key.len())..].to_owned(),
                                size: object.size().unwrap_or_default() as u64,
                            });
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Keys are relative, `/`-separated, without empty, `.` or `..` segments or backslashes.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let clean = !key.is_empty()
        && !key.contains('\\')
        && key.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    if clean { Ok(()) } else { Err(StoreError::BadKey(key.to_owned())) }
}

fn describe<E: std::error::Error>(error: &E) -> String {
    // The SDK's Display is terse ("service error"); include the source chain.
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_store() {
        assert!(check_key("1/abc/artifacts/model/model.json").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "a/./b", "a\\b", "a//b", "a/"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn local_store_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ArtifactStore::open(&dir.path().display().to_string()).await.expect("open");
        store.put("r1/artifacts/model.json", Bytes::from_static(b"{}")).await.expect("put");
        store.put("r2/artifacts/other.bin", Bytes::from_static(b"xyz")).await.expect("put");
        assert_eq!(store.get("r1/artifacts/model.json").await.expect("get"), Bytes::from_static(b"{}"));
        let listed = store.list("r1/").await.expect("list");
        assert_eq!(listed, vec![ObjectInfo { key: "r1/artifacts/model.json".into(), size: 2 }]);
        assert!(matches!(store.get("r1/artifacts/missing").await, Err(StoreError::NotFound(_))));
        assert!(matches!(store.put("../escape", Bytes::new()).await, Err(StoreError::BadKey(_))));
    }
}
