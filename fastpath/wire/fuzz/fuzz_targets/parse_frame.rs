//! `parse_frame` on arbitrary bytes: must not panic (overflow checks and debug assertions are on
//! in cargo-fuzz builds), and every `Ok` summary must be consistent with the frame it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_wire::{Fragment, Network, Transport, parse_frame};

fuzz_target!(|frame: &[u8]| {
    let Ok(summary) = parse_frame(frame) else { return };
    assert_eq!(summary.frame_len, frame.len());
    assert_eq!(summary.l3_offset, 14 + 4 * summary.vlan.len());
    assert!(summary.vlan.inner.is_none() || summary.vlan.outer.is_some());
    if let Network::Ip(ip) = summary.network {
        assert!(ip.payload_offset + ip.payload_len <= frame.len());
        assert_eq!(ip.fragment == Fragment::Later, ip.transport == Transport::NotInspected);
    }
});
