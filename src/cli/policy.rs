//! `moat policy …`: offline policy evaluation against manifests.
//!
//! Thin by design: loading, evaluation and formatting live in `moat_control`; this module only
//! parses arguments, reports manifest problems on stderr and moves lines between files.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use moat_control::Evaluator;
use moat_control::evaluate::FlowQuery;
use moat_control::manifest::{LoadOptions, load_paths_with};
use moat_control::model::Protocol;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Evaluate flows (JSON lines) against manifests; writes one JSON verdict line per flow.
    ///
    /// Input lines: {"src": "NS/POD"|"IP", "dst": "NS/POD"|"IP", "protocol": "TCP"|"UDP"|"SCTP"|
    /// "ICMP"|"ICMPv6"|number, "dst_port": n, "src_port": n, "icmp_type": n, "icmp_code": n}.
    /// Output lines: {"verdict": "allow"|"deny", "egress": SIDE|null, "ingress": SIDE|null} with
    /// SIDE = {"verdict", "policies": ["index|tier|name|action|ruleIndex", …], "staged": […]},
    /// or {"error": "…"} for a flow that cannot be evaluated.
    Eval(EvalArgs),
    /// Explain, for people, which tier, policy and rule decided one connection.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// Manifest files or directories (YAML or JSON, multi-document, `List` kinds; recursive).
    #[arg(long, required = true, num_args = 1..)]
    pub manifests: Vec<PathBuf>,
    /// Fail (exit 2) when any manifest object is invalid or has a field moat does not know,
    /// instead of evaluating without the object (invalid) or the field (unknown: a warning).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// File of JSON-lines flow queries, or `-` for stdin.
    #[arg(long)]
    pub flows: String,
    /// Answer through the compiled policy table (what the dataplane enforces) instead of the
    /// reference evaluator; same output format, so the two can be diffed. The compiled path
    /// decides packets: endpoints by address, a missing TCP/UDP/SCTP `src_port` is 0, ICMP needs
    /// both `icmp_type` and `icmp_code` (or neither), UDPLite ports are not read. Staged traces
    /// come from the evaluator (they never change a verdict and are not in the table).
    #[arg(long)]
    pub compiled: bool,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// Source: NS/POD or an IP address.
    #[arg(long)]
    pub from: String,
    /// Destination: NS/POD or an IP address (the pod behind a Service: policy sees post-DNAT).
    #[arg(long)]
    pub to: String,
    /// TCP, UDP, SCTP, ICMP, ICMPv6 or a protocol number.
    #[arg(long, default_value = "TCP", value_parser = parse_protocol)]
    pub protocol: Protocol,
    /// Destination port (TCP, UDP, SCTP).
    #[arg(long)]
    pub port: Option<u16>,
    #[arg(long)]
    pub src_port: Option<u16>,
    #[arg(long)]
    pub icmp_type: Option<u8>,
    #[arg(long)]
    pub icmp_code: Option<u8>,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::parse(s).ok_or_else(|| format!("unknown protocol {s:?} (TCP, UDP, SCTP, ICMP, ICMPv6 or 1-255)"))
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Eval(args) => eval(args),
        PolicyCommand::Explain(args) => explain(args),
    }
}

/// Load manifests and report every problem on stderr. `None` when `--strict` and not clean.
///
/// Errors, unknown-field warnings and resolution warnings are printed directly on stderr (not
/// through the log filter): they are the answer to "why does my policy not do what I wrote".
fn load(args: &ManifestArgs) -> anyhow::Result<Option<Evaluator>> {
    for p in &args.manifests {
        anyhow::ensure!(p.exists(), "manifest path {} does not exist", p.display());
    }
    let options = if args.strict { LoadOptions::strict() } else { LoadOptions::default() };
    let report = load_paths_with(&args.manifests, options);
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for s in &report.skipped {
        tracing::info!("{s}");
    }
    if args.strict && !report.is_clean() {
        eprintln!("error: {} manifest problem(s); not evaluating (--strict)", report.errors.len());
        return Ok(None);
    }
    if !report.errors.is_empty() {
        eprintln!("warning: {} manifest error(s); evaluating without what they concern", report.errors.len());
    }
    if !report.warnings.is_empty() {
        eprintln!(
            "warning: {} unknown field(s) ignored; policy may be wider or narrower than written (--strict refuses)",
            report.warnings.len()
        );
    }
    let ev = Evaluator::new(&report.to_model());
    for w in &ev.resolved().warnings {
        eprintln!("warning: {w}");
    }
    tracing::debug!(
        loaded = report.loaded.len(),
        errors = report.errors.len(),
        warnings = report.warnings.len(),
        skipped = report.skipped.len()
    );
    Ok(Some(ev))
}

fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let Some(ev) = load(&args.manifests)? else { return Ok(ExitCode::from(2)) };
    let input: Box<dyn BufRead> = if args.flows == "-" {
        Box::new(BufReader::new(std::io::stdin().lock()))
    } else {
        let f = std::fs::File::open(&args.flows).with_context(|| format!("cannot open flows file {}", args.flows))?;
        Box::new(BufReader::new(f))
    };
    let compiled = if args.compiled {
        let table = moat_control::compile::Compiler::new()
            .compile(ev.resolved(), moat_control::compile::zones_of(ev.model()))
            .map(|(table, _)| table)
            .context("compiling the policy")?;
        Some(moat_control::compile::CompiledEvaluator::new(ev.clone(), table))
    } else {
        None
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in input.lines() {
        let line = line.context("reading flows")?;
        let answer = match &compiled {
            Some(c) => c.answer_line(&line),
            None => ev.answer_line(&line),
        };
        if let Some(answer) = answer {
            out.write_all(answer.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let Some(ev) = load(&args.manifests)? else { return Ok(ExitCode::from(2)) };
    let q = FlowQuery {
        src: args.from,
        dst: args.to,
        protocol: args.protocol,
        dst_port: args.port,
        src_port: args.src_port,
        icmp_type: args.icmp_type,
        icmp_code: args.icmp_code,
    };
    match ev.explain(&q) {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
