//! The interim rule language: a first-match allow/deny list over addresses, protocol and ports.
//!
//! It exists so the dataplane can be built and tested before the Calico policy compiler lands, and it
//! goes away when the compiled classifier takes its place behind `RuleTable::classify`. One rule per
//! line, `#` starts a comment:
//!
//! ```text
//! # ACTION PROTO SRC DST [DST_PORTS]
//! allow tcp  10.77.0.0/26 10.77.0.64/26 80,443,8000-8080
//! allow icmp any          10.77.0.64/26
//! deny  any  any          any
//! ```
//!
//! PROTO is `tcp`, `udp`, `sctp`, `icmp`, `icmpv6`, `any` or a protocol number; SRC and DST are CIDRs
//! (IPv4 or IPv6) or `any`; DST_PORTS (TCP/UDP/SCTP only) is a comma list of ports and ranges.
//!
//! Without connection tracking, replies need a rule of their own; rather than make every user write
//! the mirror rule, an `allow` rule also admits the reverse direction of the flows it allows: packets
//! from DST to SRC whose *source* port is in DST_PORTS, and ICMP echo replies for allowed echo
//! requests. A connection in the other direction (from DST to SRC, to another port) is not admitted.

use super::{FlowKey, Verdict};
use ipnetwork::IpNetwork;
use std::net::IpAddr;

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// One ACL line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AclRule {
    pub action: Verdict,
    /// `None` = any protocol.
    pub protocol: Option<u8>,
    /// `None` = any address.
    pub src: Option<IpNetwork>,
    pub dst: Option<IpNetwork>,
    /// Inclusive ranges; empty = any port.
    pub dst_ports: Vec<(u16, u16)>,
}

/// A rule file that cannot be read, with the place and the problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{origin}:{line}: {message}")]
pub struct AclError {
    pub origin: String,
    pub line: usize,
    pub message: String,
}

impl AclRule {
    /// `Some(verdict)` when this rule decides `key`.
    #[inline]
    pub fn decide(&self, key: &FlowKey) -> Option<Verdict> {
        if self.protocol.is_some_and(|p| p != key.protocol) {
            return None;
        }
        if contains(self.src, key.src) && contains(self.dst, key.dst) && ports_match(&self.dst_ports, key.dst_port) {
            return Some(self.action);
        }
        // Stateless stand-in for connection tracking: replies of allowed flows.
        if self.action == Verdict::Allow && contains(self.src, key.dst) && contains(self.dst, key.src) {
            let reply = match key.protocol {
                TCP | UDP | SCTP => ports_match(&self.dst_ports, key.src_port),
                ICMP => key.icmp.is_some_and(|(t, _)| t == ICMP_ECHO_REPLY),
                ICMPV6 => key.icmp.is_some_and(|(t, _)| t == ICMPV6_ECHO_REPLY),
                _ => self.protocol.is_some(),
            };
            if reply {
                return Some(Verdict::Allow);
            }
        }
        None
    }
}

fn contains(net: Option<IpNetwork>, addr: IpAddr) -> bool {
    net.is_none_or(|n| n.contains(addr))
}

fn ports_match(ranges: &[(u16, u16)], port: u16) -> bool {
    ranges.is_empty() || ranges.iter().any(|&(lo, hi)| lo <= port && port <= hi)
}

/// Parses an ACL file; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<AclRule>, AclError> {
    let mut rules = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let error = |message: String| AclError { origin: origin.to_owned(), line: index + 1, message };
        rules.push(parse_rule(line).map_err(error)?);
    }
    Ok(rules)
}

fn parse_rule(line: &str) -> Result<AclRule, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [action, protocol, src, dst, rest @ ..] = fields.as_slice() else {
        return Err(format!("expected `ACTION PROTO SRC DST [DST_PORTS]`, got {line:?}"));
    };
    let action = match *action {
        "allow" => Verdict::Allow,
        "deny" => Verdict::Deny,
        other => return Err(format!("action {other:?} is not `allow` or `deny`")),
    };
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "any" => None,
        "tcp" => Some(TCP),
        "udp" => Some(UDP),
        "sctp" => Some(SCTP),
        "icmp" => Some(ICMP),
        "icmpv6" => Some(ICMPV6),
        number => Some(number.parse::<u8>().map_err(|_| format!("protocol {number:?} is not a name or 0-255"))?),
    };
    let src = parse_net(src)?;
    let dst = parse_net(dst)?;
    let dst_ports = match rest {
        [] => Vec::new(),
        [ports] => {
            if !matches!(protocol, Some(TCP | UDP | SCTP)) {
                return Err(format!("ports {ports:?} given for a protocol without ports"));
            }
            ports.split(',').map(parse_port_range).collect::<Result<_, _>>()?
        }
        [_, extra, ..] => return Err(format!("unexpected field {extra:?} after the ports")),
    };
    Ok(AclRule { action, protocol, src, dst, dst_ports })
}

fn parse_net(text: &str) -> Result<Option<IpNetwork>, String> {
    if text == "any" {
        return Ok(None);
    }
    let net: IpNetwork = text.parse().map_err(|e| format!("address {text:?} is not a CIDR or `any`: {e}"))?;
    if net.network() != net.ip() {
        return Err(format!("{text:?} has host bits set (did you mean {}/{}?)", net.network(), net.prefix()));
    }
    Ok(Some(net))
}

fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("port {p:?} is not 0-65535"));
    let (lo, hi) = match text.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => (port(text)?, port(text)?),
    };
    if lo > hi {
        return Err(format!("port range {text:?} is empty"));
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::RuleTable;

    fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: TCP,
            src_port: sport,
            dst_port: dport,
            icmp: None,
        }
    }

    fn icmp(src: &str, dst: &str, ty: u8) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: ICMP,
            src_port: 0,
            dst_port: 0,
            icmp: Some((ty, 0)),
        }
    }

    fn table(text: &str) -> RuleTable {
        RuleTable::new(parse(text, "t.acl").unwrap(), Verdict::Deny, "t")
    }

    #[test]
    fn first_match_wins() {
        let t = table("deny tcp any 10.0.0.2/32 22\nallow tcp 10.0.0.0/24 10.0.0.0/24\n");
        assert_eq!(t.classify(&tcp("10.0.0.1", 5000, "10.0.0.2", 22)), Verdict::Deny);
        assert_eq!(t.classify(&tcp("10.0.0.1", 5000, "10.0.0.2", 80)), Verdict::Allow);
        assert_eq!(t.classify(&tcp("10.9.0.1", 5000, "10.0.0.2", 80)), Verdict::Deny);
    }

    #[test]
    fn allow_admits_replies_but_not_reverse_connections() {
        let t = table("allow tcp 10.0.0.1/32 10.0.0.2/32 80,8000-8080");
        assert_eq!(t.classify(&tcp("10.0.0.1", 40000, "10.0.0.2", 8080)), Verdict::Allow);
        assert_eq!(t.classify(&tcp("10.0.0.2", 8080, "10.0.0.1", 40000)), Verdict::Allow, "reply");
        assert_eq!(t.classify(&tcp("10.0.0.2", 40000, "10.0.0.1", 22)), Verdict::Deny, "reverse connection");
        assert_eq!(t.classify(&tcp("10.0.0.1", 40000, "10.0.0.2", 8081)), Verdict::Deny, "port outside range");
    }

    #[test]
    fn icmp_echo_replies_follow_requests() {
        let t = table("allow icmp 10.0.0.0/24 10.0.1.0/24");
        assert_eq!(t.classify(&icmp("10.0.0.5", "10.0.1.5", 8)), Verdict::Allow);
        assert_eq!(t.classify(&icmp("10.0.1.5", "10.0.0.5", 0)), Verdict::Allow);
        assert_eq!(t.classify(&icmp("10.0.1.5", "10.0.0.5", 8)), Verdict::Deny);
    }

    #[test]
    fn ipv6_and_protocol_numbers() {
        let t = table("allow 47 fd00::/64 any\nallow tcp any fd00::2/128 443");
        let mut k = tcp("fd00::1", 1, "fd00::2", 443);
        assert_eq!(t.classify(&k), Verdict::Allow);
        k.protocol = 47;
        k.dst_port = 0;
        assert_eq!(t.classify(&k), Verdict::Allow);
        // From outside to outside: neither direction of the rule.
        k.src = "fd01::1".parse().unwrap();
        k.dst = "fd02::2".parse().unwrap();
        assert_eq!(t.classify(&k), Verdict::Deny);
        // Towards fd00::/64 from anywhere: the reverse direction of the port-less rule (a reply).
        k.dst = "fd00::9".parse().unwrap();
        assert_eq!(t.classify(&k), Verdict::Allow);
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let cases = [
            ("permit tcp any any", "action \"permit\""),
            ("allow tcp any", "expected `ACTION PROTO SRC DST"),
            ("allow foo any any", "protocol \"foo\""),
            ("allow tcp 10.0.0.1/24 any", "host bits"),
            ("allow tcp 10.0.0.300/32 any", "not a CIDR"),
            ("allow icmp any any 80", "without ports"),
            ("allow tcp any any 90-80", "empty"),
            ("allow tcp any any 70000", "not 0-65535"),
            ("allow tcp any any 80 90", "unexpected field"),
        ];
        for (line, expected) in cases {
            let err = parse(&format!("# header\n{line}\n"), "zones.acl").unwrap_err();
            assert_eq!(err.line, 2, "{line}");
            assert!(err.to_string().starts_with("zones.acl:2: "), "{err}");
            assert!(err.message.contains(expected), "{line}: {err}");
        }
    }
}
