//! Subcommands of the `moat` binary.

pub mod agent;
pub mod bench;
pub mod bench_classify;
pub mod bench_forward;
pub mod demo;
pub mod kubectl;
pub mod pktgen;
pub mod policy;
pub mod run;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// moat: a Kubernetes-aware packet filter on AF_XDP.
#[derive(Debug, Parser)]
#[command(name = "moat", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to wire pairs (IF_A,IF_B) and filter traffic between them.
    Run(run::RunArgs),
    /// The control process of a split deployment: compile policy (manifests directory or the
    /// Kubernetes API) and hand tables to a fastpath (`moat run --control-socket`); serve metrics.
    Agent(agent::AgentArgs),
    /// Transmit generated traffic from an AF_XDP socket (the kernel here has no pktgen module).
    Pktgen(pktgen::PktgenArgs),
    /// Benchmarks: end-to-end forwarding, classification.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Offline policy tools: evaluate flows against manifests, explain verdicts.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Build a zone topology in network namespaces, run moat between the zones and show
    /// which connections pass and which are blocked.
    Demo(demo::DemoArgs),
    /// The kubectl plugin (`kubectl moat`, when this binary is installed as `kubectl-moat`):
    /// explain decisions against the live cluster, show what every node enforces.
    Kubectl(kubectl::KubectlArgs),
}

pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MOAT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Pktgen(args) => pktgen::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Kubectl(args) => kubectl::run(args),
    }
}
