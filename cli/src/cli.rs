//! The `pulsara` command line: argument parsing only; each subcommand calls into the libraries.
//! Adding a subcommand = one enum variant + one match arm in [`run`]. The local stack's
//! subcommands (`demo`, `call`, `emulate`, `bench`) exist with the `local` feature only, so a
//! production build (`--no-default-features`) carries no emulator.

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
    #[cfg(feature = "local")]
    /// Load-test the bridge with simulated calls against an in-process agent emulator.
    Bench(pulsara_local::bench::BenchArgs),
    /// Provision restaurants' ElevenLabs agents from their configuration (sync, show).
    Agents(crate::agents_cli::AgentsArgs),
    /// Manage API keys of the embedded dashboard (create, list, revoke, rotate).
    Keys(crate::keys_cli::KeysArgs),
    /// Run a tool policy module locally, or replay a recorded run.
    Policy(crate::policy_cli::PolicyArgs),
    #[cfg(feature = "local")]
    /// The main job: a whole local stack in one process and every scenario call through it.
    Demo(pulsara_local::demo::DemoArgs),
    #[cfg(feature = "local")]
    /// Place one scenario call against a separately running edge and bridge.
    Call(pulsara_local::demo::CallArgs),
    #[cfg(feature = "local")]
    /// Run the ElevenLabs or Twilio REST emulator on its own.
    Emulate(pulsara_local::emulate::EmulateArgs),
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
        Command::Agents(args) => {
            if crate::agents_cli::run(args, &mut std::io::stdout()).await? {
                Ok(())
            } else {
                anyhow::bail!("some restaurants could not be synced (see above)")
            }
        }
        Command::Keys(args) => crate::keys_cli::run(args, &mut std::io::stdout()),
        Command::Policy(args) => crate::policy_cli::run(args),
        #[cfg(feature = "local")]
        Command::Demo(args) => {
            if pulsara_local::demo::run(args).await? {
                Ok(())
            } else {
                anyhow::bail!("some scenarios missed their expectations (see MISSED above)")
            }
        }
        #[cfg(feature = "local")]
        Command::Call(args) => {
            if pulsara_local::demo::call(args).await? {
                Ok(())
            } else {
                anyhow::bail!("the call missed its expectations")
            }
        }
        #[cfg(feature = "local")]
        Command::Emulate(args) => pulsara_local::emulate::run(args, shutdown_signal()).await,
        #[cfg(feature = "local")]
        Command::Bench(args) => {
            let report = pulsara_local::bench::run(args)
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{report}");
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = BridgeConfig::load(args.config.as_deref(), std::env::vars())
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
