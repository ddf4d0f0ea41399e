//! SCTP common header (RFC 9260 §3.1). Chunks are not walked; the first chunk type is exposed
//! because INIT/INIT ACK tell a connection tracker an association is starting.

use crate::bytes::{rest, u8_at, u16_at, u32_at};
use crate::view::view;

/// Field ranges of the SCTP common header.
pub mod field {
    use crate::Field;
    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Verification tag.
    pub const VERIFICATION_TAG: Field = 4..8;
    /// CRC32c checksum.
    pub const CHECKSUM: Field = 8..12;
    /// Start of the chunks.
    pub const CHUNKS: usize = 12;
}

/// Length of the common header.
pub const HEADER_LEN: usize = field::CHUNKS;

view! {
    /// Zero-copy view of an SCTP packet.
    pub struct SctpPacket;
    /// The common header is there.
    check_len: HEADER_LEN => SctpTruncated;
}

impl<T: AsRef<[u8]>> SctpPacket<T> {
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

    /// Verification tag.
    #[inline]
    pub fn verification_tag(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::VERIFICATION_TAG)
    }

    /// Checksum field (not verified by the parser).
    pub fn checksum(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Type of the first chunk (1 = INIT, 2 = INIT ACK), if one is present.
    pub fn first_chunk_type(&self) -> Option<u8> {
        let b = self.buffer.as_ref();
        (b.len() > field::CHUNKS).then(|| u8_at(b, field::CHUNKS))
    }

    /// The chunks.
    pub fn chunks(&self) -> &[u8] {
        rest(self.buffer.as_ref(), field::CHUNKS)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::DropReason;

    #[test]
    fn fields() {
        let b = [0x0b, 0x59, 0x0b, 0x59, 0, 0, 0, 0, 0xa1, 0xb2, 0xc3, 0xd4, 1, 0, 0, 4];
        let p = SctpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (2905, 2905));
        assert_eq!(p.verification_tag(), 0);
        assert_eq!(p.checksum(), 0xa1b2_c3d4);
        assert_eq!(p.first_chunk_type(), Some(1));
        assert_eq!(p.chunks().len(), 4);
        assert_eq!(SctpPacket::new_checked(&b[..12]).unwrap().first_chunk_type(), None);
        assert_eq!(SctpPacket::new_checked(&b[..11]), Err(DropReason::SctpTruncated));
    }
}
