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

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_logging();
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIGHTOPS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
