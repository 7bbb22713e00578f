//! `lightops.predictor.v1.Predictor` over gRPC.

use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use futures::{Stream, StreamExt};
use lightops_api::common::v1 as common;
use lightops_api::predictor::v1 as pb;
use lightops_predlog::{BufferedLog, PredictionLog};
use tokio::sync::mpsc::error::TrySendError;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::metrics::Api;
use crate::predict::{Predictor, RideIn, check_proto_ride};

/// Most rides accepted in one PredictBatch call or one PredictStream message.
pub const MAX_BATCH: usize = 100_000;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct PredictorService {
    predictor: Predictor,
}

impl PredictorService {
    /// Serves predictions from `predictor`.
    pub fn new(predictor: Predictor) -> Self {
        Self { predictor }
    }

    /// Answers a batch of rides; `buffer` is the stream's log buffer, if any (see
    /// [`BufferedLog`]).
    fn batch(
        &self,
        api: Api,
        rides: Vec<common::Ride>,
        within: Within,
        buffer: Option<&mut BufferedLog>,
    ) -> Result<pb::PredictBatchResponse, Error> {
        let started = Instant::now();
        let checked = check_rides(rides, within).map_err(|e| self.predictor.refuse(api, e))?;
        let model = self.predictor.serving().map_err(|e| self.predictor.refuse(api, e))?;
        let durations = self.predictor.answer_with(api, &model, &checked, started, buffer);
        let predictions = checked
            .into_iter()
            .zip(durations)
            .map(|(ride, duration)| pb::Prediction { ride_id: ride.ride_id, duration })
            .collect();
        Ok(pb::PredictBatchResponse {
            predictions,
            model_name: model.id.name.clone(),
            model_version: model.id.version.clone(),
        })
    }
}

/// Where a batch's rides are, for the field paths of errors: the request itself (PredictBatch) or
/// one message of a stream. (The path is written only for an error: a stream message's prefix,
/// formatted up front, was an allocation per message.)
#[derive(Debug, Clone, Copy)]
enum Within {
    Request,
    Message(u64),
}

impl Within {
    /// The path of `field` of the batch.
    fn path(self, field: &str) -> String {
        match self {
            Within::Request => field.to_owned(),
            Within::Message(index) => format!("messages[{index}].{field}"),
        }
    }
}

/// Checks every ride of a batch before any is scored; errors name `rides[i].field`.
fn check_rides(rides: Vec<common::Ride>, within: Within) -> Result<Vec<RideIn>, Error> {
    if rides.is_empty() {
        return Err(Error::invalid(within.path("rides"), "is empty; send at least one ride"));
    }
    if rides.len() > MAX_BATCH {
        return Err(Error::invalid(within.path("rides"), format!("has {} rides; at most {MAX_BATCH}", rides.len())));
    }
    rides
        .into_iter()
        .enumerate()
        .map(|(i, ride)| check_proto_ride(ride).map_err(|e| e.within(&within.path(&format!("rides[{i}]")))))
        .collect()
}

type PredictionStream = Pin<Box<dyn Stream<Item = Result<pb::PredictBatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::predictor_server::Predictor for PredictorService {
    async fn predict(&self, request: Request<pb::PredictRequest>) -> Result<Response<pb::PredictResponse>, Status> {
        let started = Instant::now();
        let api = Api::Predict;
        let Some(ride) = request.into_inner().ride else {
            return Err(self.predictor.refuse(api, Error::invalid("ride", "is missing")).into());
        };
        let checked = check_proto_ride(ride).map_err(|e| self.predictor.refuse(api, e.within("ride")))?;
        let model = self.predictor.serving().map_err(|e| self.predictor.refuse(api, e))?;
        let rides = [checked];
        let duration = self.predictor.answer(api, &model, &rides, started)[0];
        let [ride] = rides;
        Ok(Response::new(pb::PredictResponse {
            prediction: Some(pb::Prediction { ride_id: ride.ride_id, duration }),
            model_name: model.id.name.clone(),
            model_version: model.id.version.clone(),
        }))
    }

    async fn predict_batch(
        &self,
        request: Request<pb::PredictBatchRequest>,
    ) -> Result<Response<pb::PredictBatchResponse>, Status> {
        Ok(Response::new(self.batch(Api::PredictBatch, request.into_inner().rides, Within::Request, None)?))
    }

    type PredictStreamStream = PredictionStream;

    async fn predict_stream(
        &self,
        request: Request<Streaming<pb::PredictBatchRequest>>,
    ) -> Result<Response<Self::PredictStreamStream>, Status> {
        let service = self.clone();
        let mut incoming = request.into_inner();
        let mut index = 0u64;
        // Answers each message as it arrives, in order; a bad message ends the stream with an
        // error naming it, after the answers to the messages before it.
        let output = async_stream_map(move |tx| async move {
            // The stream's records gather in a buffer of its own while messages are ready, and go
            // to the log's queue (one lock for many) before the task can wait: when no message is
            // ready, before waiting for room to send an answer, and at the end (on drop).
            let mut buffer = service.predictor.log.as_ref().map(PredictionLog::buffered);
            let flush = |buffer: &mut Option<BufferedLog>| {
                if let Some(buffer) = buffer {
                    buffer.flush();
                }
            };
            loop {
                // Each message takes a unit of tokio's cooperative budget (as the channel's `send`
                // did before `try_send`), so that a client that keeps the stream full still lets
                // the worker run its other tasks; the buffer is flushed before yielding.
                let message = std::future::poll_fn(|cx| {
                    let Poll::Ready(coop) = tokio::task::coop::poll_proceed(cx) else {
                        flush(&mut buffer);
                        return Poll::Pending;
                    };
                    let next = incoming.poll_next_unpin(cx);
                    if next.is_pending() {
                        flush(&mut buffer);
                    } else {
                        coop.made_progress();
                    }
                    next
                })
                .await;
                let Some(message) = message else { break };
                let reply = match message {
                    Ok(message) => service
                        .batch(Api::PredictStream, message.rides, Within::Message(index), buffer.as_mut())
                        .map_err(Status::from),
                    Err(status) => Err(status),
                };
                index += 1;
                let failed = reply.is_err();
                let sent = match tx.try_send(reply) {
                    Ok(()) => true,
                    Err(TrySendError::Full(reply)) => {
                        flush(&mut buffer);
                        tx.send(reply).await.is_ok()
                    }
                    Err(TrySendError::Closed(_)) => false,
                };
                if !sent || failed {
                    break;
                }
            }
        });
        Ok(Response::new(output))
    }

    async fn get_model(&self, _request: Request<pb::GetModelRequest>) -> Result<Response<pb::ServingModel>, Status> {
        let model = self.predictor.model()?;
        Ok(Response::new(pb::ServingModel {
            model: Some(common::ModelRef {
                name: model.id.name.clone(),
                version: model.id.version.clone(),
                source: model.source.clone(),
                sha256: model.sha256.clone(),
                run_id: model.run_id.clone(),
            }),
            requested: self.predictor.requested.to_string(),
            loaded_at_ms: model.loaded_at_ms,
            features: model.features as u64,
        }))
    }
}

/// Runs `produce` on a task feeding a bounded channel, and returns the channel as a stream.
/// (A small channel keeps the answers in step with the client's reading: backpressure.)
fn async_stream_map<F, Fut>(produce: F) -> PredictionStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::PredictBatchResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
