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
