//! The `lightops` command. Kept thin: parse arguments, set up logging, dispatch to a command
//! module, print errors.

mod cli;
mod demo;
mod drift;
mod jobs;
mod models;
mod monitor;
mod progress;
mod registry_client;
mod runs;
mod serve;
mod stack;
mod train;
mod up;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: the services allocate small buffers on one thread
/// and free them on another all the time (request bodies, h2 frames, prediction-log records),
/// which glibc's malloc handled at ~13% of the predictor's CPU under load (see
/// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if matches!(
        args.command,
        cli::Command::Train(_)
            | cli::Command::Models(_)
            | cli::Command::Runs(_)
            | cli::Command::Jobs(_)
            | cli::Command::Monitor(_)
            | cli::Command::Drift(_)
    ) {
        // One-shot commands behave like other Unix tools when the reader goes away
        // (`lightops runs list | head -1`): quietly stopped by SIGPIPE, not a panic on the next
        // print. Services and the demo keep Rust's default (a failed write is an error they
        // handle) so that a closed stdout never stops a server.
        sigpipe::reset();
    }
    let _telemetry = init_logging(&args.command);
    let result = match args.command {
        cli::Command::Train(train) => train::run(&args.global, train),
        cli::Command::Serve(service) => serve::run(&args.global, service),
        cli::Command::Models(models) => models::run(models),
        cli::Command::Runs(runs) => runs::run(runs),
        cli::Command::Jobs(jobs) => jobs::run(jobs),
        cli::Command::Monitor(monitor) => monitor::run(monitor),
        cli::Command::Drift(drift) => drift::run(&args.global, drift),
        cli::Command::Up(up) => up::run(&args.global, up),
        cli::Command::Demo(demo) => demo::run(&args.global, demo),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs on stderr (`LIGHTOPS_LOG`, default `warn`), plus OTLP traces and metrics when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, as `lightops-<service>` for `serve`, else `lightops-cli`.
/// Dropping the guard flushes the export.
fn init_logging(command: &cli::Command) -> lightops_runtime::telemetry::Guard {
    let service = match command {
        cli::Command::Serve(cli::ServeCommand::Registry(_)) => "registry",
        cli::Command::Serve(cli::ServeCommand::Predictor(_)) => "predictor",
        cli::Command::Serve(cli::ServeCommand::Trainer(_)) => "trainer",
        cli::Command::Serve(cli::ServeCommand::Monitor(_)) => "monitor",
        _ => "cli",
    };
    lightops_runtime::telemetry::init(service)
}
