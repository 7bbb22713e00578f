//! The `Artifacts` service: run files proxied through the registry (clients need no storage
//! credentials), stored under `<experiment>/<run>/artifacts/<path>` in the artifact store, with
//! each file's sha256 recorded on upload and verified on every download.

use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use lightops_api::registry::v1 as pb;
use lightops_objstore::artifacts::{ArtifactStore, check_key};
use pb::artifacts_server::Artifacts;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, Result};
use crate::service::SharedStore;

/// Largest file accepted, in bytes (models are well under 1 MiB).
pub const MAX_ARTIFACT_BYTES: usize = 256 << 20;
/// Size of download chunks.
const CHUNK: usize = 64 << 10;

/// The artifact store, once open.
pub type SharedFiles = Arc<OnceCell<ArtifactStore>>;

/// Implements `Artifacts`.
#[derive(Debug, Clone)]
pub struct ArtifactService {
    store: SharedStore,
    files: SharedFiles,
}

impl ArtifactService {
    /// A service over the metadata store and the artifact store.
    pub fn new(store: SharedStore, files: SharedFiles) -> Self {
        Self { store, files }
    }

    fn ready(&self) -> Result<(&crate::Store, &ArtifactStore)> {
        Ok((self.store.get().ok_or(Error::NotReady)?, self.files.get().ok_or(Error::NotReady)?))
    }

    async fn key(&self, run_id: &str, path: &str) -> Result<String> {
        check_key(path).map_err(|e| Error::invalid("path", e.to_string()))?;
        let experiment = self.ready()?.0.run_experiment(run_id).await?;
        Ok(format!("{experiment}/{run_id}/artifacts/{path}"))
    }
}

/// The stream type of `Download`.
pub type DownloadStream = Pin<Box<dyn Stream<Item = std::result::Result<pb::DownloadChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Artifacts for ArtifactService {
    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadChunk>>,
    ) -> std::result::Result<Response<pb::ArtifactInfo>, Status> {
        let mut chunks = request.into_inner();
        let Some(first) = chunks.message().await? else {
            return Err(Error::invalid("run_id", "the upload stream was empty").into());
        };
        if first.run_id.is_empty() || first.path.is_empty() {
            return Err(Error::invalid("path", "the first chunk must carry run_id and path").into());
        }
        let key = self.key(&first.run_id, &first.path).await?;
        let mut hasher = Sha256::new();
        let mut data = BytesMut::new();
        let mut next = Some(first.data);
        loop {
            if let Some(bytes) = next.take() {
                if data.len() + bytes.len() > MAX_ARTIFACT_BYTES {
                    return Err(Error::invalid(
                        "data",
                        format!("artifact larger than {} MiB", MAX_ARTIFACT_BYTES >> 20),
                    )
                    .into());
                }
                hasher.update(&bytes);
                data.extend_from_slice(&bytes);
            }
            match chunks.message().await? {
                Some(chunk) => next = Some(chunk.data),
                None => break,
            }
        }
        let (store, files) = self.ready()?;
        let size = data.len() as u64;
        files.put(&key, data.freeze()).await.map_err(Error::from)?;
        let info = pb::ArtifactInfo {
            run_id: first.run_id,
            path: first.path,
            size,
            sha256: hex::encode(hasher.finalize()),
            uri: files.uri(&key),
        };
        store.record_artifact(&info).await?;
        Ok(Response::new(info))
    }

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> std::result::Result<Response<Self::DownloadStream>, Status> {
        let r = request.into_inner();
        let key = self.key(&r.run_id, &r.path).await?;
        let (store, files) = self.ready()?;
        let recorded = store.artifact(&r.run_id, &r.path).await?;
        let data: Bytes = files.get(&key).await.map_err(Error::from)?;
        let actual = hex::encode(Sha256::digest(&data));
        if actual != recorded.sha256 {
            tracing::error!(run_id = %r.run_id, path = %r.path, recorded = %recorded.sha256, actual = %actual, "artifact checksum mismatch");
            return Err(Error::DataLoss(format!(
                "artifact {} of run {}: stored bytes hash to {actual}, recorded sha256 is {}; refusing to serve it",
                r.path, r.run_id, recorded.sha256
            ))
            .into());
        }
        let chunks: Vec<Bytes> = (0..data.len().div_ceil(CHUNK).max(1))
            .map(|i| data.slice(i * CHUNK..((i + 1) * CHUNK).min(data.len())))
            .collect();
        let stream = futures::stream::iter(chunks).map(|data| Ok(pb::DownloadChunk { data: data.to_vec() }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list(
        &self,
        request: Request<pb::ListArtifactsRequest>,
    ) -> std::result::Result<Response<pb::ListArtifactsResponse>, Status> {
        let r = request.into_inner();
        let files = self.ready()?.0.artifacts(&r.run_id).await?;
        Ok(Response::new(pb::ListArtifactsResponse { files }))
    }
}
