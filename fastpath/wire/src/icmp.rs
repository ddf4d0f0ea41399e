//! ICMP (RFC 792) and ICMPv6 (RFC 4443). Both share the 8-byte header layout
//! `(type, code, checksum, 4 bytes that depend on the type)`, so one view serves both; the type
//! numbers differ and have their own enums.

use crate::bytes::{rest, u8_at, u16_at};
use crate::view::view;

/// Field ranges of the ICMP/ICMPv6 header.
pub mod field {
    use crate::Field;
    /// Type.
    pub const TYPE: usize = 0;
    /// Code.
    pub const CODE: usize = 1;
    /// Checksum.
    pub const CHECKSUM: Field = 2..4;
    /// The type-specific 4 bytes.
    pub const REST_OF_HEADER: Field = 4..8;
    /// Echo identifier.
    pub const ECHO_IDENT: Field = 4..6;
    /// Echo sequence number.
    pub const ECHO_SEQNO: Field = 6..8;
    /// Start of the body (for errors: the quoted packet).
    pub const BODY: usize = 8;
}

/// Length of the header.
pub const HEADER_LEN: usize = field::BODY;

/// ICMPv4 type numbers the parser interprets.
pub mod icmpv4_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DST_UNREACHABLE: u8 = 3;
    /// Source quench (deprecated by RFC 6633, still quotes a packet).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;
}

/// ICMPv6 type numbers the parser interprets.
pub mod icmpv6_type {
    /// Destination unreachable.
    pub const DST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation (NDP).
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement (NDP).
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbor solicitation (NDP).
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbor advertisement (NDP).
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// Redirect (NDP).
    pub const REDIRECT: u8 = 137;
}

/// ICMPv4 message type with meaning; others kept as `Unknown(n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Icmpv4Message {
    /// 0.
    EchoReply,
    /// 3.
    DstUnreachable,
    /// 4.
    SourceQuench,
    /// 5.
    Redirect,
    /// 8.
    EchoRequest,
    /// 11.
    TimeExceeded,
    /// 12.
    ParamProblem,
    /// Anything else.
    Unknown(u8),
}

impl Icmpv4Message {
    /// An error message, which quotes the packet that caused it.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Self::DstUnreachable | Self::SourceQuench | Self::Redirect | Self::TimeExceeded | Self::ParamProblem
        )
    }
}

impl From<u8> for Icmpv4Message {
    fn from(v: u8) -> Self {
        use icmpv4_type::*;
        match v {
            ECHO_REPLY => Self::EchoReply,
            DST_UNREACHABLE => Self::DstUnreachable,
            SOURCE_QUENCH => Self::SourceQuench,
            REDIRECT => Self::Redirect,
            ECHO_REQUEST => Self::EchoRequest,
            TIME_EXCEEDED => Self::TimeExceeded,
            PARAM_PROBLEM => Self::ParamProblem,
            other => Self::Unknown(other),
        }
    }
}

impl From<Icmpv4Message> for u8 {
    fn from(v: Icmpv4Message) -> u8 {
        use icmpv4_type::*;
        match v {
            Icmpv4Message::EchoReply => ECHO_REPLY,
            Icmpv4Message::DstUnreachable => DST_UNREACHABLE,
            Icmpv4Message::SourceQuench => SOURCE_QUENCH,
            Icmpv4Message::Redirect => REDIRECT,
            Icmpv4Message::EchoRequest => ECHO_REQUEST,
            Icmpv4Message::TimeExceeded => TIME_EXCEEDED,
            Icmpv4Message::ParamProblem => PARAM_PROBLEM,
            Icmpv4Message::Unknown(other) => other,
        }
    }
}

/// ICMPv6 message type with meaning; others kept as `Unknown(n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Icmpv6Message {
    /// 1.
    DstUnreachable,
    /// 2.
    PacketTooBig,
    /// 3.
    TimeExceeded,
    /// 4.
    ParamProblem,
    /// 128.
    EchoRequest,
    /// 129.
    EchoReply,
    /// 133.
    RouterSolicit,
    /// 134.
    RouterAdvert,
    /// 135.
    NeighborSolicit,
    /// 136.
    NeighborAdvert,
    /// 137.
    Redirect,
    /// Anything else.
    Unknown(u8),
}

impl Icmpv6Message {
    /// An error message (types 0..=127), which quotes the packet that caused it.
    pub fn is_error(self) -> bool {
        matches!(self, Self::DstUnreachable | Self::PacketTooBig | Self::TimeExceeded | Self::ParamProblem)
    }
}

impl From<u8> for Icmpv6Message {
    fn from(v: u8) -> Self {
        use icmpv6_type::*;
        match v {
            DST_UNREACHABLE => Self::DstUnreachable,
            PACKET_TOO_BIG => Self::PacketTooBig,
            TIME_EXCEEDED => Self::TimeExceeded,
            PARAM_PROBLEM => Self::ParamProblem,
            ECHO_REQUEST => Self::EchoRequest,
            ECHO_REPLY => Self::EchoReply,
            ROUTER_SOLICIT => Self::RouterSolicit,
            ROUTER_ADVERT => Self::RouterAdvert,
            NEIGHBOR_SOLICIT => Self::NeighborSolicit,
            NEIGHBOR_ADVERT => Self::NeighborAdvert,
            REDIRECT => Self::Redirect,
            other => Self::Unknown(other),
        }
    }
}

impl From<Icmpv6Message> for u8 {
    fn from(v: Icmpv6Message) -> u8 {
        use icmpv6_type::*;
        match v {
            Icmpv6Message::DstUnreachable => DST_UNREACHABLE,
            Icmpv6Message::PacketTooBig => PACKET_TOO_BIG,
            Icmpv6Message::TimeExceeded => TIME_EXCEEDED,
            Icmpv6Message::ParamProblem => PARAM_PROBLEM,
            Icmpv6Message::EchoRequest => ECHO_REQUEST,
            Icmpv6Message::EchoReply => ECHO_REPLY,
            Icmpv6Message::RouterSolicit => ROUTER_SOLICIT,
            Icmpv6Message::RouterAdvert => ROUTER_ADVERT,
            Icmpv6Message::NeighborSolicit => NEIGHBOR_SOLICIT,
            Icmpv6Message::NeighborAdvert => NEIGHBOR_ADVERT,
            Icmpv6Message::Redirect => REDIRECT,
            Icmpv6Message::Unknown(other) => other,
        }
    }
}

view! {
    /// Zero-copy view of an ICMP or ICMPv6 message.
    pub struct IcmpPacket;
    /// The 8-byte header is there.
    check_len: HEADER_LEN => IcmpTruncated;
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Raw type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::TYPE)
    }

    /// Type read as ICMPv4.
    pub fn icmpv4_message(&self) -> Icmpv4Message {
        Icmpv4Message::from(self.msg_type())
    }

    /// Type read as ICMPv6.
    pub fn icmpv6_message(&self) -> Icmpv6Message {
        Icmpv6Message::from(self.msg_type())
    }

    /// Code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::CODE)
    }

    /// Checksum field (not verified by the parser).
    pub fn checksum(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier (meaningful for echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (meaningful for echo request/reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// Body after the 8-byte header; for error messages, the quoted packet.
    #[inline]
    pub fn body(&self) -> &[u8] {
        rest(self.buffer.as_ref(), field::BODY)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::DropReason;

    #[test]
    fn echo_fields() {
        let b = [8u8, 0, 0xf7, 0xfd, 0x00, 0x01, 0x00, 0x02, 0xaa];
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.icmpv4_message(), Icmpv4Message::EchoRequest);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.checksum(), 0xf7fd);
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (1, 2));
        assert_eq!(p.body(), &[0xaa]);
        assert_eq!(IcmpPacket::new_checked(&b[..7]), Err(DropReason::IcmpTruncated));
    }

    #[test]
    fn type_round_trips() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(Icmpv4Message::from(v)), v);
            assert_eq!(u8::from(Icmpv6Message::from(v)), v);
        }
        assert!(Icmpv4Message::TimeExceeded.is_error());
        assert!(!Icmpv4Message::EchoReply.is_error());
        assert!(Icmpv6Message::PacketTooBig.is_error());
        assert!(!Icmpv6Message::NeighborSolicit.is_error());
    }
}
