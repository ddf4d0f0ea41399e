//! `moat demo`: a zone firewall in network namespaces, with real traffic.
//!
//! ```text
//!  dmz-web  10.77.0.10 ─┐                     ┌─ trusted-app 10.77.0.70      restricted-db 10.77.0.140
//!  dmz-mail 10.77.0.11 ─┴─ [dmz bridge] ─ dmz0 │ trust0 ─ [trusted bridge] ─ trust1 │ restr0 ─ [restricted bridge]
//!                                        └─────┴── moat, pair 1 ──┘          └───── moat, pair 2 ─────┘
//! ```
//!
//! The three zones are address ranges of one /24 (dmz 10.77.0.0/26, trusted 10.77.0.64/26, restricted
//! 10.77.0.128/26), each on its own L2 segment (a bridge in a zone namespace, every host in a namespace of its own).
//! moat runs in one namespace on two wire pairs, `dmz0,trust0` and `trust1,restr0`, so that every flow between two
//! zones crosses it (dmz ↔ restricted crosses both pairs). The policy is `examples/demo/*.yaml` (namespaces,
//! pods, IP pools, a Calico tier of GlobalNetworkPolicies, Kubernetes and Calico NetworkPolicies), compiled into
//! the binary. Each observation is a real TCP connection with an echo, a UDP request/response or a ping; the table says
//! what was expected, what happened, and whether the two agree. The exit code is non-zero when any disagree.
//!
//! Everything lives in namespaces named `mtdemo-<pid>-…`, removed on exit, on error and on Ctrl-C (SIGINT, SIGTERM
//! and SIGHUP raise a flag, so the demo stops between two steps and cleans up; a second Ctrl-C exits at once);
//! the debris of a demo that was killed outright is removed by the next one.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use moat::lab::probe::{self, Outcome, TcpEchoServer, UdpEchoServer};
use moat::lab::{Host, Lab, MacAddr, MoatOptions, MoatProcess, MoatStats, Netns};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// The demo's manifests (a cluster of three zones and its policies), shipped in the binary.
const MANIFESTS: [(&str, &str); 3] = [
    ("00-cluster.yaml", include_str!("../../examples/demo/00-cluster.yaml")),
    ("10-zones-tier.yaml", include_str!("../../examples/demo/10-zones-tier.yaml")),
    ("20-namespaces.yaml", include_str!("../../examples/demo/20-namespaces.yaml")),
];

/// Prefix of the demo's namespaces (tests use another, so both can run at once).
const PREFIX: &str = "mtdemo";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// XDP attach mode for moat.
    #[arg(long, value_enum, default_value_t = DemoXdpMode::Native)]
    pub xdp_mode: DemoXdpMode,
    /// How long a probe waits for an answer before it counts as blocked, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub wait_ms: u64,
    /// The moat binary to run between the zones (default: this executable).
    #[arg(long, value_name = "PATH")]
    pub moat: Option<PathBuf>,
    /// Join the zones with plain Linux bridges instead of moat: shows what the network does without the
    /// filter (every flow passes, so the blocked expectations fail).
    #[arg(long)]
    pub without_moat: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DemoXdpMode {
    Native,
    Generic,
}

/// Set by the signal handlers; checked between steps.
static INTERRUPTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    // Ctrl-C (or SIGTERM/SIGHUP) only raises a flag that the demo checks between steps, so that it stops moat
    // in order and removes its namespaces; a second one exits at once. (Handlers, unlike a blocked signal
    // mask, are not inherited by the processes the demo starts: moat gets its own SIGTERM handling.)
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&INTERRUPTED))
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&INTERRUPTED)).context("installing signal handlers")?;
    }

    if let Some(reason) = moat::lab::unavailable_reason() {
        bail!("the demo builds network namespaces and needs root: {reason}");
    }
    match moat::lab::cleanup_stale(PREFIX) {
        Ok(removed) if !removed.is_empty() => println!("removed {} namespaces left by an earlier demo", removed.len()),
        Ok(_) => {}
        Err(err) => eprintln!("moat demo: cleaning up an earlier demo: {err:#}"),
    }

    let started = Instant::now();
    let mut lab = Lab::with_prefix(PREFIX)?;
    let tag = lab.tag().to_owned();
    let result = demo(&mut lab, &args);
    // Explicit teardown so that its errors are reported; drop would only print them.
    let teardown = lab.teardown();
    if result.is_err() && INTERRUPTED.load(Ordering::SeqCst) {
        teardown?;
        println!("interrupted; cleaned up");
        return Ok(ExitCode::from(130));
    }
    let code = result?;
    teardown?;
    println!("cleaned up: namespaces {tag}-* and their interfaces removed ({:.1} s in all)", secs(started));
    Ok(code)
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!("\nmoat demo: interrupted: stopping moat and cleaning up …");
        bail!("interrupted");
    }
    Ok(())
}

/// The demo's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    DmzWeb,
    DmzMail,
    TrustedApp,
    RestrictedDb,
}

impl Who {
    const ALL: [Who; 4] = [Who::DmzWeb, Who::DmzMail, Who::TrustedApp, Who::RestrictedDb];

    fn name(self) -> &'static str {
        match self {
            Who::DmzWeb => "dmz-web",
            Who::DmzMail => "dmz-mail",
            Who::TrustedApp => "trusted-app",
            Who::RestrictedDb => "restricted-db",
        }
    }

    fn last_octet(self) -> u8 {
        match self {
            Who::DmzWeb => 10,
            Who::DmzMail => 11,
            Who::TrustedApp => 70,
            Who::RestrictedDb => 140,
        }
    }

    fn ip(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, self.last_octet())
    }
}

#[derive(Debug, Clone, Copy)]
enum Probe {
    Tcp(u16),
    Udp(u16),
    Ping,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Tcp(p) => write!(f, "tcp/{p}"),
            Probe::Udp(p) => write!(f, "udp/{p}"),
            Probe::Ping => write!(f, "icmp echo"),
        }
    }
}

/// Every host listens on these, so that a blocked probe is blocked by moat, not by a closed port.
const TCP_PORTS: [u16; 3] = [22, 5432, 8080];
const UDP_PORTS: [u16; 1] = [53];

/// (from, to, probe, expected to pass, why)
const OBSERVATIONS: [(Who, Who, Probe, bool, &str); 10] = [
    (Who::DmzWeb, Who::TrustedApp, Probe::Tcp(8080), true, "dmz may call the app's API"),
    (Who::DmzMail, Who::TrustedApp, Probe::Udp(53), true, "dmz may ask the app host's DNS"),
    (Who::DmzWeb, Who::TrustedApp, Probe::Ping, true, "dmz may ping the trusted zone"),
    (Who::DmzWeb, Who::TrustedApp, Probe::Tcp(5432), false, "only the API port is open to the dmz"),
    (Who::DmzWeb, Who::RestrictedDb, Probe::Tcp(5432), false, "the dmz never reaches the database"),
    (Who::DmzMail, Who::RestrictedDb, Probe::Ping, false, "not even by ping"),
    (Who::TrustedApp, Who::RestrictedDb, Probe::Tcp(5432), true, "the app talks to its database"),
    (Who::TrustedApp, Who::DmzWeb, Probe::Ping, true, "the trusted zone may ping anything"),
    (Who::TrustedApp, Who::DmzWeb, Probe::Tcp(22), false, "no ssh from the app tier into the dmz"),
    (Who::RestrictedDb, Who::TrustedApp, Probe::Tcp(8080), false, "the database opens no connections"),
];

struct Zones {
    hosts: Vec<(Who, Host)>,
    moat_ns: Netns,
    /// Moat's wire pairs, zone side by zone side.
    pairs: [(&'static str, &'static str); 2],
}

impl Zones {
    fn host(&self, who: Who) -> Result<&Host> {
        self.hosts.iter().find(|(w, _)| *w == who).map(|(_, h)| h).with_context(|| format!("no host {}", who.name()))
    }
}

fn build(lab: &mut Lab) -> Result<Zones> {
    let moat_ns = lab.add_netns("moat")?;
    let pairs = [("dmz0", "trust0"), ("trust1", "restr0")];
    // Zone segments: a bridge in a namespace of its own, with moat's interfaces plugged into it.
    let dmz = zone(lab, "dmz", &moat_ns, &[pairs[0].0])?;
    let trusted = zone(lab, "trusted", &moat_ns, &[pairs[0].1, pairs[1].0])?;
    let restricted = zone(lab, "restricted", &moat_ns, &[pairs[1].1])?;
    for (a, b) in pairs {
        for ifname in [a, b] {
            // No addresses, no IPv6 link-local: moat's namespace sends nothing of its own.
            moat_ns.ip(&["link", "set", "dev", ifname, "addrgenmode", "none"])?;
            moat_ns.ip(&["link", "set", "dev", ifname, "up"])?;
        }
    }
    let mut hosts = Vec::new();
    for who in Who::ALL {
        let segment = match who {
            Who::DmzWeb | Who::DmzMail => &dmz,
            Who::TrustedApp => &trusted,
            Who::RestrictedDb => &restricted,
        };
        let ns = lab.add_netns(who.name())?;
        let port = format!("p-{}", who.name());
        lab.add_veth(&ns, "eth0", segment, &port, 1)?;
        plug(segment, &port)?;
        let mac = MacAddr([0x02, 0x6d, 0x74, 0x77, 0x00, who.last_octet()]);
        hosts.push((who, Host::configure(&ns, "eth0", mac, who.ip(), 24, None)?));
    }
    Ok(Zones { hosts, moat_ns, pairs })
}

/// A zone segment: namespace `<zone>` with bridge `br0`, linked to each of moat's `moat_ifs`.
fn zone(lab: &mut Lab, name: &str, moat_ns: &Netns, moat_ifs: &[&str]) -> Result<Netns> {
    let ns = lab.add_netns(name)?;
    // A segment is pure L2: no IPv6 on its interfaces, and no multicast snooping (with it, the bridge joins the
    // multicast-router-discovery groups and sends IGMP/MLD reports, which moat would count as denied traffic).
    for key in ["net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"] {
        ns.sysctl(key, "1")?;
    }
    ns.ip(&["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])?;
    ns.ip(&["link", "set", "dev", "br0", "addrgenmode", "none"])?;
    ns.ip(&["link", "set", "dev", "br0", "up"])?;
    for moat_if in moat_ifs {
        let port = format!("p-{moat_if}");
        lab.add_veth(&ns, &port, moat_ns, moat_if, 1)?;
        plug(&ns, &port)?;
    }
    Ok(ns)
}

fn plug(segment: &Netns, port: &str) -> Result<()> {
    segment.ip(&["link", "set", "dev", port, "master", "br0"])?;
    segment.ip(&["link", "set", "dev", port, "addrgenmode", "none"])?;
    segment.ip(&["link", "set", "dev", port, "up"])?;
    Ok(())
}

/// The flow log moat wrote (one JSON document per ended flow), as a table.
fn print_flow_log(path: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the flow log {}", path.display()))?;
    let docs: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    println!("flow log ({} flows, {}; one JSON document per flow, Calico field names):", docs.len(), path.display());
    println!(
        "  {:<28} {:<28} {:<9} {:<6} {:>5} {:>5}  {:<9} policies (source egress, then destination ingress)",
        "source", "destination", "proto", "action", "pkts→", "←pkts", "end"
    );
    let endpoint = |d: &serde_json::Value, side: &str| {
        let s = |k: &str| d[format!("{side}_{k}")].as_str().unwrap_or("-").to_owned();
        if s("namespace") == "-" { s("ip") } else { format!("{}/{} ({})", s("namespace"), s("name"), s("zone")) }
    };
    for d in &docs {
        let proto = match (d["proto"].as_str(), d["dest_port"].as_u64()) {
            (Some(p), Some(port)) => format!("{p}/{port}"),
            (Some(p), None) => p.to_owned(),
            (None, _) => d["proto"].to_string(),
        };
        let policies: Vec<&str> =
            d["policies"]["all_policies"].as_array().into_iter().flatten().filter_map(|p| p.as_str()).collect();
        println!(
            "  {:<28} {:<28} {:<9} {:<6} {:>5} {:>5}  {:<9} {}",
            endpoint(d, "source"),
            endpoint(d, "dest"),
            proto,
            d["action"].as_str().unwrap_or("?"),
            d["packets_out"].as_u64().unwrap_or(0),
            d["packets_in"].as_u64().unwrap_or(0),
            d["end_reason"].as_str().unwrap_or("?"),
            policies.join("  ")
        );
    }
    println!();
    Ok(())
}

fn demo(lab: &mut Lab, args: &DemoArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    println!("moat demo: three zones in network namespaces, moat between them\n");
    println!("  dmz-web 10.77.0.10, dmz-mail 10.77.0.11   (dmz 10.77.0.0/26)");
    println!("      │ dmz segment");
    println!("  [moat pair 1: dmz0 ⇄ trust0]");
    println!("      │ trusted segment ── trusted-app 10.77.0.70   (trusted 10.77.0.64/26)");
    println!("  [moat pair 2: trust1 ⇄ restr0]");
    println!("      │ restricted segment ── restricted-db 10.77.0.140   (restricted 10.77.0.128/26)\n");

    let zones = build(lab).context("building the topology")?;
    check_interrupted()?;

    let rules_dir = lab.write_files("manifests", &MANIFESTS)?;
    let flow_log = lab.workdir().join("flows.jsonl");
    println!("policy (examples/demo/*.yaml, Kubernetes and Calico resources):");
    for (file, text) in MANIFESTS {
        let header: Vec<&str> =
            text.lines().take_while(|l| l.starts_with('#')).map(|l| l.trim_start_matches("# ")).collect();
        println!("  {file:<20} {}", header.first().copied().unwrap_or(""));
        for line in header.iter().skip(1) {
            println!("  {:<20} {line}", "");
        }
    }
    println!();

    // Servers on every host before the dataplane starts.
    let mut tcp_servers = Vec::new();
    let mut udp_servers = Vec::new();
    for (who, host) in &zones.hosts {
        for port in TCP_PORTS {
            tcp_servers.push(TcpEchoServer::start(&host.ns, SocketAddr::new(who.ip().into(), port))?);
        }
        for port in UDP_PORTS {
            udp_servers.push(UdpEchoServer::start(&host.ns, SocketAddr::new(who.ip().into(), port))?);
        }
    }

    let moat = if args.without_moat {
        println!("--without-moat: Linux bridges join the zones instead of moat\n");
        for (i, (a, b)) in zones.pairs.iter().enumerate() {
            let br = format!("br{i}");
            zones.moat_ns.ip(&["link", "add", &br, "type", "bridge", "mcast_snooping", "0"])?;
            for ifname in [a, b] {
                zones.moat_ns.ip(&["link", "set", "dev", ifname, "master", &br])?;
            }
            zones.moat_ns.ip(&["link", "set", "dev", &br, "addrgenmode", "none"])?;
            zones.moat_ns.ip(&["link", "set", "dev", &br, "up"])?;
        }
        None
    } else {
        let binary = match &args.moat {
            Some(path) => path.clone(),
            None => std::env::current_exe().context("cannot find this executable")?,
        };
        let mut opts = MoatOptions::new(binary, &rules_dir).xdp_mode(match args.xdp_mode {
            DemoXdpMode::Native => "native",
            DemoXdpMode::Generic => "generic",
        });
        for (a, b) in zones.pairs {
            opts = opts.wire(a, b);
        }
        opts.extra_args = vec!["--flow-log".to_owned(), flow_log.display().to_string()];
        opts.ready_timeout = Duration::from_secs(20);
        let moat = MoatProcess::start(&zones.moat_ns, lab.workdir(), &opts).context("starting moat")?;
        println!(
            "moat running in namespace {} (pid {}) on --wire {} --wire {}, ready after {:.1} s\n",
            zones.moat_ns.name(),
            moat.pid().unwrap_or(0),
            format_args!("{},{}", zones.pairs[0].0, zones.pairs[0].1),
            format_args!("{},{}", zones.pairs[1].0, zones.pairs[1].1),
            secs(t0)
        );
        Some(moat)
    };

    let wait = Duration::from_millis(args.wait_ms.max(100));
    let wait_s = u32::try_from(args.wait_ms.div_ceil(1000).max(1)).unwrap_or(u32::MAX);
    println!(" #  {:<14} {:<14} {:<10} {:<9} {:<9} {:<5} why", "from", "to", "probe", "expected", "result", "match");
    let mut mismatches = 0usize;
    for (i, (from, to, what, expect_pass, why)) in OBSERVATIONS.iter().enumerate() {
        check_interrupted()?;
        let src = zones.host(*from)?;
        let dst_ip: IpAddr = to.ip().into();
        let outcome = match what {
            Probe::Tcp(port) => probe::tcp_reach(&src.ns, SocketAddr::new(dst_ip, *port), wait),
            Probe::Udp(port) => probe::udp_reach(&src.ns, SocketAddr::new(dst_ip, *port), wait),
            Probe::Ping => probe::ping(&src.ns, dst_ip, 1, wait_s).map(|r| r.outcome()),
        };
        let result = match &outcome {
            Ok(Outcome::Answered) => "PASS",
            Ok(Outcome::NoAnswer) => "BLOCKED",
            Ok(Outcome::Refused) => "REFUSED",
            Err(_) => "ERROR",
        };
        let expected = if *expect_pass { "PASS" } else { "BLOCKED" };
        let agrees = result == expected;
        if !agrees {
            mismatches += 1;
        }
        println!(
            "{:>2}  {:<14} {:<14} {:<10} {:<9} {:<9} {:<5} {}",
            i + 1,
            from.name(),
            to.name(),
            what.to_string(),
            expected,
            result,
            if agrees { "yes" } else { "NO" },
            why
        );
        if let Err(err) = outcome {
            println!("      error: {err:#}");
        }
    }
    check_interrupted()?;
    println!();

    if let Some(moat) = moat {
        let stats: MoatStats = moat.stop().context("stopping moat")?;
        println!("moat counters per worker (one worker per wire pair and queue):");
        print!("{}", stats.table());
        let drops = stats.dropped();
        if drops.is_empty() {
            println!("no drops");
        } else {
            let list: Vec<String> = drops.iter().map(|(r, n)| format!("{r}: {n}")).collect();
            println!("drops by reason: {}", list.join(", "));
        }
        println!();
        print_flow_log(&flow_log)?;
    }
    drop(tcp_servers);
    drop(udp_servers);

    if mismatches == 0 {
        println!("all {} observations as expected", OBSERVATIONS.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{mismatches} of {} observations differ from the expectation", OBSERVATIONS.len());
        Ok(ExitCode::FAILURE)
    }
}
