//! `moat`: the command-line entry point. Every subcommand lives in `cli/`; this file only dispatches.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Installed (or linked) as `kubectl-moat`, this binary is the kubectl plugin: `kubectl moat …`.
    let invoked_as = std::env::args_os().next().map(std::path::PathBuf::from);
    if invoked_as
        .as_deref()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n.to_string_lossy().starts_with("kubectl-moat"))
    {
        let plugin = cli::kubectl::KubectlCli::parse();
        cli::init_logging(cli::LogFormat::Text);
        return match cli::kubectl::run(plugin.args) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("kubectl moat: error: {err:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
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
