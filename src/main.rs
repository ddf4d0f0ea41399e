//! `moat`: the command-line entry point. Every subcommand lives in `cli/`; this file only dispatches.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.log_format);
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("moat: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
