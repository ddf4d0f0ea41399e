//! Loader for moat's XDP redirector (`src/redirect.bpf.c`).
//!
//! One [`Redirector`] guards one interface: it loads its own copy of the program and maps, attaches it
//! through a **BPF link** in the requested XDP mode, and registers AF_XDP sockets per RX queue.
//!
//! Invariants:
//! - The program is attached with `bpf_link_create`, never through netlink. A link lives exactly as long
//!   as its file descriptor: when the process exits — cleanly, by panic, SIGKILL or OOM — the kernel
//!   closes the fd and detaches the program. A crashed moat therefore never leaves a program behind
//!   that would black-hole the interface or block the next start (`EBUSY`).
//! - Until a socket is registered for a queue, frames of that queue follow [`NoSocketAction`]: dropped
//!   by default (fail closed).
//! - Frames addressed to the interface's own MAC on a failsafe port always reach the kernel stack.

use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The compiled program, built by `build.rs` into `OUT_DIR`.
static REDIRECT_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/redirect.bpf.o"));

/// Number of RX queues the XSKMAP can address (`MAX_QUEUES` in the C source).
pub const MAX_QUEUES: u32 = 256;
/// Capacity of the failsafe port map (`MAX_FAILSAFE_PORTS` in the C source).
pub const MAX_FAILSAFE_PORTS: usize = 64;
/// IPv4 addresses per interface for which ARP goes to the kernel (`MAX_LOCAL_IPV4` in the C source).
pub const MAX_LOCAL_IPV4: usize = 8;

/// What the redirector does with a frame whose RX queue has no AF_XDP socket registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoSocketAction {
    /// Fail closed: nothing crosses the interface unless a worker decided it may.
    #[default]
    Drop,
    /// Fail open: hand the frame to the kernel stack.
    Pass,
}

/// XDP attach mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`): required for performance; veth supports it.
    #[default]
    Native,
    /// Generic/SKB mode (`XDP_FLAGS_SKB_MODE`): works on any device, much slower.
    Generic,
}

/// Transport protocol of a failsafe port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailsafeProtocol {
    Tcp,
    Udp,
}

/// Which port of a frame a failsafe entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailsafeDirection {
    /// Connections *to* the node on this port (Calico's `failsafeInboundHostPorts`).
    Inbound,
    /// Replies to connections the node opened *to* this port (Calico's `failsafeOutboundHostPorts`).
    Outbound,
}

/// One failsafe entry: frames to this host matching it always go to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FailsafePort {
    pub protocol: FailsafeProtocol,
    pub direction: FailsafeDirection,
    pub port: u16,
}

impl FailsafePort {
    /// Calico's default failsafe ports (Felix `FailsafeInboundHostPorts` / `FailsafeOutboundHostPorts`):
    /// SSH, DHCP, BGP, etcd, Typha and the API server.
    pub fn calico_defaults() -> Vec<FailsafePort> {
        use FailsafeDirection::{Inbound, Outbound};
        use FailsafeProtocol::{Tcp, Udp};
        let inbound = [(Tcp, 22), (Udp, 68), (Tcp, 179), (Tcp, 2379), (Tcp, 2380), (Tcp, 5473), (Tcp, 6443)];
        let outbound = [(Udp, 53), (Udp, 67), (Tcp, 179), (Tcp, 2379), (Tcp, 2380), (Tcp, 5473), (Tcp, 6443)];
        let entry = |direction| move |(protocol, port)| FailsafePort { protocol, direction, port };
        inbound.into_iter().map(entry(Inbound)).chain(outbound.into_iter().map(entry(Outbound))).collect()
    }
}

impl std::str::FromStr for FailsafePort {
    type Err = String;

    /// `tcp:22` (inbound) or `out:udp:53` / `in:tcp:22`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let (direction, proto, port) = match parts.as_slice() {
            [proto, port] => (FailsafeDirection::Inbound, *proto, *port),
            ["in", proto, port] => (FailsafeDirection::Inbound, *proto, *port),
            ["out", proto, port] => (FailsafeDirection::Outbound, *proto, *port),
            _ => return Err(format!("failsafe port {s:?}: expected [in:|out:]tcp|udp:PORT")),
        };
        let protocol = match proto.to_ascii_lowercase().as_str() {
            "tcp" => FailsafeProtocol::Tcp,
            "udp" => FailsafeProtocol::Udp,
            other => return Err(format!("failsafe port {s:?}: protocol {other:?} is not tcp or udp")),
        };
        let port = port.parse().map_err(|_| format!("failsafe port {s:?}: {port:?} is not a port number"))?;
        Ok(FailsafePort { protocol, direction, port })
    }
}

/// How a [`Redirector`] is set up.
#[derive(Debug, Clone, Default)]
pub struct RedirectorConfig {
    pub mode: XdpMode,
    pub no_socket: NoSocketAction,
    /// Empty disables the failsafe check.
    pub failsafe: Vec<FailsafePort>,
}

/// Counters kept by the XDP program, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedirectorStats {
    pub redirected: u64,
    pub no_socket_dropped: u64,
    pub no_socket_passed: u64,
    pub failsafe_passed: u64,
    /// ARP for this host's own addresses, passed to the kernel with the failsafe ports.
    pub local_arp_passed: u64,
}

/// Errors of loading, attaching and configuring the redirector.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("interface {0:?} not found")]
    NoSuchInterface(String),
    #[error("loading the XDP program: {0}")]
    Load(#[source] libbpf_rs::Error),
    #[error("the XDP object has no {0:?}")]
    Missing(&'static str),
    #[error(
        "attaching XDP ({mode:?} mode) to {ifname}: {source}{hint}",
        hint = if source.raw_os_error() == Some(libc::EBUSY) {
            " (another XDP program is attached; remove it with `ip link set dev IF xdp off`)"
        } else if source.raw_os_error() == Some(libc::EOPNOTSUPP) {
            " (the driver lacks native XDP; try --xdp-mode generic)"
        } else { "" }
    )]
    Attach { ifname: String, mode: XdpMode, source: std::io::Error },
    #[error("updating map {map}: {source}")]
    Map { map: &'static str, source: libbpf_rs::Error },
    #[error("{count} failsafe ports configured, at most {MAX_FAILSAFE_PORTS} fit")]
    TooManyFailsafePorts { count: usize },
    #[error("RX queue {0} is beyond the {MAX_QUEUES} queues the redirector addresses")]
    QueueOutOfRange(u32),
}

/// Layout of `struct moat_config` in the C source.
#[repr(C)]
#[derive(Clone, Copy)]
struct ConfigValue {
    mac: [u8; 6],
    no_socket_action: u8,
    failsafe_enabled: u8,
    local_ipv4_count: u8,
    pad: [u8; 7],
    /// Network byte order, as the frame carries them.
    local_ipv4: [[u8; 4]; MAX_LOCAL_IPV4],
}

/// Layout of `struct failsafe_key` in the C source.
#[repr(C)]
#[derive(Clone, Copy)]
struct FailsafeKey {
    protocol: u8,
    direction: u8,
    port: u16,
}

/// The XDP redirector attached to one interface. Dropping it detaches the program.
#[derive(Debug)]
pub struct Redirector {
    ifname: String,
    ifindex: u32,
    mode: XdpMode,
    // Field order matters for drop order: the link (attachment) goes before the object (program, maps).
    link: OwnedFd,
    object: Object,
}

impl Redirector {
    /// Loads a fresh copy of the program for `ifname`, configures it and attaches it.
    /// Frames are dropped or passed per `config.no_socket` until sockets are registered.
    pub fn attach(ifname: &str, config: &RedirectorConfig) -> Result<Redirector, BpfError> {
        let ifindex = interface_index(ifname)?;
        let mac = interface_mac(ifname)?;
        let local = interface_ipv4(ifname);
        if config.failsafe.len() > MAX_FAILSAFE_PORTS {
            return Err(BpfError::TooManyFailsafePorts { count: config.failsafe.len() });
        }
        let object = ObjectBuilder::default()
            .open_memory(REDIRECT_OBJECT)
            .and_then(|open| open.load())
            .map_err(BpfError::Load)?;
        for map in object.maps() {
            if map.name() == "config" {
                let value = ConfigValue {
                    mac,
                    no_socket_action: match config.no_socket {
                        NoSocketAction::Drop => 0,
                        NoSocketAction::Pass => 1,
                    },
                    failsafe_enabled: u8::from(!config.failsafe.is_empty()),
                    local_ipv4_count: u8::try_from(local.len().min(MAX_LOCAL_IPV4)).unwrap_or(0),
                    pad: [0; 7],
                    local_ipv4: std::array::from_fn(|i| local.get(i).map_or([0; 4], |a| a.octets())),
                };
                map.update(&0u32.to_ne_bytes(), as_bytes(&value), MapFlags::ANY)
                    .map_err(|source| BpfError::Map { map: "config", source })?;
            } else if map.name() == "failsafe_ports" {
                for entry in &config.failsafe {
                    let key = FailsafeKey {
                        protocol: match entry.protocol {
                            FailsafeProtocol::Tcp => 6,  // IPPROTO_TCP
                            FailsafeProtocol::Udp => 17, // IPPROTO_UDP
                        },
                        direction: match entry.direction {
                            FailsafeDirection::Inbound => 0,
                            FailsafeDirection::Outbound => 1,
                        },
                        port: entry.port,
                    };
                    map.update(as_bytes(&key), &[1u8], MapFlags::ANY)
                        .map_err(|source| BpfError::Map { map: "failsafe_ports", source })?;
                }
            }
        }
        let program = object.progs().find(|p| p.name() == "moat_redirect").ok_or(BpfError::Missing("moat_redirect"))?;
        let link = attach_link(program.as_fd(), ifindex, config.mode).map_err(|source| BpfError::Attach {
            ifname: ifname.to_owned(),
            mode: config.mode,
            source,
        })?;
        Ok(Redirector { ifname: ifname.to_owned(), ifindex, mode: config.mode, link, object })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// From now on, frames of `queue` go to the AF_XDP socket `socket`.
    pub fn register_socket(&self, queue: u32, socket: BorrowedFd<'_>) -> Result<(), BpfError> {
        if queue >= MAX_QUEUES {
            return Err(BpfError::QueueOutOfRange(queue));
        }
        let fd = socket.as_raw_fd();
        self.xsks()?
            .update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| BpfError::Map { map: "xsks", source })
    }

    /// Frames of `queue` fall back to the no-socket action.
    pub fn unregister_socket(&self, queue: u32) -> Result<(), BpfError> {
        self.xsks()?.delete(&queue.to_ne_bytes()).map_err(|source| BpfError::Map { map: "xsks", source })
    }

    /// The program's counters, summed over CPUs.
    pub fn stats(&self) -> Result<RedirectorStats, BpfError> {
        let map = self.object.maps().find(|m| m.name() == "stats").ok_or(BpfError::Missing("stats"))?;
        let mut sums = [0u64; 5];
        for (index, sum) in sums.iter_mut().enumerate() {
            let key = u32::try_from(index).map_err(|_| BpfError::Missing("stats index"))?;
            let per_cpu = map
                .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
                .map_err(|source| BpfError::Map { map: "stats", source })?
                .unwrap_or_default();
            *sum = per_cpu
                .iter()
                .filter_map(|bytes| bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes))
                .sum();
        }
        let [redirected, no_socket_dropped, no_socket_passed, failsafe_passed, local_arp_passed] = sums;
        Ok(RedirectorStats { redirected, no_socket_dropped, no_socket_passed, failsafe_passed, local_arp_passed })
    }

    fn xsks(&self) -> Result<libbpf_rs::Map<'_>, BpfError> {
        self.object.maps().find(|m| m.name() == "xsks").ok_or(BpfError::Missing("xsks"))
    }

    /// The link's file descriptor (kept open for the attachment's lifetime).
    pub fn link_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }
}

/// Views a plain-old-data map key or value as bytes.
fn as_bytes<T: Copy>(value: &T) -> &[u8] {
    #[allow(unsafe_code)]
    // SAFETY: `T` is one of this module's `#[repr(C)]` structs of integer fields (`ConfigValue`,
    // `FailsafeKey`) without padding bytes (6+1+1+1+7+32 and 1+1+2 bytes, explicit `pad` included), so
    // every byte is initialised; the slice borrows `value` and cannot outlive it.
    unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
}

/// Attaches `program` to `ifindex` through a BPF link.
fn attach_link(program: BorrowedFd<'_>, ifindex: u32, mode: XdpMode) -> std::io::Result<OwnedFd> {
    // XDP_FLAGS_* from linux/if_link.h.
    const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    let flags = match mode {
        XdpMode::Native => XDP_FLAGS_DRV_MODE,
        XdpMode::Generic => XDP_FLAGS_SKB_MODE,
    };
    let target = i32::try_from(ifindex).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    #[allow(unsafe_code)]
    // SAFETY: an all-zero `bpf_link_create_opts` is its documented "no options" state (it is a plain C
    // struct of integers, pointers and unions); we then set `sz` as libbpf's OPTS_VALID requires.
    let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as libbpf_sys::size_t;
    opts.flags = flags;
    #[allow(unsafe_code)]
    // SAFETY: `program` is a valid, open BPF program fd borrowed for the call; `opts` is a fully
    // initialised options struct that lives across the call; libbpf does not retain either.
    let fd = unsafe { libbpf_sys::bpf_link_create(program.as_raw_fd(), target, libbpf_sys::BPF_XDP, &opts) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    #[allow(unsafe_code)]
    // SAFETY: `bpf_link_create` returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The interface's index, from its name.
pub fn interface_index(ifname: &str) -> Result<u32, BpfError> {
    let name = CString::new(ifname).map_err(|_| BpfError::NoSuchInterface(ifname.to_owned()))?;
    #[allow(unsafe_code)]
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 { Err(BpfError::NoSuchInterface(ifname.to_owned())) } else { Ok(index) }
}

/// The interface's IPv4 addresses (read once at attach: the failsafe path answers ARP for them).
pub fn interface_ipv4(ifname: &str) -> Vec<std::net::Ipv4Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter(|a| a.interface_name == ifname)
        .filter_map(|a| a.address.and_then(|addr| addr.as_sockaddr_in().map(|sin| sin.ip())))
        .collect()
}

/// The interface's MAC address, asked over netlink in the calling thread's network namespace (sysfs
/// shows the namespace it was mounted in, which is not that of a thread that entered another one).
pub fn interface_mac(ifname: &str) -> Result<[u8; 6], BpfError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|_| BpfError::NoSuchInterface(ifname.to_owned()))?;
    addrs
        .filter(|a| a.interface_name == ifname)
        .find_map(|a| a.address.and_then(|addr| addr.as_link_addr().and_then(|l| l.addr())))
        .ok_or_else(|| BpfError::NoSuchInterface(ifname.to_owned()))
}

/// Layout of `struct ethtool_channels` (linux/ethtool.h).
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// Number of RX queues of the interface (combined plus RX-only channels), asked with the ethtool
/// `ETHTOOL_GCHANNELS` ioctl in the calling thread's network namespace. `Ok(None)` when the driver does
/// not report channels.
pub fn interface_rx_queues(ifname: &str) -> std::io::Result<Option<u32>> {
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad interface name {ifname:?}")));
    }
    let mut channels = EthtoolChannels { cmd: ETHTOOL_GCHANNELS, ..EthtoolChannels::default() };
    #[allow(unsafe_code)]
    // SAFETY: an all-zero `ifreq` is valid (a C struct of bytes and a union of integers/pointers).
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&mut channels as *mut EthtoolChannels).cast();
    #[allow(unsafe_code)]
    // SAFETY: plain socket(2); the result is checked and owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(unsafe_code)]
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    #[allow(unsafe_code)]
    // SAFETY: SIOCETHTOOL reads `request` (a NUL-terminated name within IFNAMSIZ and a pointer to
    // `channels`) and writes at most `size_of::<EthtoolChannels>()` bytes through that pointer; both
    // outlive the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut request) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) => Ok(None),
            Some(libc::ENODEV) => {
                Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("interface {ifname:?} not found")))
            }
            _ => Err(err),
        };
    }
    Ok(Some(channels.rx_count + channels.combined_count).filter(|n| *n > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failsafe_port_syntax() {
        let p: FailsafePort = "tcp:22".parse().unwrap();
        assert_eq!(
            p,
            FailsafePort { protocol: FailsafeProtocol::Tcp, direction: FailsafeDirection::Inbound, port: 22 }
        );
        let p: FailsafePort = "out:UDP:53".parse().unwrap();
        assert_eq!(p.direction, FailsafeDirection::Outbound);
        assert_eq!(p.protocol, FailsafeProtocol::Udp);
        for bad in ["22", "icmp:1", "tcp:70000", "sideways:tcp:22", "tcp:"] {
            let err = bad.parse::<FailsafePort>().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn calico_defaults_fit_the_map() {
        let defaults = FailsafePort::calico_defaults();
        assert!(defaults.len() <= MAX_FAILSAFE_PORTS);
        assert!(defaults.contains(&"tcp:22".parse().unwrap()));
        assert!(defaults.contains(&"out:udp:53".parse().unwrap()));
    }

    #[test]
    fn map_layouts_match_the_c_structs() {
        assert_eq!(std::mem::size_of::<ConfigValue>(), 48);
        assert_eq!(std::mem::size_of::<FailsafeKey>(), 4);
    }

    #[test]
    fn embedded_object_is_a_bpf_elf() {
        assert_eq!(&REDIRECT_OBJECT[..4], b"\x7fELF");
        // e_machine == EM_BPF (247)
        assert_eq!(u16::from_le_bytes([REDIRECT_OBJECT[18], REDIRECT_OBJECT[19]]), 247);
    }

    #[test]
    fn loopback_has_a_mac_and_queues() {
        assert_eq!(interface_mac("lo").unwrap(), [0; 6]);
        assert!(interface_rx_queues("moat-nope0").is_err());
        assert!(interface_rx_queues("").is_err());
    }

    #[test]
    fn unknown_interface_is_a_clear_error() {
        let err = Redirector::attach("moat-nope0", &RedirectorConfig::default()).unwrap_err();
        assert!(err.to_string().contains("moat-nope0"), "{err}");
    }
}
