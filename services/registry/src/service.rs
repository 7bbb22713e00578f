//! The gRPC services over the [`Store`]: request validation, then one store call each.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use lightops_api::registry::v1 as pb;
use pb::registry_server::Registry;
use pb::tracking_server::Tracking;
use tokio::sync::{OnceCell, broadcast};
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::filter::{parse_filter, parse_order_by};
use crate::store::Store;
use crate::uri::{ModelUri, STAGES};

/// The store, once it is open (health says NOT_SERVING until then).
pub type SharedStore = Arc<OnceCell<Store>>;

/// Implements both `Tracking` and `Registry`.
#[derive(Debug, Clone)]
pub struct RegistryService {
    store: SharedStore,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl RegistryService {
    /// A service answering from `store` once it is set. Watch streams end when `closing`
    /// turns true (or its sender is dropped): tonic's graceful shutdown waits for open streams,
    /// so without this one subscriber would hold up every shutdown.
    pub fn new(store: SharedStore, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { store, closing }
    }

    fn store(&self) -> Result<&Store> {
        self.store.get().ok_or(Error::NotReady)
    }
}

fn required<'a>(field: &'static str, value: &'a str) -> Result<&'a str> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Ok(value)
}

fn run_status(value: i32) -> Result<Option<&'static str>> {
    match pb::RunStatus::try_from(value) {
        Ok(pb::RunStatus::Unspecified) => Ok(None),
        Ok(pb::RunStatus::Running) => Ok(Some("RUNNING")),
        Ok(pb::RunStatus::Scheduled) => Ok(Some("SCHEDULED")),
        Ok(pb::RunStatus::Finished) => Ok(Some("FINISHED")),
        Ok(pb::RunStatus::Failed) => Ok(Some("FAILED")),
        Ok(pb::RunStatus::Killed) => Ok(Some("KILLED")),
        Err(_) => Err(Error::invalid("status", format!("{value} is not a run status"))),
    }
}

fn stage_name(value: i32) -> Result<&'static str> {
    usize::try_from(value)
        .ok()
        .and_then(|i| STAGES.get(i).copied())
        .ok_or_else(|| Error::invalid("stage", format!("{value} is not a stage")))
}

fn version_number(value: i64) -> Result<i64> {
    if value < 1 {
        return Err(Error::invalid("version", format!("{value}: versions start at 1")));
    }
    Ok(value)
}

type Reply<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl Tracking for RegistryService {
    async fn create_experiment(&self, request: Request<pb::CreateExperimentRequest>) -> Reply<pb::Experiment> {
        let r = request.into_inner();
        let experiment = self.store()?.create_experiment(required("name", &r.name)?, &r.artifact_location).await?;
        Ok(Response::new(experiment))
    }

    async fn get_experiment(&self, request: Request<pb::GetExperimentRequest>) -> Reply<pb::Experiment> {
        let store = self.store()?;
        let experiment = match request.into_inner().by {
            Some(pb::get_experiment_request::By::ExperimentId(id)) => {
                store.experiment_by_id(required("experiment_id", &id)?).await?
            }
            Some(pb::get_experiment_request::By::Name(name)) => {
                store.experiment_by_name(required("name", &name)?).await?
            }
            None => return Err(Error::invalid("by", "give experiment_id or name").into()),
        };
        Ok(Response::new(experiment))
    }

    async fn list_experiments(
        &self,
        request: Request<pb::ListExperimentsRequest>,
    ) -> Reply<pb::ListExperimentsResponse> {
        let r = request.into_inner();
        let (experiments, next_page_token) = self.store()?.list_experiments(r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListExperimentsResponse { experiments, next_page_token }))
    }

    async fn create_run(&self, request: Request<pb::CreateRunRequest>) -> Reply<pb::Run> {
        let r = request.into_inner();
        let run = self
            .store()?
            .create_run(required("experiment_id", &r.experiment_id)?, &r.run_name, r.start_time_ms, &r.tags)
            .await?;
        Ok(Response::new(run))
    }

    async fn get_run(&self, request: Request<pb::GetRunRequest>) -> Reply<pb::Run> {
        let r = request.into_inner();
        Ok(Response::new(self.store()?.run(required("run_id", &r.run_id)?).await?))
    }

    async fn update_run(&self, request: Request<pb::UpdateRunRequest>) -> Reply<pb::Run> {
        let r = request.into_inner();
        let status = run_status(r.status)?;
        let end = (r.end_time_ms > 0).then_some(r.end_time_ms);
        let name = (!r.run_name.is_empty()).then_some(r.run_name.as_str());
        Ok(Response::new(self.store()?.update_run(required("run_id", &r.run_id)?, status, end, name).await?))
    }

    async fn delete_run(&self, request: Request<pb::DeleteRunRequest>) -> Reply<pb::DeleteRunResponse> {
        let r = request.into_inner();
        self.store()?.delete_run(required("run_id", &r.run_id)?).await?;
        Ok(Response::new(pb::DeleteRunResponse {}))
    }

    async fn log_batch(&self, request: Request<pb::LogBatchRequest>) -> Reply<pb::LogBatchResponse> {
        let r = request.into_inner();
        self.store()?.log_batch(required("run_id", &r.run_id)?, &r.metrics, &r.params, &r.tags).await?;
        Ok(Response::new(pb::LogBatchResponse {}))
    }

    async fn get_metric_history(
        &self,
        request: Request<pb::GetMetricHistoryRequest>,
    ) -> Reply<pb::GetMetricHistoryResponse> {
        let r = request.into_inner();
        let metrics = self.store()?.metric_history(required("run_id", &r.run_id)?, required("key", &r.key)?).await?;
        Ok(Response::new(pb::GetMetricHistoryResponse { metrics }))
    }

    async fn search_runs(&self, request: Request<pb::SearchRunsRequest>) -> Reply<pb::SearchRunsResponse> {
        let r = request.into_inner();
        let filter = parse_filter(&r.filter).map_err(|e| Error::invalid("filter", e.to_string()))?;
        let order_by = r
            .order_by
            .iter()
            .enumerate()
            .map(|(i, o)| parse_order_by(o).map_err(|e| Error::invalid("order_by", format!("order_by[{i}] {e}"))))
            .collect::<Result<Vec<_>>>()?;
        let (runs, next_page_token) =
            self.store()?.search_runs(&r.experiment_ids, &filter, &order_by, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::SearchRunsResponse { runs, next_page_token }))
    }
}

/// The stream type of `Watch`.
pub type WatchStream = Pin<Box<dyn Stream<Item = std::result::Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Registry for RegistryService {
    async fn create_registered_model(
        &self,
        request: Request<pb::CreateRegisteredModelRequest>,
    ) -> Reply<pb::RegisteredModel> {
        let r = request.into_inner();
        Ok(Response::new(self.store()?.create_registered_model(&r.name, &r.description, &r.tags).await?))
    }

    async fn get_registered_model(
        &self,
        request: Request<pb::GetRegisteredModelRequest>,
    ) -> Reply<pb::RegisteredModel> {
        let r = request.into_inner();
        Ok(Response::new(self.store()?.registered_model(required("name", &r.name)?).await?))
    }

    async fn list_registered_models(
        &self,
        request: Request<pb::ListRegisteredModelsRequest>,
    ) -> Reply<pb::ListRegisteredModelsResponse> {
        let r = request.into_inner();
        let (models, next_page_token) =
            self.store()?.list_registered_models(&r.name_contains, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListRegisteredModelsResponse { models, next_page_token }))
    }

    async fn update_registered_model(
        &self,
        request: Request<pb::UpdateRegisteredModelRequest>,
    ) -> Reply<pb::RegisteredModel> {
        let r = request.into_inner();
        let model = self
            .store()?
            .update_registered_model(required("name", &r.name)?, r.description.as_deref(), &r.set_tags)
            .await?;
        Ok(Response::new(model))
    }

    async fn delete_registered_model(
        &self,
        request: Request<pb::DeleteRegisteredModelRequest>,
    ) -> Reply<pb::DeleteRegisteredModelResponse> {
        let r = request.into_inner();
        self.store()?.delete_registered_model(required("name", &r.name)?).await?;
        Ok(Response::new(pb::DeleteRegisteredModelResponse {}))
    }

    async fn create_model_version(&self, request: Request<pb::CreateModelVersionRequest>) -> Reply<pb::ModelVersion> {
        let r = request.into_inner();
        let version = self
            .store()?
            .create_model_version(&r.name, &r.run_id, &r.source, &r.sha256, &r.description, r.create_model)
            .await?;
        Ok(Response::new(version))
    }

    async fn get_model_version(&self, request: Request<pb::GetModelVersionRequest>) -> Reply<pb::ModelVersion> {
        let r = request.into_inner();
        Ok(Response::new(self.store()?.model_version(required("name", &r.name)?, version_number(r.version)?).await?))
    }

    async fn list_model_versions(
        &self,
        request: Request<pb::ListModelVersionsRequest>,
    ) -> Reply<pb::ListModelVersionsResponse> {
        let r = request.into_inner();
        let versions = self.store()?.list_model_versions(required("name", &r.name)?).await?;
        Ok(Response::new(pb::ListModelVersionsResponse { versions }))
    }

    async fn transition_stage(&self, request: Request<pb::TransitionStageRequest>) -> Reply<pb::ModelVersion> {
        let r = request.into_inner();
        let version = self
            .store()?
            .transition_stage(
                required("name", &r.name)?,
                version_number(r.version)?,
                stage_name(r.stage)?,
                r.archive_existing_versions,
            )
            .await?;
        Ok(Response::new(version))
    }

    async fn set_alias(&self, request: Request<pb::SetAliasRequest>) -> Reply<pb::ModelVersion> {
        let r = request.into_inner();
        Ok(Response::new(
            self.store()?.set_alias(required("name", &r.name)?, &r.alias, version_number(r.version)?).await?,
        ))
    }

    async fn delete_alias(&self, request: Request<pb::DeleteAliasRequest>) -> Reply<pb::DeleteAliasResponse> {
        let r = request.into_inner();
        self.store()?.delete_alias(required("name", &r.name)?, required("alias", &r.alias)?).await?;
        Ok(Response::new(pb::DeleteAliasResponse {}))
    }

    async fn resolve(&self, request: Request<pb::ResolveRequest>) -> Reply<pb::ModelVersion> {
        let uri = ModelUri::parse(&request.into_inner().uri)?;
        Ok(Response::new(self.store()?.resolve(&uri).await?))
    }

    type WatchStream = WatchStream;

    /// Sends the current target, then a new event whenever what the URI resolves to changes.
    async fn watch(&self, request: Request<pb::WatchRequest>) -> Reply<Self::WatchStream> {
        let uri = ModelUri::parse(&request.into_inner().uri)?;
        let store = self.store()?.clone();
        // Subscribe before the first resolution so no change between the two is missed.
        let changes = store.subscribe();
        let current = resolve_or_none(&store, &uri).await?;
        let state = (store, uri, current.clone(), (changes, self.closing.clone()));
        let updates = futures::stream::unfold(state, |(store, uri, mut last, (mut changes, mut closing))| async move {
            loop {
                let change = tokio::select! {
                    change = changes.recv() => change,
                    _ = closing.wait_for(|closing| *closing) => return None,
                };
                match change {
                    Ok(name) if name != uri.name() => continue,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
                match resolve_or_none(&store, &uri).await {
                    Ok(now) if now == last => continue,
                    Ok(now) => {
                        last = now.clone();
                        return Some((Ok(pb::WatchEvent { version: now }), (store, uri, last, (changes, closing))));
                    }
                    Err(e) => return Some((Err(Status::from(e)), (store, uri, last, (changes, closing)))),
                }
            }
        });
        let first = futures::stream::once(async move { Ok(pb::WatchEvent { version: current }) });
        Ok(Response::new(Box::pin(futures::StreamExt::chain(first, updates))))
    }
}

async fn resolve_or_none(store: &Store, uri: &ModelUri) -> Result<Option<pb::ModelVersion>> {
    match store.resolve(uri).await {
        Ok(version) => Ok(Some(version)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
