//! `moat bench …`: measurements that need real interfaces or the whole binary.

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// End-to-end forwarding rate through moat versus the bare AF_XDP forwarder, in network namespaces.
    Forward(super::bench_forward::ForwardArgs),
    /// Classifier build time, memory and lookup rate on ClassBench rule sets, checked against a linear
    /// first-match scan.
    Classify(super::bench_classify::ClassifyArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Forward(args) => super::bench_forward::run(args),
        BenchCommand::Classify(args) => super::bench_classify::run(args),
    }
}
