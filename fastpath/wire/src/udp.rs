//! UDP (RFC 768).

use crate::DropReason;
use crate::bytes::{span, u16_at};
use crate::view::view;

/// Field ranges of the UDP header.
pub mod field {
    use crate::Field;
    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Length of header and data.
    pub const LENGTH: Field = 4..6;
    /// Checksum (0 = none, IPv4 only).
    pub const CHECKSUM: Field = 6..8;
    /// Start of the data.
    pub const PAYLOAD: usize = 8;
}

/// Length of the header.
pub const HEADER_LEN: usize = field::PAYLOAD;

view! {
    /// Zero-copy view of a UDP datagram.
    pub struct UdpPacket;
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// The header is there and the length field lies between 8 and the buffer length. A length
    /// below the buffer is accepted, as Linux does (it trims): the IP payload already excludes
    /// Ethernet padding. For a first fragment use [`check_header`](Self::check_header) instead:
    /// its length field covers the whole datagram, not the fragment.
    pub fn check_len(&self) -> Result<(), DropReason> {
        self.check_header()?;
        if usize::from(self.len()) > self.buffer.as_ref().len() {
            return Err(DropReason::UdpBadLength);
        }
        Ok(())
    }

    /// The header is there and the length field is at least 8.
    pub fn check_header(&self) -> Result<(), DropReason> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(DropReason::UdpTruncated);
        }
        if usize::from(self.len()) < HEADER_LEN {
            return Err(DropReason::UdpBadLength);
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

    /// Length field.
    #[inline]
    #[allow(clippy::len_without_is_empty)] // a header field, not a collection length
    pub fn len(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::LENGTH)
    }

    /// Checksum field (not verified by the parser).
    pub fn checksum(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Data, up to the length field.
    pub fn payload(&self) -> &[u8] {
        span(self.buffer.as_ref(), field::PAYLOAD, usize::from(self.len()))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    const DNS: [u8; 12] = [0xc0, 0x00, 0x00, 0x35, 0x00, 0x0a, 0x12, 0x34, 0xab, 0xcd, 0xee, 0xee];

    #[test]
    fn fields() {
        let p = UdpPacket::new_checked(&DNS[..]).unwrap();
        assert_eq!(p.src_port(), 0xc000);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 10);
        assert_eq!(p.checksum(), 0x1234);
        assert_eq!(p.payload(), &[0xab, 0xcd]); // bytes past the length field excluded
    }

    #[test]
    fn checks() {
        assert_eq!(UdpPacket::new_checked(&DNS[..7]), Err(DropReason::UdpTruncated));
        assert_eq!(UdpPacket::new_checked(&DNS[..9]), Err(DropReason::UdpBadLength));
        assert_eq!(UdpPacket::new_unchecked(&DNS[..9]).check_header(), Ok(()));
        let mut b = DNS;
        b[5] = 7;
        assert_eq!(UdpPacket::new_checked(&b[..]), Err(DropReason::UdpBadLength));
    }
}
