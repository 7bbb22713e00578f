//! Load generator for the lightops predictor.
//!
//! Three ways of driving a predictor:
//! - [`Mode::Unary`]: `Predictor/Predict`, one ride per call, `concurrency_per_connection` calls in
//!   flight on each of `connections` HTTP/2 connections; every call's latency is recorded.
//! - [`Mode::Stream`]: one `Predictor/PredictStream` per connection, keeping a window of
//!   [`Options::window`] messages of `batch` rides in flight; each message's round trip is
//!   recorded, and throughput is counted in predictions.
//! - [`Mode::Http`]: the seed-compatible `POST /predict` over HTTP/1.1 keep-alive, one request in
//!   flight per TCP connection (`connections × concurrency_per_connection` connections).
//!
//! Each gRPC connection is one HTTP/2 connection that multiplexes all its calls. Unary calls go
//! through [`Client::H2`], a lean caller on the `h2` crate (see [`h2grpc`] for why), or through
//! tonic's client with [`Client::Tonic`]; streams always use tonic. Calls completing during the
//! warm-up are not counted. Failed calls (a non-OK status, a non-2xx answer, a broken connection,
//! an answer for another ride) are counted as errors and the run goes on.

pub mod h2grpc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use lightops_api::common::v1::Ride;
use lightops_api::predictor::v1::predictor_client::PredictorClient;
use lightops_api::predictor::v1::{PredictBatchRequest, PredictRequest, PredictResponse};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// How the predictor is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `Predict`: one ride per gRPC call.
    Unary,
    /// `PredictStream`: a window of messages in flight on one bidirectional stream per connection.
    Stream,
    /// `POST /predict` with the workshop's JSON, HTTP/1.1 keep-alive.
    Http,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Unary => "unary",
            Mode::Stream => "stream",
            Mode::Http => "http",
        })
    }
}

/// Which gRPC client makes unary calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// [`h2grpc`]: the protocol straight on an h2 connection, for the least client CPU per call.
    H2,
    /// tonic's generated client over a `Channel`, as an application would call the predictor.
    Tonic,
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Client::H2 => "h2",
            Client::Tonic => "tonic",
        })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The predictor, `http://host:port` (for [`Mode::Http`] a path may follow; `/predict` by
    /// default).
    pub url: String,
    /// How the predictor is driven.
    pub mode: Mode,
    /// The client for unary calls ([`Mode::Unary`] only).
    pub client: Client,
    /// Separate connections.
    pub connections: usize,
    /// Calls in flight per connection (unary), or TCP connections per connection slot (http).
    pub concurrency_per_connection: usize,
    /// Rides per stream message (stream mode only).
    pub batch: usize,
    /// Messages in flight per stream (stream mode only).
    pub window: usize,
    /// How long to measure, after the warm-up.
    pub duration: Duration,
    /// How long to run before measuring.
    pub warmup: Duration,
}

/// The outcome of a run. Latencies are milliseconds: per call (unary, http) or per stream message
/// (stream).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The mode that ran.
    pub mode: Mode,
    /// The client that made the calls: the one asked for in unary mode, `tonic` for streams;
    /// absent for http.
    pub client: Option<Client>,
    /// Connections used.
    pub connections: usize,
    /// Successful calls (unary, http) or stream messages answered (stream).
    pub requests: u64,
    /// Rides predicted.
    pub predictions: u64,
    /// Length of the measured interval.
    pub seconds: f64,
    /// `requests / seconds`.
    pub rps: f64,
    /// `predictions / seconds`.
    pub predictions_per_s: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 90th percentile latency.
    pub p90_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Largest latency seen.
    pub max_ms: f64,
    /// Failed calls, failed streams or failed HTTP requests.
    pub errors: u64,
}

impl Report {
    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "{}{} x{}: {} requests, {} predictions in {:.2} s: {:.0} req/s, {:.0} predictions/s; latency p50 {:.3} ms, \
             p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {} errors",
            self.mode,
            self.client.map(|client| format!(" ({client} client)")).unwrap_or_default(),
            self.connections,
            self.requests,
            self.predictions,
            self.seconds,
            self.rps,
            self.predictions_per_s,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms,
            self.errors
        )
    }
}

/// When the measured interval starts and ends; shared by every worker.
#[derive(Debug, Clone, Copy)]
struct Clock {
    measure_from: Instant,
    deadline: Instant,
}

impl Clock {
    fn running(&self) -> bool {
        Instant::now() < self.deadline
    }

    /// When a call still unanswered is abandoned: a while after the deadline, so that streams
    /// can drain their windows but a stuck server cannot hang the run.
    fn give_up(&self) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.deadline + Duration::from_secs(5))
    }

    /// Whether a call that completed at `at` counts.
    fn counts(&self, at: Instant) -> bool {
        at >= self.measure_from && at <= self.deadline
    }
}

/// What one worker saw.
struct Tally {
    latencies_us: Histogram<u64>,
    requests: u64,
    predictions: u64,
    errors: u64,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        // 1 µs .. 1 h, 3 significant digits.
        let latencies_us = Histogram::new_with_bounds(1, 3_600_000_000, 3).context("latency histogram")?;
        Ok(Self { latencies_us, requests: 0, predictions: 0, errors: 0 })
    }

    fn record(&mut self, clock: &Clock, started: Instant, predictions: u64) {
        let done = Instant::now();
        if clock.counts(done) {
            let micros = u64::try_from(done.duration_since(started).as_micros()).unwrap_or(u64::MAX);
            self.latencies_us.saturating_record(micros.max(1));
            self.requests += 1;
            self.predictions += predictions;
        }
    }

    fn error(&mut self, clock: &Clock) {
        if clock.counts(Instant::now()) {
            self.errors += 1;
        }
    }

    fn merge(&mut self, other: &Tally) -> anyhow::Result<()> {
        self.latencies_us.add(&other.latencies_us).context("merging latency histograms")?;
        self.requests += other.requests;
        self.predictions += other.predictions;
        self.errors += other.errors;
        Ok(())
    }
}

/// A small fixed set of rides to cycle through: common green-taxi zones and a spread of
/// distances, from a linear congruential generator (deterministic, no dependency).
#[derive(Debug)]
pub struct RideSet {
    rides: Vec<(i64, i64, f64)>,
}

impl RideSet {
    /// Zones the sample data sees often.
    const ZONES: [i64; 16] = [74, 75, 41, 42, 166, 7, 82, 95, 129, 260, 43, 244, 116, 97, 255, 181];

    /// `len` rides.
    pub fn new(len: usize) -> Self {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            state >> 33
        };
        let zones = Self::ZONES.len() as u64;
        let rides = (0..len.max(1))
            .map(|_| {
                let pu = Self::ZONES[usize::try_from(next() % zones).unwrap_or(0)];
                let dropoff = Self::ZONES[usize::try_from(next() % zones).unwrap_or(0)];
                let tenths = next() % 200;
                (pu, dropoff, 0.5 + tenths as f64 / 10.0)
            })
            .collect();
        Self { rides }
    }

    /// The `n`-th ride of `worker`, with ride_id `r{worker}-{n}`.
    pub fn ride(&self, worker: usize, n: u64) -> Ride {
        let index = (worker as u64).wrapping_mul(7).wrapping_add(n) % self.rides.len() as u64;
        let (pu_location_id, do_location_id, trip_distance) = self.rides[usize::try_from(index).unwrap_or(0)];
        Ride {
            ride_id: format!("r{worker}-{n}"),
            pu_location_id,
            do_location_id,
            trip_distance,
            event_time_ms: now_ms(),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs the load described by `options` and reports what was measured.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    if options.connections == 0 || options.concurrency_per_connection == 0 || options.batch == 0 || options.window == 0
    {
        bail!("connections, concurrency per connection, batch and window must all be at least 1");
    }
    if options.duration.is_zero() {
        bail!("the duration must be longer than zero");
    }
    let rides = Arc::new(RideSet::new(256));
    let mut workers = tokio::task::JoinSet::new();
    // Connect first, so connection setup is neither measured nor a reason for errors later.
    let clock = match options.mode {
        Mode::Unary if options.client == Client::H2 => {
            let mut connections = Vec::with_capacity(options.connections);
            for _ in 0..options.connections {
                connections.push(h2grpc::Connection::connect(&options.url).await?);
            }
            let clock = start_clock(options);
            for (index, connection) in connections.into_iter().enumerate() {
                let predict = connection.method("/lightops.predictor.v1.Predictor/Predict")?;
                for slot in 0..options.concurrency_per_connection {
                    let worker = index * options.concurrency_per_connection + slot;
                    let caller = UnaryCaller::H2 { connection: connection.clone(), predict: predict.clone() };
                    workers.spawn(unary_worker(caller, worker, rides.clone(), clock));
                }
            }
            clock
        }
        Mode::Unary | Mode::Stream => {
            let channels = connect_channels(&options.url, options.connections).await?;
            let clock = start_clock(options);
            for (connection, channel) in channels.into_iter().enumerate() {
                if options.mode == Mode::Unary {
                    for slot in 0..options.concurrency_per_connection {
                        let worker = connection * options.concurrency_per_connection + slot;
                        let caller = UnaryCaller::Tonic(PredictorClient::new(channel.clone()));
                        workers.spawn(unary_worker(caller, worker, rides.clone(), clock));
                    }
                } else {
                    let client = PredictorClient::new(channel);
                    let (batch, window) = (options.batch, options.window);
                    workers.spawn(stream_worker(client, connection, rides.clone(), batch, window, clock));
                }
            }
            clock
        }
        Mode::Http => {
            let target = HttpTarget::parse(&options.url)?;
            let total = options.connections * options.concurrency_per_connection;
            let mut connections = Vec::with_capacity(total);
            for _ in 0..total {
                connections.push(target.connect().await?);
            }
            let clock = start_clock(options);
            for (worker, connection) in connections.into_iter().enumerate() {
                workers.spawn(http_worker(target.clone(), connection, worker, rides.clone(), clock));
            }
            clock
        }
    };
    let mut total = Tally::new()?;
    while let Some(joined) = workers.join_next().await {
        let tally = joined.context("a worker panicked")??;
        total.merge(&tally)?;
    }
    let seconds = clock.deadline.duration_since(clock.measure_from).as_secs_f64();
    let ms = |q: f64| total.latencies_us.value_at_quantile(q) as f64 / 1000.0;
    let empty = total.latencies_us.is_empty();
    let connections = match options.mode {
        Mode::Http => options.connections * options.concurrency_per_connection,
        Mode::Unary | Mode::Stream => options.connections,
    };
    let client = match options.mode {
        Mode::Unary => Some(options.client),
        Mode::Stream => Some(Client::Tonic),
        Mode::Http => None,
    };
    Ok(Report {
        mode: options.mode,
        client,
        connections,
        requests: total.requests,
        predictions: total.predictions,
        seconds,
        rps: total.requests as f64 / seconds,
        predictions_per_s: total.predictions as f64 / seconds,
        p50_ms: if empty { 0.0 } else { ms(0.5) },
        p90_ms: if empty { 0.0 } else { ms(0.9) },
        p99_ms: if empty { 0.0 } else { ms(0.99) },
        max_ms: if empty { 0.0 } else { total.latencies_us.max() as f64 / 1000.0 },
        errors: total.errors,
    })
}

fn start_clock(options: &Options) -> Clock {
    let measure_from = Instant::now() + options.warmup;
    Clock { measure_from, deadline: measure_from + options.duration }
}

async fn connect_channels(url: &str, connections: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid url {url:?}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        // Each `connect` opens its own TCP (HTTP/2) connection.
        channels.push(endpoint.connect().await.with_context(|| format!("cannot connect to {url}"))?);
    }
    Ok(channels)
}

/// Makes unary `Predict` calls through one of the two clients.
enum UnaryCaller {
    H2 { connection: h2grpc::Connection, predict: http::Uri },
    Tonic(PredictorClient<Channel>),
}

/// Why a call gave no answer.
enum CallFailed {
    /// The server refused it, or the stream broke.
    Call,
    /// The connection is gone: every later call on it would fail at once.
    ConnectionLost,
}

impl UnaryCaller {
    async fn predict(&mut self, request: &PredictRequest) -> Result<PredictResponse, CallFailed> {
        match self {
            UnaryCaller::H2 { connection, predict } => connection
                .unary(predict, request)
                .await
                .map_err(|error| if error.connection_lost() { CallFailed::ConnectionLost } else { CallFailed::Call }),
            // A tonic channel reconnects by itself; while it cannot, calls fail at once with
            // UNAVAILABLE.
            UnaryCaller::Tonic(client) => {
                client.predict(request.clone()).await.map(tonic::Response::into_inner).map_err(|status| {
                    if status.code() == tonic::Code::Unavailable {
                        CallFailed::ConnectionLost
                    } else {
                        CallFailed::Call
                    }
                })
            }
        }
    }

    /// Connects again after [`CallFailed::ConnectionLost`] (after a pause, so that a server that
    /// is down does not make the worker spin); a failure shows as the next call's. (A tonic
    /// channel connects again by itself: only the pause.)
    async fn reconnect(&mut self) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let UnaryCaller::H2 { connection, .. } = self {
            let _ = connection.reconnect().await;
        }
    }
}

async fn unary_worker(
    mut caller: UnaryCaller,
    worker: usize,
    rides: Arc<RideSet>,
    clock: Clock,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut n = 0u64;
    while clock.running() {
        let request = PredictRequest { ride: Some(rides.ride(worker, n)) };
        n += 1;
        let started = Instant::now();
        match tokio::time::timeout_at(clock.give_up(), caller.predict(&request)).await {
            Ok(Ok(response)) if answers(&request, &response) => tally.record(&clock, started, 1),
            Ok(Ok(_) | Err(CallFailed::Call)) => tally.error(&clock),
            Ok(Err(CallFailed::ConnectionLost)) => {
                tally.error(&clock);
                caller.reconnect().await;
            }
            Err(_) => break,
        }
    }
    Ok(tally)
}

/// Whether `response` is a prediction for the ride of `request`.
fn answers(request: &PredictRequest, response: &PredictResponse) -> bool {
    match (&request.ride, &response.prediction) {
        (Some(ride), Some(prediction)) => prediction.ride_id == ride.ride_id && prediction.duration.is_finite(),
        _ => false,
    }
}

async fn stream_worker(
    client: PredictorClient<Channel>,
    connection: usize,
    rides: Arc<RideSet>,
    batch: usize,
    window: usize,
    clock: Clock,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let stream = StreamSetup { connection, rides, batch, window, clock, next_ride: Arc::new(AtomicU64::new(0)) };
    // A failed stream is counted and replaced while there is time left.
    while clock.running() {
        if one_stream(client.clone(), &stream, &mut tally).await.is_err() {
            tally.error(&clock);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(tally)
}

/// What every stream of one connection shares.
struct StreamSetup {
    connection: usize,
    rides: Arc<RideSet>,
    batch: usize,
    window: usize,
    clock: Clock,
    /// Numbers the rides of this connection across successive streams.
    next_ride: Arc<AtomicU64>,
}

/// Runs one `PredictStream` until the deadline: a sender task keeps `window` messages in flight,
/// this task reads the answers (which come in request order) and times each message.
async fn one_stream(
    mut client: PredictorClient<Channel>,
    setup: &StreamSetup,
    tally: &mut Tally,
) -> Result<(), tonic::Status> {
    let StreamSetup { connection, batch, window, clock, .. } = *setup;
    let (requests_tx, requests_rx) = tokio::sync::mpsc::channel::<PredictBatchRequest>(window);
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let permits = Arc::new(tokio::sync::Semaphore::new(window));
    let sender = {
        let permits = permits.clone();
        let rides = setup.rides.clone();
        let next_ride = setup.next_ride.clone();
        tokio::spawn(async move {
            while clock.running() {
                let Ok(permit) = permits.acquire().await else { break };
                permit.forget();
                let first = next_ride.fetch_add(batch as u64, Ordering::Relaxed);
                let rides = (first..first + batch as u64).map(|n| rides.ride(connection, n)).collect();
                // The send time is queued before the message, so its answer always finds it.
                if sent_tx.send(Instant::now()).is_err()
                    || requests_tx.send(PredictBatchRequest { rides }).await.is_err()
                {
                    break;
                }
            }
            // Dropping `requests_tx` ends the request stream; the server then ends its side.
        })
    };
    let result = async {
        let mut answers =
            client.predict_stream(tokio_stream::wrappers::ReceiverStream::new(requests_rx)).await?.into_inner();
        while let Ok(answer) = tokio::time::timeout_at(clock.give_up(), answers.message()).await {
            let Some(answer) = answer? else { break };
            permits.add_permits(1);
            let Some(started) = sent_rx.recv().await else { break };
            if answer.predictions.len() == batch {
                tally.record(&clock, started, batch as u64);
            } else {
                tally.error(&clock);
            }
        }
        Ok(())
    }
    .await;
    sender.abort();
    result
}

/// Where HTTP requests go.
#[derive(Debug, Clone)]
struct HttpTarget {
    address: String,
    host: String,
    path: String,
}

impl HttpTarget {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("http mode needs an http:// url, got {url:?}");
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            bail!("no host in {url:?}");
        }
        let path = if path.is_empty() || path == "/" { "/predict" } else { path };
        let address = if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
        Ok(Self { address, host: authority.to_owned(), path: path.to_owned() })
    }

    async fn connect(&self) -> anyhow::Result<BufReader<TcpStream>> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&self.address))
            .await
            .with_context(|| format!("connecting to {} timed out", self.address))?
            .with_context(|| format!("cannot connect to {}", self.address))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        Ok(BufReader::new(stream))
    }
}

async fn http_worker(
    target: HttpTarget,
    mut connection: BufReader<TcpStream>,
    worker: usize,
    rides: Arc<RideSet>,
    clock: Clock,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut n = 0u64;
    let mut body = Vec::new();
    while clock.running() {
        let ride = rides.ride(worker, n);
        n += 1;
        let json = format!(
            r#"{{"ride_id":"{}","ride":{{"PULocationID":{},"DOLocationID":{},"trip_distance":{}}}}}"#,
            ride.ride_id, ride.pu_location_id, ride.do_location_id, ride.trip_distance
        );
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            target.path,
            target.host,
            json.len()
        );
        let started = Instant::now();
        let exchange = http_exchange(&mut connection, request.as_bytes(), &mut body);
        let exchanged = match tokio::time::timeout_at(clock.give_up(), exchange).await {
            Ok(exchanged) => exchanged,
            Err(elapsed) => Err(elapsed.into()),
        };
        match &exchanged {
            Ok(answer) if (200..300).contains(&answer.status) => tally.record(&clock, started, 1),
            Ok(_) | Err(_) => tally.error(&clock),
        }
        match exchanged {
            Ok(answer) if answer.keep_alive => {}
            // The server closes after each answer (gunicorn's sync workers do): reconnect, as
            // wrk does, without counting an error.
            Ok(_) | Err(_) => match target.connect().await {
                Ok(fresh) => connection = fresh,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
    Ok(tally)
}

/// What came back for one HTTP request.
struct HttpAnswer {
    status: u16,
    /// False when the server said `Connection: close` (or answered with HTTP/1.0 without
    /// keep-alive).
    keep_alive: bool,
}

/// Writes one request and reads its answer (status line, headers, a Content-Length body).
async fn http_exchange(
    connection: &mut BufReader<TcpStream>,
    request: &[u8],
    body: &mut Vec<u8>,
) -> std::io::Result<HttpAnswer> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    connection.get_mut().write_all(request).await?;
    let mut line = String::new();
    if connection.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 =
        line.split_whitespace().nth(1).and_then(|code| code.parse().ok()).ok_or_else(|| invalid("bad status line"))?;
    let mut keep_alive = !line.starts_with("HTTP/1.0");
    let mut content_length = None;
    loop {
        line.clear();
        if connection.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(value.trim().parse::<usize>().map_err(|_| invalid("bad content-length"))?);
            } else if name.eq_ignore_ascii_case("connection") {
                let value = value.trim();
                keep_alive = if value.eq_ignore_ascii_case("close") {
                    false
                } else {
                    keep_alive || value.eq_ignore_ascii_case("keep-alive")
                };
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(invalid("chunked answers are not supported"));
            }
        }
    }
    let length = content_length.ok_or_else(|| invalid("no content-length"))?;
    body.resize(length, 0);
    connection.read_exact(body).await?;
    Ok(HttpAnswer { status, keep_alive })
}

/// Parses `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else if let Some(m) = text.strip_suffix('m') {
        (m, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("{text:?} is not a duration like 10s, 500ms or 2m"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("{text:?} is not a non-negative duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn rides_are_deterministic_and_named() {
        let set = RideSet::new(256);
        let ride = set.ride(3, 17);
        assert_eq!(ride.ride_id, "r3-17");
        assert_eq!(RideSet::new(256).ride(3, 17).pu_location_id, ride.pu_location_id);
        assert!(ride.trip_distance >= 0.5 && ride.trip_distance < 20.5);
    }

    #[test]
    fn only_a_finite_prediction_for_the_same_ride_counts() {
        use lightops_api::predictor::v1::Prediction;
        let request = PredictRequest { ride: Some(RideSet::new(4).ride(1, 2)) };
        let answer = |ride_id: &str, duration: f64| PredictResponse {
            prediction: Some(Prediction { ride_id: ride_id.into(), duration }),
            ..PredictResponse::default()
        };
        assert!(answers(&request, &answer("r1-2", 12.5)));
        assert!(!answers(&request, &answer("r1-3", 12.5)));
        assert!(!answers(&request, &answer("r1-2", f64::NAN)));
        assert!(!answers(&request, &PredictResponse::default()));
    }

    #[test]
    fn http_targets_default_to_predict() {
        let target = HttpTarget::parse("http://127.0.0.1:9696").expect("valid");
        assert_eq!((target.address.as_str(), target.path.as_str()), ("127.0.0.1:9696", "/predict"));
        let target = HttpTarget::parse("http://localhost/v1/predict").expect("valid");
        assert_eq!((target.address.as_str(), target.path.as_str()), ("localhost:80", "/v1/predict"));
        assert!(HttpTarget::parse("https://x").is_err());
    }
}
