//! `pulsara policy run|replay`: run one policy module locally under the host's limits, or
//! re-execute a recorded run and check that output and fuel are reproduced.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use pulsara_policy_host::{
    DirSource, HostConfig, Limits, MemorySource, PolicyHost, RunOutcome, RunRecord,
};

#[derive(clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// Run a module once on an input document (a JSON ToolInput) and print output, fuel and time.
    Run(RunArgs),
    /// Re-execute a recorded run (RunRecord JSON) and show that output and fuel are the same.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The policy component (`target/policies/<name>.wasm`).
    pub module: PathBuf,
    /// The ToolInput JSON document.
    #[arg(long)]
    pub input: PathBuf,
    /// Action kinds the run may return, comma-separated (e.g. `record_order,send_sms`).
    #[arg(long, value_delimiter = ',')]
    pub allow: Vec<String>,
    #[arg(long)]
    pub fuel: Option<u64>,
    #[arg(long)]
    pub deadline_ms: Option<u64>,
    #[arg(long)]
    pub memory_bytes: Option<u64>,
    /// Also write the run record here (replay it with `pulsara policy replay`).
    #[arg(long)]
    pub record: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// A RunRecord JSON file.
    pub run: PathBuf,
    /// Directory of modules to find the recorded module hash in.
    #[arg(long, default_value = "target/policies")]
    pub modules: PathBuf,
}

/// Runs the subcommand; prints to stdout.
///
/// # Errors
/// Unreadable files, an unloadable module, or (replay) a run that does not reproduce.
pub fn run(args: PolicyArgs) -> Result<()> {
    match args.command {
        PolicyCommand::Run(a) => run_once(a),
        PolicyCommand::Replay(a) => replay(a),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn run_once(a: RunArgs) -> Result<()> {
    let bytes = read(&a.module)?;
    let input = String::from_utf8(read(&a.input)?).context("input is not UTF-8")?;
    let source = Arc::new(MemorySource::new());
    let host = PolicyHost::new(HostConfig::default(), source)?;
    let module = host
        .load_bytes(&bytes)
        .with_context(|| format!("loading {}", a.module.display()))?;
    let requested = pulsara_core::config::PolicyLimits {
        fuel: a.fuel,
        deadline_ms: a.deadline_ms,
        memory_bytes: a.memory_bytes,
    };
    let limits = Limits::resolve(&requested, &host.config().defaults, &host.config().maxima);
    let tool = serde_json::from_str::<serde_json::Value>(&input)
        .ok()
        .and_then(|v| v.get("tool").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let run = host.run_module(&module, &tool, &input, limits, &a.allow);
    let record = run.record.context("the input is not a JSON document")?;
    print_record(&record);
    if let Some(path) = &a.record {
        std::fs::write(path, serde_json::to_string_pretty(&record)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("record: {}", path.display());
    }
    Ok(())
}

fn replay(a: ReplayArgs) -> Result<()> {
    let recorded: RunRecord = serde_json::from_slice(&read(&a.run)?)
        .with_context(|| format!("{} is not a run record", a.run.display()))?;
    let source = DirSource::open(&a.modules)
        .with_context(|| format!("module directory {}", a.modules.display()))?;
    let host = PolicyHost::new(HostConfig::default(), Arc::new(source))?;
    let again = host
        .replay(&recorded)?
        .record
        .context("replay produced no record")?;
    print_record(&again);
    let same_output = again.outcome == recorded.outcome;
    let same_fuel = again.fuel_used == recorded.fuel_used;
    println!("same output: {}", if same_output { "yes" } else { "NO" });
    println!(
        "same fuel:   {} (recorded {}, now {})",
        if same_fuel { "yes" } else { "NO" },
        recorded.fuel_used,
        again.fuel_used
    );
    if !(same_output && same_fuel) {
        bail!("the replay differs from the recorded run");
    }
    Ok(())
}

fn print_record(r: &RunRecord) {
    println!("module:   {}", r.module_sha256);
    println!("tool:     {}", r.tool);
    match &r.outcome {
        RunOutcome::Ok { output } => {
            println!("status:   ok");
            println!(
                "output:   {}",
                serde_json::to_string_pretty(output).unwrap_or_default()
            );
        }
        RunOutcome::Error { kind, message } => {
            println!("status:   error ({kind})");
            println!("message:  {message}");
        }
    }
    println!("fuel:     {} of {}", r.fuel_used, r.limits.fuel);
    println!("time:     {} µs", r.duration_us);
}
