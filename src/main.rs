//! `runtime`: keel's single binary. Commands: `pull`, `generate`, `bench`, `registry`, `serve`, `batch`,
//! `monitor`.
//!
//! Exit codes (SPEC §1): 0 success, 2 bad usage or bad input (clap errors, a missing
//! model path, an invalid parameter), 1 a runtime failure. Errors are one line on stderr.

mod commands;
mod model_ref;
mod model_store;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "runtime", version = version(), about = "keel: a single-node LLM inference runtime", propagate_version = true)]
struct Cli {
    /// More logging on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download a known model (default: smollm2) into $KEEL_HOME.
    Pull(commands::pull::PullArgs),
    /// Generate one completion, streamed to stdout.
    Generate(commands::generate::GenerateArgs),
    /// Measure prefill and decode tokens/s (like llama-bench).
    Bench(commands::bench::BenchArgs),
    /// The model registry: register, list, show, alias, tag, delete, search.
    Registry(commands::registry::RegistryArgs),
    /// Serve models over HTTP: OpenAI, MLflow scoring and Databricks-style endpoints.
    Serve(commands::serve::ServeArgs),
    /// Run every row of a Parquet file (or directory) through the model: bulk summarization.
    Batch(commands::batch::BatchArgs),
    /// Profile and drift metrics over an inference table, alert rules, a report.
    Monitor(commands::monitor::MonitorArgs),
}

fn version() -> &'static str {
    concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("KEEL_GIT_HASH"), ", features: ", env!("KEEL_FEATURES"), ")")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let result = match cli.command {
        Command::Pull(a) => commands::pull::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Registry(a) => commands::registry::run(a),
        Command::Serve(a) => commands::serve::run(a, version()),
        Command::Batch(a) => commands::batch::run(a),
        Command::Monitor(a) => commands::monitor::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(commands::exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks argument definitions only for the subcommand being run; check them all.
    #[test]
    fn every_command_line_definition_is_valid() {
        super::Cli::command().debug_assert();
    }
}
