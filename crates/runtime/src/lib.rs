//! Service plumbing shared by every lightops service: how connections are accepted
//! ([`incoming_nodelay`]) and how logs, traces and metrics leave the process ([`telemetry`]).

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
