//! The messages of protocol version [`super::PROTOCOL_VERSION`], postcard-encoded in frames.
//!
//! Any change to these types (a field added, removed or reordered, a variant added) changes the
//! encoding: bump the version with it. postcard has no field names or tags to skip unknown data
//! by, so peers of different versions refuse each other at the hello instead of misreading.

use crate::classify::Verdict;
use crate::classify::acl::AclRule;
use crate::classify::policy::{Chain, EndpointInfo, TraceInfo};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// A policy stage's content id: the first 16 bytes of the SHA-256 of its encoded rule specs.
/// Equal content gives equal ids in every process, so a restarted agent and a fastpath that kept
/// its stages agree on what the fastpath already has.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StageId(pub [u8; 16]);

impl fmt::Debug for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The agent's hello body (after magic and version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHello {
    /// `moat <version>`.
    pub software: String,
    pub pid: u32,
    /// The node the agent serves (`NODE_NAME`), for the fastpath's logs.
    pub node: Option<String>,
}

/// The fastpath's hello body: what it enforces now and which stages it holds, so that the agent
/// sends only what is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastpathHello {
    pub software: String,
    pub pid: u32,
    /// Generation of the table in force; 0 = the fail-closed table of a fresh start.
    pub generation: u64,
    /// Origin of the table in force.
    pub origin: String,
    /// Policy stages the fastpath holds (those of the table in force).
    pub stages: Vec<StageId>,
    /// Tables applied since the fastpath started (from any agent).
    pub tables_applied: u64,
}

/// Agent → fastpath.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// A complete table to validate and swap in.
    Table(TableMsg),
    /// Liveness check; answered with [`FastpathMessage::Pong`].
    Ping { nonce: u64 },
}

/// Fastpath → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FastpathMessage {
    /// The table `id` is in force as `generation`.
    Ack(Ack),
    /// The table was refused; the table in force stays.
    Nack(Nack),
    /// Counters, sent periodically.
    Stats(Stats),
    Pong {
        nonce: u64,
    },
}

/// A complete rule table. Policy stages the fastpath already holds travel as their id only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableMsg {
    /// Chosen by the agent (increasing per connection); echoed in the answer.
    pub id: u64,
    /// Where the table came from (status output, flow logs).
    pub origin: String,
    pub body: TableBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TableBody {
    /// A compiled Kubernetes/Calico policy (`PolicyTable`).
    Policy(PolicyMsg),
    /// The differences from the policy table in force (generation `base`), as
    /// `PolicyTable::patched` applies them: what a one-pod change costs instead of the whole table.
    Patch(PatchMsg),
    /// Raw first-match ACL rules (a manifests directory holding only `*.acl` files).
    Acl { rules: Vec<AclRule>, default: Verdict },
}

/// Writes to the table in force: each `(index, value)` replaces an element or appends one (index =
/// length); traces are appended; nothing is removed (what the incremental compiler produces).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PatchMsg {
    /// The generation this patch applies to; refused when another one is in force.
    pub base: u64,
    pub new_stages: Vec<StageMsg>,
    pub stages: Vec<(u32, StageId)>,
    pub endpoints: Vec<(u32, EndpointInfo)>,
    /// `None` removes the address.
    pub addresses: Vec<(IpAddr, Option<u32>)>,
    pub chains: Vec<(u32, Chain)>,
    pub traces: Vec<TraceInfo>,
    pub zones: Option<Vec<(IpNetwork, String)>>,
}

/// The parts of a `PolicyTable`, with its stages by content id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PolicyMsg {
    /// Stages the fastpath does not hold yet.
    pub new_stages: Vec<StageMsg>,
    /// The table's policy stages in index order (what chains refer to by index).
    pub stages: Vec<StageId>,
    pub endpoints: Vec<EndpointInfo>,
    pub addresses: Vec<(IpAddr, u32)>,
    pub chains: Vec<Chain>,
    pub traces: Vec<TraceInfo>,
    pub zones: Vec<(IpNetwork, String)>,
}

/// One policy stage: its rule specs (`Vec<RuleSpec>`, postcard-encoded), from which the fastpath
/// builds the matcher itself. Kept as bytes so that the id can be checked against exactly what
/// was received.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageMsg {
    pub id: StageId,
    pub specs: Vec<u8>,
}

impl fmt::Debug for StageMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageMsg({}, {} bytes)", self.id, self.specs.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub id: u64,
    pub generation: u64,
    /// Stages built from this message, and stages taken from the fastpath's cache.
    pub stages_built: u32,
    pub stages_reused: u32,
    /// Decoding, validation and building, in microseconds.
    pub build_us: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// The refused table's id; `None` when the frame could not even be decoded that far.
    pub id: Option<u64>,
    pub reason: String,
    /// Generation of the table that stays in force.
    pub generation: u64,
}

/// Counters of the fastpath: per worker, per redirector, and the link's own. Named counters
/// (`(name, value)`) rather than fixed fields, so that the agent renders whatever the fastpath
/// counts without knowing every drop reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Stats {
    pub generation: u64,
    pub origin: String,
    pub uptime_ms: u64,
    pub workers: Vec<WorkerStats>,
    pub redirectors: Vec<RedirectorStats>,
    /// Flow-record counters (`taken`, `written`, `dropped_queue_full`, `write_errors`).
    pub flow_records: Vec<(String, u64)>,
    /// The link's counters (`tables_applied`, `tables_refused`, `connects`, ...).
    pub link: Vec<(String, u64)>,
    pub last_refusal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WorkerStats {
    /// `IF_A,IF_B`.
    pub pair: String,
    pub queue: u32,
    pub bind_mode: String,
    /// `rx`, `tx`, `rx_bytes`, `tx_bytes`, `bridged_non_ip`, `batches`, `idle_waits`,
    /// `table_generation`, `handed_off`, `handoff_received`.
    pub counters: Vec<(String, u64)>,
    /// Drops by reason (non-zero only).
    pub dropped: Vec<(String, u64)>,
    /// `ConntrackSnapshot::named`.
    pub conntrack: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RedirectorStats {
    pub interface: String,
    pub counters: Vec<(String, u64)>,
}

impl WorkerStats {
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
    }
}
