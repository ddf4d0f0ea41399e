//! The compiled classifier on ClassBench sets: lookup (trace order and shuffled) and build.
//!
//! `cargo bench --bench classify` (add `-- --quick` for a fast run). Sets come from
//! `../shared/classbench` (skipped, loudly, when absent): acl1/fw1/ipc1 at 1K and 10K, and the
//! generated 100K sets when `MOAT_BENCH_100K=1`. Under `cargo test --all-targets` (criterion's test
//! mode, one iteration each) only the 1K sets run, so the suite stays fast. Throughput is in
//! elements = lookups per second on one core; one iteration is one pass over the whole trace in
//! batches of `BATCH` keys. Figures for BENCHMARKS.md come from `moat bench classify`, which also
//! checks every header against a linear scan.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use moat_fastpath::FlowKey;
use moat_fastpath::classify::engine::classbench::{self, Header};
use moat_fastpath::classify::engine::{BATCH, Classifier, Match};

struct Set {
    name: &'static str,
    rules: PathBuf,
    trace: PathBuf,
}

fn sets() -> Vec<Set> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/classbench");
    if !root.is_dir() {
        eprintln!("SKIPPED: {} is absent; the ClassBench benchmarks did not run", root.display());
        return Vec::new();
    }
    // criterion passes --bench when measuring; without it (cargo test) each bench runs once.
    let measuring = std::env::args().any(|a| a == "--bench");
    let with_100k = std::env::var("MOAT_BENCH_100K").is_ok_and(|v| v == "1");
    let lyx = root.join("lyxocs_ruleSet");
    let gen100 = root.join("generated_100k");
    let mut v = Vec::new();
    let mut add = |name: &'static str, dir: &Path, file: &str, trace: &str| {
        let (rules, trace) = (dir.join(file), dir.join(trace));
        if rules.is_file() && trace.is_file() {
            v.push(Set { name, rules, trace });
        } else {
            eprintln!("SKIPPED: {} or its trace is absent", rules.display());
        }
    };
    add("acl1_1k", &lyx, "acl1_1k", "acl1_1k_trace");
    add("fw1_1k", &lyx, "fw1_1k", "fw1_1k_trace");
    add("ipc1_1k", &lyx, "ipc1_1k", "ipc1_1k_trace");
    if measuring {
        add("acl1_10k", &lyx, "acl1_10k", "acl1_10k_trace.GENERATED");
        add("fw1_10k", &lyx, "fw1_10k", "fw1_10k_trace");
        add("ipc1_10k", &lyx, "ipc1_10k", "ipc1_10k_trace");
    }
    if with_100k {
        add("acl1_100k", &gen100, "acl1_100k", "acl1_100k_trace");
        add("fw1_100k", &gen100, "fw1_100k", "fw1_100k_trace");
        add("ipc1_100k", &gen100, "ipc1_100k", "ipc1_100k_trace");
    }
    v
}

fn shuffled(mut v: Vec<FlowKey>) -> Vec<FlowKey> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, usize::try_from(s % (i as u64 + 1)).unwrap_or(0));
    }
    v
}

fn bench_classbench(c: &mut Criterion) {
    for set in sets() {
        let filters = classbench::read_filters(&set.rules).unwrap_or_else(|e| panic!("{e}"));
        let rules = classbench::to_rules(&filters);
        let trace = classbench::read_trace(&set.trace).unwrap_or_else(|e| panic!("{e}"));
        let classifier = Classifier::build(&rules).unwrap_or_else(|e| panic!("{}: {e}", set.name));
        let in_order: Vec<FlowKey> = trace.iter().map(Header::key).collect();
        let shuffled = shuffled(in_order.clone());

        let mut group = c.benchmark_group("classify_lookup");
        group.throughput(Throughput::Elements(in_order.len() as u64));
        for (order, keys) in [("trace", &in_order), ("shuffled", &shuffled)] {
            let mut out: Vec<Option<Match>> = vec![None; keys.len()];
            group.bench_function(BenchmarkId::new(set.name, order), |b| {
                b.iter(|| {
                    for (k, o) in keys.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
                        classifier.lookup_batch(black_box(k), o);
                    }
                    black_box(&out);
                })
            });
        }
        group.finish();

        let mut group = c.benchmark_group("classify_build");
        group.sample_size(10);
        group.throughput(Throughput::Elements(rules.len() as u64));
        group.bench_function(set.name, |b| b.iter(|| Classifier::build(black_box(&rules))));
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_classbench
}
criterion_main!(benches);
