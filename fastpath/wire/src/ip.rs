//! What IPv4 and IPv6 share: version and protocol numbers.

/// IANA protocol numbers this crate knows (IPv4 protocol / IPv6 next header).
pub mod protocol {
    /// IPv6 Hop-by-Hop Options.
    pub const HOP_BY_HOP: u8 = 0;
    /// ICMP (IPv4).
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 Routing header.
    pub const IPV6_ROUTING: u8 = 43;
    /// IPv6 Fragment header.
    pub const IPV6_FRAGMENT: u8 = 44;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ESP: encrypted, ends the chain.
    pub const ESP: u8 = 50;
    /// Authentication Header.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 No Next Header: ends the chain.
    pub const IPV6_NO_NEXT_HEADER: u8 = 59;
    /// IPv6 Destination Options.
    pub const IPV6_DESTINATION_OPTIONS: u8 = 60;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// IP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Protocol number with meaning; others kept as `Unknown(n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// 0.
    HopByHop,
    /// 1.
    Icmp,
    /// 6.
    Tcp,
    /// 17.
    Udp,
    /// 43.
    Ipv6Routing,
    /// 44.
    Ipv6Fragment,
    /// 47.
    Gre,
    /// 50.
    Esp,
    /// 51.
    Ah,
    /// 58.
    Icmpv6,
    /// 59.
    Ipv6NoNextHeader,
    /// 60.
    Ipv6DestinationOptions,
    /// 132.
    Sctp,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        use protocol::*;
        match v {
            HOP_BY_HOP => IpProtocol::HopByHop,
            ICMP => IpProtocol::Icmp,
            TCP => IpProtocol::Tcp,
            UDP => IpProtocol::Udp,
            IPV6_ROUTING => IpProtocol::Ipv6Routing,
            IPV6_FRAGMENT => IpProtocol::Ipv6Fragment,
            GRE => IpProtocol::Gre,
            ESP => IpProtocol::Esp,
            AH => IpProtocol::Ah,
            ICMPV6 => IpProtocol::Icmpv6,
            IPV6_NO_NEXT_HEADER => IpProtocol::Ipv6NoNextHeader,
            IPV6_DESTINATION_OPTIONS => IpProtocol::Ipv6DestinationOptions,
            SCTP => IpProtocol::Sctp,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(v: IpProtocol) -> u8 {
        use protocol::*;
        match v {
            IpProtocol::HopByHop => HOP_BY_HOP,
            IpProtocol::Icmp => ICMP,
            IpProtocol::Tcp => TCP,
            IpProtocol::Udp => UDP,
            IpProtocol::Ipv6Routing => IPV6_ROUTING,
            IpProtocol::Ipv6Fragment => IPV6_FRAGMENT,
            IpProtocol::Gre => GRE,
            IpProtocol::Esp => ESP,
            IpProtocol::Ah => AH,
            IpProtocol::Icmpv6 => ICMPV6,
            IpProtocol::Ipv6NoNextHeader => IPV6_NO_NEXT_HEADER,
            IpProtocol::Ipv6DestinationOptions => IPV6_DESTINATION_OPTIONS,
            IpProtocol::Sctp => SCTP,
            IpProtocol::Unknown(other) => other,
        }
    }
}

/// Minimum transport header a first fragment must carry, and the offset below which a later
/// fragment would overwrite it (0: no rule, the protocol's header is not inspected).
pub(crate) fn min_transport_len(version: IpVersion, proto: u8) -> usize {
    match (version, proto) {
        (_, protocol::TCP) => crate::tcp::HEADER_LEN,
        (_, protocol::UDP) => crate::udp::HEADER_LEN,
        (_, protocol::SCTP) => crate::sctp::HEADER_LEN,
        (IpVersion::V4, protocol::ICMP) | (IpVersion::V6, protocol::ICMPV6) => crate::icmp::HEADER_LEN,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_round_trip() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(IpProtocol::from(v)), v);
        }
        assert_eq!(IpProtocol::from(6), IpProtocol::Tcp);
        assert_eq!(IpProtocol::from(253), IpProtocol::Unknown(253));
    }
}
