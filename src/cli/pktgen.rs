//! `moat pktgen`: transmit generated frames from an AF_XDP socket as fast as the kernel takes them.

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use moat_fastpath::pktgen::{GenLimit, GenReport, TxGenerator};
use moat_fastpath::xsk::BindPolicy;
use moat_wire::builder::{FrameSpec, Ipv4Spec, Ipv6Spec, NetworkSpec, TransportSpec, build_frame};
use moat_wire::{EthernetAddress, TcpFlags};
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct PktgenArgs {
    /// Interface to transmit on.
    #[arg(long)]
    pub dev: String,
    /// TX queue.
    #[arg(long, default_value_t = 0)]
    pub queue: u32,
    /// Source MAC (default: the interface's own).
    #[arg(long, value_parser = parse_mac)]
    pub src_mac: Option<EthernetAddress>,
    /// Destination MAC.
    #[arg(long, value_parser = parse_mac, default_value = "02:00:00:00:00:02")]
    pub dst_mac: EthernetAddress,
    /// Source address (IPv4 or IPv6, same family as --dst).
    #[arg(long)]
    pub src: IpAddr,
    #[arg(long)]
    pub dst: IpAddr,
    #[arg(long, value_enum, default_value_t = GenProtocol::Udp)]
    pub protocol: GenProtocol,
    /// First source port; flow i uses src_port + i.
    #[arg(long, default_value_t = 1024)]
    pub src_port: u16,
    #[arg(long, default_value_t = 9)]
    pub dst_port: u16,
    /// Number of distinct flows (source ports) to cycle through.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub flows: u16,
    /// Frame size in bytes without FCS (60 = minimum Ethernet frame).
    #[arg(long, default_value_t = 60)]
    pub size: usize,
    /// Stop after this many frames.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds (default 5 when --count is not given).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Frames per second at most (default: as fast as the kernel takes them).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GenProtocol {
    Udp,
    /// TCP segments with ACK set (mid-connection data).
    Tcp,
    /// TCP SYNs: every flow a new connection attempt (a SYN flood).
    TcpSyn,
}

fn parse_mac(text: &str) -> Result<EthernetAddress, String> {
    text.parse::<moat::lab::MacAddr>().map(|mac| EthernetAddress(mac.0)).map_err(|e| format!("{e} (aa:bb:cc:dd:ee:ff)"))
}

/// Frames for `flows` flows, each exactly `size` bytes long.
pub fn templates(args: &PktgenArgs) -> anyhow::Result<Vec<Vec<u8>>> {
    let src_mac = match args.src_mac {
        Some(mac) => mac,
        None => EthernetAddress(moat_bpf::interface_mac(&args.dev)?),
    };
    let header = match (args.src, args.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => 14 + 20,
        (IpAddr::V6(_), IpAddr::V6(_)) => 14 + 40,
        _ => bail!("--src {} and --dst {} are not of one address family", args.src, args.dst),
    } + match args.protocol {
        GenProtocol::Udp => 8,
        GenProtocol::Tcp | GenProtocol::TcpSyn => 20,
    };
    if args.size < header.max(60) || args.size > 1514 {
        bail!("--size {} must be between {} and 1514", args.size, header.max(60));
    }
    let payload = vec![0x5au8; args.size - header];
    (0..args.flows)
        .map(|i| {
            let src_port = args.src_port.wrapping_add(i);
            let transport = match args.protocol {
                GenProtocol::Udp => TransportSpec::Udp { src_port, dst_port: args.dst_port, payload: &payload },
                GenProtocol::Tcp | GenProtocol::TcpSyn => TransportSpec::Tcp {
                    src_port,
                    dst_port: args.dst_port,
                    seq: 1,
                    ack: 0,
                    flags: if matches!(args.protocol, GenProtocol::TcpSyn) { TcpFlags::SYN } else { TcpFlags::ACK },
                    window: 65_535,
                    options: &[],
                    payload: &payload,
                },
            };
            let network = match (args.src, args.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => NetworkSpec::Ipv4(Ipv4Spec::new(s, d, transport)),
                (IpAddr::V6(s), IpAddr::V6(d)) => NetworkSpec::Ipv6(Ipv6Spec::new(s, d, transport)),
                _ => unreachable_family(),
            };
            let mut spec = FrameSpec::new(network);
            spec.src_mac = src_mac;
            spec.dst_mac = args.dst_mac;
            let mut buf = vec![0u8; 2048];
            let len = build_frame(&spec, &mut buf).map_err(|e| anyhow::anyhow!("building a frame: {e}"))?;
            buf.truncate(len);
            Ok(buf)
        })
        .collect()
}

/// Families were checked above; an impossible combination yields an unroutable frame, not a panic.
fn unreachable_family() -> NetworkSpec<'static> {
    NetworkSpec::Other { ethertype: 0x88b5, payload: &[] }
}

/// Runs the generator; `stop` ends it early.
pub fn generate(args: &PktgenArgs, stop: &AtomicBool) -> anyhow::Result<GenReport> {
    let frames = templates(args)?;
    let mut generator = TxGenerator::new(&args.dev, args.queue, &frames, BindPolicy::Auto)
        .with_context(|| format!("opening an AF_XDP socket on {} queue {}", args.dev, args.queue))?;
    let duration = match (args.count, args.duration) {
        (_, Some(secs)) if secs > 0.0 && secs.is_finite() => Some(Duration::from_secs_f64(secs)),
        (_, Some(secs)) => bail!("--duration {secs} is not a positive number of seconds"),
        (None, None) => Some(Duration::from_secs(5)),
        (Some(_), None) => None,
    };
    Ok(generator.run(GenLimit { count: args.count, duration, rate: args.rate }, stop))
}

pub fn run(args: PktgenArgs) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing signal handlers")?;
    }
    let report = generate(&args, &stop)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "dev": args.dev, "queue": args.queue, "size": args.size, "flows": args.flows,
                "sent": report.completed, "queued": report.queued, "bytes": report.bytes,
                "seconds": report.elapsed.as_secs_f64(), "pps": report.packets_per_second(),
            })
        );
    } else {
        println!(
            "sent {} frames of {} B on {} queue {} in {:.3} s: {:.3} Mpps",
            report.completed,
            args.size,
            args.dev,
            args.queue,
            report.elapsed.as_secs_f64(),
            report.packets_per_second() / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: PktgenArgs,
    }

    fn args(extra: &[&str]) -> PktgenArgs {
        let mut argv = vec!["pktgen", "--dev", "lo", "--src-mac", "02:00:00:00:00:01", "--src", "10.0.0.1"];
        argv.extend_from_slice(&["--dst", "10.0.0.2"]);
        argv.extend_from_slice(extra);
        Wrapper::parse_from(argv).args
    }

    #[test]
    fn templates_have_the_requested_size_and_distinct_flows() {
        let frames = templates(&args(&["--size", "128", "--flows", "4"])).unwrap();
        assert_eq!(frames.len(), 4);
        assert!(frames.iter().all(|f| f.len() == 128));
        let mut ports: Vec<u16> = frames
            .iter()
            .map(|f| match moat_wire::parse_frame(f).unwrap().network {
                moat_wire::Network::Ip(ip) => match ip.transport {
                    moat_wire::Transport::Udp { src_port, .. } => src_port,
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            })
            .collect();
        ports.dedup();
        assert_eq!(ports, vec![1024, 1025, 1026, 1027]);
    }

    #[test]
    fn bad_sizes_and_families_are_errors() {
        assert!(templates(&args(&["--size", "20"])).unwrap_err().to_string().contains("--size"));
        let mut a = args(&[]);
        a.dst = "fd00::2".parse().unwrap();
        assert!(templates(&a).unwrap_err().to_string().contains("family"));
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:01:02").is_err());
    }
}
