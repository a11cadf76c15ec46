//! `pulsara`: the command-line entry point. Parses arguments, sets up logging, hands over to
//! [`cli::run`].
#![forbid(unsafe_code)]

mod agents_cli;
mod cli;
mod keys_cli;
mod policy_cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // The demo prints its own report; only warnings and errors interleave with it.
    #[cfg(feature = "local")]
    let default_level = if matches!(cli.command, cli::Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    #[cfg(not(feature = "local"))]
    let default_level = "info";
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
