//! ARP (RFC 826). The view is generic over address lengths; the dataplane only accepts
//! Ethernet/IPv4 ARP ([`ArpPacket::is_ethernet_ipv4`]).

use core::net::Ipv4Addr;

use crate::DropReason;
use crate::bytes::{array, span, u8_at, u16_at};
use crate::ethernet::EthernetAddress;
use crate::view::view;

/// Field ranges of the fixed ARP header and, for Ethernet/IPv4, of the addresses.
pub mod field {
    use crate::Field;
    /// Hardware type (1 = Ethernet).
    pub const HTYPE: Field = 0..2;
    /// Protocol type (0x0800 = IPv4).
    pub const PTYPE: Field = 2..4;
    /// Hardware address length.
    pub const HLEN: usize = 4;
    /// Protocol address length.
    pub const PLEN: usize = 5;
    /// Operation.
    pub const OPER: Field = 6..8;
    /// Start of the variable-length addresses.
    pub const ADDRESSES: usize = 8;
    /// Sender hardware address (Ethernet/IPv4 layout).
    pub const SHA: Field = 8..14;
    /// Sender protocol address (Ethernet/IPv4 layout).
    pub const SPA: Field = 14..18;
    /// Target hardware address (Ethernet/IPv4 layout).
    pub const THA: Field = 18..24;
    /// Target protocol address (Ethernet/IPv4 layout).
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const ETHERNET_IPV4_LEN: usize = 28;

/// ARP operation; values other than request/reply kept as `Unknown(n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// 1.
    Request,
    /// 2.
    Reply,
    /// Anything else (RARP, InARP, ...).
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(v: u16) -> Self {
        match v {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Unknown(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(v: ArpOperation) -> u16 {
        match v {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(other) => other,
        }
    }
}

view! {
    /// Zero-copy view of an ARP packet.
    pub struct ArpPacket;
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// The fixed header and both address pairs (as long as hlen/plen say) are present.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < field::ADDRESSES {
            return Err(DropReason::ArpTruncated);
        }
        let addresses = 2 * (usize::from(self.hardware_len()) + usize::from(self.protocol_len()));
        if len < field::ADDRESSES + addresses {
            return Err(DropReason::ArpTruncated);
        }
        Ok(())
    }

    /// Hardware type.
    pub fn hardware_type(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::HTYPE)
    }

    /// Protocol type.
    pub fn protocol_type(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::PTYPE)
    }

    /// Hardware address length.
    pub fn hardware_len(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::HLEN)
    }

    /// Protocol address length.
    pub fn protocol_len(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::PLEN)
    }

    /// Operation.
    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(u16_at(self.buffer.as_ref(), field::OPER))
    }

    /// Ethernet hardware and IPv4 protocol addresses, the only kind the dataplane handles.
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.hardware_type() == 1
            && self.protocol_type() == crate::ethernet::ethertype::IPV4
            && self.hardware_len() == 6
            && self.protocol_len() == 4
    }

    /// Sender hardware address, whatever its length.
    pub fn sender_hardware_addr(&self) -> &[u8] {
        let h = usize::from(self.hardware_len());
        span(self.buffer.as_ref(), field::ADDRESSES, field::ADDRESSES + h)
    }

    /// Sender protocol address, whatever its length.
    pub fn sender_protocol_addr(&self) -> &[u8] {
        let (h, p) = (usize::from(self.hardware_len()), usize::from(self.protocol_len()));
        span(self.buffer.as_ref(), field::ADDRESSES + h, field::ADDRESSES + h + p)
    }

    /// Target hardware address, whatever its length.
    pub fn target_hardware_addr(&self) -> &[u8] {
        let (h, p) = (usize::from(self.hardware_len()), usize::from(self.protocol_len()));
        let start = field::ADDRESSES + h + p;
        span(self.buffer.as_ref(), start, start + h)
    }

    /// Target protocol address, whatever its length.
    pub fn target_protocol_addr(&self) -> &[u8] {
        let (h, p) = (usize::from(self.hardware_len()), usize::from(self.protocol_len()));
        let start = field::ADDRESSES + 2 * h + p;
        span(self.buffer.as_ref(), start, start + p)
    }

    /// Sender MAC (Ethernet/IPv4 layout).
    pub fn sender_mac(&self) -> EthernetAddress {
        EthernetAddress(array(self.buffer.as_ref(), field::SHA))
    }

    /// Sender IPv4 address (Ethernet/IPv4 layout).
    pub fn sender_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::SPA))
    }

    /// Target MAC (Ethernet/IPv4 layout).
    pub fn target_mac(&self) -> EthernetAddress {
        EthernetAddress(array(self.buffer.as_ref(), field::THA))
    }

    /// Target IPv4 address (Ethernet/IPv4 layout).
    pub fn target_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::TPA))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // htype, ptype, hlen, plen, oper
        0x02, 0, 0, 0, 0, 1, 10, 0, 0, 1, // sha, spa
        0, 0, 0, 0, 0, 0, 10, 0, 0, 2, // tha, tpa
    ];

    #[test]
    fn request_fields() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert!(p.is_ethernet_ipv4());
        assert_eq!(p.operation(), ArpOperation::Request);
        assert_eq!(p.sender_mac(), EthernetAddress([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.sender_ip(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.target_mac(), EthernetAddress([0; 6]));
        assert_eq!(p.target_ip(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.sender_hardware_addr(), &REQUEST[8..14]);
        assert_eq!(p.sender_protocol_addr(), &REQUEST[14..18]);
        assert_eq!(p.target_hardware_addr(), &REQUEST[18..24]);
        assert_eq!(p.target_protocol_addr(), &REQUEST[24..28]);
    }

    #[test]
    fn truncated_by_own_lengths() {
        assert_eq!(ArpPacket::new_checked(&REQUEST[..7]), Err(DropReason::ArpTruncated));
        assert_eq!(ArpPacket::new_checked(&REQUEST[..27]), Err(DropReason::ArpTruncated));
        let mut big = REQUEST;
        big[4] = 255; // hlen 255: needs 8 + 2 * (255 + 4) bytes
        assert_eq!(ArpPacket::new_checked(&big[..]), Err(DropReason::ArpTruncated));
    }

    #[test]
    fn operation_round_trip() {
        for v in [1u16, 2, 3, 8, 0xffff] {
            assert_eq!(u16::from(ArpOperation::from(v)), v);
        }
    }
}
