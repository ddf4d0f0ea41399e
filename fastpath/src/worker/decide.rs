//! The per-frame decision, separate from the rings so it can be tested and benchmarked on its own.

use crate::classify::{FlowKey, RuleTable, Verdict};
use crate::stats::DropCause;
use moat_wire::{Network, Transport, parse_frame};

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// IP traffic the rule table allows.
    Forward,
    /// Non-IP traffic (ARP, LLDP, …): a bump in the wire passes it unchanged.
    Bridge,
    Drop(DropCause),
}

/// Parses `frame` and decides it against `table`. Never panics, never allocates.
#[inline]
pub fn decide(frame: &[u8], table: &RuleTable) -> Decision {
    let summary = match parse_frame(frame) {
        Ok(summary) => summary,
        Err(reason) => return Decision::Drop(DropCause::Wire(reason)),
    };
    let ip = match summary.network {
        Network::Ip(ip) => ip,
        Network::Arp(_) | Network::Other { .. } => return Decision::Bridge,
    };
    let (src_port, dst_port, icmp) = match ip.transport {
        Transport::Tcp { src_port, dst_port, .. }
        | Transport::Udp { src_port, dst_port }
        | Transport::Sctp { src_port, dst_port, .. } => (src_port, dst_port, None),
        Transport::Icmp(icmp) => (0, 0, Some((icmp.icmp_type, icmp.code))),
        Transport::Unknown | Transport::NotInspected => (0, 0, None),
    };
    let key = FlowKey { src: ip.src, dst: ip.dst, protocol: ip.protocol, src_port, dst_port, icmp };
    match table.classify(&key) {
        Verdict::Allow => Decision::Forward,
        Verdict::Deny => Decision::Drop(DropCause::Policy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::acl;
    use moat_wire::builder::{FrameSpec, Ipv4Spec, Ipv6Spec, NetworkSpec, TransportSpec, build_frame};
    use moat_wire::{DropReason, IpVersion, TcpFlags};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn table(rules: &str) -> RuleTable {
        RuleTable::new(acl::parse(rules, "test.acl").unwrap(), Verdict::Deny, "test")
    }

    fn frame(network: NetworkSpec<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let len = build_frame(&FrameSpec::new(network), &mut buf).unwrap();
        buf.truncate(len);
        buf
    }

    fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        frame(NetworkSpec::Ipv4(Ipv4Spec::new(
            Ipv4Addr::from(src),
            Ipv4Addr::from(dst),
            TransportSpec::tcp(sport, dport, TcpFlags::SYN),
        )))
    }

    #[test]
    fn tcp_allowed_by_port_and_reply_admitted() {
        let t = table("allow tcp 10.99.0.1/32 10.99.0.2/32 80,5001");
        assert_eq!(decide(&tcp4([10, 99, 0, 1], 40000, [10, 99, 0, 2], 5001), &t), Decision::Forward);
        assert_eq!(decide(&tcp4([10, 99, 0, 2], 5001, [10, 99, 0, 1], 40000), &t), Decision::Forward);
        assert_eq!(decide(&tcp4([10, 99, 0, 1], 40000, [10, 99, 0, 2], 6000), &t), Decision::Drop(DropCause::Policy));
    }

    #[test]
    fn icmpv6_echo_is_classified_by_type() {
        let t = table("allow icmpv6 fd00::1/128 fd00::2/128");
        let request = frame(NetworkSpec::Ipv6(Ipv6Spec::new(
            "fd00::1".parse::<Ipv6Addr>().unwrap(),
            "fd00::2".parse::<Ipv6Addr>().unwrap(),
            TransportSpec::echo_request(IpVersion::V6, 7, 1, b"ping"),
        )));
        assert_eq!(decide(&request, &t), Decision::Forward);
    }

    #[test]
    fn non_ip_is_bridged_and_garbage_dropped_with_its_reason() {
        let t = RuleTable::fail_closed();
        let lldp = frame(NetworkSpec::Other { ethertype: 0x88cc, payload: &[0u8; 46] });
        assert_eq!(decide(&lldp, &t), Decision::Bridge);
        assert_eq!(decide(&[0u8; 5], &t), Decision::Drop(DropCause::Wire(DropReason::EthernetTruncated)));
    }
}
