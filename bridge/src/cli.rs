//! The `pulsara` command line: argument parsing only; each subcommand calls into the libraries.
//! Adding a subcommand = one enum variant + one match arm in [`run`].

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pulsara_bridge::config::BridgeConfig;


#[derive(Parser)]
#[command(
    name = "pulsara",
    version,
    about = "Pulsara: an AI voice agent answering restaurants' phone calls"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the bridge (Twilio Media Streams ⇄ ElevenLabs).
    Serve(ServeArgs),
    /// Load-test the bridge with simulated calls against an in-process agent emulator.
    Bench(pulsara_bridge::bench::BenchArgs),
    /// Manage API keys of the embedded dashboard (create, list, revoke, rotate).
    Keys(pulsara_bridge::keys_cli::KeysArgs),
    /// Run a tool policy module locally, or replay a recorded run.
    Policy(pulsara_bridge::policy_cli::PolicyArgs),
    /// The main job: a whole local stack in one process and every scenario call through it.
    Demo(pulsara_bridge::demo::DemoArgs),
    /// Place one scenario call against a separately running edge and bridge.
    Call(pulsara_bridge::demo::CallArgs),
    /// Run the ElevenLabs or Twilio REST emulator on its own.
    Emulate(pulsara_bridge::emulate::EmulateArgs),
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML config file; environment variables override it.
    #[arg(long, env = "PULSARA_CONFIG")]
    pub config: Option<PathBuf>,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Keys(args) => pulsara_bridge::keys_cli::run(args, &mut std::io::stdout()),
        Command::Policy(args) => pulsara_bridge::policy_cli::run(args),
        Command::Demo(args) => {
            if pulsara_bridge::demo::run(args).await? {
                Ok(())
            } else {
                anyhow::bail!("some scenarios missed their expectations (see MISSED above)")
            }
        }
        Command::Call(args) => {
            if pulsara_bridge::demo::call(args).await? {
                Ok(())
            } else {
                anyhow::bail!("the call missed its expectations")
            }
        }
        Command::Emulate(args) => pulsara_bridge::emulate::run(args, shutdown_signal()).await,
        Command::Bench(args) => {
            let report = pulsara_bridge::bench::run(args)
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{report}");
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = BridgeConfig::load(args.config.as_deref(), |k| std::env::var(k).ok())
        .context("bridge configuration")?;
    pulsara_bridge::service::serve(cfg, shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
