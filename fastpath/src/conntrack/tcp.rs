//! The TCP state machine: Linux nf_conntrack's transition table, with sequence checks that need no
//! window tracking.
//!
//! A packet is first reduced to an event (SYN, SYN-ACK, FIN, ACK, RST) after its flag combination
//! is checked against Linux's `tcp_valid_flags` table; the state and the packet's direction then
//! give the next state, "ignore" (pass without changing state, e.g. a retransmitted SYN-ACK) or
//! "invalid". Before a transition is taken, three sequence checks catch what is obviously forged
//! or stale:
//!
//! - a SYN-ACK must acknowledge the initiator's SYN (ack = ISN + 1, or further when the SYN carried
//!   data);
//! - a RST must carry a sequence number near where its sender is ([`RST_WINDOW`] either side of the
//!   highest sequence seen from it), and in SYN_SENT a RST from the responder must acknowledge the
//!   SYN (RFC 793);
//! - an ACK must not acknowledge more than the other side has sent ([`ACK_SLACK`] beyond the highest
//!   sequence seen from it).
//!
//! The tracker sees only `(flags, seq, ack)` and the IP payload length, not the window or the TCP
//! header length, so segment ends are upper bounds (the header is assumed to be 20 bytes). The bounds
//! are therefore generous; they stop blind injection and stale RSTs, not a peer that is merely
//! sloppy with its window.

use moat_wire::TcpFlags;

/// TCP connection states, as Linux nf_conntrack names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    /// SYN seen from the initiator.
    SynSent = 1,
    /// SYN-ACK seen from the responder.
    SynRecv = 2,
    /// Handshake completed (or picked up mid-stream).
    Established = 3,
    /// FIN seen from one side.
    FinWait = 4,
    /// The FIN was acknowledged; the other side may still send.
    CloseWait = 5,
    /// FIN seen from both sides.
    LastAck = 6,
    /// The last FIN was acknowledged.
    TimeWait = 7,
    /// Reset.
    Close = 8,
    /// Simultaneous open: SYN seen from both sides.
    SynSent2 = 9,
}

impl TcpState {
    /// Every state, in numbering order.
    pub const ALL: [TcpState; 9] = [
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::SynSent2,
    ];

    #[inline]
    pub(crate) fn from_u8(v: u8) -> Option<TcpState> {
        Some(match v {
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::CloseWait,
            6 => TcpState::LastAck,
            7 => TcpState::TimeWait,
            8 => TcpState::Close,
            9 => TcpState::SynSent2,
            _ => return None,
        })
    }

    /// Linux's name (`SYN_SENT`, `ESTABLISHED`, …).
    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
        }
    }

    /// Half-open: the handshake has not completed.
    pub fn is_embryonic(self) -> bool {
        matches!(self, TcpState::SynSent | TcpState::SynRecv | TcpState::SynSent2)
    }

    /// Being torn down.
    pub fn is_closing(self) -> bool {
        matches!(
            self,
            TcpState::FinWait | TcpState::CloseWait | TcpState::LastAck | TcpState::TimeWait | TcpState::Close
        )
    }
}

/// How far (in sequence space) from the highest sequence seen from its sender a RST may be. A real
/// RST carries the sender's next sequence number, or the acknowledgment number of the segment it
/// answers, which is at most one window behind; 1 MiB covers large windows while leaving a blind
/// attacker a 1-in-2048 chance per guess (plus the 4-tuple to find).
pub const RST_WINDOW: u32 = 1 << 20;

/// How far beyond the highest sequence seen from the other side an acknowledgment may reach. Segment
/// ends are already upper bounds, so this only absorbs arithmetic the tracker cannot see (a header
/// longer than assumed is the other way round); kept at one maximal unscaled window for safety.
pub const ACK_SLACK: u32 = 65_535;

/// A packet reduced to what the state machine reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Syn,
    SynAck,
    Fin,
    Ack,
    Rst,
}

impl Event {
    /// The event of a flag combination, `None` when Linux's `tcp_valid_flags` rejects it (no flag,
    /// SYN+FIN, SYN+RST, FIN without ACK, …).
    pub(crate) fn of(flags: TcpFlags) -> Option<Event> {
        if !flags.is_valid_combination() {
            return None;
        }
        Some(if flags.rst() {
            Event::Rst
        } else if flags.syn() {
            if flags.ack() { Event::SynAck } else { Event::Syn }
        } else if flags.fin() {
            Event::Fin
        } else {
            Event::Ack
        })
    }
}

/// What the table says about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    To(TcpState),
    /// Pass the packet, keep the state.
    Ignore,
    Invalid,
}

/// Linux's `tcp_conntracks` table for an existing connection. `original`: the packet goes from the
/// initiator to the responder.
pub(crate) fn step(state: TcpState, original: bool, event: Event) -> Step {
    use Step::{Ignore as IG, Invalid as IV};
    use TcpState::*;
    let to = Step::To;
    match (event, original) {
        (Event::Syn, true) => match state {
            SynSent | TimeWait | Close => to(SynSent),
            SynSent2 => to(SynSent2),
            _ => IG,
        },
        (Event::Syn, false) => match state {
            SynSent | SynSent2 => to(SynSent2),
            TimeWait => to(SynSent),
            _ => IV,
        },
        (Event::SynAck, true) => match state {
            SynRecv | SynSent2 => to(SynRecv),
            _ => IV,
        },
        (Event::SynAck, false) => match state {
            SynSent | SynSent2 => to(SynRecv),
            _ => IG,
        },
        (Event::Fin, _) => match state {
            SynRecv | Established => to(FinWait),
            FinWait | CloseWait | LastAck => to(LastAck),
            TimeWait => to(TimeWait),
            Close => to(Close),
            SynSent | SynSent2 => IV,
        },
        (Event::Ack, original) => match state {
            // An ACK from the initiator before any SYN-ACK answers nothing; from the responder it
            // may be a stray of an older connection, which the responder's own stack will reset.
            SynSent | SynSent2 if original => IV,
            SynSent | SynSent2 => IG,
            SynRecv if original => to(Established),
            SynRecv => to(SynRecv),
            Established => to(Established),
            FinWait | CloseWait => to(CloseWait),
            LastAck | TimeWait => to(TimeWait),
            Close => to(Close),
        },
        (Event::Rst, _) => to(Close),
    }
}

/// `a` is after `b` in sequence space (RFC 1982 serial arithmetic).
#[inline]
pub(crate) fn after(a: u32, b: u32) -> bool {
    // Reinterpreting the distance as signed is the serial-number comparison itself.
    (a.wrapping_sub(b) as i32) > 0
}

/// `x` lies in `[lo, hi]` (serial arithmetic, `hi` at most 2^31 after `lo`).
#[inline]
pub(crate) fn within(x: u32, lo: u32, hi: u32) -> bool {
    x.wrapping_sub(lo) <= hi.wrapping_sub(lo)
}

/// Sequence space a segment takes: data (IP payload less a minimal header), plus one each for SYN
/// and FIN.
#[inline]
pub(crate) fn segment_len(payload_len: usize, flags: TcpFlags) -> u32 {
    let data = u32::try_from(payload_len.saturating_sub(20)).unwrap_or(u32::MAX);
    data.saturating_add(u32::from(flags.syn())).saturating_add(u32::from(flags.fin()))
}

/// The eight flag bits kept per direction (FIN … CWR; AE is left out to fit a byte).
#[inline]
pub(crate) fn flag_byte(flags: TcpFlags) -> u8 {
    u8::try_from(flags.bits() & 0xff).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_follow_the_valid_flag_table() {
        let f = |bits| Event::of(TcpFlags::from_bits(bits));
        assert_eq!(f(0x002), Some(Event::Syn));
        assert_eq!(f(0x012), Some(Event::SynAck));
        assert_eq!(f(0x011), Some(Event::Fin));
        assert_eq!(f(0x018), Some(Event::Ack));
        assert_eq!(f(0x004), Some(Event::Rst));
        assert_eq!(f(0x014), Some(Event::Rst));
        assert_eq!(f(0x000), None, "no flags");
        assert_eq!(f(0x003), None, "SYN+FIN");
        assert_eq!(f(0x006), None, "SYN+RST");
        assert_eq!(f(0x001), None, "FIN without ACK");
        assert_eq!(f(0x03f), None, "Christmas tree");
    }

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(after(5, u32::MAX - 5));
        assert!(!after(u32::MAX - 5, 5));
        assert!(within(2, u32::MAX - 1, 10));
        assert!(!within(11, u32::MAX - 1, 10));
    }

    #[test]
    fn state_numbers_round_trip() {
        for s in TcpState::ALL {
            assert_eq!(TcpState::from_u8(s as u8), Some(s));
        }
        assert_eq!(TcpState::from_u8(0), None);
    }
}
