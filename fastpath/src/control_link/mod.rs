//! The control link: how a control process (`moat agent`) hands rule tables to a separate
//! fastpath process (`moat run --control-socket`) over a Unix socket, and how counters come back.
//!
//! Two processes so that the control side can crash, restart or be upgraded without the fastpath
//! stopping or forgetting its tracked connections (as Calico VPP splits its agent from its
//! dataplane). The fastpath trusts nothing it receives: a table travels as **data** that the
//! fastpath decodes, checks and builds itself, never as pointers or prebuilt structures.
//!
//! ```text
//!  agent                                           fastpath
//!  ─────                                           ────────
//!  connect ──────── hello (magic, version) ──────► accept (one agent at a time; a newer
//!          ◄─────── hello (magic, version,  ────── connection replaces the old one)
//!                   generation, stages held)
//!  Table{id, stages by content id, ...} ─────────► decode → limits → stage ids checked against
//!                                                   their content → stages built → indices
//!                                                   checked (PolicyTable::new) → publish
//!          ◄─────── Ack{id, generation} | Nack{id, reason}  (the table in force stays)
//!          ◄─────── Stats{per-worker counters, ...}  every second
//!  Ping{nonce} ──────────────────────────────────► Pong{nonce}
//! ```
//!
//! # Frames and versions
//!
//! A frame is a little-endian `u32` length and that many bytes ([`frame`]). Each side's first
//! frame is its hello: [`frame::MAGIC`], the protocol version ([`PROTOCOL_VERSION`], `u16`),
//! then a postcard-encoded [`message::AgentHello`] / [`message::FastpathHello`]. Both sides send
//! their hello at once and read the peer's; a peer with another version is refused by both, each
//! logging both version numbers ([`LinkError::Version`]). There is no negotiation: agent and
//! fastpath ship in one image, and postcard cannot skip fields it does not know, so any change to
//! a message is a new version. Every later frame is one postcard-encoded [`message::AgentMessage`]
//! or [`message::FastpathMessage`].
//!
//! # Tables as data
//!
//! A [`message::TableMsg`] carries a compiled policy as its parts (endpoints, address map,
//! chains, traces, zones) and its policy stages by **content id** (the first 16 bytes of the
//! SHA-256 of the stage's encoded `RuleSpec`s). A stage the fastpath does not hold travels as its
//! encoded specs; the fastpath checks the id against the bytes, decodes them and builds the
//! matcher itself. The fastpath's hello lists the stages it holds, and the agent remembers what
//! the fastpath acknowledged, so after the first table only new stages travel, also across an
//! agent restart (ids depend on content only). After a swap the fastpath keeps exactly the stages
//! of the table in force ([`table::StageCache`]).
//!
//! # Validation before the swap
//!
//! [`table::build_table`] refuses, with a reason that goes back in the Nack: an undecodable or
//! oversized frame (the reader skips it without buffering it); counts above [`table::Limits`]
//! (endpoints, addresses, chains, traces, stages, zones, rules per stage, classifier boxes of the
//! new stages); a stage whose content does not match its id, that does not decode or does not
//! build; a stage reference neither sent nor held; an address listed twice; and every dangling
//! index (`PolicyTable::new`). Only a table that passed everything is published, with the next
//! generation of the fastpath's own counter; a refused table changes nothing.

pub mod client;
pub mod frame;
pub mod message;
pub mod server;
pub mod table;

pub use client::Client;
pub use message::{
    Ack, AgentHello, AgentMessage, FastpathHello, FastpathMessage, Nack, PolicyMsg, StageId, StageMsg, Stats,
    TableBody, TableMsg,
};
pub use server::{LinkServer, LinkState, LinkStatus, ServerConfig};
pub use table::{BuiltTable, EncodeError, Limits, Refusal, StageCache, TableEncoder, build_table};

/// The protocol version spoken by this build. Bump it with any change to [`message`].
pub const PROTOCOL_VERSION: u16 = 1;

/// Frames the agent accepts from the fastpath (hellos list stage ids, stats list workers).
pub const MAX_FASTPATH_FRAME: usize = 64 << 20;

/// Default limit on frames the fastpath accepts from the agent (one table).
pub const DEFAULT_MAX_TABLE_FRAME: usize = 64 << 20;

/// What went wrong on a link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("control link I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("the peer is not a moat control link peer (its first frame lacks the magic bytes)")]
    NotMoat,
    #[error(
        "protocol version mismatch: the peer speaks moat control protocol version {peer}, this process \
         speaks version {ours}; run agent and fastpath from the same release"
    )]
    Version { peer: u16, ours: u16 },
    #[error("cannot decode a message: {0}")]
    Decode(#[from] postcard::Error),
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("{0}")]
    Timeout(&'static str),
}

/// `moat <version>` for hellos.
pub fn software() -> String {
    format!("moat {}", env!("CARGO_PKG_VERSION"))
}
