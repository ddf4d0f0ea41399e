//! Hosts, addresses and the standard test topology `client ─ veth ─ [moat: A … B] ─ veth ─ server`.

use super::netns::{Lab, Netns};
use anyhow::{Context, Result, bail};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().with_context(|| format!("{s:?} is not a MAC address"))?;
            *byte = u8::from_str_radix(part, 16).with_context(|| format!("{s:?} is not a MAC address"))?;
        }
        if parts.next().is_some() {
            bail!("{s:?} is not a MAC address");
        }
        Ok(Self(out))
    }
}

/// One entry of a namespace's neighbour table (`ip -j neigh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub dev: String,
    pub mac: Option<MacAddr>,
    /// NUD states, e.g. `["REACHABLE"]`, `["STALE"]`, `["INCOMPLETE"]`.
    pub states: Vec<String>,
}

impl Neighbour {
    /// The address was resolved (ARP/ND answered): a link-layer address is known and the entry is not failed.
    pub fn is_resolved(&self) -> bool {
        self.mac.is_some() && !self.states.iter().any(|s| s == "INCOMPLETE" || s == "FAILED")
    }
}

/// An end host: one interface in its own namespace, with its addresses.
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: Netns,
    pub ifname: String,
    pub mac: MacAddr,
    pub ipv4: Ipv4Addr,
    pub ipv4_prefix: u8,
    pub ipv6: Option<Ipv6Addr>,
}

impl Host {
    /// Configures `ifname` in `ns` (MAC, IPv4, IPv6 without duplicate-address detection or no IPv6 at all,
    /// transmit checksums computed in software: see [`super::disable_tx_checksum`]) and brings it up.
    pub fn configure(
        ns: &Netns,
        ifname: &str,
        mac: MacAddr,
        ipv4: Ipv4Addr,
        ipv4_prefix: u8,
        ipv6: Option<Ipv6Addr>,
    ) -> Result<Self> {
        let mac_s = mac.to_string();
        ns.ip(&["link", "set", "dev", ifname, "address", &mac_s])?;
        super::disable_tx_checksum(ns, ifname)?;
        ns.ip(&["addr", "add", &format!("{ipv4}/{ipv4_prefix}"), "dev", ifname])?;
        match ipv6 {
            // nodad: the address is usable at once instead of after ~1 s of duplicate-address detection.
            Some(v6) => ns.ip(&["-6", "addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"]).map(drop)?,
            // No IPv6 at all, not even a link-local address: the host sends no router solicitations or MLD
            // reports, so the dataplane's counters show only the traffic a test or demo makes.
            None => ns.ip(&["link", "set", "dev", ifname, "addrgenmode", "none"]).map(drop)?,
        }
        ns.ip(&["link", "set", "dev", ifname, "up"])?;
        Ok(Self { ns: ns.clone(), ifname: ifname.to_owned(), mac, ipv4, ipv4_prefix, ipv6 })
    }

    /// The host's neighbour table on its interface.
    pub fn neighbours(&self) -> Result<Vec<Neighbour>> {
        let json = self.ns.ip(&["-j", "neigh", "show", "dev", &self.ifname])?;
        parse_neighbours(&json, &self.ifname)
            .with_context(|| format!("parsing `ip -j neigh` of namespace {}", self.ns.name()))
    }

    /// The neighbour entry for `ip`, if any.
    pub fn neighbour(&self, ip: IpAddr) -> Result<Option<Neighbour>> {
        Ok(self.neighbours()?.into_iter().find(|n| n.ip == ip))
    }
}

fn parse_neighbours(json: &str, dev: &str) -> Result<Vec<Neighbour>> {
    let json = json.trim();
    if json.is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<serde_json::Value> = serde_json::from_str(json)?;
    let mut out = Vec::new();
    for entry in entries {
        let Some(ip) = entry.get("dst").and_then(|v| v.as_str()).and_then(|s| s.parse().ok()) else { continue };
        let mac = entry.get("lladdr").and_then(|v| v.as_str()).and_then(|s| s.parse().ok());
        let states = entry
            .get("state")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let dev = entry.get("dev").and_then(|v| v.as_str()).unwrap_or(dev).to_owned();
        out.push(Neighbour { ip, dev, mac, states });
    }
    Ok(out)
}

/// `client ns ─ veth ─ [moat ns: if_a … if_b] ─ veth ─ server ns`, client and server in one IPv4 /24 and one
/// IPv6 /64, unique per lab so that failures are easy to attribute in captures and logs.
#[derive(Debug, Clone)]
pub struct WireTopology {
    /// The namespace moat runs in, holding `if_a` (faces the client) and `if_b` (faces the server).
    pub moat: Netns,
    pub if_a: String,
    pub if_b: String,
    pub client: Host,
    pub server: Host,
    /// TX and RX queues of each veth end.
    pub queues: u32,
}

impl WireTopology {
    /// Builds the topology in `lab` with `queues` queues per veth end. Moat's interfaces are up, with no
    /// addresses and no IPv6 link-local address (so that the moat namespace itself sends nothing).
    pub fn build(lab: &mut Lab, queues: u32) -> Result<Self> {
        let client_ns = lab.add_netns("client")?;
        let moat = lab.add_netns("moat")?;
        let server_ns = lab.add_netns("server")?;
        let (if_a, if_b) = ("wa", "wb");
        lab.add_veth(&client_ns, "eth0", &moat, if_a, queues)?;
        lab.add_veth(&moat, if_b, &server_ns, "eth0", queues)?;
        for ifname in [if_a, if_b] {
            moat.ip(&["link", "set", "dev", ifname, "addrgenmode", "none"])?;
            moat.ip(&["link", "set", "dev", ifname, "up"])?;
        }
        let [_, _, hi, lo] = lab.index().to_be_bytes();
        let net = [10, 200 + hi % 50, lo];
        let v4 = |host: u8| Ipv4Addr::new(net[0], net[1], net[2], host);
        let v6 = |host: u16| Ipv6Addr::new(0xfd00, 0x6d74, u16::from(hi), u16::from(lo), 0, 0, 0, host);
        let mac = |host: u8| MacAddr([0x02, 0x6d, 0x74, hi, lo, host]);
        let client = Host::configure(&client_ns, "eth0", mac(1), v4(1), 24, Some(v6(1)))?;
        let server = Host::configure(&server_ns, "eth0", mac(2), v4(2), 24, Some(v6(2)))?;
        Ok(Self { moat, if_a: if_a.to_owned(), if_b: if_b.to_owned(), client, server, queues })
    }

    /// `IF_A,IF_B`, the value of `moat run --wire` (and the `pair` of moat's stats).
    pub fn wire(&self) -> String {
        format!("{},{}", self.if_a, self.if_b)
    }

    /// Joins `if_a` and `if_b` with a Linux bridge in the moat namespace: a stand-in dataplane that forwards
    /// everything, for checking the topology itself independently of moat.
    pub fn bridge_moat_ns(&self) -> Result<()> {
        self.moat.ip(&["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])?;
        for ifname in [self.if_a.as_str(), self.if_b.as_str()] {
            self.moat.ip(&["link", "set", "dev", ifname, "master", "br0"])?;
        }
        self.moat.ip(&["link", "set", "dev", "br0", "addrgenmode", "none"])?;
        self.moat.ip(&["link", "set", "dev", "br0", "up"])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let mac: MacAddr = "02:6d:74:00:0a:ff".parse().unwrap();
        assert_eq!(mac, MacAddr([2, 0x6d, 0x74, 0, 10, 255]));
        assert_eq!(mac.to_string(), "02:6d:74:00:0a:ff");
        assert!("02:6d:74:00:0a".parse::<MacAddr>().is_err());
        assert!("02:6d:74:00:0a:ff:00".parse::<MacAddr>().is_err());
        assert!("zz:6d:74:00:0a:ff".parse::<MacAddr>().is_err());
    }

    #[test]
    fn neighbours_parse() {
        let json = r#"[{"dst":"10.200.0.2","dev":"eth0","lladdr":"02:6d:74:00:00:02","state":["REACHABLE"]},
                       {"dst":"10.200.0.3","dev":"eth0","state":["INCOMPLETE"]},
                       {"dst":"fd00::2","dev":"eth0","lladdr":"02:6d:74:00:00:02","state":["STALE"]}]"#;
        let n = parse_neighbours(json, "eth0").unwrap();
        assert_eq!(n.len(), 3);
        assert!(n[0].is_resolved());
        assert!(!n[1].is_resolved());
        assert!(n[2].is_resolved());
        assert_eq!(n[2].ip, "fd00::2".parse::<IpAddr>().unwrap());
        assert!(parse_neighbours("", "eth0").unwrap().is_empty());
    }
}
