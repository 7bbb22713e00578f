//! `lightops-loadgen`: drives a lightops predictor over gRPC (unary or streaming) or HTTP and
//! prints throughput and latency percentiles. See the library docs for what each mode measures.

use std::time::Duration;

use clap::Parser;
use lightops_loadgen::{Client, Mode, Options, parse_duration, run};

/// Load generator for the lightops predictor.
#[derive(Debug, Parser)]
#[command(name = "lightops-loadgen", version, about)]
struct Args {
    /// The predictor, `http://host:port` (http mode: a path may follow, `/predict` by default).
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:9696")]
    url: String,

    /// `unary` (Predict, one ride per call), `stream` (PredictStream) or `http` (POST /predict).
    #[arg(long, env = "LOADGEN_MODE", value_enum, default_value_t = Mode::Unary)]
    mode: Mode,

    /// The client for unary calls: `h2` (the gRPC protocol straight on an h2 connection, the
    /// least CPU per call, so the load generator takes less of the machine from the server) or
    /// `tonic` (tonic's generated client, as an application would call). Streams always use tonic.
    #[arg(long, env = "LOADGEN_CLIENT", value_enum, default_value_t = Client::H2)]
    client: Client,

    /// Separate connections (one HTTP/2 connection, i.e. one gRPC channel, each).
    #[arg(long, env = "LOADGEN_CONNECTIONS", default_value_t = 16)]
    connections: usize,

    /// Unary calls in flight per connection (http mode: TCP connections per connection).
    #[arg(long, env = "LOADGEN_CONCURRENCY_PER_CONNECTION", default_value_t = 1)]
    concurrency_per_connection: usize,

    /// Rides per stream message (stream mode).
    #[arg(long, env = "LOADGEN_BATCH", default_value_t = 1)]
    batch: usize,

    /// Stream messages in flight per connection (stream mode).
    #[arg(long, env = "LOADGEN_WINDOW", default_value_t = 64)]
    window: usize,

    /// How long to measure, after the warm-up (`10s`, `500ms`, `2m`).
    #[arg(long, env = "LOADGEN_DURATION", default_value = "10s", value_parser = parse_duration)]
    duration: Duration,

    /// How long to run before measuring.
    #[arg(long, env = "LOADGEN_WARMUP", default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,

    /// Print one JSON object on stdout (the human summary goes to stderr).
    #[arg(long, env = "LOADGEN_JSON")]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = Options {
        url: args.url,
        mode: args.mode,
        client: args.client,
        connections: args.connections,
        concurrency_per_connection: args.concurrency_per_connection,
        batch: args.batch,
        window: args.window,
        duration: args.duration,
        warmup: args.warmup,
    };
    let report = run(&options).await?;
    if args.json {
        eprintln!("{}", report.summary());
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.summary());
    }
    Ok(())
}
