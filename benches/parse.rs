//! Parsing throughput of `moat_wire::parse_frame`, per packet type and on an IMIX-like mix.
//!
//! `cargo bench --bench parse` (add `-- --quick` for a fast run). Throughput is reported in
//! elements, i.e. packets per second on one core; the frames are in L1/L2 cache, so this is the
//! parser's own cost, not the memory system's.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use moat_wire::builder::{build_frame, samples};
use moat_wire::parse_frame;

/// Frames in the mix benchmark: large enough that the branch predictor cannot learn the sequence,
/// small enough (~600 KB) to stay in L2 on most machines.
const MIX_FRAMES: usize = 1024;

fn build(spec: &moat_wire::builder::FrameSpec<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    match build_frame(spec, &mut buf) {
        Ok(n) => buf.truncate(n),
        Err(e) => panic!("sample does not build: {e}"),
    }
    buf
}

/// A fixed pseudo-random sequence of sample frames drawn by weight (xorshift, fixed seed, so
/// every run and every machine measures the same sequence).
fn mix() -> Vec<Vec<u8>> {
    let samples = samples::traffic_mix();
    let frames: Vec<Vec<u8>> = samples.iter().map(|s| build(&s.spec)).collect();
    let total: u32 = samples.iter().map(|s| s.weight).sum();
    let mut state: u32 = 0x9e37_79b9;
    (0..MIX_FRAMES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let mut pick = state % total;
            let mut chosen = 0;
            for (i, s) in samples.iter().enumerate() {
                if pick < s.weight {
                    chosen = i;
                    break;
                }
                pick -= s.weight;
            }
            frames[chosen].clone()
        })
        .collect()
}

fn bench_mix(c: &mut Criterion) {
    let frames = mix();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("parse_mix");
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.bench_function(format!("imix_{}_frames_avg_{}B", frames.len(), bytes / frames.len()), |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for f in &frames {
                ok += usize::from(parse_frame(black_box(f)).is_ok());
            }
            assert_eq!(ok, frames.len());
        })
    });
    group.finish();
}

fn bench_each(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_one");
    group.throughput(Throughput::Elements(1));
    for s in samples::traffic_mix() {
        let frame = build(&s.spec);
        group.bench_function(format!("{}_{}B", s.name, frame.len()), |b| b.iter(|| parse_frame(black_box(&frame))));
    }
    // The drop path matters too: a flood of garbage must be as cheap to refuse as to parse.
    let mut buf = [0u8; 2048];
    for reason in [moat_wire::DropReason::Ipv4BadChecksum, moat_wire::DropReason::FragmentOverlap] {
        let Ok(n) = samples::malformed(reason, &mut buf) else { panic!("sample for {reason}") };
        let frame = buf[..n].to_vec();
        group.bench_function(format!("drop_{}", reason.name()), |b| b.iter(|| parse_frame(black_box(&frame))));
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_mix, bench_each
}
criterion_main!(benches);
