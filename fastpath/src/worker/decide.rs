//! The per-frame decision, separate from the rings so it can be tested and benchmarked on its own:
//! parse, steer to the flow's owner, track the connection, consult policy for new flows.

use super::handoff::{Crossing, HandoffError, PairRoute};
use crate::classify::RuleTable;
use crate::conntrack::{CtDrop, FlowTable, Outcome, TrackInput, owner_hash};
use crate::stats::DropCause;
use moat_wire::{Network, parse_frame};

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// IP traffic of an allowed connection.
    Forward,
    /// Non-IP traffic (ARP, LLDP, …): a bump in the wire passes it unchanged.
    Bridge,
    /// Copied to the mailbox of the worker owning the connection; this copy is done with.
    HandedOff,
    Drop(DropCause),
}

/// What a decision needs besides the frame: the table of this batch, the worker's flow table, the
/// batch's clock, and (on multi-queue pairs with hash steering) who owns which connection.
#[derive(Debug)]
pub struct Context<'a> {
    pub table: &'a RuleTable,
    pub flows: &'a mut FlowTable,
    pub now_ns: u64,
    /// `None`: this worker owns every connection it sees (one queue, or symmetric RSS).
    pub route: Option<&'a PairRoute>,
}

/// The part of a decision that needs no flow table: parse, bridge non-IP, steer to the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triage {
    /// Decided already.
    Done(Decision),
    /// An IP packet of a connection this worker owns: its flow table decides.
    Track(TrackInput),
}

/// Parses `frame` (received on the side `crossing` names) and, unless it is this worker's to track,
/// decides it. With `route`, frames of connections another worker owns are copied to its mailbox.
#[inline]
pub fn triage(frame: &[u8], crossing: Crossing, route: Option<&PairRoute>) -> Triage {
    let summary = match parse_frame(frame) {
        Ok(summary) => summary,
        Err(reason) => return Triage::Done(Decision::Drop(DropCause::Wire(reason))),
    };
    let ip = match summary.network {
        Network::Ip(ip) => ip,
        Network::Arp(_) | Network::Other { .. } => return Triage::Done(Decision::Bridge),
    };
    if let Some(route) = route {
        let owner = route.owner(owner_hash(&ip, &summary.vlan));
        if owner != route.me {
            return Triage::Done(match route.mailboxes.get(owner).map(|m| m.push(crossing, frame)) {
                Some(Ok(())) => Decision::HandedOff,
                Some(Err(HandoffError::Full | HandoffError::TooLarge)) | None => Decision::Drop(DropCause::HandoffFull),
            });
        }
    }
    let frame_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    Triage::Track(TrackInput { ip, vlan: summary.vlan, frame_len })
}

/// The decision for a tracked packet's outcome.
#[inline]
pub fn decision_of(outcome: Outcome) -> Decision {
    match outcome {
        Outcome::Forward => Decision::Forward,
        Outcome::Drop(drop) => Decision::Drop(drop_cause(drop)),
    }
}

/// Parses `frame` (received on the side `crossing` names) and decides it, one frame at a time (the
/// worker decides its RX batches with [`triage`] and `FlowTable::track_batch`). Never panics, never
/// allocates.
#[inline]
pub fn decide(frame: &[u8], crossing: Crossing, cx: &mut Context<'_>) -> Decision {
    match triage(frame, crossing, cx.route) {
        Triage::Done(decision) => decision,
        Triage::Track(input) => {
            let table = cx.table;
            let outcome =
                cx.flows.track(&input.ip, &input.vlan, input.frame_len, cx.now_ns, table.generation(), &mut |key| {
                    table.admit(key)
                });
            decision_of(outcome)
        }
    }
}

/// The worker's counter for a conntrack refusal (the tracker counts finer reasons itself).
fn drop_cause(drop: CtDrop) -> DropCause {
    match drop {
        CtDrop::PolicyDenied => DropCause::Policy,
        CtDrop::Revoked => DropCause::Revoked,
        CtDrop::Invalid(_) => DropCause::ConntrackInvalid,
        CtDrop::TableFull => DropCause::ConntrackFull,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Verdict, acl};
    use crate::conntrack::{ConntrackConfig, RecordQueue};
    use crate::worker::handoff::Mailbox;
    use moat_wire::builder::{FrameSpec, Ipv4Spec, Ipv6Spec, NetworkSpec, TransportSpec, build_frame};
    use moat_wire::{DropReason, IpVersion, TcpFlags};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Arc;

    fn table(rules: &str) -> RuleTable {
        RuleTable::new(acl::parse(rules, "test.acl").unwrap(), Verdict::Deny, "test")
    }

    fn flows() -> FlowTable {
        FlowTable::new(ConntrackConfig { capacity: 1024, ..ConntrackConfig::default() }, Arc::new(RecordQueue::new(64)))
    }

    fn frame(network: NetworkSpec<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let len = build_frame(&FrameSpec::new(network), &mut buf).unwrap();
        buf.truncate(len);
        buf
    }

    fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: TcpFlags, seq: u32, ack: u32) -> Vec<u8> {
        let mut t = TransportSpec::tcp(sport, dport, flags);
        if let TransportSpec::Tcp { seq: s, ack: a, .. } = &mut t {
            (*s, *a) = (seq, ack);
        }
        frame(NetworkSpec::Ipv4(Ipv4Spec::new(Ipv4Addr::from(src), Ipv4Addr::from(dst), t)))
    }

    fn run(f: &[u8], crossing: Crossing, table: &RuleTable, flows: &mut FlowTable) -> Decision {
        decide(f, crossing, &mut Context { table, flows, now_ns: 1_000_000, route: None })
    }

    #[test]
    fn a_new_connection_is_decided_by_policy_and_its_replies_by_conntrack() {
        // Only the client's direction is allowed: the SYN-ACK passes because the SYN did.
        let t = table("allow tcp 10.99.0.1/32 10.99.0.2/32 5001");
        let mut ct = flows();
        let (c, s) = ([10, 99, 0, 1], [10, 99, 0, 2]);
        let syn = tcp4(c, 40000, s, 5001, TcpFlags::SYN, 100, 0);
        let syn_ack = tcp4(s, 5001, c, 40000, TcpFlags::SYN | TcpFlags::ACK, 700, 101);
        assert_eq!(run(&syn, Crossing::AToB, &t, &mut ct), Decision::Forward);
        assert_eq!(run(&syn_ack, Crossing::BToA, &t, &mut ct), Decision::Forward);
        // The server opening its own connection is a new flow, and policy denies it.
        let back = tcp4(s, 40001, c, 22, TcpFlags::SYN, 5, 0);
        assert_eq!(run(&back, Crossing::BToA, &t, &mut ct), Decision::Drop(DropCause::Policy));
    }

    #[test]
    fn icmpv6_echo_is_classified_by_type() {
        let t = table("allow icmpv6 fd00::1/128 fd00::2/128");
        let request = frame(NetworkSpec::Ipv6(Ipv6Spec::new(
            "fd00::1".parse::<Ipv6Addr>().unwrap(),
            "fd00::2".parse::<Ipv6Addr>().unwrap(),
            TransportSpec::echo_request(IpVersion::V6, 7, 1, b"ping"),
        )));
        assert_eq!(run(&request, Crossing::AToB, &t, &mut flows()), Decision::Forward);
    }

    #[test]
    fn non_ip_is_bridged_and_garbage_dropped_with_its_reason() {
        let t = RuleTable::fail_closed();
        let lldp = frame(NetworkSpec::Other { ethertype: 0x88cc, payload: &[0u8; 46] });
        assert_eq!(run(&lldp, Crossing::AToB, &t, &mut flows()), Decision::Bridge);
        assert_eq!(
            run(&[0u8; 5], Crossing::AToB, &t, &mut flows()),
            Decision::Drop(DropCause::Wire(DropReason::EthernetTruncated))
        );
    }

    #[test]
    fn both_directions_of_a_connection_meet_at_one_owner() {
        let t = table("allow tcp 10.99.0.1/32 10.99.0.2/32 5001");
        let mailboxes: Arc<[Mailbox]> = PairRoute::mailboxes(4);
        let (c, s) = ([10, 99, 0, 1], [10, 99, 0, 2]);
        for sport in 40000..40064u16 {
            let syn = tcp4(c, sport, s, 5001, TcpFlags::SYN, 1, 0);
            let syn_ack = tcp4(s, 5001, c, sport, TcpFlags::SYN | TcpFlags::ACK, 9, 2);
            // Whichever worker receives each direction, both end up with the same owner.
            let mut owners = Vec::new();
            for (f, crossing) in [(&syn, Crossing::AToB), (&syn_ack, Crossing::BToA)] {
                for me in 0..4 {
                    let route = PairRoute { mailboxes: Arc::clone(&mailboxes), me };
                    let mut ct = flows();
                    let d =
                        decide(f, crossing, &mut Context { table: &t, flows: &mut ct, now_ns: 1, route: Some(&route) });
                    if d != Decision::HandedOff {
                        owners.push(me);
                    }
                }
            }
            assert_eq!(owners.len(), 2, "each direction has exactly one owner");
            assert_eq!(owners[0], owners[1], "both directions have the same owner");
            for m in mailboxes.iter() {
                while m.pop().is_some() {}
            }
        }
    }
}
