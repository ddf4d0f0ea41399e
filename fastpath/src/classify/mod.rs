//! The rule table the workers consult, and how a new table reaches them.
//!
//! A [`RuleTable`] is immutable. The control side builds a new one and publishes it through a
//! [`TableHandle`] (an `ArcSwap`): workers load the current table once per RX batch, so a batch is
//! decided entirely by one generation, and a swap never blocks or drops a packet. Replaced tables are
//! kept by the handle until no worker still reads them and are freed by the publisher, never on a
//! worker's hot path.
//!
//! A table holds either the interim ACL of [`acl`] or a compiled Calico policy
//! ([`policy::PolicyTable`], built by `moat_control::compile`); workers call the same
//! [`RuleTable::classify`] for both.

pub mod acl;
pub mod engine;
pub mod policy;

use arc_swap::{ArcSwap, Guard};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use acl::{AclError, AclRule};
pub use policy::{FlowDecision, PolicyTable};

/// What policy sees of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (after the IPv6 extension chain).
    pub protocol: u8,
    /// TCP/UDP/SCTP ports; 0 for other protocols.
    pub src_port: u16,
    pub dst_port: u16,
    /// ICMP/ICMPv6 type and code; `None` for other protocols (and for later fragments).
    pub icmp: Option<(u8, u8)>,
}

/// The decision for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    Allow,
    Deny,
}

/// What policy said about a new flow, small enough to keep in every tracked connection: the
/// verdict and, per side, the endpoint and the trace entry that decided it (the last entry of that
/// side's trace, `policy::TraceId`). The full trace (Log and Pass entries before the decision) is
/// rebuilt by the flow-log side from the key when it needs it. Interim ACL tables have no sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Admission {
    pub verdict: Verdict,
    /// `(endpoint index, deciding trace id)` of the source's egress side, when the source is known.
    pub egress: Option<(u32, policy::TraceId)>,
    /// Same for the destination's ingress side.
    pub ingress: Option<(u32, policy::TraceId)>,
}

impl Admission {
    /// An admission without policy detail (interim ACL, fail-closed table).
    pub fn bare(verdict: Verdict) -> Admission {
        Admission { verdict, egress: None, ingress: None }
    }
}

/// An immutable, versioned set of rules.
#[derive(Debug, Clone)]
pub struct RuleTable {
    generation: u64,
    rules: Vec<AclRule>,
    default: Verdict,
    /// When set, the compiled Calico policy decides and `rules`/`default` are unused.
    policy: Option<Arc<PolicyTable>>,
    origin: String,
}

impl RuleTable {
    /// A table from rules, first match wins, `default` when none matches. `origin` says where the rules
    /// came from (for status output).
    pub fn new(rules: Vec<AclRule>, default: Verdict, origin: impl Into<String>) -> RuleTable {
        RuleTable { generation: 0, rules, default, policy: None, origin: origin.into() }
    }

    /// A table deciding by a compiled Calico policy.
    pub fn from_policy(policy: Arc<PolicyTable>, origin: impl Into<String>) -> RuleTable {
        RuleTable {
            generation: 0,
            rules: Vec::new(),
            default: Verdict::Deny,
            policy: Some(policy),
            origin: origin.into(),
        }
    }

    /// The compiled policy, when this table has one.
    pub fn policy(&self) -> Option<&PolicyTable> {
        self.policy.as_deref()
    }

    /// The table in force before any policy was loaded: deny all IP traffic (fail closed).
    pub fn fail_closed() -> RuleTable {
        RuleTable::new(Vec::new(), Verdict::Deny, "no policy loaded yet (fail closed)")
    }

    /// Decides one packet.
    #[inline]
    pub fn classify(&self, key: &FlowKey) -> Verdict {
        match &self.policy {
            Some(p) => p.verdict(key),
            None => self.rules.iter().find_map(|rule| rule.decide(key)).unwrap_or(self.default),
        }
    }

    /// Decides one new flow, keeping the deciding trace entry of each side.
    #[inline]
    pub fn admit(&self, key: &FlowKey) -> Admission {
        match &self.policy {
            Some(p) => {
                let d = p.decide(key);
                let side = |s: Option<policy::SideDecision>| {
                    s.map(|s| (s.endpoint, s.trace().last().copied().unwrap_or(policy::TraceId::MAX)))
                };
                Admission { verdict: d.verdict, egress: side(d.egress), ingress: side(d.ingress) }
            }
            None => Admission::bare(self.classify(key)),
        }
    }

    /// Generation number assigned at publication; 0 for the initial table.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn rules(&self) -> &[AclRule] {
        &self.rules
    }

    pub fn default_verdict(&self) -> Verdict {
        self.default
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// The publication point of rule tables: one writer (the control side), many readers (workers).
#[derive(Debug)]
pub struct TableHandle {
    current: ArcSwap<RuleTable>,
    last_generation: AtomicU64,
    /// Tables replaced but possibly still read by a worker's in-flight batch. Only the publisher
    /// touches this list, so the mutex is never contended by a worker.
    retired: Mutex<Vec<Arc<RuleTable>>>,
}

impl TableHandle {
    pub fn new(initial: RuleTable) -> Arc<TableHandle> {
        Arc::new(TableHandle {
            last_generation: AtomicU64::new(initial.generation),
            current: ArcSwap::from_pointee(initial),
            retired: Mutex::new(Vec::new()),
        })
    }

    /// The current table; workers call this once per batch.
    #[inline]
    pub fn load(&self) -> Guard<Arc<RuleTable>> {
        self.current.load()
    }

    /// The current table as an owned `Arc` (for the control side, which may hold it for a while;
    /// workers use [`TableHandle::load`]).
    pub fn load_full(&self) -> Arc<RuleTable> {
        self.current.load_full()
    }

    /// Publishes `table` as the next generation and returns its number.
    pub fn publish(&self, mut table: RuleTable) -> u64 {
        let generation = self.last_generation.fetch_add(1, Ordering::AcqRel) + 1;
        table.generation = generation;
        let old = self.current.swap(Arc::new(table));
        if let Ok(mut retired) = self.retired.lock() {
            retired.push(old);
            // Free the tables no worker holds any more. A worker still holding one keeps its count
            // above 1, and its table stays here for the next publication or `reclaim`.
            retired.retain(|t| Arc::strong_count(t) > 1);
        }
        generation
    }

    /// Frees retired tables no worker reads any more (call periodically from the control side).
    pub fn reclaim(&self) -> usize {
        match self.retired.lock() {
            Ok(mut retired) => {
                retired.retain(|t| Arc::strong_count(t) > 1);
                retired.len()
            }
            Err(_) => 0,
        }
    }

    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: &str, dst: &str, protocol: u8, dst_port: u16) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol,
            src_port: 40000,
            dst_port,
            icmp: None,
        }
    }

    #[test]
    fn fail_closed_denies_everything() {
        let table = RuleTable::fail_closed();
        assert_eq!(table.classify(&key("10.0.0.1", "10.0.0.2", 6, 80)), Verdict::Deny);
        assert_eq!(table.generation(), 0);
    }

    #[test]
    fn publish_numbers_generations_and_swaps() {
        let handle = TableHandle::new(RuleTable::fail_closed());
        let allow_all = acl::parse("allow any any any", "test").unwrap();
        let reader = handle.load();
        assert_eq!(handle.publish(RuleTable::new(allow_all, Verdict::Deny, "t")), 1);
        // A batch in flight keeps seeing its own generation…
        assert_eq!(reader.generation(), 0);
        assert_eq!(reader.classify(&key("10.0.0.1", "10.0.0.2", 6, 80)), Verdict::Deny);
        // …the next batch sees the new one.
        assert_eq!(handle.load().generation(), 1);
        assert_eq!(handle.load().classify(&key("10.0.0.1", "10.0.0.2", 6, 80)), Verdict::Allow);
        drop(reader);
        assert_eq!(handle.reclaim(), 0);
    }

    #[test]
    fn retired_tables_live_while_read() {
        let handle = TableHandle::new(RuleTable::fail_closed());
        let held = handle.load_full_for_test();
        handle.publish(RuleTable::fail_closed());
        assert_eq!(handle.reclaim(), 1, "a table still read by someone must not be freed");
        drop(held);
        assert_eq!(handle.reclaim(), 0);
    }

    impl TableHandle {
        fn load_full_for_test(&self) -> Arc<RuleTable> {
            self.load_full()
        }
    }
}
