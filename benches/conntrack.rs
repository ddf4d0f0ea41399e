//! Connection tracking: the established-flow path and the new-flow path, per packet on one core.
//!
//! `cargo bench --bench conntrack` (add `-- --warm-up-time 1 --measurement-time 3` for a short
//! run). Throughput is in elements = packets per second on one core; one iteration is one batch of
//! `BATCH` frames, as a worker takes them from its RX ring.
//!
//! - `conntrack_established/<flows>`: parse + track (lookup, TCP state machine, counters) of
//!   frames of established TCP connections, half client data, half server ACKs, with 1K, 100K and
//!   1M connections live in the table. Each pass visits the frames in a shuffled order, one frame
//!   per connection (at 1M, a random 262,144 of them), so the larger tables miss the caches as a
//!   real worker would.
//! - `conntrack_established_batched/<flows>`: the same, through `FlowTable::track_batch` (parse the
//!   batch, then track it with the memory accesses of its packets overlapped).
//! - `conntrack_established_track_only/<flows>`: the same packets pre-parsed, tracked one by one:
//!   the tracker's own cost.
//! - `conntrack_new_flow/<set>`: parse + policy (the ClassBench 10K-rule sets through the compiled
//!   classifier, `../shared/classbench`; skipped with a message when absent) + insert, on the
//!   distinct 5-tuples of the set's trace as TCP SYNs and UDP datagrams, into a full table: every
//!   packet is a new flow that evicts the oldest half-open one (the steady state of a scan or SYN
//!   flood). The evicted flows' records are taken off the queue inside the measured loop, as the
//!   control side would. `conntrack_new_flow_no_policy` is the same without the classifier.
//!
//! Setup prints the table's memory per flow at 1M flows. Under `cargo test --all-targets`
//! (criterion's test mode) only the small cases run.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use moat_fastpath::classify::engine::Classifier;
use moat_fastpath::classify::engine::classbench;
use moat_fastpath::conntrack::{ConntrackConfig, FlowTable, Outcome, RecordQueue, TrackInput};
use moat_fastpath::{Admission, FlowKey, Verdict};
use moat_wire::builder::{FrameSpec, Ipv4Spec, NetworkSpec, TransportSpec, build_frame};
use moat_wire::{IpSummary, Network, TcpFlags, VlanTags, parse_frame};

/// Frames per batch, as a worker's RX batch.
const BATCH: usize = 64;
/// Most distinct frames in one pass of the established benchmark (a 17 MB frame buffer).
const MAX_FRAMES: usize = 262_144;
/// Frames are stored at this stride in one buffer.
const STRIDE: usize = 128;
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
const NOW: u64 = 1_000_000_000;

fn allow_all(_: &FlowKey) -> Admission {
    Admission::bare(Verdict::Allow)
}

/// Frames in one buffer at a fixed stride, with their lengths.
struct Frames {
    bytes: Vec<u8>,
    lens: Vec<u32>,
}

impl Frames {
    fn new() -> Frames {
        Frames { bytes: Vec::new(), lens: Vec::new() }
    }

    fn push(&mut self, spec: &FrameSpec<'_>) {
        let mut buf = [0u8; STRIDE];
        let n = build_frame(spec, &mut buf).unwrap_or_else(|e| panic!("frame does not build: {e}"));
        self.bytes.extend_from_slice(&buf);
        self.lens.push(u32::try_from(n).unwrap_or(0));
    }

    fn len(&self) -> usize {
        self.lens.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let len = self.lens[i] as usize;
        &self.bytes[i * STRIDE..i * STRIDE + len]
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut s = seed;
    for i in (1..v.len()).rev() {
        let j = usize::try_from(xorshift(&mut s) % (i as u64 + 1)).unwrap_or(0);
        v.swap(i, j);
    }
}

fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff))
}

fn client_port(i: u32) -> u16 {
    1024 + (i % 60_000) as u16
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: TcpFlags, seq: u32, ack: u32) -> IpSummary {
    IpSummary {
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        protocol: 6,
        fragment: moat_wire::Fragment::NotFragmented,
        fragment_id: 0,
        fragment_offset: 0,
        more_fragments: false,
        ttl: 64,
        payload_offset: 34,
        payload_len: 20,
        transport: moat_wire::Transport::Tcp { src_port: sport, dst_port: dport, flags, seq, ack },
    }
}

fn table(capacity: usize) -> FlowTable {
    FlowTable::new(
        ConntrackConfig { capacity, hash_seed: Some(0x5eed), ..ConntrackConfig::default() },
        Arc::new(RecordQueue::new(1 << 16)),
    )
}

/// A table with `flows` established connections (client i:port → server:443, ISNs 1000 and
/// 5000), and frames of them in a shuffled order: even ones client data, odd ones server ACKs.
fn established(flows: u32) -> (FlowTable, Frames) {
    let mut t = table(flows as usize);
    let syn = TcpFlags::SYN;
    let syn_ack = TcpFlags::SYN | TcpFlags::ACK;
    for i in 0..flows {
        let (c, p) = (client(i), client_port(i));
        for ip in [
            tcp(c, p, SERVER, 443, syn, 1000, 0),
            tcp(SERVER, 443, c, p, syn_ack, 5000, 1001),
            tcp(c, p, SERVER, 443, TcpFlags::ACK, 1001, 5001),
        ] {
            let outcome = t.track(&ip, &VlanTags::NONE, 60, NOW, 1, &mut allow_all);
            assert_eq!(outcome, Outcome::Forward);
        }
    }
    assert_eq!(t.len(), flows as usize);
    let mut chosen: Vec<u32> = (0..flows).collect();
    shuffle(&mut chosen, 0x1234_5678);
    chosen.truncate(MAX_FRAMES);
    let mut frames = Frames::new();
    let payload = [0x42u8; 32];
    for (n, &i) in chosen.iter().enumerate() {
        let (c, p) = (client(i), client_port(i));
        let spec = if n % 2 == 0 {
            let t = TransportSpec::Tcp {
                src_port: p,
                dst_port: 443,
                seq: 1001,
                ack: 5001,
                flags: TcpFlags::PSH | TcpFlags::ACK,
                window: 65_535,
                options: &[],
                payload: &payload,
            };
            Ipv4Spec::new(c, SERVER, t)
        } else {
            let mut t = TransportSpec::tcp(443, p, TcpFlags::ACK);
            if let TransportSpec::Tcp { seq, ack, .. } = &mut t {
                (*seq, *ack) = (5001, 1001);
            }
            Ipv4Spec::new(SERVER, c, t)
        };
        frames.push(&FrameSpec::new(NetworkSpec::Ipv4(spec)));
    }
    (t, frames)
}

fn measuring() -> bool {
    // criterion passes --bench when measuring; without it (cargo test) each bench runs once.
    std::env::args().any(|a| a == "--bench")
}

fn bench_established(c: &mut Criterion) {
    let sizes: &[(u32, &str)] =
        if measuring() { &[(1_000, "1k"), (100_000, "100k"), (1_000_000, "1m")] } else { &[(1_000, "1k")] };
    for &(flows, name) in sizes {
        let (mut t, frames) = established(flows);
        if flows == 1_000_000 {
            println!(
                "conntrack memory: {} bytes for a {}-flow table = {:.1} bytes per flow ({:.1} MB, {:.1} MiB)",
                t.bytes(),
                t.capacity(),
                t.bytes_per_flow(),
                t.bytes() as f64 / 1e6,
                t.bytes() as f64 / (1024.0 * 1024.0)
            );
        }
        let n = frames.len();
        let mut group = c.benchmark_group("conntrack_established");
        group.throughput(Throughput::Elements(BATCH as u64));
        let mut cursor = 0usize;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut forwarded = 0u32;
                for _ in 0..BATCH {
                    let frame = frames.get(cursor);
                    cursor = if cursor + 1 == n { 0 } else { cursor + 1 };
                    let Ok(summary) = parse_frame(black_box(frame)) else { continue };
                    let Network::Ip(ip) = summary.network else { continue };
                    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
                    let outcome = t.track(&ip, &summary.vlan, len, NOW, 1, &mut allow_all);
                    forwarded += u32::from(outcome == Outcome::Forward);
                }
                black_box(forwarded)
            })
        });
        group.finish();

        let mut group = c.benchmark_group("conntrack_established_batched");
        group.throughput(Throughput::Elements(BATCH as u64));
        let mut cursor = 0usize;
        let empty =
            TrackInput { ip: tcp(SERVER, 1, SERVER, 1, TcpFlags::ACK, 0, 0), vlan: VlanTags::NONE, frame_len: 0 };
        let mut inputs = [empty; BATCH];
        let mut outcomes = [Outcome::Forward; BATCH];
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut parsed = 0;
                for _ in 0..BATCH {
                    let frame = frames.get(cursor);
                    cursor = if cursor + 1 == n { 0 } else { cursor + 1 };
                    let Ok(summary) = parse_frame(black_box(frame)) else { continue };
                    let Network::Ip(ip) = summary.network else { continue };
                    let frame_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
                    inputs[parsed] = TrackInput { ip, vlan: summary.vlan, frame_len };
                    parsed += 1;
                }
                t.track_batch(&inputs[..parsed], NOW, 1, &mut allow_all, &mut outcomes[..parsed]);
                black_box(outcomes.iter().filter(|o| **o == Outcome::Forward).count())
            })
        });
        group.finish();

        let parsed: Vec<(IpSummary, VlanTags, u32)> = (0..n)
            .filter_map(|i| {
                let f = frames.get(i);
                let s = parse_frame(f).ok()?;
                let Network::Ip(ip) = s.network else { return None };
                Some((ip, s.vlan, u32::try_from(f.len()).unwrap_or(0)))
            })
            .collect();
        let mut group = c.benchmark_group("conntrack_established_track_only");
        group.throughput(Throughput::Elements(BATCH as u64));
        let mut cursor = 0usize;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut forwarded = 0u32;
                for _ in 0..BATCH {
                    let (ip, vlan, len) = &parsed[cursor];
                    cursor = if cursor + 1 == n { 0 } else { cursor + 1 };
                    let outcome = t.track(black_box(ip), vlan, *len, NOW, 1, &mut allow_all);
                    forwarded += u32::from(outcome == Outcome::Forward);
                }
                black_box(forwarded)
            })
        });
        group.finish();
        let s = t.counters().snapshot();
        assert_eq!(s.invalid_total(), 0, "every benchmark packet is valid");
        assert_eq!(s.occupancy, u64::from(flows));
    }
}

/// The distinct TCP/UDP 5-tuples of a trace, as a SYN or a datagram each, shuffled.
fn new_flow_frames(headers: &[classbench::Header]) -> Frames {
    let mut seen = std::collections::HashSet::new();
    let mut keys: Vec<&classbench::Header> = headers
        .iter()
        .filter(|h| matches!(h.proto, 6 | 17))
        .filter(|h| seen.insert((h.src, h.dst, h.src_port, h.dst_port, h.proto)))
        .collect();
    shuffle(&mut keys, 0xfeed);
    let mut frames = Frames::new();
    for h in keys {
        let (src, dst) = (Ipv4Addr::from(h.src), Ipv4Addr::from(h.dst));
        let t = if h.proto == 6 {
            TransportSpec::tcp(h.src_port, h.dst_port, TcpFlags::SYN)
        } else {
            TransportSpec::Udp { src_port: h.src_port, dst_port: h.dst_port, payload: b"query" }
        };
        frames.push(&FrameSpec::new(NetworkSpec::Ipv4(Ipv4Spec::new(src, dst, t))));
    }
    frames
}

fn bench_new_flow(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/classbench/lyxocs_ruleSet");
    if !root.is_dir() {
        eprintln!("SKIPPED: {} is absent; the new-flow benchmarks did not run", root.display());
        return;
    }
    let sets: &[(&str, &str, &str)] = if measuring() {
        &[
            ("acl1_10k", "acl1_10k", "acl1_10k_trace.GENERATED"),
            ("fw1_10k", "fw1_10k", "fw1_10k_trace"),
            ("ipc1_10k", "ipc1_10k", "ipc1_10k_trace"),
        ]
    } else {
        &[("acl1_1k", "acl1_1k", "acl1_1k_trace")]
    };
    for &(name, rules_file, trace_file) in sets {
        let (rules, trace) = (root.join(rules_file), root.join(trace_file));
        if !rules.is_file() || !trace.is_file() {
            eprintln!("SKIPPED: {} or its trace is absent", rules.display());
            continue;
        }
        let filters = classbench::read_filters(&rules).unwrap_or_else(|e| panic!("{e}"));
        let classifier = Classifier::build(&classbench::to_rules(&filters)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let headers = classbench::read_trace(&trace).unwrap_or_else(|e| panic!("{e}"));
        let frames = new_flow_frames(&headers);
        let n = frames.len();
        // Smaller than the number of distinct flows, so every flow is evicted before it comes round
        // again and every packet takes the new-flow path.
        let capacity = (n / 4).max(64);
        let mut classify =
            |k: &FlowKey| Admission::bare(if classifier.lookup(k).is_some() { Verdict::Allow } else { Verdict::Deny });
        for (group_name, with_policy) in [("conntrack_new_flow", true), ("conntrack_new_flow_no_policy", false)] {
            let records = Arc::new(RecordQueue::new(1 << 16));
            let mut t = FlowTable::new(
                ConntrackConfig { capacity, hash_seed: Some(0x5eed), ..ConntrackConfig::default() },
                Arc::clone(&records),
            );
            let mut cursor = 0usize;
            let mut run = |t: &mut FlowTable, cursor: &mut usize| {
                let mut forwarded = 0u32;
                for _ in 0..BATCH {
                    let frame = frames.get(*cursor);
                    *cursor = if *cursor + 1 == n { 0 } else { *cursor + 1 };
                    let Ok(summary) = parse_frame(black_box(frame)) else { continue };
                    let Network::Ip(ip) = summary.network else { continue };
                    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
                    let outcome = if with_policy {
                        t.track(&ip, &summary.vlan, len, NOW, 1, &mut classify)
                    } else {
                        t.track(&ip, &summary.vlan, len, NOW, 1, &mut allow_all)
                    };
                    forwarded += u32::from(outcome == Outcome::Forward);
                }
                // Every insert evicts a flow whose record goes on the queue; take them off as the
                // control side would, so pushes succeed (this pessimises the figure by the pops).
                while records.pop().is_some() {}
                forwarded
            };
            // Fill the table first, so that what is measured is the steady state (evict + insert).
            for _ in 0..(2 * n).div_ceil(BATCH) {
                run(&mut t, &mut cursor);
            }
            let before = t.counters().snapshot();
            let mut group = c.benchmark_group(group_name);
            group.throughput(Throughput::Elements(BATCH as u64));
            group.bench_function(BenchmarkId::from_parameter(name), |b| b.iter(|| black_box(run(&mut t, &mut cursor))));
            group.finish();
            let after = t.counters().snapshot();
            let packets = after.policy_checks - before.policy_checks;
            println!(
                "{group_name}/{name}: {} distinct flows, table of {capacity}; during measurement {} policy checks, \
                 {} denied, {} inserts, {} table-full, {} records dropped (queue full)",
                n,
                packets,
                after.denied - before.denied,
                after.inserts - before.inserts,
                after.table_full - before.table_full,
                after.records_dropped - before.records_dropped,
            );
        }
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
    targets = bench_established, bench_new_flow
}
criterion_main!(benches);
