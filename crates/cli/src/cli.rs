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
}

/// `lightops serve <service>`.
#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// Experiment tracking and the model registry (gRPC; default port 5000, where the workshop
    /// ran MLflow).
    Registry(ServeRegistryArgs),
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
    /// Least-squares solver: exact (streamed, any size) or linfa (dense QR, small data).
    #[arg(long, env = "LIGHTOPS_SOLVER", value_enum, default_value_t = SolverArg::Exact)]
    pub solver: SolverArg,
}

/// `--solver` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SolverArg {
    /// Streamed sufficient statistics and a rank-revealing solve (minimum-norm, exact).
    Exact,
    /// linfa-linear's LinearRegression on a drop-first coding (needs the dense matrix in memory).
    Linfa,
}
