//! `moat policy …`: offline policy evaluation. (Being written.)

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
