//! The Kinesis sink: `PutRecords` batches, partition key = ride id.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use tracing::{debug, info, warn};

use super::{Encoded, SinkError};
use crate::config::KinesisOptions;
use crate::{Error, Result};

/// Sends batches to one stream.
pub(crate) struct KinesisSink {
    client: Client,
    stream: String,
    options: KinesisOptions,
}

impl KinesisSink {
    /// Wraps `client` (its retries turned off: the log retries itself, spilling meanwhile; its
    /// timeouts set to the request timeout) and checks that the stream exists. An unreachable
    /// endpoint is only a warning: records spill until it is up.
    pub async fn connect(client: Client, stream: String, options: KinesisOptions) -> Result<Self> {
        let config = client
            .config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.request_timeout)
                    .operation_attempt_timeout(options.request_timeout)
                    .operation_timeout(options.request_timeout)
                    .build(),
            )
            .build();
        let client = Client::from_conf(config);
        match client.describe_stream_summary().stream_name(&stream).send().await {
            Ok(output) => {
                let shards = output.stream_description_summary().map(|summary| summary.open_shard_count());
                info!(stream, shards, "kinesis stream found");
            }
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                return Err(Error::StreamNotFound { stream });
            }
            Err(error) => {
                warn!(stream, error = %DisplayErrorContext(&error), "cannot reach kinesis; spilling until it is up");
            }
        }
        Ok(KinesisSink { client, stream, options })
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Records and bytes per `PutRecords` request.
    pub fn batch_limits(&self) -> (usize, usize) {
        (self.options.max_batch_records, self.options.max_batch_bytes)
    }

    /// One `PutRecords` request. Entries Kinesis rejected (throttling, internal failure) come back
    /// as indices to retry.
    pub async fn send(&self, records: &[Encoded]) -> Result<Vec<usize>, SinkError> {
        let entries = records
            .iter()
            .map(|record| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(record.json()))
                    .partition_key(record.key.clone())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| SinkError(format!("build put-records entry: {error}")))?;
        let output = self
            .client
            .put_records()
            .stream_name(&self.stream)
            .set_records(Some(entries))
            .send()
            .await
            .map_err(|error| SinkError(DisplayErrorContext(&error).to_string()))?;
        let results = output.records();
        if results.len() != records.len() {
            return Err(SinkError(format!("kinesis answered {} results for {} records", results.len(), records.len())));
        }
        let failed: Vec<usize> =
            results.iter().enumerate().filter(|(_, result)| result.error_code().is_some()).map(|(i, _)| i).collect();
        if let Some(&first) = failed.first() {
            debug!(
                stream = self.stream,
                failed = failed.len(),
                error_code = results[first].error_code(),
                error = results[first].error_message(),
                "kinesis rejected part of a batch"
            );
        }
        Ok(failed)
    }
}
