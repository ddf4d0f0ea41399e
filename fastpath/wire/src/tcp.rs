//! TCP (RFC 9293). Only the fixed header is interpreted; options are bytes.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign};

use crate::DropReason;
use crate::bytes::{span, u8_at, u16_at, u32_at};
use crate::view::view;

/// Field ranges of the TCP header.
pub mod field {
    use crate::Field;
    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Sequence number.
    pub const SEQ_NUM: Field = 4..8;
    /// Acknowledgment number.
    pub const ACK_NUM: Field = 8..12;
    /// Data offset (4 bits), reserved (3 bits), flags (9 bits).
    pub const FLAGS: Field = 12..14;
    /// Window.
    pub const WINDOW: Field = 14..16;
    /// Checksum.
    pub const CHECKSUM: Field = 16..18;
    /// Urgent pointer.
    pub const URGENT: Field = 18..20;
    /// Start of the options.
    pub const OPTIONS: usize = 20;
}

/// Length of the header without options.
pub const HEADER_LEN: usize = field::OPTIONS;

/// TCP control bits (the low 9 bits of the data-offset/flags word).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u16);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x001);
    /// Synchronise sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x002);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x004);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x008);
    /// Acknowledgment field significant.
    pub const ACK: TcpFlags = TcpFlags(0x010);
    /// Urgent pointer significant.
    pub const URG: TcpFlags = TcpFlags(0x020);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x040);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x080);
    /// Accurate ECN (formerly NS, RFC 3540).
    pub const AE: TcpFlags = TcpFlags(0x100);
    /// No flag.
    pub const EMPTY: TcpFlags = TcpFlags(0);

    const NAMES: [(TcpFlags, &'static str); 9] = [
        (Self::FIN, "FIN"),
        (Self::SYN, "SYN"),
        (Self::RST, "RST"),
        (Self::PSH, "PSH"),
        (Self::ACK, "ACK"),
        (Self::URG, "URG"),
        (Self::ECE, "ECE"),
        (Self::CWR, "CWR"),
        (Self::AE, "AE"),
    ];

    /// From raw bits; bits above the 9 flag bits are dropped.
    pub const fn from_bits(bits: u16) -> Self {
        TcpFlags(bits & 0x01ff)
    }

    /// Raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// All of `other`'s bits are set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Any of `other`'s bits are set.
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// SYN set.
    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }

    /// ACK set.
    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }

    /// FIN set.
    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }

    /// RST set.
    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }

    /// The combination is one a real TCP sends, after ignoring PSH, ECE, CWR and AE. This is
    /// Linux conntrack's `tcp_valid_flags` table; the parser does not drop on it (flag validity is
    /// connection-tracking policy), the helper is here so conntrack uses the same table.
    pub const fn is_valid_combination(self) -> bool {
        let core = self.0 & !(Self::PSH.0 | Self::ECE.0 | Self::CWR.0 | Self::AE.0);
        const SYN: u16 = TcpFlags::SYN.0;
        const ACK: u16 = TcpFlags::ACK.0;
        const RST: u16 = TcpFlags::RST.0;
        const FIN: u16 = TcpFlags::FIN.0;
        const URG: u16 = TcpFlags::URG.0;
        const SYN_URG: u16 = SYN | URG;
        const SYN_ACK: u16 = SYN | ACK;
        const RST_ACK: u16 = RST | ACK;
        const FIN_ACK: u16 = FIN | ACK;
        const FIN_ACK_URG: u16 = FIN | ACK | URG;
        const ACK_URG: u16 = ACK | URG;
        matches!(core, SYN | SYN_URG | SYN_ACK | RST | RST_ACK | FIN_ACK | FIN_ACK_URG | ACK | ACK_URG)
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

impl fmt::Display for TcpFlags {
    /// `SYN|ACK`, or `-` for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TcpFlags({self})")
    }
}

view! {
    /// Zero-copy view of a TCP segment.
    pub struct TcpPacket;
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// The fixed header is there, the data offset is at least 5, and the header with its
    /// options (as long as the data offset says) is inside the segment.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DropReason::TcpTruncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(DropReason::TcpBadDataOffset);
        }
        if len < header_len {
            return Err(DropReason::TcpTruncated);
        }
        Ok(())
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(u8_at(self.buffer.as_ref(), field::FLAGS.start) >> 4) * 4
    }

    /// Control bits.
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags::from_bits(u16_at(self.buffer.as_ref(), field::FLAGS))
    }

    /// Window.
    pub fn window(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum field (not verified by the parser).
    pub fn checksum(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::URGENT)
    }

    /// Options bytes.
    pub fn options(&self) -> &[u8] {
        span(self.buffer.as_ref(), field::OPTIONS, self.header_len())
    }

    /// Segment data.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        span(b, self.header_len(), b.len())
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    const SYN: [u8; 26] = [
        0x30, 0x39, 0x00, 0x50, // 12345 -> 80
        0x00, 0x00, 0x00, 0x64, // seq 100
        0x00, 0x00, 0x00, 0x00, // ack 0
        0x60, 0x02, // data offset 6, SYN
        0xff, 0xff, 0, 0, 0, 0, // window, checksum, urgent
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0xaa, 0xbb, // data
    ];

    #[test]
    fn fields() {
        let p = TcpPacket::new_checked(&SYN[..]).unwrap();
        assert_eq!(p.src_port(), 12345);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 100);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.flags(), TcpFlags::SYN);
        assert_eq!(p.window(), 0xffff);
        assert_eq!((p.checksum(), p.urgent()), (0, 0));
        assert_eq!(p.options(), &[2, 4, 5, 0xb4]);
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn checks() {
        assert_eq!(TcpPacket::new_checked(&SYN[..19]), Err(DropReason::TcpTruncated));
        assert_eq!(TcpPacket::new_checked(&SYN[..23]), Err(DropReason::TcpTruncated));
        let mut b = SYN;
        b[12] = 0x40;
        assert_eq!(TcpPacket::new_checked(&b[..]), Err(DropReason::TcpBadDataOffset));
    }

    #[test]
    fn flags_format_and_validity() {
        let sa = TcpFlags::SYN | TcpFlags::ACK;
        assert_eq!(std::format!("{sa}"), "SYN|ACK");
        assert_eq!(std::format!("{}", TcpFlags::EMPTY), "-");
        assert!(sa.syn() && sa.ack() && !sa.fin() && !sa.rst());
        assert!(sa.is_valid_combination());
        assert!((TcpFlags::ACK | TcpFlags::PSH | TcpFlags::ECE).is_valid_combination());
        assert!((TcpFlags::FIN | TcpFlags::ACK).is_valid_combination());
        assert!(TcpFlags::RST.is_valid_combination());
        assert!(!TcpFlags::EMPTY.is_valid_combination()); // null scan
        assert!(!(TcpFlags::SYN | TcpFlags::FIN).is_valid_combination());
        assert!(!(TcpFlags::SYN | TcpFlags::RST).is_valid_combination());
        assert!(!(TcpFlags::FIN | TcpFlags::PSH | TcpFlags::URG).is_valid_combination()); // xmas
        assert!(!TcpFlags::FIN.is_valid_combination());
        assert_eq!(TcpFlags::from_bits(0xffff).bits(), 0x01ff);
        assert!(sa.intersects(TcpFlags::SYN | TcpFlags::FIN));
        assert_eq!(sa & TcpFlags::ACK, TcpFlags::ACK);
    }
}
