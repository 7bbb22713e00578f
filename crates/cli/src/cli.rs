//! Command-line arguments. Every flag has help text and an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// lightops: track experiments, train, register, serve and monitor the NYC-taxi ride-duration
/// model.
#[derive(Debug, Parser)]
#[command(name = "lightops", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command shares.
#[derive(Debug, Args)]
pub struct Global {
    /// Directory for local state: registry database, artifacts, prediction logs, download cache.
    #[arg(long, env = "LIGHTOPS_HOME", default_value = ".lightops", global = true)]
    pub home: PathBuf,
    /// Hide progress bars (they are also hidden when stderr is not a terminal).
    #[arg(long, env = "LIGHTOPS_QUIET", global = true)]
    pub quiet: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train the ride-duration model on TLC trip files and validate it on another.
    Train(TrainArgs),
    /// Run one lightops service in the foreground until Ctrl-C or SIGTERM.
    #[command(subcommand)]
    Serve(ServeCommand),
    /// Registered models: list, show, resolve URIs, set aliases, change stages.
    Models(ModelsArgs),
    /// Tracked runs: search and show.
    Runs(RunsArgs),
    /// Training jobs on a trainer: submit (and follow), list, watch, cancel.
    Jobs(JobsArgs),
    /// The monitor: reports, alerts, actuals.
    Monitor(MonitorArgs),
    /// Compare data with the reference profile saved in a model artifact, with Evidently's
    /// statistics (offline): TLC files scored by the model, or the monitor's prediction archive.
    Drift(DriftArgs),
    /// Run the four services in this process on embedded defaults (SQLite, local artifacts,
    /// local prediction log) until Ctrl-C.
    Up(UpArgs),
    /// The workshop's story end to end: train, register, serve, replay three months, monitor
    /// them, react to drift (offline on built-in samples, or --data DIR with full months).
    Demo(DemoArgs),
}

/// `lightops up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Registry address.
    #[arg(long, env = "LIGHTOPS_REGISTRY_LISTEN", default_value = "127.0.0.1:5000")]
    pub registry: std::net::SocketAddr,
    /// Trainer address.
    #[arg(long, env = "LIGHTOPS_TRAINER_LISTEN", default_value = "127.0.0.1:5001")]
    pub trainer: std::net::SocketAddr,
    /// Predictor address (gRPC and HTTP).
    #[arg(long, env = "LIGHTOPS_PREDICTOR_LISTEN", default_value = "127.0.0.1:9696")]
    pub predictor: std::net::SocketAddr,
    /// Monitor address.
    #[arg(long, env = "LIGHTOPS_MONITOR_LISTEN", default_value = "127.0.0.1:5002")]
    pub monitor: std::net::SocketAddr,
}

/// `lightops demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory of full TLC months (green_tripdata_2022-01.parquet, …, green_tripdata_2020-06.csv.gz)
    /// [default: the samples built into lightops].
    #[arg(long, env = "LIGHTOPS_DEMO_DATA")]
    pub data: Option<PathBuf>,
    /// Where the demo keeps its registry, logs and archive (cleared first)
    /// [default: $LIGHTOPS_HOME/demo].
    #[arg(long = "demo-home", env = "LIGHTOPS_DEMO_HOME")]
    pub home: Option<PathBuf>,
}

/// `lightops drift`.
#[derive(Debug, Args)]
pub struct DriftArgs {
    /// The model artifact (model.json) whose reference profile is the baseline.
    #[arg(long, env = "LIGHTOPS_REFERENCE")]
    pub reference: PathBuf,
    /// Current data: TLC files (parquet, csv, csv.gz; paths or https:// URLs), prepared as for
    /// training and scored by the model. Several files are one data set.
    #[arg(long, env = "LIGHTOPS_CURRENT", value_delimiter = ',', num_args = 1.., required_unless_present = "archive")]
    pub current: Vec<String>,
    /// Current data from the monitor's prediction archive instead: a directory or
    /// s3://bucket/prefix (with --from and --to).
    #[arg(long, env = "LIGHTOPS_ARCHIVE", conflicts_with = "current", requires_all = ["from", "to"])]
    pub archive: Option<String>,
    /// First archive date, YYYY-MM-DD (inclusive).
    #[arg(long, env = "LIGHTOPS_FROM")]
    pub from: Option<String>,
    /// Last archive date, YYYY-MM-DD (inclusive).
    #[arg(long, env = "LIGHTOPS_TO")]
    pub to: Option<String>,
    /// Share of drifted columns that makes the data set drifted.
    #[arg(long, env = "LIGHTOPS_DRIFT_SHARE", default_value_t = 0.5)]
    pub drift_share: f64,
    /// Per-column method, as COLUMN=METHOD (psi, ks, wasserstein, jensenshannon, chisquare, z…;
    /// repeatable).
    #[arg(long = "method", env = "LIGHTOPS_DRIFT_METHODS", value_delimiter = ',', value_parser = parse_tag)]
    pub methods: Vec<(String, String)>,
    /// Print exactly one JSON object on stdout.
    #[arg(long, env = "LIGHTOPS_JSON")]
    pub json: bool,
}

/// `lightops monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The monitor, e.g. http://127.0.0.1:5002.
    #[arg(long, env = "LIGHTOPS_MONITOR", default_value = "http://127.0.0.1:5002", global = true)]
    pub monitor: String,
    /// Print JSON instead of tables.
    #[arg(long, env = "LIGHTOPS_JSON", global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: MonitorCommand,
}

/// `lightops monitor <command>`.
#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Send actual ride durations, joined to predictions by ride_id: a CSV with `ride_id` and
    /// `duration` columns (minutes), or JSON lines with those fields.
    Actuals {
        /// The file.
        file: PathBuf,
    },
    /// Reports: one window (e.g. 2022-03), or all, newest first.
    Report {
        /// Window key; all windows when omitted.
        window: Option<String>,
    },
    /// Alerts raised so far.
    Alerts,
}

/// `lightops jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// The trainer, e.g. http://127.0.0.1:5001.
    #[arg(long, env = "LIGHTOPS_TRAINER", default_value = "http://127.0.0.1:5001", global = true)]
    pub trainer: String,
    /// Print JSON instead of text.
    #[arg(long, env = "LIGHTOPS_JSON", global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// `lightops jobs <command>`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Submit a training job. Data URIs may use {month} and {month-N} (the trainer expands them
    /// with today's date, UTC).
    Submit {
        /// Training data (repeatable or comma-separated).
        #[arg(long = "train", env = "LIGHTOPS_TRAIN", value_delimiter = ',', num_args = 1.., required = true)]
        train: Vec<String>,
        /// Validation data.
        #[arg(long, env = "LIGHTOPS_VAL")]
        val: String,
        /// Experiment to log the run in.
        #[arg(long, env = "LIGHTOPS_EXPERIMENT", default_value = "nyc-taxi-experiment")]
        experiment: String,
        /// Registered model to add a version to.
        #[arg(long, env = "LIGHTOPS_REGISTER_AS")]
        register_as: Option<String>,
        /// Alias the new version takes if it beats the holder by --min-improvement.
        #[arg(long, env = "LIGHTOPS_ALIAS", requires = "register_as")]
        alias: Option<String>,
        /// Relative margin on validation RMSE the new version must beat the alias holder by.
        #[arg(long, env = "LIGHTOPS_MIN_IMPROVEMENT", default_value_t = 0.0)]
        min_improvement: f64,
        /// Where the job runs: the trainer's default, in-process or kubernetes.
        #[arg(long, env = "LIGHTOPS_JOB_EXECUTOR", value_enum)]
        executor: Option<ExecutorArg>,
        /// Tags for the run, as KEY=VALUE (repeatable).
        #[arg(long = "tag", env = "LIGHTOPS_TAGS", value_delimiter = ',', value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Follow the job's events until it ends; exit non-zero unless it succeeds.
        #[arg(long, env = "LIGHTOPS_WAIT")]
        wait: bool,
    },
    /// Jobs, newest first.
    List {
        /// How many at most.
        #[arg(long, env = "LIGHTOPS_LIMIT", default_value_t = 20)]
        limit: u32,
    },
    /// Follow a job's events until it ends.
    Watch {
        /// Job id.
        job_id: String,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// Job id.
        job_id: String,
    },
}

/// `lightops runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The registry, e.g. http://127.0.0.1:5000.
    #[arg(long, env = "LIGHTOPS_REGISTRY", default_value = "http://127.0.0.1:5000", global = true)]
    pub registry: String,
    /// Print JSON instead of tables.
    #[arg(long, env = "LIGHTOPS_JSON", global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: RunsCommand,
}

/// `lightops runs <command>`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Search runs of an experiment with MLflow's filter language.
    List {
        /// Experiment name.
        #[arg(long, env = "LIGHTOPS_EXPERIMENT", default_value = "nyc-taxi-experiment")]
        experiment: String,
        /// Filter, e.g. 'metrics.rmse < 8.5 and params.solver = "exact-ols"'.
        #[arg(long, env = "LIGHTOPS_FILTER", default_value = "")]
        filter: String,
        /// Order, e.g. 'metrics.rmse ASC' (repeatable).
        #[arg(long = "order-by", env = "LIGHTOPS_ORDER_BY", value_delimiter = ';')]
        order_by: Vec<String>,
        /// How many runs at most.
        #[arg(long, env = "LIGHTOPS_LIMIT", default_value_t = 50)]
        limit: u32,
    },
    /// Show one run: params, latest metrics, tags, artifacts.
    Show {
        /// Run id.
        run_id: String,
    },
}

/// `lightops models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// The registry, e.g. http://127.0.0.1:5000.
    #[arg(long, env = "LIGHTOPS_REGISTRY", default_value = "http://127.0.0.1:5000", global = true)]
    pub registry: String,
    /// Print JSON instead of tables.
    #[arg(long, env = "LIGHTOPS_JSON", global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ModelsCommand,
}

/// `lightops models <command>`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List registered models (name contains TEXT).
    List {
        /// Only models whose name contains this.
        #[arg(long, env = "LIGHTOPS_NAME_CONTAINS", default_value = "")]
        contains: String,
    },
    /// Show a model and its versions.
    Show {
        /// Registered model name.
        name: String,
    },
    /// Resolve models:/NAME@ALIAS, models:/NAME/STAGE or models:/NAME/VERSION to run, source and version.
    Resolve {
        /// The URI.
        uri: String,
    },
    /// Point an alias at a version.
    Alias {
        /// Registered model name.
        name: String,
        /// Alias, e.g. staging or champion.
        alias: String,
        /// Version number.
        version: i64,
    },
    /// Move a version to a stage (None, Staging, Production, Archived), archiving the others there.
    Promote {
        /// Registered model name.
        name: String,
        /// Version number.
        version: i64,
        /// Target stage.
        stage: String,
        /// Keep the other versions in that stage instead of archiving them.
        #[arg(long, env = "LIGHTOPS_KEEP_EXISTING")]
        keep_existing: bool,
    },
}

/// `lightops serve <service>`.
#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// Experiment tracking and the model registry (gRPC; default port 5000, where the workshop
    /// ran MLflow).
    Registry(ServeRegistryArgs),
    /// Predictions over gRPC (lightops.predictor.v1 and the Open Inference Protocol v2) and the
    /// workshop's HTTP API, on one port (default 9696, where the workshop served).
    Predictor(ServePredictorArgs),
    /// Training jobs over gRPC (default port 5001), in-process or as Kubernetes Jobs, on demand
    /// or on cron schedules, with the promotion policy.
    Trainer(ServeTrainerArgs),
    /// Drift, data quality and model quality of the prediction stream per window, alerts and
    /// retraining requests (gRPC; default port 5002).
    Monitor(Box<ServeMonitorArgs>),
}

/// `lightops serve monitor`.
#[derive(Debug, Args)]
pub struct ServeMonitorArgs {
    /// Address to listen on.
    #[arg(long, env = "LIGHTOPS_MONITOR_LISTEN", default_value = "127.0.0.1:5002")]
    pub listen: std::net::SocketAddr,
    /// Prediction log to consume: a directory of JSON-lines segments, kinesis://STREAM, or `none`
    /// [default: $LIGHTOPS_HOME/logs].
    #[arg(long, env = "LIGHTOPS_MONITOR_SOURCE")]
    pub source: Option<String>,
    /// Archive root for predictions (parquet by date) and dead letters: a directory or
    /// s3://bucket/prefix [default: $LIGHTOPS_HOME/archive].
    #[arg(long, env = "LIGHTOPS_MONITOR_ARCHIVE")]
    pub archive: Option<String>,
    /// Directory for the stream position, actuals and alerts [default: $LIGHTOPS_HOME/monitor].
    #[arg(long, env = "LIGHTOPS_MONITOR_STATE")]
    pub state_dir: Option<PathBuf>,
    /// Window length: hour, day or month (event time, UTC).
    #[arg(long, env = "LIGHTOPS_MONITOR_WINDOW", default_value = "month")]
    pub window: String,
    /// Registry URL: each window is compared with the reference profile saved in the artifact of
    /// the model version that answered it.
    #[arg(long, env = "LIGHTOPS_REGISTRY")]
    pub registry: Option<String>,
    /// A model artifact whose reference profile every window is compared with (instead of the
    /// registry's).
    #[arg(long, env = "LIGHTOPS_MONITOR_REFERENCE")]
    pub reference: Option<PathBuf>,
    /// A window is judged (alerts) once it has at least this many rows…
    #[arg(long, env = "LIGHTOPS_MONITOR_MIN_ROWS", default_value_t = 500)]
    pub min_rows: u64,
    /// …and has had no new row for this long.
    #[arg(long, env = "LIGHTOPS_MONITOR_SETTLE", default_value = "3s", value_parser = humantime::parse_duration)]
    pub settle: std::time::Duration,
    /// Alert when a window's RMSE (once actuals arrived) is above this many minutes.
    #[arg(long, env = "LIGHTOPS_MONITOR_RMSE_THRESHOLD")]
    pub rmse_threshold: Option<f64>,
    /// POST every alert as JSON to this URL.
    #[arg(long, env = "LIGHTOPS_MONITOR_WEBHOOK")]
    pub webhook: Option<String>,
    /// Trainer URL: alerts submit a retraining job there (needs --retrain-train and --retrain-val).
    #[arg(long, env = "LIGHTOPS_TRAINER")]
    pub trainer: Option<String>,
    /// Training data for retraining jobs ({month-N} allowed; repeatable or comma-separated).
    #[arg(long, env = "LIGHTOPS_RETRAIN_TRAIN", value_delimiter = ',', requires = "trainer")]
    pub retrain_train: Vec<String>,
    /// Validation data for retraining jobs.
    #[arg(long, env = "LIGHTOPS_RETRAIN_VAL", requires = "trainer")]
    pub retrain_val: Option<String>,
    /// Registered model retraining jobs add versions to.
    #[arg(long, env = "LIGHTOPS_RETRAIN_REGISTER_AS", default_value = "trip_duration")]
    pub retrain_register_as: String,
    /// Alias a retrained version takes if it beats the holder by --retrain-min-improvement.
    #[arg(long, env = "LIGHTOPS_RETRAIN_ALIAS", default_value = "staging")]
    pub retrain_alias: String,
    /// Relative margin on validation RMSE for the promotion of a retrained version.
    #[arg(long, env = "LIGHTOPS_RETRAIN_MIN_IMPROVEMENT", default_value_t = 0.01)]
    pub retrain_min_improvement: f64,
    /// At most one retraining request per this long.
    #[arg(long, env = "LIGHTOPS_RETRAIN_COOLDOWN", default_value = "1h", value_parser = humantime::parse_duration)]
    pub retrain_cooldown: std::time::Duration,
}

/// `lightops serve trainer`.
#[derive(Debug, Args)]
pub struct ServeTrainerArgs {
    /// Address to listen on.
    #[arg(long, env = "LIGHTOPS_TRAINER_LISTEN", default_value = "127.0.0.1:5001")]
    pub listen: std::net::SocketAddr,
    /// Registry URL: jobs log their runs there, register versions and move aliases.
    #[arg(long, env = "LIGHTOPS_REGISTRY", default_value = "http://127.0.0.1:5000")]
    pub registry: String,
    /// In-process jobs running at once.
    #[arg(long, env = "LIGHTOPS_TRAINER_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,
    /// In-process jobs allowed to wait; more are refused until the queue drains.
    #[arg(long, env = "LIGHTOPS_TRAINER_QUEUE", default_value_t = 16)]
    pub queue: usize,
    /// Executor for jobs that do not choose one.
    #[arg(long, env = "LIGHTOPS_TRAINER_EXECUTOR", value_enum, default_value_t = ExecutorArg::InProcess)]
    pub executor: ExecutorArg,
    /// Kubernetes Job template as a JSON file (image, resources, service_account, env,
    /// ttl_seconds_after_finished, registry_url, …); enables the Kubernetes executor, which uses
    /// the in-cluster service account or the local kubeconfig.
    #[arg(long, env = "LIGHTOPS_TRAINER_JOB_TEMPLATE")]
    pub job_template: Option<PathBuf>,
    /// Namespace for training Jobs [default: the client's default namespace].
    #[arg(long, env = "LIGHTOPS_TRAINER_NAMESPACE")]
    pub namespace: Option<String>,
}

/// `--executor` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExecutorArg {
    /// Jobs run in the trainer process.
    InProcess,
    /// Jobs run as Kubernetes Jobs (needs --job-template).
    Kubernetes,
}

/// `lightops serve predictor`.
#[derive(Debug, Args)]
pub struct ServePredictorArgs {
    /// Address to listen on (gRPC and HTTP share it).
    #[arg(long, env = "LIGHTOPS_PREDICTOR_LISTEN", default_value = "127.0.0.1:9696")]
    pub listen: std::net::SocketAddr,
    /// Model to serve: models:/NAME@ALIAS, models:/NAME/STAGE or models:/NAME/VERSION (followed
    /// through --registry: promotions are picked up without a restart), or a model artifact as a
    /// path, file://PATH or s3://BUCKET/KEY.
    #[arg(long, env = "LIGHTOPS_MODEL")]
    pub model: String,
    /// Registry URL for models:/ URIs, e.g. http://127.0.0.1:5000.
    #[arg(long, env = "LIGHTOPS_REGISTRY")]
    pub registry: Option<String>,
    /// Where every answered prediction is recorded: a directory of JSON-lines segments,
    /// kinesis://STREAM, or `none` [default: $LIGHTOPS_HOME/logs].
    #[arg(long, alias = "log-dir", env = "LIGHTOPS_LOG_SINK")]
    pub log_sink: Option<String>,
    /// Disk buffer for log records the sink cannot take yet; sent first after a restart
    /// [default: $LIGHTOPS_HOME/spill].
    #[arg(long, env = "LIGHTOPS_LOG_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,
    /// Log records held in memory while the sink is slow or down, or (local sink) while every
    /// core is busy and the lines wait to be formatted, before further ones go to the disk buffer
    /// (--spill-dir) [default: 65536 (~20 MiB) for Kinesis, 1048576 (~60-100 MiB of requests in
    /// their compact form) for the local sink] (see docs/prediction-log.md).
    #[arg(long, env = "LIGHTOPS_LOG_QUEUE")]
    pub log_queue: Option<usize>,
    /// How long log records gather in memory before one write sends them all (at most 200ms;
    /// 0 writes each request's records at once; the local sink writes once a thread has ~1 MiB of lines waiting).
    #[arg(long, env = "LIGHTOPS_LOG_LINGER", default_value = "10ms", value_parser = humantime::parse_duration)]
    pub log_linger: std::time::Duration,
    /// How long shutdown waits for the log sink before leaving the rest in the disk buffer.
    #[arg(long, env = "LIGHTOPS_LOG_FLUSH_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub log_flush_timeout: std::time::Duration,
    /// How long shutdown waits for requests in flight and open connections before closing them.
    #[arg(long, env = "LIGHTOPS_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: std::time::Duration,
    /// Largest HTTP request body or gRPC message accepted, in bytes (larger: HTTP 413).
    #[arg(long, env = "LIGHTOPS_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
}

/// `lightops serve registry`.
#[derive(Debug, Args)]
pub struct ServeRegistryArgs {
    /// Address to listen on.
    #[arg(long, env = "LIGHTOPS_REGISTRY_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: std::net::SocketAddr,
    /// Metadata store: sqlite://PATH or postgres://USER:PASSWORD@HOST/DB
    /// [default: sqlite://$LIGHTOPS_HOME/registry.db].
    #[arg(long, env = "LIGHTOPS_REGISTRY_STORE")]
    pub store: Option<String>,
    /// Default artifact root for new experiments [default: $LIGHTOPS_HOME/artifacts].
    #[arg(long, env = "LIGHTOPS_ARTIFACT_ROOT")]
    pub artifact_root: Option<String>,
}

/// `lightops train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training files: TLC trip data as parquet or csv(.gz), local paths or https:// URLs.
    /// Several files are concatenated.
    #[arg(long = "train", env = "LIGHTOPS_TRAIN", value_delimiter = ',', num_args = 1.., required = true)]
    pub train: Vec<String>,
    /// Validation file, in the same forms as --train.
    #[arg(long = "val", env = "LIGHTOPS_VAL")]
    pub val: String,
    /// Print exactly one JSON object on stdout instead of the human summary.
    #[arg(long, env = "LIGHTOPS_JSON")]
    pub json: bool,
    /// Directory to write the model artifact (model.json) into
    /// [default: $LIGHTOPS_HOME/models/<time>-<sha256 prefix>].
    #[arg(long, env = "LIGHTOPS_OUT")]
    pub out: Option<PathBuf>,
    /// Feature spec as a JSON file (categorical, numerical, crossed, target_min, target_max);
    /// overrides the feature flags below.
    #[arg(long, env = "LIGHTOPS_SPEC")]
    pub spec: Option<PathBuf>,
    /// One-hot encoded columns (an empty value for none, e.g. with --crossed only).
    #[arg(long, env = "LIGHTOPS_CATEGORICAL", value_delimiter = ',', default_value = "PULocationID,DOLocationID")]
    pub categorical: Vec<String>,
    /// Numerical columns.
    #[arg(long, env = "LIGHTOPS_NUMERICAL", value_delimiter = ',', default_value = "trip_distance")]
    pub numerical: Vec<String>,
    /// Crossed categorical features as NAME=COL1+COL2, e.g. PU_DO=PULocationID+DOLocationID.
    #[arg(long, env = "LIGHTOPS_CROSSED", value_delimiter = ',')]
    pub crossed: Vec<String>,
    /// Registry to log the run to, e.g. http://127.0.0.1:5000 (nothing is logged without it).
    #[arg(long, env = "LIGHTOPS_REGISTRY")]
    pub registry: Option<String>,
    /// Experiment to log the run in (created when missing).
    #[arg(long, env = "LIGHTOPS_EXPERIMENT", default_value = "nyc-taxi-experiment", requires = "registry")]
    pub experiment: String,
    /// Register the trained model as a new version of this registered model.
    #[arg(long, env = "LIGHTOPS_REGISTER_AS", requires = "registry")]
    pub register_as: Option<String>,
    /// Point this alias (e.g. staging) at the new version.
    #[arg(long, env = "LIGHTOPS_ALIAS", requires = "register_as")]
    pub alias: Option<String>,
    /// Tags for the run, as KEY=VALUE (repeatable; comma-separated in the environment variable).
    #[arg(long = "tag", env = "LIGHTOPS_TAGS", value_delimiter = ',', value_parser = parse_tag, requires = "registry")]
    pub tags: Vec<(String, String)>,
    /// The trainer job this run belongs to (recorded as the run's lightops.job_id tag; set by the
    /// trainer when it runs `lightops train` as a Kubernetes Job).
    #[arg(long, env = "LIGHTOPS_JOB_ID", requires = "registry")]
    pub job_id: Option<String>,
    /// Feature spec as JSON text (same format as --spec); overrides the feature flags.
    #[arg(long, env = "LIGHTOPS_SPEC_JSON", conflicts_with = "spec")]
    pub spec_json: Option<String>,
    /// Least-squares solver: exact (streamed, any size) or linfa (dense QR, small data).
    #[arg(long, env = "LIGHTOPS_SOLVER", value_enum, default_value_t = SolverArg::Exact)]
    pub solver: SolverArg,
}

/// Parses `KEY=VALUE`.
fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.to_owned())),
        _ => Err(format!("{text:?}: expected KEY=VALUE")),
    }
}

/// `--solver` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SolverArg {
    /// Streamed sufficient statistics and a rank-revealing solve (minimum-norm, exact).
    Exact,
    /// linfa-linear's LinearRegression on a drop-first coding (needs the dense matrix in memory).
    Linfa,
}
