//! `pulsara agents sync|show`: bring restaurants' ElevenLabs agents to the specification derived
//! from their configuration and tools ([`pulsara_dashboard::agents`]), through the dashboard API
//! (an admin key) and the ElevenLabs agents API.
//!
//! Secrets come from the environment only (`DASHBOARD_API_KEY`, `ELEVENLABS_API_KEY`), never from
//! flags, so they stay out of shell history and process listings; nothing printed contains them.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use pulsara_core::agent::ToolSpec;
use pulsara_core::config::RestaurantConfig;
use pulsara_core::secret::Secret;
use pulsara_dashboard::agents::{self, AgentsApi, AgentsApiConfig, SyncReport};
use pulsara_dashboard::client::{ClientConfig, DashboardClient, Fetched};

#[derive(clap::Args)]
pub struct AgentsArgs {
    #[command(subcommand)]
    pub command: AgentsCommand,
    /// The dashboard API (`DASHBOARD_API_KEY` in the environment: an admin key).
    #[arg(long, env = "DASHBOARD_URL", global = true)]
    pub dashboard_url: Option<String>,
    /// The ElevenLabs API (`ELEVENLABS_API_KEY` in the environment).
    #[arg(
        long,
        env = "ELEVENLABS_BASE_URL",
        default_value = "https://api.elevenlabs.io",
        global = true
    )]
    pub elevenlabs_base_url: String,
}

#[derive(clap::Subcommand)]
pub enum AgentsCommand {
    /// Create missing agents and tools, repair drifted ones, store agent ids and the synced
    /// state back in the dashboard. A second run changes nothing.
    Sync {
        /// Only this restaurant (default: every restaurant).
        #[arg(long)]
        restaurant: Option<String>,
        /// Print what would change, as a diff, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// What the bridge needs of a restaurant's agent next to what the agent has.
    Show {
        /// The restaurant id.
        restaurant: String,
    },
}

fn env_secret(name: &str) -> Result<Secret> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
        _ => bail!("{name} is not set (read from the environment only)"),
    }
}

/// Runs the subcommand; `Ok(false)` when a restaurant failed (the others were still synced).
///
/// # Errors
/// Missing settings, or the dashboard cannot be reached at all.
pub async fn run(args: AgentsArgs, out: &mut impl std::io::Write) -> Result<bool> {
    let dashboard_url = args
        .dashboard_url
        .context("DASHBOARD_URL (or --dashboard-url) is not set")?;
    let client = DashboardClient::new(
        ClientConfig::new(dashboard_url).api_key(env_secret("DASHBOARD_API_KEY")?),
        pulsara_dashboard::system_clock(),
    )
    .context("dashboard client")?;
    let api = AgentsApi::new(AgentsApiConfig::new(
        args.elevenlabs_base_url,
        env_secret("ELEVENLABS_API_KEY")?,
    ))
    .context("ElevenLabs agents API client")?;
    let (ids, dry_run) = match args.command {
        AgentsCommand::Sync {
            restaurant: Some(id),
            dry_run,
        } => (vec![id], dry_run),
        AgentsCommand::Sync {
            restaurant: None,
            dry_run,
        } => {
            let all = client
                .restaurants(usize::MAX)
                .await
                .context("listing restaurants")?;
            (all.into_iter().map(|r| r.id).collect(), dry_run)
        }
        AgentsCommand::Show { restaurant } => (vec![restaurant], true),
    };
    let mut ok = true;
    for id in ids {
        match sync_one(&client, &api, &id, dry_run).await {
            Ok(report) => write!(out, "{}", report.render())?,
            Err(e) => {
                ok = false;
                writeln!(out, "restaurant {id}: FAILED: {e:#}")?;
            }
        }
    }
    Ok(ok)
}

/// Fetches the restaurant and its tools' specifications, syncs, and writes the result back.
async fn sync_one(
    client: &DashboardClient,
    api: &AgentsApi,
    id: &str,
    dry_run: bool,
) -> Result<SyncReport> {
    let cfg: RestaurantConfig = match client.restaurant(id, None).await? {
        Fetched::Fresh { value, .. } => value,
        Fetched::NotModified => bail!("the dashboard answered 304 to an unconditional request"),
    };
    let mut specs: BTreeMap<String, ToolSpec> = BTreeMap::new();
    for t in &cfg.tools {
        if !specs.contains_key(&t.module_sha256) {
            match client.policy_tool(&t.module_sha256).await {
                Ok(spec) => {
                    specs.insert(t.module_sha256.clone(), spec);
                }
                // Reported by `tool_specs` with the tool's name.
                Err(pulsara_dashboard::client::ClientError::NotFound(_)) => {}
                Err(e) => return Err(e).context(format!("tool {}", t.name)),
            }
        }
    }
    let tools = agents::tool_specs(&cfg, |sha| specs.get(sha).cloned())?;
    let report = if dry_run {
        agents::show(api, &cfg, &tools).await?
    } else {
        agents::sync(api, &cfg, &tools, false).await?
    };
    if !dry_run && report.changes(&cfg) {
        client
            .admin_put_restaurant(&report.apply(&cfg))
            .await
            .context("storing the agent id and synced state in the dashboard")?;
    }
    Ok(report)
}
