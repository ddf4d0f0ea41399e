//! ClassBench filter sets and header traces.
//!
//! Filter set: one rule per line, line order is priority (first line wins):
//!
//! ```text
//! @<src>/<len> <dst>/<len> <sp_lo> : <sp_hi> <dp_lo> : <dp_hi> <proto>/<mask> <flags>/<mask>
//! @237.73.3.4/32  67.236.63.210/32  0 : 65535  1711 : 1711  0x06/0xFF  0x0000/0x0200
//! ```
//!
//! Trace: one header per line, addresses as decimal `u32`, then ports, protocol, a flags word and
//! the index of the filter whose corner generated the header (which is *not* always the first
//! match: ground truth comes from [`LinearScan`]):
//!
//! ```text
//! 0  4114795065  0  123  6  33559040  238
//! ```
//!
//! Flags are ignored (as by rte_acl's test program): matching uses the five classic fields.

use super::{AddrSet, PortSet, ProtoSet, Rule};
use crate::classify::FlowKey;
use ipnetwork::{IpNetwork, Ipv4Network};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// A file that cannot be read as ClassBench, with the place and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ClassBenchError {
    pub file: String,
    /// 1-based; 0 when the file itself cannot be read.
    pub line: usize,
    pub message: String,
}

/// One ClassBench filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    pub src: u32,
    pub src_len: u8,
    pub dst: u32,
    pub dst_len: u8,
    pub src_ports: (u16, u16),
    pub dst_ports: (u16, u16),
    pub proto: u8,
    pub proto_mask: u8,
}

/// One trace header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub src: u32,
    pub dst: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    /// Column 7: the filter the generator started from (not necessarily the first match).
    pub filter: Option<u32>,
}

fn prefix_mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) }
}

impl Filter {
    /// The classifier rule of this filter; the payload is `index` (the filter's line, 0-based).
    pub fn to_rule(&self, index: u32) -> Rule {
        let net = |a: u32, len: u8| -> AddrSet {
            if len == 0 {
                AddrSet::Any
            } else {
                match Ipv4Network::new(Ipv4Addr::from(a & prefix_mask(len)), len) {
                    Ok(n) => AddrSet::Nets(vec![IpNetwork::V4(n)]),
                    Err(_) => AddrSet::Nets(Vec::new()),
                }
            }
        };
        let ports = |(lo, hi): (u16, u16)| -> PortSet {
            if lo == 0 && hi == u16::MAX { PortSet::Any } else { PortSet::Ranges(vec![(lo, hi)]) }
        };
        let protocol = match self.proto_mask {
            0 => ProtoSet::Any,
            0xFF => ProtoSet::Only(vec![self.proto]),
            m => ProtoSet::Only((0..=255u8).filter(|p| p & m == self.proto & m).collect()),
        };
        Rule {
            src: net(self.src, self.src_len),
            dst: net(self.dst, self.dst_len),
            protocol,
            src_ports: ports(self.src_ports),
            dst_ports: ports(self.dst_ports),
            payload: index,
            ..Rule::default()
        }
    }

    /// Direct ClassBench semantics (prefixes, inclusive ranges, masked protocol).
    pub fn matches(&self, h: &Header) -> bool {
        let sm = prefix_mask(self.src_len);
        let dm = prefix_mask(self.dst_len);
        h.src & sm == self.src & sm
            && h.dst & dm == self.dst & dm
            && (self.src_ports.0..=self.src_ports.1).contains(&h.src_port)
            && (self.dst_ports.0..=self.dst_ports.1).contains(&h.dst_port)
            && h.proto & self.proto_mask == self.proto & self.proto_mask
    }
}

impl Header {
    pub fn key(&self) -> FlowKey {
        FlowKey {
            src: IpAddr::V4(Ipv4Addr::from(self.src)),
            dst: IpAddr::V4(Ipv4Addr::from(self.dst)),
            protocol: self.proto,
            src_port: self.src_port,
            dst_port: self.dst_port,
            icmp: None,
        }
    }
}

/// The rules of a filter set, payload = line index.
pub fn to_rules(filters: &[Filter]) -> Vec<Rule> {
    filters.iter().zip(0u32..).map(|(f, i)| f.to_rule(i)).collect()
}

fn read(path: &Path) -> Result<String, ClassBenchError> {
    std::fs::read_to_string(path).map_err(|e| ClassBenchError {
        file: path.display().to_string(),
        line: 0,
        message: e.to_string(),
    })
}

/// Reads a filter set file.
pub fn read_filters(path: &Path) -> Result<Vec<Filter>, ClassBenchError> {
    parse_filters(&read(path)?, &path.display().to_string())
}

/// Reads a trace file.
pub fn read_trace(path: &Path) -> Result<Vec<Header>, ClassBenchError> {
    parse_trace(&read(path)?, &path.display().to_string())
}

struct Cursor<'a> {
    file: &'a str,
    line: usize,
}

impl Cursor<'_> {
    fn err(&self, message: impl Into<String>) -> ClassBenchError {
        ClassBenchError { file: self.file.to_string(), line: self.line, message: message.into() }
    }

    fn num<T: std::str::FromStr>(&self, s: &str, what: &str) -> Result<T, ClassBenchError> {
        s.trim().parse().map_err(|_| self.err(format!("bad {what} {s:?}")))
    }

    fn hex_u8(&self, s: &str, what: &str) -> Result<u8, ClassBenchError> {
        let t = s.trim();
        let digits = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"));
        let v = match digits {
            Some(h) => u32::from_str_radix(h, 16),
            None => t.parse(),
        };
        v.ok().and_then(|v| u8::try_from(v).ok()).ok_or_else(|| self.err(format!("bad {what} {s:?}")))
    }

    fn prefix(&self, s: &str, what: &str) -> Result<(u32, u8), ClassBenchError> {
        let (a, l) = s.split_once('/').ok_or_else(|| self.err(format!("{what} {s:?} is not ADDR/LEN")))?;
        let addr: Ipv4Addr = self.num(a, what)?;
        let len: u8 = self.num(l, "prefix length")?;
        if len > 32 {
            return Err(self.err(format!("{what} prefix length {len} > 32")));
        }
        Ok((u32::from(addr), len))
    }

    fn range(&self, lo: &str, colon: &str, hi: &str, what: &str) -> Result<(u16, u16), ClassBenchError> {
        if colon != ":" {
            return Err(self.err(format!("{what}: expected `LO : HI`, found {colon:?}")));
        }
        let lo: u16 = self.num(lo, what)?;
        let hi: u16 = self.num(hi, what)?;
        if lo > hi {
            return Err(self.err(format!("{what}: {lo} > {hi}")));
        }
        Ok((lo, hi))
    }
}

/// Parses a filter set; `file` names it in errors. Blank lines are skipped.
pub fn parse_filters(text: &str, file: &str) -> Result<Vec<Filter>, ClassBenchError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let c = Cursor { file, line: i + 1 };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let body = line.strip_prefix('@').ok_or_else(|| c.err("a filter starts with '@'"))?;
        let f: Vec<&str> = body.split_whitespace().collect();
        if f.len() < 9 {
            return Err(c.err(format!(
                "expected 9 or 10 fields (src dst sp_lo : sp_hi dp_lo : dp_hi proto/mask [flags/mask]), found {}",
                f.len()
            )));
        }
        let (src, src_len) = c.prefix(f[0], "source")?;
        let (dst, dst_len) = c.prefix(f[1], "destination")?;
        let src_ports = c.range(f[2], f[3], f[4], "source ports")?;
        let dst_ports = c.range(f[5], f[6], f[7], "destination ports")?;
        let (p, m) = f[8].split_once('/').ok_or_else(|| c.err(format!("protocol {:?} is not VALUE/MASK", f[8])))?;
        let proto = c.hex_u8(p, "protocol")?;
        let proto_mask = c.hex_u8(m, "protocol mask")?;
        out.push(Filter { src, src_len, dst, dst_len, src_ports, dst_ports, proto, proto_mask });
    }
    Ok(out)
}

/// Parses a trace; `file` names it in errors. Blank lines are skipped.
pub fn parse_trace(text: &str, file: &str) -> Result<Vec<Header>, ClassBenchError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let c = Cursor { file, line: i + 1 };
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() < 5 {
            return Err(c.err(format!("expected at least 5 fields (src dst sport dport proto), found {}", f.len())));
        }
        let filter = match f.get(6) {
            Some(s) => Some(c.num::<u32>(s, "filter number")?),
            None => None,
        };
        out.push(Header {
            src: c.num(f[0], "source address (decimal u32)")?,
            dst: c.num(f[1], "destination address (decimal u32)")?,
            src_port: c.num(f[2], "source port")?,
            dst_port: c.num(f[3], "destination port")?,
            proto: c.num(f[4], "protocol")?,
            filter,
        });
    }
    Ok(out)
}

/// Headers that hit every filter at its corners and just outside them (for sets without a
/// trace): `per_filter` headers per filter, deterministic from `seed`.
pub fn synthesize_headers(filters: &[Filter], per_filter: usize, seed: u64) -> Vec<Header> {
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out = Vec::with_capacity(filters.len() * per_filter);
    for f in filters {
        for _ in 0..per_filter {
            let r = next();
            let pick_addr = |a: u32, len: u8, r: u64| -> u32 {
                let m = prefix_mask(len);
                #[allow(clippy::cast_possible_truncation)] // random bits
                let noise = r as u32;
                match r % 4 {
                    0 => a & m,
                    1 => (a & m) | !m,
                    _ => (a & m) | (noise & !m),
                }
            };
            let pick_port = |(lo, hi): (u16, u16), r: u64| -> u16 {
                match r % 5 {
                    0 => lo,
                    1 => hi,
                    2 => lo.saturating_sub(1),
                    3 => hi.saturating_add(1),
                    _ => {
                        let span = u64::from(hi - lo) + 1;
                        lo + u16::try_from((r >> 8) % span).unwrap_or(0)
                    }
                }
            };
            let proto =
                if f.proto_mask == 0 { [6u8, 17, 1, 0][usize::try_from(r >> 40).unwrap_or(0) % 4] } else { f.proto };
            out.push(Header {
                src: pick_addr(f.src, f.src_len, r),
                dst: pick_addr(f.dst, f.dst_len, r.rotate_left(17)),
                src_port: pick_port(f.src_ports, r >> 3),
                dst_port: pick_port(f.dst_ports, r >> 11),
                proto,
                filter: None,
            });
        }
    }
    out
}

/// A linear first-match scan over a filter set, written against ClassBench's own semantics (and
/// not through the classifier's rule expansion): the oracle of the tests and of `moat bench
/// classify`, and its "linear" baseline. Filters are pre-masked, one 24-byte record each.
#[derive(Debug, Clone, Default)]
pub struct LinearScan {
    filters: Vec<Masked>,
}

#[derive(Debug, Clone, Copy)]
struct Masked {
    src: u32,
    src_mask: u32,
    dst: u32,
    dst_mask: u32,
    ports: [u16; 4],
    proto: u8,
    proto_mask: u8,
}

impl LinearScan {
    pub fn new(filters: &[Filter]) -> LinearScan {
        let filters = filters
            .iter()
            .map(|f| {
                let src_mask = prefix_mask(f.src_len);
                let dst_mask = prefix_mask(f.dst_len);
                Masked {
                    src: f.src & src_mask,
                    src_mask,
                    dst: f.dst & dst_mask,
                    dst_mask,
                    ports: [f.src_ports.0, f.src_ports.1, f.dst_ports.0, f.dst_ports.1],
                    proto: f.proto & f.proto_mask,
                    proto_mask: f.proto_mask,
                }
            })
            .collect();
        LinearScan { filters }
    }

    /// Index of the first filter matching `h`.
    pub fn first_match(&self, h: &Header) -> Option<u32> {
        let mut i = 0;
        while i < self.filters.len() {
            let f = &self.filters[i];
            if h.src & f.src_mask == f.src
                && h.dst & f.dst_mask == f.dst
                && f.ports[0] <= h.src_port
                && h.src_port <= f.ports[1]
                && f.ports[2] <= h.dst_port
                && h.dst_port <= f.ports[3]
                && h.proto & f.proto_mask == f.proto
            {
                return u32::try_from(i).ok();
            }
            i += 1;
        }
        None
    }
}
