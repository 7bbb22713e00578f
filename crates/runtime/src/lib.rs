//! Service plumbing shared by every lightops service: how connections are accepted
//! ([`incoming_nodelay`]), what reflection lists ([`reflection`]) and how logs, traces and metrics
//! leave the process ([`telemetry`]).

pub mod telemetry;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;

/// The listener's connections, with Nagle's algorithm off: without it, small answers (a watch
/// event, a job event, a single prediction) wait ~40 ms for the peer's delayed ACK.
pub fn incoming_nodelay(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |stream| {
        if let Ok(stream) = &stream
            && let Err(error) = stream.set_nodelay(true)
        {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
        stream
    })
}

/// The gRPC reflection service of a lightops server: it lists `services` (the lightops services
/// this server answers) plus grpc.health.v1 and reflection itself, described from lightops'
/// descriptor set and tonic-health's.
pub fn reflection(
    services: &[&str],
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::Error,
> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(lightops_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    services
        .iter()
        .chain(&["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"])
        .fold(builder, |builder, name| builder.with_service_name(*name))
        .build_v1()
}

/// Waits until the gRPC server at `url` (`http://host:port`) reports SERVING on grpc.health.v1
/// (the server as a whole), polling every 20 ms; false if `timeout` passes first. For in-process
/// stacks that start a client service only once the server it depends on is ready.
pub async fn wait_serving(url: &str, timeout: std::time::Duration) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let deadline = tokio::time::Instant::now() + timeout;
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url.to_owned()) else { return false };
    while tokio::time::Instant::now() < deadline {
        if let Ok(channel) = endpoint.connect().await {
            let mut client = HealthClient::new(channel);
            if let Ok(answer) = client.check(HealthCheckRequest { service: String::new() }).await
                && answer.into_inner().status == ServingStatus::Serving as i32
            {
                return true;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}
