//! IPv6 (RFC 8200): the fixed header and the extension headers the parser walks.

use core::net::Ipv6Addr;

use crate::DropReason;
use crate::bytes::{array, rest, span, u8_at, u16_at, u32_at};
use crate::ip::IpProtocol;
use crate::view::view;

/// Field ranges of the fixed IPv6 header.
pub mod field {
    use crate::Field;
    /// Version (4 bits), traffic class (8 bits), flow label (20 bits).
    pub const VER_TC_FLOW: Field = 0..4;
    /// Payload length: everything after the fixed header.
    pub const LENGTH: Field = 4..6;
    /// Next header.
    pub const NXT_HDR: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC_ADDR: Field = 8..24;
    /// Destination address.
    pub const DST_ADDR: Field = 24..40;
    /// Start of the payload.
    pub const PAYLOAD: usize = 40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// Most extension headers the parser walks before giving up. RFC 8200 §4.1's recommended order
/// has at most six (Hop-by-Hop, Destination Options twice, Routing, Fragment, AH); eight leaves
/// room without letting a frame of tiny headers cost unbounded work.
pub const MAX_EXTENSION_HEADERS: usize = 8;

view! {
    /// Zero-copy view of an IPv6 packet.
    pub struct Ipv6Packet;
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// The fixed header is there, the version is 6, and the buffer holds the payload length
    /// (more is Ethernet padding). A payload length of 0 is taken literally: jumbograms
    /// (RFC 2675) cannot cross an Ethernet link.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DropReason::Ipv6Truncated);
        }
        if self.version() != 6 {
            return Err(DropReason::Ipv6BadVersion);
        }
        if len < HEADER_LEN + usize::from(self.payload_len()) {
            return Err(DropReason::Ipv6Truncated);
        }
        Ok(())
    }

    /// IP version (6 for a checked view).
    #[inline]
    pub fn version(&self) -> u8 {
        u8_at(self.buffer.as_ref(), 0) >> 4
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        let v = u32_at(self.buffer.as_ref(), field::VER_TC_FLOW);
        (v >> 20).to_be_bytes()[3]
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::LENGTH)
    }

    /// Raw next header.
    #[inline]
    pub fn next_header_raw(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::NXT_HDR)
    }

    /// Next header with meaning.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.next_header_raw())
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::HOP_LIMIT)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buffer.as_ref(), field::SRC_ADDR))
    }

    /// Destination address (the current one: with a Routing header, not necessarily the final).
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// The payload (extension headers included), padding excluded.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        span(self.buffer.as_ref(), field::PAYLOAD, field::PAYLOAD + usize::from(self.payload_len()))
    }
}

/// Field ranges shared by Hop-by-Hop, Routing and Destination Options headers.
pub mod ext_field {
    /// Next header.
    pub const NXT_HDR: usize = 0;
    /// Header length in 8-byte units, not counting the first 8 bytes.
    pub const LENGTH: usize = 1;
    /// Routing type (Routing header only).
    pub const ROUTING_TYPE: usize = 2;
    /// Segments left (Routing header only).
    pub const SEGMENTS_LEFT: usize = 3;
    /// Start of the options (Hop-by-Hop and Destination Options).
    pub const OPTIONS: usize = 2;
}

view! {
    /// Zero-copy view of a Hop-by-Hop, Routing or Destination Options header: the three share the
    /// `(next header, length in 8-byte units - 1)` prefix.
    pub struct Ipv6ExtHeader;
    no into_inner;
    /// The header, as long as its length byte says, is inside the buffer (the length byte too:
    /// the header is at least 8 bytes).
    check_len: |h| h.header_len() => Ipv6ExtensionTruncated;
}

impl<T: AsRef<[u8]>> Ipv6ExtHeader<T> {
    /// Raw next header.
    #[inline]
    pub fn next_header_raw(&self) -> u8 {
        u8_at(self.buffer.as_ref(), ext_field::NXT_HDR)
    }

    /// Header length in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        (usize::from(u8_at(self.buffer.as_ref(), ext_field::LENGTH)) + 1) * 8
    }

    /// Routing type, when this is a Routing header.
    pub fn routing_type(&self) -> u8 {
        u8_at(self.buffer.as_ref(), ext_field::ROUTING_TYPE)
    }

    /// Segments left, when this is a Routing header.
    pub fn segments_left(&self) -> u8 {
        u8_at(self.buffer.as_ref(), ext_field::SEGMENTS_LEFT)
    }

    /// The options area, when this is a Hop-by-Hop or Destination Options header.
    pub fn options(&self) -> &[u8] {
        span(self.buffer.as_ref(), ext_field::OPTIONS, self.header_len())
    }

    /// The options are well-formed TLVs that end inside the header (RFC 8200 §4.2). Unknown
    /// option types are not acted on: their "discard" action bits concern the destination node,
    /// not a filter in the path. Bounded: each step consumes at least one byte.
    pub fn check_options(&self) -> Result<(), DropReason> {
        let mut opts = self.options();
        while let Some((&kind, tail)) = opts.split_first() {
            if kind == 0 {
                // Pad1: the only single-byte option.
                opts = tail;
                continue;
            }
            let data_len = usize::from(tail.first().copied().ok_or(DropReason::Ipv6BadOptions)?);
            let total = 2 + data_len;
            if total > opts.len() {
                return Err(DropReason::Ipv6BadOptions);
            }
            opts = rest(opts, total);
        }
        Ok(())
    }
}

/// Field ranges of the Fragment header.
pub mod frag_field {
    use crate::Field;
    /// Next header.
    pub const NXT_HDR: usize = 0;
    /// Fragment offset (13 bits, 8-byte units), 2 reserved bits, M flag.
    pub const FRAG_OFF: Field = 2..4;
    /// Identification.
    pub const IDENT: Field = 4..8;
}

/// Length of the Fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

view! {
    /// Zero-copy view of a Fragment header.
    pub struct Ipv6FragmentHeader;
    no into_inner;
    /// The 8 bytes are there.
    check_len: FRAGMENT_HEADER_LEN => Ipv6ExtensionTruncated;
}

impl<T: AsRef<[u8]>> Ipv6FragmentHeader<T> {
    /// Raw next header (of the fragmentable part).
    #[inline]
    pub fn next_header_raw(&self) -> u8 {
        u8_at(self.buffer.as_ref(), frag_field::NXT_HDR)
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        u16_at(self.buffer.as_ref(), frag_field::FRAG_OFF) & 0xfff8
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        u16_at(self.buffer.as_ref(), frag_field::FRAG_OFF) & 1 != 0
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u32 {
        u32_at(self.buffer.as_ref(), frag_field::IDENT)
    }
}

/// Field ranges of the Authentication Header (RFC 4302).
pub mod ah_field {
    use crate::Field;
    /// Next header.
    pub const NXT_HDR: usize = 0;
    /// Length in 4-byte units minus 2.
    pub const LENGTH: usize = 1;
    /// Security parameters index.
    pub const SPI: Field = 4..8;
    /// Sequence number.
    pub const SEQ: Field = 8..12;
}

view! {
    /// Zero-copy view of an Authentication Header. Only its length and next header matter to the
    /// parser: AH authenticates but does not hide what follows.
    pub struct Ipv6AuthHeader;
    no into_inner;
    /// The header, as long as its length byte says, is inside the buffer (the length byte too:
    /// the header is at least 8 bytes).
    check_len: |h| h.header_len() => Ipv6ExtensionTruncated;
}

impl<T: AsRef<[u8]>> Ipv6AuthHeader<T> {
    /// Raw next header.
    #[inline]
    pub fn next_header_raw(&self) -> u8 {
        u8_at(self.buffer.as_ref(), ah_field::NXT_HDR)
    }

    /// Header length in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        (usize::from(u8_at(self.buffer.as_ref(), ah_field::LENGTH)) + 2) * 4
    }

    /// Security parameters index.
    pub fn spi(&self) -> u32 {
        u32_at(self.buffer.as_ref(), ah_field::SPI)
    }

    /// Sequence number.
    pub fn sequence(&self) -> u32 {
        u32_at(self.buffer.as_ref(), ah_field::SEQ)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn packet() -> [u8; 50] {
        let mut p = [0u8; 50];
        p[0] = 0x6a; // version 6, traffic class 0xab
        p[1] = 0xb1; // flow label 0x12345
        p[2] = 0x23;
        p[3] = 0x45;
        p[5] = 8; // payload length
        p[6] = 17;
        p[7] = 255;
        p[8] = 0x20;
        p[9] = 0x01;
        p[23] = 1;
        p[24] = 0x20;
        p[25] = 0x01;
        p[39] = 2;
        p
    }

    #[test]
    fn fields() {
        let b = packet();
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xab);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 8);
        assert_eq!(p.next_header(), IpProtocol::Udp);
        assert_eq!(p.hop_limit(), 255);
        assert_eq!(p.src_addr(), "2001::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload().len(), 8); // 2 bytes of padding excluded
    }

    #[test]
    fn checks() {
        let b = packet();
        assert_eq!(Ipv6Packet::new_checked(&b[..39]), Err(DropReason::Ipv6Truncated));
        assert_eq!(Ipv6Packet::new_checked(&b[..47]), Err(DropReason::Ipv6Truncated));
        let mut v = b;
        v[0] = 0x4a;
        assert_eq!(Ipv6Packet::new_checked(&v[..]), Err(DropReason::Ipv6BadVersion));
    }

    #[test]
    fn ext_header() {
        // Hop-by-Hop, 16 bytes: PadN(12) then Pad1.
        let h = [6u8, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let e = Ipv6ExtHeader::new_checked(&h[..]).unwrap();
        assert_eq!(e.header_len(), 16);
        assert_eq!(e.next_header_raw(), 6);
        assert_eq!(e.check_options(), Ok(()));
        assert_eq!(Ipv6ExtHeader::new_checked(&h[..15]), Err(DropReason::Ipv6ExtensionTruncated));
        assert_eq!(Ipv6ExtHeader::new_checked(&h[..1]), Err(DropReason::Ipv6ExtensionTruncated));
        let bad = [6u8, 0, 1, 5, 0, 0, 0, 0]; // PadN claims 5 data bytes, 4 left
        assert_eq!(Ipv6ExtHeader::new_checked(&bad[..]).unwrap().check_options(), Err(DropReason::Ipv6BadOptions));
        let no_len = [6u8, 0, 0, 0, 0, 0, 0, 0x05]; // last option has no length byte
        assert_eq!(Ipv6ExtHeader::new_checked(&no_len[..]).unwrap().check_options(), Err(DropReason::Ipv6BadOptions));
        let routing = [6u8, 0, 4, 2, 0, 0, 0, 0];
        let r = Ipv6ExtHeader::new_checked(&routing[..]).unwrap();
        assert_eq!((r.routing_type(), r.segments_left()), (4, 2));
    }

    #[test]
    fn fragment_header() {
        let h = [17u8, 0, 0x05, 0x01, 0xde, 0xad, 0xbe, 0xef];
        let f = Ipv6FragmentHeader::new_checked(&h[..]).unwrap();
        assert_eq!(f.next_header_raw(), 17);
        assert_eq!(f.frag_offset(), 0x0500);
        assert!(f.more_frags());
        assert_eq!(f.ident(), 0xdead_beef);
        assert_eq!(Ipv6FragmentHeader::new_checked(&h[..7]), Err(DropReason::Ipv6ExtensionTruncated));
    }

    #[test]
    fn auth_header() {
        let mut h = [0u8; 16];
        h[0] = 6;
        h[1] = 2; // (2 + 2) * 4 = 16 bytes
        h[7] = 9;
        h[11] = 3;
        let a = Ipv6AuthHeader::new_checked(&h[..]).unwrap();
        assert_eq!(a.header_len(), 16);
        assert_eq!(a.next_header_raw(), 6);
        assert_eq!((a.spi(), a.sequence()), (9, 3));
        assert_eq!(Ipv6AuthHeader::new_checked(&h[..15]), Err(DropReason::Ipv6ExtensionTruncated));
    }
}
