//! Ethernet II frames and IEEE 802.1Q / 802.1ad VLAN tags.
//!
//! AF_XDP hands the worker the frame as it was on the wire minus the FCS, and no minimum length
//! is enforced: veth does not pad to 60 bytes, so only the 14-byte header is required.

use core::fmt;

use crate::bytes::{array, rest, u16_at};
use crate::view::view;

/// Field ranges of the Ethernet II header.
pub mod field {
    use crate::Field;
    /// Destination MAC address.
    pub const DESTINATION: Field = 0..6;
    /// Source MAC address.
    pub const SOURCE: Field = 6..12;
    /// EtherType (or, below 0x0600, an 802.3 length).
    pub const ETHERTYPE: Field = 12..14;
    /// Start of the payload.
    pub const PAYLOAD: usize = 14;
}

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// Raw EtherType values this crate knows.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q customer tag (C-tag).
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (S-tag).
    pub const SERVICE_VLAN: u16 = 0x88a8;
    /// Pre-standard Q-in-Q service tag still emitted by some switches.
    pub const LEGACY_QINQ: u16 = 0x9100;
}

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);

    /// The six octets.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// All ones.
    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    /// Group bit set (includes broadcast).
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 != 0
    }

    /// Group bit clear.
    pub fn is_unicast(self) -> bool {
        !self.is_multicast()
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// EtherType with meaning; values this crate does not interpret are kept as `Unknown(n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// 0x0800.
    Ipv4,
    /// 0x0806.
    Arp,
    /// 0x86dd.
    Ipv6,
    /// 0x8100, 802.1Q C-tag.
    Vlan,
    /// 0x88a8, 802.1ad S-tag.
    ServiceVlan,
    /// 0x9100, pre-standard Q-in-Q.
    LegacyQinQ,
    /// Anything else, including 802.3 length values below 0x0600.
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            ethertype::IPV4 => EtherType::Ipv4,
            ethertype::ARP => EtherType::Arp,
            ethertype::IPV6 => EtherType::Ipv6,
            ethertype::VLAN => EtherType::Vlan,
            ethertype::SERVICE_VLAN => EtherType::ServiceVlan,
            ethertype::LEGACY_QINQ => EtherType::LegacyQinQ,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(v: EtherType) -> u16 {
        match v {
            EtherType::Ipv4 => ethertype::IPV4,
            EtherType::Arp => ethertype::ARP,
            EtherType::Ipv6 => ethertype::IPV6,
            EtherType::Vlan => ethertype::VLAN,
            EtherType::ServiceVlan => ethertype::SERVICE_VLAN,
            EtherType::LegacyQinQ => ethertype::LEGACY_QINQ,
            EtherType::Unknown(other) => other,
        }
    }
}

view! {
    /// Zero-copy view of an Ethernet II frame. Accessors never panic; after
    /// [`new_checked`](Self::new_checked) they return the frame's real fields.
    pub struct EthernetFrame;
    /// The header is present.
    check_len: HEADER_LEN => EthernetTruncated;
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Destination MAC.
    #[inline]
    pub fn destination(&self) -> EthernetAddress {
        EthernetAddress(array(self.buffer.as_ref(), field::DESTINATION))
    }

    /// Source MAC.
    #[inline]
    pub fn source(&self) -> EthernetAddress {
        EthernetAddress(array(self.buffer.as_ref(), field::SOURCE))
    }

    /// Raw EtherType.
    #[inline]
    pub fn ethertype_raw(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// EtherType with meaning.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(self.ethertype_raw())
    }

    /// Everything after the header (VLAN tags included, if any).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        rest(self.buffer.as_ref(), field::PAYLOAD)
    }
}

/// Field ranges of the 4 bytes that follow a VLAN TPID.
pub mod vlan_field {
    use crate::Field;
    /// Tag control information: PCP (3 bits), DEI (1 bit), VID (12 bits).
    pub const TCI: Field = 0..2;
    /// EtherType of what follows the tag.
    pub const ETHERTYPE: Field = 2..4;
    /// Start of the payload.
    pub const PAYLOAD: usize = 4;
}

/// Length of a VLAN tag after its TPID.
pub const VLAN_HEADER_LEN: usize = vlan_field::PAYLOAD;

view! {
    /// Zero-copy view of a VLAN tag body (the TCI and inner EtherType that follow the TPID).
    pub struct VlanHeader;
    /// TCI and inner EtherType are present.
    check_len: VLAN_HEADER_LEN => VlanTruncated;
}

impl<T: AsRef<[u8]>> VlanHeader<T> {
    /// Raw tag control information.
    #[inline]
    pub fn tci(&self) -> u16 {
        u16_at(self.buffer.as_ref(), vlan_field::TCI)
    }

    /// Raw EtherType after the tag.
    #[inline]
    pub fn ethertype_raw(&self) -> u16 {
        u16_at(self.buffer.as_ref(), vlan_field::ETHERTYPE)
    }

    /// Everything after the tag.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        rest(self.buffer.as_ref(), vlan_field::PAYLOAD)
    }
}

/// One VLAN tag as it was on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// The TPID that introduced the tag (0x8100, 0x88a8 or 0x9100).
    pub tpid: u16,
    /// Tag control information.
    pub tci: u16,
}

impl VlanTag {
    /// An 802.1Q C-tag with this VLAN id (priority 0). Ids above 4095 are masked.
    pub const fn customer(vid: u16) -> Self {
        Self { tpid: ethertype::VLAN, tci: vid & 0x0fff }
    }

    /// An 802.1ad S-tag with this VLAN id (priority 0).
    pub const fn service(vid: u16) -> Self {
        Self { tpid: ethertype::SERVICE_VLAN, tci: vid & 0x0fff }
    }

    /// VLAN identifier (12 bits).
    pub const fn vid(self) -> u16 {
        self.tci & 0x0fff
    }

    /// Priority code point (3 bits).
    pub const fn pcp(self) -> u8 {
        self.tci.to_be_bytes()[0] >> 5
    }

    /// Drop eligible indicator.
    pub const fn dei(self) -> bool {
        self.tci & 0x1000 != 0
    }
}

/// The VLAN tags of a frame, outermost first: none, one (`outer` only) or two
/// (802.1ad S-tag or legacy 0x9100/0x8100 outer, 802.1Q inner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VlanTags {
    /// First tag after the MAC addresses. A single tag is always stored here.
    pub outer: Option<VlanTag>,
    /// Second tag; only ever `Some` when `outer` is.
    pub inner: Option<VlanTag>,
}

impl VlanTags {
    /// Untagged.
    pub const NONE: VlanTags = VlanTags { outer: None, inner: None };

    /// Number of tags (0..=2).
    pub fn len(&self) -> usize {
        usize::from(self.outer.is_some()) + usize::from(self.inner.is_some())
    }

    /// Untagged.
    pub fn is_empty(&self) -> bool {
        self.outer.is_none()
    }

    /// The tag closest to the payload: the customer VLAN for Q-in-Q, the only tag otherwise.
    pub fn innermost(&self) -> Option<VlanTag> {
        self.inner.or(self.outer)
    }
}

/// Largest value of the EtherType field that is an 802.3 length rather than a type.
pub const MAX_8023_LENGTH: u16 = 0x05ff;

/// The 8 bytes of an LLC/SNAP header after an 802.3 length: DSAP 0xAA, SSAP 0xAA, control 0x03,
/// a 3-byte OUI and a 2-byte EtherType.
pub const SNAP_HEADER_LEN: usize = 8;

/// The EtherType an LLC/SNAP header encapsulates, for the OUIs that mean "EtherType follows"
/// (00-00-00, RFC 1042; 00-00-F8, 802.1H), or `None` when `payload` does not start with one.
pub fn snap_ethertype(payload: &[u8]) -> Option<u16> {
    match payload.first_chunk::<SNAP_HEADER_LEN>() {
        Some(&[0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00 | 0xf8, hi, lo]) => Some(u16::from_be_bytes([hi, lo])),
        _ => None,
    }
}

/// TPIDs accepted as the first tag. 0x9100 is the pre-802.1ad Q-in-Q TPID; it is accepted in the
/// outer position only, like 0x88a8.
#[inline]
pub(crate) fn is_outer_tpid(ethertype: u16) -> bool {
    matches!(ethertype, ethertype::VLAN | ethertype::SERVICE_VLAN | ethertype::LEGACY_QINQ)
}

/// Service-tag TPIDs, which must never appear inside another tag.
#[inline]
pub(crate) fn is_service_tpid(ethertype: u16) -> bool {
    matches!(ethertype, ethertype::SERVICE_VLAN | ethertype::LEGACY_QINQ)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::DropReason;

    const FRAME: [u8; 18] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x81, 0x00, // TPID
        0xa0, 0x64, // PCP 5, DEI 0, VID 100
        0x08, 0x00, // inner ethertype
    ];

    #[test]
    fn ethernet_fields() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert!(f.destination().is_broadcast());
        assert!(f.destination().is_multicast());
        assert_eq!(f.source(), EthernetAddress([2, 0, 0, 0, 0, 1]));
        assert!(f.source().is_unicast());
        assert_eq!(f.ethertype(), EtherType::Vlan);
        assert_eq!(f.payload().len(), 4);
        assert_eq!(std::format!("{}", f.source()), "02:00:00:00:00:01");
    }

    #[test]
    fn vlan_fields() {
        let v = VlanHeader::new_checked(&FRAME[14..]).unwrap();
        let tag = VlanTag { tpid: 0x8100, tci: v.tci() };
        assert_eq!(tag.vid(), 100);
        assert_eq!(tag.pcp(), 5);
        assert!(!tag.dei());
        assert_eq!(v.ethertype_raw(), ethertype::IPV4);
        assert!(v.payload().is_empty());
    }

    #[test]
    fn truncation() {
        assert_eq!(EthernetFrame::new_checked(&FRAME[..13]), Err(DropReason::EthernetTruncated));
        assert_eq!(VlanHeader::new_checked(&FRAME[14..17]), Err(DropReason::VlanTruncated));
        // Unchecked views over nothing read zeros instead of panicking.
        let f = EthernetFrame::new_unchecked(&[][..]);
        assert_eq!(f.ethertype(), EtherType::Unknown(0));
        assert!(f.payload().is_empty());
    }

    #[test]
    fn ethertype_round_trip() {
        for v in [0x0800u16, 0x0806, 0x86dd, 0x8100, 0x88a8, 0x9100, 0x88cc, 0x0042] {
            assert_eq!(u16::from(EtherType::from(v)), v);
        }
    }

    #[test]
    fn vlan_tags_helpers() {
        let mut t = VlanTags::NONE;
        assert!(t.is_empty());
        assert_eq!(t.innermost(), None);
        t.outer = Some(VlanTag::service(10));
        assert_eq!(t.innermost().map(VlanTag::vid), Some(10));
        t.inner = Some(VlanTag::customer(20));
        assert_eq!(t.len(), 2);
        assert_eq!(t.innermost().map(VlanTag::vid), Some(20));
        assert_eq!(VlanTag::customer(0xffff).vid(), 0x0fff);
    }
}
