//! Shared set-up of the end-to-end tests (`tests/wire_*.rs`): a lab per test, moat started on its wire, and
//! loud skipping where the machine cannot run them.
//!
//! Environment:
//! - `MOAT_E2E_REQUIRE=1`: fail instead of skipping when the lab cannot run (not root, no `ip netns`).
//! - `MOAT_E2E_XDP_MODE=native|generic`: passed to `moat run --xdp-mode` (default: moat's default).
//! - `MOAT_LOG`: passed through to moat (its log is printed when a test fails).
#![allow(dead_code)]

use moat::lab::{Lab, MoatOptions, MoatProcess, MoatStats, WireTopology, cleanup_stale, unavailable_reason};
use std::fmt::Debug;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Once, OnceLock};
use std::time::Duration;

#[allow(unused_imports)]
pub use moat::lab::probe::{self, Outcome};

/// Liveness bound for a connection that should succeed (never a performance assertion).
pub const CONNECT: Duration = Duration::from_secs(10);
/// How long an unanswered probe waits before it counts as blocked.
pub const BLOCKED_AFTER: Duration = Duration::from_secs(2);

/// The lab for one test, or `None` (after a loud message) when this machine cannot run it.
pub fn lab(test: &str) -> Option<Lab> {
    static CLEANUP: Once = Once::new();
    static UNAVAILABLE: OnceLock<Option<String>> = OnceLock::new();
    if let Some(reason) = UNAVAILABLE.get_or_init(unavailable_reason) {
        if std::env::var_os("MOAT_E2E_REQUIRE").is_some_and(|v| v == "1") {
            panic!("{test}: the netns lab cannot run here and MOAT_E2E_REQUIRE=1: {reason}");
        }
        // Straight to fd 2: libtest captures `eprintln!` of passing tests, and a skip must never be silent.
        let banner = "!".repeat(78);
        let _ = writeln!(
            std::io::stderr().lock(),
            "\n{banner}\n!!! SKIPPED {test}: {reason}\n!!! End-to-end tests need root and network namespaces; \
             set MOAT_E2E_REQUIRE=1 to fail instead.\n{banner}"
        );
        return None;
    }
    CLEANUP.call_once(|| match cleanup_stale(moat::lab::DEFAULT_PREFIX) {
        Ok(removed) if !removed.is_empty() => eprintln!("removed debris of earlier runs: {removed:?}"),
        Ok(_) => {}
        Err(err) => eprintln!("cleaning debris of earlier runs: {err:#}"),
    });
    Some(Lab::new().unwrap_or_else(|e| panic!("{test}: cannot create a lab: {e:#}")))
}

/// A lab with the standard topology (`queues` queues per veth end), or `None` when skipped.
pub fn wire(test: &str, queues: u32) -> Option<(Lab, WireTopology)> {
    let mut lab = lab(test)?;
    let topo = WireTopology::build(&mut lab, queues).unwrap_or_else(|e| panic!("{test}: building the topology: {e:#}"));
    Some((lab, topo))
}

/// `addr/32` or `addr/128`.
pub fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// Writes `rules` as the only rule file and starts moat on the topology's wire.
pub fn start_moat(lab: &Lab, topo: &WireTopology, rules: &str, queues: Option<u32>) -> MoatProcess {
    let dir = lab.write_files("rules", &[("50-test.acl", rules)]).unwrap_or_else(|e| panic!("{e:#}"));
    let mut opts = MoatOptions::new(env!("CARGO_BIN_EXE_moat"), dir).wire(&topo.if_a, &topo.if_b);
    opts.queues = queues;
    start_with(lab, topo, opts, || rules.to_owned())
}

/// The topology as a Kubernetes cluster: namespace `clients` with pod `client`, namespace `servers` with pod
/// `server`, each with its IPv4 (and IPv6) address, and an IP pool per side (the zones of flow logs).
pub fn cluster(topo: &WireTopology) -> String {
    let pod = |ns: &str, name: &str, h: &moat::lab::Host| {
        let ips: Vec<String> = std::iter::once(h.ipv4.to_string()).chain(h.ipv6.map(|v| v.to_string())).collect();
        let list: Vec<String> = ips.iter().map(|ip| format!("{{ip: \"{ip}\"}}")).collect();
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{side: {ns}}}}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\n\
             status: {{podIP: \"{}\", podIPs: [{}]}}\n---\n\
             apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata: {{name: {ns}-pool}}\nspec: {{cidr: \"{}/32\"}}\n---\n",
            ips[0],
            list.join(", "),
            h.ipv4
        )
    };
    pod("clients", "client", &topo.client) + &pod("servers", "server", &topo.server)
}

/// Writes `files` into the manifests directory (`<workdir>/manifests`, created) and starts moat on it with
/// `extra` arguments.
pub fn start_moat_manifests(
    lab: &Lab,
    topo: &WireTopology,
    files: &[(&str, &str)],
    queues: Option<u32>,
    extra: &[&str],
) -> MoatProcess {
    let dir = lab.write_files("manifests", files).unwrap_or_else(|e| panic!("{e:#}"));
    let mut opts = MoatOptions::new(env!("CARGO_BIN_EXE_moat"), dir).wire(&topo.if_a, &topo.if_b);
    opts.queues = queues;
    opts.extra_args = extra.iter().map(|a| (*a).to_owned()).collect();
    start_with(lab, topo, opts, || files.iter().map(|(n, t)| format!("--- {n}\n{t}")).collect())
}

fn start_with(lab: &Lab, topo: &WireTopology, mut opts: MoatOptions, describe: impl FnOnce() -> String) -> MoatProcess {
    if let Ok(mode) = std::env::var("MOAT_E2E_XDP_MODE") {
        opts = opts.xdp_mode(&mode);
    }
    if let Ok(log) = std::env::var("MOAT_LOG") {
        opts.env.push(("MOAT_LOG".to_owned(), log));
    }
    match MoatProcess::start(&topo.moat, lab.workdir(), &opts) {
        Ok(moat) => moat,
        Err(e) => panic!("cannot start moat: {e:#}\npolicy:\n{}", describe()),
    }
}

/// Stops moat and returns its counters, panicking with its log when it does not stop cleanly.
pub fn stop_moat(moat: MoatProcess) -> MoatStats {
    let stats = moat.stop().unwrap_or_else(|e| panic!("stopping moat: {e:#}"));
    eprintln!("moat counters:\n{}", stats.table());
    stats
}

/// Unwraps `result`, or panics with the error and moat's log (what the dataplane saw is the first question).
#[track_caller]
pub fn ok<T, E: Debug>(moat: &MoatProcess, result: Result<T, E>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{e:?}\n--- moat output so far ---\n{}", moat.log()),
    }
}

/// Asserts `cond`, or panics with `what` and moat's log.
#[track_caller]
pub fn check(moat: &MoatProcess, cond: bool, what: impl FnOnce() -> String) {
    if !cond {
        panic!("{}\n--- moat output so far ---\n{}", what(), moat.log());
    }
}

/// Drops counted as policy decisions (the reason names are the dataplane's).
pub fn policy_drops(stats: &MoatStats) -> u64 {
    stats.dropped_where(|r| {
        let r = r.to_ascii_lowercase();
        r.contains("policy") || r.contains("deny") || r.contains("denied") || r.contains("rule")
    })
}

/// Probes until `probe` says yes (a liveness bound of 20 s, never a performance assertion: a reload takes
/// milliseconds).
#[track_caller]
pub fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !probe() {
        assert!(std::time::Instant::now() < deadline, "{what}: not seen within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn sock(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// Deterministic pseudo-random bytes (xorshift64*), so a corrupted transfer is not hidden by a repeating pattern.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// FNV-1a, to name a payload in messages.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}
