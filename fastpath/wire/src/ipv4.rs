//! IPv4 (RFC 791).
//!
//! The checked view guarantees the header, its options and `total_length` bytes are inside the
//! buffer; a buffer longer than `total_length` is legal (Ethernet padding) and the padding is not
//! part of [`Ipv4Packet::payload`].

use core::net::Ipv4Addr;

use crate::DropReason;
use crate::bytes::{array, span, u8_at, u16_at};
use crate::checksum;
use crate::ip::IpProtocol;
use crate::view::view;

/// Field ranges of the IPv4 header.
pub mod field {
    use crate::Field;
    /// Version (high nibble) and IHL (low nibble, 32-bit words).
    pub const VER_IHL: usize = 0;
    /// DSCP (6 bits) and ECN (2 bits).
    pub const DSCP_ECN: usize = 1;
    /// Total length of the datagram, header included.
    pub const LENGTH: Field = 2..4;
    /// Identification.
    pub const IDENT: Field = 4..6;
    /// Flags (reserved, DF, MF) and fragment offset in 8-byte units.
    pub const FLG_OFF: Field = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Field = 10..12;
    /// Source address.
    pub const SRC_ADDR: Field = 12..16;
    /// Destination address.
    pub const DST_ADDR: Field = 16..20;
    /// Start of the options.
    pub const OPTIONS: usize = 20;
}

/// Length of the header without options.
pub const HEADER_LEN: usize = field::OPTIONS;
/// Largest header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

/// Option types the parser treats specially.
pub mod option {
    /// End of option list.
    pub const END: u8 = 0;
    /// No operation (1-byte padding).
    pub const NOP: u8 = 1;
    /// Loose source and record route.
    pub const LSRR: u8 = 131;
    /// Strict source and record route.
    pub const SSRR: u8 = 137;
}

view! {
    /// Zero-copy view of an IPv4 packet.
    pub struct Ipv4Packet;
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Structural length checks, in the order a reader meets the fields: the fixed header is
    /// there, the version is 4, IHL >= 5, the options are there, total length covers the header,
    /// and the buffer holds total length (more is padding, less is truncation).
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DropReason::Ipv4Truncated);
        }
        if self.version() != 4 {
            return Err(DropReason::Ipv4BadVersion);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(DropReason::Ipv4BadHeaderLength);
        }
        if len < header_len {
            return Err(DropReason::Ipv4Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(DropReason::Ipv4BadTotalLength);
        }
        if len < total_len {
            return Err(DropReason::Ipv4Truncated);
        }
        Ok(())
    }

    /// IP version (4 for a checked view).
    #[inline]
    pub fn version(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::VER_IHL) >> 4
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(u8_at(self.buffer.as_ref(), field::VER_IHL) & 0x0f) * 4
    }

    /// DSCP.
    pub fn dscp(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::DSCP_ECN) >> 2
    }

    /// ECN.
    pub fn ecn(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::DSCP_ECN) & 0x03
    }

    /// Total length field.
    #[inline]
    pub fn total_len(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        u16_at(self.buffer.as_ref(), field::FLG_OFF) & 0x4000 != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        u16_at(self.buffer.as_ref(), field::FLG_OFF) & 0x2000 != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (u16_at(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff) << 3
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::TTL)
    }

    /// Raw protocol number.
    #[inline]
    pub fn protocol_raw(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::PROTOCOL)
    }

    /// Protocol with meaning.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.protocol_raw())
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::SRC_ADDR))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// The whole header, options included.
    pub fn header(&self) -> &[u8] {
        span(self.buffer.as_ref(), 0, self.header_len())
    }

    /// The options bytes.
    pub fn options(&self) -> &[u8] {
        span(self.buffer.as_ref(), field::OPTIONS, self.header_len())
    }

    /// The payload: from the end of the header to total length (padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        span(self.buffer.as_ref(), self.header_len(), usize::from(self.total_len()))
    }

    /// The header checksum is correct (the one's-complement sum over the header is 0xffff).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header())) == 0xffff
    }

    /// Walk the options: every option has its length byte, a length of at least 2, and ends
    /// inside the options area. Source-route options are refused on purpose (see
    /// [`DropReason::Ipv4SourceRoute`]). Bounded: at most 40 bytes, each step consumes >= 1.
    pub fn check_options(&self) -> Result<(), DropReason> {
        let mut opts = self.options();
        while let Some((&kind, tail)) = opts.split_first() {
            match kind {
                option::END => return Ok(()),
                option::NOP => opts = tail,
                _ => {
                    let len = usize::from(tail.first().copied().ok_or(DropReason::Ipv4BadOptions)?);
                    if len < 2 || len > opts.len() {
                        return Err(DropReason::Ipv4BadOptions);
                    }
                    if kind == option::LSRR || kind == option::SSRR {
                        return Err(DropReason::Ipv4SourceRoute);
                    }
                    opts = opts.get(len..).unwrap_or(&[]);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A 20-byte header (checksum valid) + 4 payload bytes + 2 bytes of Ethernet padding.
    fn packet() -> [u8; 26] {
        let mut p = [
            0x45, 0x00, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 1, 2, 3, 4, 0xee,
            0xee,
        ];
        let c = checksum::internet(&p[..20]).to_be_bytes();
        p[10] = c[0];
        p[11] = c[1];
        p
    }

    #[test]
    fn fields() {
        let b = packet();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Udp);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.payload(), &[1, 2, 3, 4]); // padding excluded
        assert!(p.options().is_empty());
        assert!(p.verify_checksum());
        assert_eq!(p.check_options(), Ok(()));
        assert_eq!((p.dscp(), p.ecn()), (0, 0));
    }

    #[test]
    fn bad_checksum_detected() {
        let mut b = packet();
        b[8] = 63;
        assert!(!Ipv4Packet::new_checked(&b[..]).unwrap().verify_checksum());
    }

    #[test]
    fn length_checks_in_order() {
        let b = packet();
        assert_eq!(Ipv4Packet::new_checked(&b[..19]), Err(DropReason::Ipv4Truncated));
        assert_eq!(Ipv4Packet::new_checked(&b[..23]), Err(DropReason::Ipv4Truncated));
        let mut v = b;
        v[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&v[..]), Err(DropReason::Ipv4BadVersion));
        let mut h = b;
        h[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&h[..]), Err(DropReason::Ipv4BadHeaderLength));
        let mut o = b;
        o[0] = 0x46; // 24-byte header, total length 22
        o[3] = 22;
        assert_eq!(Ipv4Packet::new_checked(&o[..]), Err(DropReason::Ipv4BadTotalLength));
        o[0] = 0x4f; // 60-byte header in a 26-byte buffer
        assert_eq!(Ipv4Packet::new_checked(&o[..]), Err(DropReason::Ipv4Truncated));
        let mut t = b;
        t[3] = 19;
        assert_eq!(Ipv4Packet::new_checked(&t[..]), Err(DropReason::Ipv4BadTotalLength));
    }

    fn with_options(opts: &[u8]) -> std::vec::Vec<u8> {
        let mut v = std::vec::Vec::from(&packet()[..20]);
        v.extend_from_slice(opts);
        v[0] = 0x40 | u8::try_from(v.len() / 4).unwrap();
        v[3] = u8::try_from(v.len()).unwrap();
        v
    }

    #[test]
    fn options_walk() {
        let ok = |o: &[u8]| Ipv4Packet::new_checked(with_options(o)).unwrap().check_options();
        assert_eq!(ok(&[1, 1, 1, 0]), Ok(()));
        assert_eq!(ok(&[0, 0xff, 0xff, 0xff]), Ok(())); // after END anything is padding
        assert_eq!(ok(&[7, 4, 4, 0]), Ok(())); // record route, 4 bytes
        assert_eq!(ok(&[148, 4, 0, 0]), Ok(())); // router alert
        assert_eq!(ok(&[1, 1, 1, 7]), Err(DropReason::Ipv4BadOptions)); // no length byte
        assert_eq!(ok(&[7, 1, 0, 0]), Err(DropReason::Ipv4BadOptions)); // length < 2
        assert_eq!(ok(&[7, 5, 0, 0]), Err(DropReason::Ipv4BadOptions)); // past the area
        assert_eq!(ok(&[131, 3, 4, 0]), Err(DropReason::Ipv4SourceRoute));
        assert_eq!(ok(&[1, 137, 3, 4]), Err(DropReason::Ipv4SourceRoute));
    }

    #[test]
    fn fragment_fields() {
        let mut b = packet();
        b[6] = 0x20 | 0x01; // MF, offset 0x100 units
        b[7] = 0x00;
        let p = Ipv4Packet::new_unchecked(&b[..]);
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 0x100 * 8);
    }
}
