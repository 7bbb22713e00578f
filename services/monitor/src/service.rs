//! `lightops.monitor.v1.Monitor` over gRPC.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use lightops_api::monitor::v1 as pb;
use tonic::{Request, Response, Status};

use crate::monitor::Monitor;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct MonitorService {
    monitor: Arc<Monitor>,
}

impl MonitorService {
    /// Serves `monitor`.
    pub fn new(monitor: Arc<Monitor>) -> Self {
        Self { monitor }
    }
}

type AlertStream = Pin<Box<dyn Stream<Item = Result<pb::Alert, Status>> + Send>>;

#[tonic::async_trait]
impl pb::monitor_server::Monitor for MonitorService {
    async fn get_report(&self, request: Request<pb::GetReportRequest>) -> Result<Response<pb::WindowReport>, Status> {
        Ok(Response::new(self.monitor.report(&request.into_inner().window).await?))
    }

    async fn list_reports(
        &self,
        request: Request<pb::ListReportsRequest>,
    ) -> Result<Response<pb::ListReportsResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => 100,
            n => n as usize,
        };
        Ok(Response::new(pb::ListReportsResponse { reports: self.monitor.reports(limit).await? }))
    }

    type WatchAlertsStream = AlertStream;

    async fn watch_alerts(
        &self,
        request: Request<pb::WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        let (past, receiver) = self.monitor.subscribe().await;
        let past = if request.into_inner().replay { past } else { Vec::new() };
        let live = futures::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(alert) => return Some((Ok(alert), receiver)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        let stream = futures::StreamExt::chain(futures::stream::iter(past.into_iter().map(Ok)), live);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ingest_actuals(
        &self,
        request: Request<pb::IngestActualsRequest>,
    ) -> Result<Response<pb::IngestActualsResponse>, Status> {
        Ok(Response::new(self.monitor.actuals(request.into_inner().actuals).await?))
    }

    async fn get_status(&self, _request: Request<pb::GetStatusRequest>) -> Result<Response<pb::MonitorStatus>, Status> {
        Ok(Response::new(self.monitor.status().await))
    }
}
