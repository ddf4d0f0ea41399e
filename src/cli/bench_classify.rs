//! `moat bench classify`: the compiled classifier on a ClassBench filter set, checked header by
//! header against a linear first-match scan.
//!
//! ```text
//! moat bench classify --rules ../shared/classbench/lyxocs_ruleSet/fw1_10k \
//!     --trace ../shared/classbench/lyxocs_ruleSet/fw1_10k_trace --shuffle [--batch 32] [--json]
//! ```
//!
//! Without `--trace`, headers are generated from the rules (corners of every filter and just
//! outside them). Every header is checked; any mismatch makes the exit status non-zero. Timings are
//! one core, one thread: the median of several passes over the whole header list (build: the median
//! of three builds). The linear scan is timed on one pass as the baseline.

use anyhow::{Context, bail};
use clap::Args;
use moat_fastpath::FlowKey;
use moat_fastpath::classify::engine::classbench::{self, Header, LinearScan};
use moat_fastpath::classify::engine::{BATCH, Classifier, Match};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// ClassBench filter set (`@src/len dst/len sp_lo : sp_hi dp_lo : dp_hi proto/mask flags/mask`).
    #[arg(long, value_name = "FILE")]
    pub rules: PathBuf,
    /// ClassBench trace (`src dst sport dport proto …`, addresses as decimal u32). Default: headers
    /// generated from the rules.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Shuffle the headers (fixed seed), removing the trace's locality.
    #[arg(long)]
    pub shuffle: bool,
    /// Keys per `lookup_batch` call; 1 measures single `lookup` calls.
    #[arg(long, value_name = "N", default_value_t = BATCH)]
    pub batch: usize,
    /// Generated headers per filter when there is no trace.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub per_filter: usize,
    /// Minimum time spent in timed lookup passes.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub min_ms: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Deterministic Fisher–Yates with xorshift64.
fn shuffle<T>(v: &mut [T]) {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let j = usize::try_from(s % (i as u64 + 1)).unwrap_or(0);
        v.swap(i, j);
    }
}

fn one_pass(c: &Classifier, keys: &[FlowKey], out: &mut [Option<Match>], batch: usize) {
    if batch <= 1 {
        for (k, o) in keys.iter().zip(out.iter_mut()) {
            *o = c.lookup(std::hint::black_box(k));
        }
    } else {
        for (k, o) in keys.chunks(batch).zip(out.chunks_mut(batch)) {
            c.lookup_batch(std::hint::black_box(k), o);
        }
    }
    std::hint::black_box(&*out);
}

pub fn run(args: ClassifyArgs) -> anyhow::Result<ExitCode> {
    let filters = classbench::read_filters(&args.rules)?;
    if filters.is_empty() {
        bail!("{}: no filters", args.rules.display());
    }
    let rules = classbench::to_rules(&filters);
    let mut headers: Vec<Header> = match &args.trace {
        Some(path) => classbench::read_trace(path)?,
        None => classbench::synthesize_headers(&filters, args.per_filter.max(1), 0x00C1_A55B_E4C4),
    };
    if headers.is_empty() {
        bail!("no headers to look up");
    }
    if args.shuffle {
        shuffle(&mut headers);
    }

    let mut builds = Vec::new();
    let mut classifier = None;
    for _ in 0..3 {
        let t = Instant::now();
        let c = Classifier::build(&rules).with_context(|| format!("compiling {}", args.rules.display()))?;
        builds.push(t.elapsed().as_secs_f64() * 1e3);
        classifier = Some(c);
    }
    let Some(c) = classifier else { bail!("no build") };
    let build_ms = median(builds);
    let bytes = c.bytes();

    // Ground truth, timed as the linear baseline.
    let linear = LinearScan::new(&filters);
    let t = Instant::now();
    let truth: Vec<Option<u32>> = headers.iter().map(|h| linear.first_match(std::hint::black_box(h))).collect();
    let linear_ns = t.elapsed().as_nanos() as f64 / headers.len() as f64;

    let keys: Vec<FlowKey> = headers.iter().map(Header::key).collect();
    let mut out = vec![None; keys.len()];
    // Check: the batch path at the requested size and single lookups.
    one_pass(&c, &keys, &mut out, args.batch);
    let mut mismatches = 0usize;
    for (i, ((k, got), want)) in keys.iter().zip(&out).zip(&truth).enumerate() {
        let got = got.map(|m| m.rule_index);
        let single = c.lookup(k).map(|m| m.rule_index);
        if got != *want || single != *want {
            if mismatches < 10 {
                eprintln!(
                    "mismatch: header {i} {:?}: linear {want:?}, classifier {got:?} (single {single:?})",
                    headers[i]
                );
            }
            mismatches += 1;
        }
    }

    // Timed passes.
    let mut passes = Vec::new();
    let start = Instant::now();
    while passes.len() < 3 || start.elapsed() < Duration::from_millis(args.min_ms) {
        let t = Instant::now();
        one_pass(&c, &keys, &mut out, args.batch);
        passes.push(t.elapsed().as_nanos() as f64 / keys.len() as f64);
        if passes.len() >= 10_000 {
            break;
        }
    }
    let ns = median(passes);
    let stats = c.stats();

    if args.json {
        println!(
            "{}",
            json!({
                "rules": rules.len(),
                "headers": headers.len(),
                "build_ms": build_ms,
                "bytes": bytes,
                "ns_per_lookup": ns,
                "lookups_per_sec": 1e9 / ns,
                "mismatches": mismatches,
                "linear_ns_per_lookup": linear_ns,
                "batch": args.batch,
                "shuffled": args.shuffle,
                "trees": stats.trees,
                "max_depth": stats.max_depth,
            })
        );
    } else {
        let source = match &args.trace {
            Some(t) => t.display().to_string(),
            None => format!("generated ({} per filter)", args.per_filter.max(1)),
        };
        println!("rules          {} ({})", rules.len(), args.rules.display());
        println!("headers        {} from {source}{}", headers.len(), if args.shuffle { ", shuffled" } else { "" });
        println!("build          {build_ms:.2} ms ({} trees, depth ≤ {})", stats.trees, stats.max_depth);
        println!("memory         {bytes} bytes ({:.2} MB)", bytes as f64 / 1e6);
        println!(
            "lookup         {ns:.2} ns/lookup, {:.2} M lookups/s ({})",
            1e3 / ns,
            if args.batch <= 1 { "single lookups".to_string() } else { format!("batches of {}", args.batch) }
        );
        println!("linear scan    {linear_ns:.2} ns/lookup, {:.3} M lookups/s", 1e3 / linear_ns);
        println!("mismatches     {mismatches}");
    }
    Ok(if mismatches == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
