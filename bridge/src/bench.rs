//! Load harness behind `pulsara bench` (see BENCHMARKS.md).

/// Bench options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Concurrent calls.
    #[arg(long, default_value_t = 100)]
    pub calls: usize,
}

/// Runs the bench and returns a printable report.
///
/// # Errors
/// Set-up failures.
pub async fn run(args: BenchArgs) -> Result<String, String> {
    Err(format!(
        "bench with {} calls is not implemented yet",
        args.calls
    ))
}
