//! `pulsara emulate …`: the local stand-ins for ElevenLabs and Twilio's REST API as standalone
//! servers, for running a stack by hand (`pulsara serve` pointed at them) or `pulsara call`.
//! Credentials come from the environment, as the real services' would.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct EmulateArgs {
    #[command(subcommand)]
    pub which: Emulator,
}

#[derive(clap::Subcommand, Debug)]
pub enum Emulator {
    /// The ElevenLabs ConvAI emulator (signed URL + conversation WebSocket), scripted by
    /// scenario files; accepts the key in ELEVENLABS_API_KEY.
    Elevenlabs {
        #[arg(long, default_value = "127.0.0.1:8790")]
        listen: SocketAddr,
        #[arg(long, default_value = "scenarios")]
        scenarios: PathBuf,
    },
    /// The Twilio REST emulator (call updates, Messages); accepts TWILIO_ACCOUNT_SID and
    /// TWILIO_AUTH_TOKEN with Basic auth.
    TwilioRest {
        #[arg(long, default_value = "127.0.0.1:8791")]
        listen: SocketAddr,
    },
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("set {name} for the emulator"))
}

/// Serves the chosen emulator until SIGINT/SIGTERM.
///
/// # Errors
/// Missing credentials, unreadable scenarios, or a port that cannot be bound.
pub async fn run(args: EmulateArgs, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    match args.which {
        Emulator::Elevenlabs { listen, scenarios } => {
            let key = env("ELEVENLABS_API_KEY")?;
            eprintln!("ElevenLabs emulator on http://{listen} (scenarios from {})", scenarios.display());
            pulsara_emulators::elevenlabs::serve(listen, &scenarios, key, shutdown).await?;
        }
        Emulator::TwilioRest { listen } => {
            let config = pulsara_emulators::twilio_rest::RestConfig {
                account_sid: env("TWILIO_ACCOUNT_SID")?,
                auth_token: env("TWILIO_AUTH_TOKEN")?,
            };
            eprintln!("Twilio REST emulator on http://{listen}");
            pulsara_emulators::twilio_rest::serve(listen, config, shutdown).await?;
        }
    }
    Ok(())
}
