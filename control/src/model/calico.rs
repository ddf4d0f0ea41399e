//! Calico `projectcalico.org/v3` resource specs (also accepted as `crd.projectcalico.org/v1`).
//!
//! The field names follow the upstream API types (`api/pkg/apis/projectcalico/v3`) so that manifests
//! written for Calico load unchanged. Rule `metadata` is accepted and ignored; `http` and
//! `services` matches are rejected by the loader (moat cannot enforce them, and ignoring them
//! would widen the rule). Other unknown fields are ignored.

use super::serde_util::{Direction, opt_selector};
use crate::selector::Selector;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    #[serde(alias = "allow")]
    Allow,
    #[serde(alias = "deny")]
    Deny,
    /// Skip the rest of this tier and continue with the next tier (`next-tier` in Felix).
    #[serde(alias = "pass", alias = "next-tier")]
    Pass,
    /// Record the packet and continue with the next rule.
    #[serde(alias = "log")]
    Log,
}

impl Action {
    /// The lower-case word used in flow-log traces.
    pub fn as_trace_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Pass => "pass",
            Action::Log => "log",
        }
    }
}

/// An IP protocol as written in Calico rules: a name or a number 1–255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    IcmpV6,
    Sctp,
    UdpLite,
    Number(u8),
}

impl Protocol {
    /// The IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::IcmpV6 => 58,
            Protocol::Sctp => 132,
            Protocol::UdpLite => 136,
            Protocol::Number(n) => n,
        }
    }

    /// Protocol from its IANA number, preferring the named variant.
    pub fn from_number(n: u8) -> Protocol {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            1 => Protocol::Icmp,
            58 => Protocol::IcmpV6,
            132 => Protocol::Sctp,
            136 => Protocol::UdpLite,
            n => Protocol::Number(n),
        }
    }

    /// Parse a protocol name (case-insensitive) or decimal number.
    pub fn parse(s: &str) -> Option<Protocol> {
        let p = match s.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            "icmpv6" => Protocol::IcmpV6,
            "sctp" => Protocol::Sctp,
            "udplite" => Protocol::UdpLite,
            other => {
                let n: u8 = other.parse().ok()?;
                if n == 0 {
                    return None;
                }
                Protocol::from_number(n)
            }
        };
        Some(p)
    }

    /// Whether the protocol has ports (rules with ports need one of these).
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp | Protocol::Sctp | Protocol::UdpLite)
    }

    /// Whether the protocol is ICMP or ICMPv6 (rules with `icmp` need one of these).
    pub fn is_icmp(self) -> bool {
        matches!(self, Protocol::Icmp | Protocol::IcmpV6)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("TCP"),
            Protocol::Udp => f.write_str("UDP"),
            Protocol::Icmp => f.write_str("ICMP"),
            Protocol::IcmpV6 => f.write_str("ICMPv6"),
            Protocol::Sctp => f.write_str("SCTP"),
            Protocol::UdpLite => f.write_str("UDPLite"),
            Protocol::Number(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Number(n) => s.serialize_u8(*n),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let text = match &v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => return Err(serde::de::Error::custom(format!("invalid protocol {other}"))),
        };
        Protocol::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid protocol {text:?}: expected TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255"
            ))
        })
    }
}

/// A port match: a single port or inclusive range, or a named port resolved per endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    Range { min: u16, max: u16 },
    Named(String),
}

/// Why a port string was rejected (text follows libcalico-go's numorstring).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("port range min {min} is greater than max {max}")]
    Reversed { min: u16, max: u16 },
    #[error("invalid name for named port ({0})")]
    BadName(String),
}

impl Port {
    pub fn single(p: u16) -> Port {
        Port::Range { min: p, max: p }
    }

    /// Parse `80`, `80:90` or a named port (IANA service name syntax: lower-case letters,
    /// digits and `-`, 1–15 characters, at least one letter, no leading/trailing/double `-`).
    pub fn parse(s: &str) -> Result<Port, PortError> {
        if let Some((a, b)) = s.split_once(':') {
            if let (Ok(min), Ok(max)) = (a.parse::<u16>(), b.parse::<u16>()) {
                if min > max {
                    return Err(PortError::Reversed { min, max });
                }
                return Ok(Port::Range { min, max });
            }
            return Err(PortError::BadName(s.to_string()));
        }
        if let Ok(p) = s.parse::<u16>() {
            return Ok(Port::single(p));
        }
        if is_valid_port_name(s) { Ok(Port::Named(s.to_string())) } else { Err(PortError::BadName(s.to_string())) }
    }

    /// Whether a numeric port falls in this range (always false for named ports).
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Port::Range { min, max } => *min <= port && port <= *max,
            Port::Named(_) => false,
        }
    }
}

/// IANA_SVC_NAME as Kubernetes validates container port names.
pub fn is_valid_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Range { min, max } if min == max => write!(f, "{min}"),
            Port::Range { min, max } => write!(f, "{min}:{max}"),
            Port::Named(n) => f.write_str(n),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Range { min, max } if min == max => s.serialize_u16(*min),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let text = match &v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => return Err(serde::de::Error::custom(format!("invalid port {other}"))),
        };
        Port::parse(&text).map_err(|e| serde::de::Error::custom(format!("invalid port {text:?}: {e}")))
    }
}

/// ICMP type/code match. A code without a type is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IcmpMatch {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
}

/// Service-account match of an entity rule: names (in the policy's namespace scope) and a
/// selector over service-account labels (evaluated on the endpoint's `pcsa.` labels).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, deserialize_with = "opt_selector", skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
}

/// One side (source or destination) of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<IpNetwork>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<IpNetwork>,
    #[serde(default, deserialize_with = "opt_selector", skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    #[serde(default, deserialize_with = "opt_selector", skip_serializing_if = "Option::is_none")]
    pub not_selector: Option<Selector>,
    #[serde(default, deserialize_with = "opt_selector", skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<ServiceAccountMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<Port>,
    /// Kubernetes Service match (Calico `services`): parsed so the loader can reject it by name
    /// (moat does not enforce it yet, and ignoring it would widen the rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<serde_json::Value>,
}

/// A Calico rule: first match wins within a policy, except `Log`, which records and continues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpMatch>,
    #[serde(default, rename = "notICMP", skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<IcmpMatch>,
    #[serde(default)]
    pub source: EntityRule,
    #[serde(default)]
    pub destination: EntityRule,
    /// Layer-7 match: moat is an L3/L4 filter, so a rule with `http` is rejected at load time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl Rule {
    /// A rule with only an action (matches everything).
    pub fn with_action(action: Action) -> Rule {
        Rule {
            action,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: EntityRule::default(),
            destination: EntityRule::default(),
            http: None,
            metadata: None,
        }
    }
}

/// `stagedAction` of staged policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum StagedAction {
    #[default]
    Set,
    Delete,
}

/// The spec shared by NetworkPolicy, GlobalNetworkPolicy and their staged variants.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Lower orders apply first; a policy without order comes after every ordered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    /// Which endpoints the policy applies to; missing or empty means `all()`.
    #[serde(default, deserialize_with = "opt_selector", skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// GlobalNetworkPolicy only: namespaces (by namespace labels) of the endpoints it applies to.
    #[serde(default, deserialize_with = "opt_selector", skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Selector>,
    #[serde(default, deserialize_with = "opt_selector", skip_serializing_if = "Option::is_none")]
    pub service_account_selector: Option<Selector>,
    /// Missing means: Ingress, plus Egress when there are egress rules (Egress alone when there
    /// are only egress rules). See [`PolicySpec::effective_types`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<Direction>>,
    #[serde(default)]
    pub ingress: Vec<Rule>,
    #[serde(default)]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_track: bool,
    #[serde(default, rename = "preDNAT", skip_serializing_if = "std::ops::Not::not")]
    pub pre_dnat: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub apply_on_forward: bool,
    /// Staged kinds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
}

impl PolicySpec {
    /// Calico's `types` defaulting: explicit types win; otherwise Ingress and/or Egress by which
    /// rule lists are non-empty, and Ingress when both are empty.
    pub fn effective_types(&self) -> Vec<Direction> {
        if let Some(t) = &self.types {
            if !t.is_empty() {
                return t.clone();
            }
        }
        match (self.ingress.is_empty(), self.egress.is_empty()) {
            (_, true) => vec![Direction::Ingress],
            (true, false) => vec![Direction::Egress],
            (false, false) => vec![Direction::Ingress, Direction::Egress],
        }
    }

    /// The rules for one direction.
    pub fn rules(&self, dir: Direction) -> &[Rule] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// What a tier does with traffic that reaches its end without a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TierDefaultAction {
    #[default]
    Deny,
    Pass,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default)]
    pub default_action: TierDefaultAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSetSpec {
    #[serde(default)]
    pub nets: Vec<IpNetwork>,
    /// Domain names (egress DNS policy) are an enterprise feature: recorded, never matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_egress_domains: Vec<String>,
}

/// A named port of a host endpoint (`spec.ports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostEndpointSpec {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub interface_name: String,
    #[serde(default, rename = "expectedIPs")]
    pub expected_ips: Vec<IpAddr>,
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    pub cidr: IpNetwork,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<String>,
    #[serde(default, rename = "natOutgoing")]
    pub nat_outgoing: bool,
}
