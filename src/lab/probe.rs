//! Real traffic between lab hosts: echo servers and clients over std sockets created inside namespaces, and ping.
//!
//! Timeouts here are for liveness only (a dropped SYN must not hang a test); nothing asserts on timing.

use super::netns::{Netns, describe};
use anyhow::{Context, Result, bail};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Poll interval of the servers' stop flag.
const POLL: Duration = Duration::from_millis(20);

/// What became of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The peer answered with what was expected.
    Answered,
    /// Nothing came back before the timeout (a dropped packet looks like this).
    NoAnswer,
    /// The peer's stack refused (TCP RST, ICMP port unreachable): packets passed but nobody listened.
    Refused,
}

/// A TCP server in a namespace that echoes every connection's bytes until the client shuts down its side.
#[derive(Debug)]
pub struct TcpEchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl TcpEchoServer {
    /// Listens on `addr` inside `ns`.
    pub fn start(ns: &Netns, addr: SocketAddr) -> Result<Self> {
        let listener = ns
            .run_in(move || TcpListener::bind(addr))?
            .with_context(|| format!("cannot listen on tcp {addr} in namespace {}", ns.name()))?;
        listener.set_nonblocking(true).context("cannot make the listener non-blocking")?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (stop2, accepted2) = (stop.clone(), accepted.clone());
        let thread = std::thread::Builder::new()
            .name(format!("tcp-echo:{addr}"))
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            accepted2.fetch_add(1, Ordering::Relaxed);
                            let _ = std::thread::Builder::new().name("tcp-echo-conn".into()).spawn(move || echo(conn));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                            std::thread::sleep(POLL)
                        }
                        Err(_) => std::thread::sleep(POLL),
                    }
                }
            })
            .context("cannot spawn the echo server thread")?;
        Ok(Self { addr, stop, accepted, thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo(mut conn: TcpStream) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(60)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

/// A UDP server in a namespace that sends every datagram back to its sender.
#[derive(Debug)]
pub struct UdpEchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEchoServer {
    pub fn start(ns: &Netns, addr: SocketAddr) -> Result<Self> {
        let socket = ns
            .run_in(move || UdpSocket::bind(addr))?
            .with_context(|| format!("cannot bind udp {addr} in namespace {}", ns.name()))?;
        socket.set_read_timeout(Some(POLL)).context("cannot set a read timeout")?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (stop2, received2) = (stop.clone(), received.clone());
        let thread = std::thread::Builder::new()
            .name(format!("udp-echo:{addr}"))
            .spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop2.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        received2.fetch_add(1, Ordering::Relaxed);
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
            })
            .context("cannot spawn the echo server thread")?;
        Ok(Self { addr, stop, received, thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for UdpEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from `ns` to `dst` within `timeout`; `Ok(Err(outcome))` when the connection was not answered or refused.
pub fn tcp_connect(ns: &Netns, dst: SocketAddr, timeout: Duration) -> Result<std::result::Result<TcpStream, Outcome>> {
    let res = ns.run_in(move || TcpStream::connect_timeout(&dst, timeout))?;
    match res {
        Ok(stream) => Ok(Ok(stream)),
        Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => Ok(Err(Outcome::NoAnswer)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(Err(Outcome::Refused)),
        Err(e) => Err(e).with_context(|| format!("tcp connect to {dst} from namespace {}", ns.name())),
    }
}

/// Sends `payload` over a new TCP connection from `ns` to an echo server at `dst`, half-closes, and returns every
/// byte echoed until the server closes. Writing and reading run concurrently, so payloads larger than the socket
/// buffers cannot deadlock.
pub fn tcp_exchange(ns: &Netns, dst: SocketAddr, payload: &[u8], timeout: Duration) -> Result<Vec<u8>> {
    let stream = match tcp_connect(ns, dst, timeout)? {
        Ok(s) => s,
        Err(outcome) => bail!("tcp connect from namespace {} to {dst}: {outcome:?}", ns.name()),
    };
    exchange_on(stream, payload, timeout).with_context(|| format!("tcp exchange from namespace {} to {dst}", ns.name()))
}

/// Sends `payload` on an established stream, half-closes, and reads until EOF (each read bounded by `timeout`).
pub fn exchange_on(stream: TcpStream, payload: &[u8], timeout: Duration) -> Result<Vec<u8>> {
    stream.set_read_timeout(Some(timeout)).context("set_read_timeout")?;
    stream.set_write_timeout(Some(timeout)).context("set_write_timeout")?;
    let mut writer = stream.try_clone().context("cannot clone the stream")?;
    let mut reader = stream;
    let received = std::thread::scope(|scope| -> Result<Vec<u8>> {
        let sender = scope.spawn(move || -> std::io::Result<()> {
            writer.write_all(payload)?;
            writer.shutdown(Shutdown::Write)
        });
        let mut received = Vec::with_capacity(payload.len());
        let read = reader.read_to_end(&mut received);
        let sent = sender.join().map_err(|_| anyhow::anyhow!("sender thread panicked"))?;
        sent.context("sending")?;
        read.with_context(|| format!("receiving (got {} of {} bytes)", received.len(), payload.len()))?;
        Ok(received)
    })?;
    Ok(received)
}

/// Whether a TCP echo server at `dst` answers a short message from `ns`.
pub fn tcp_reach(ns: &Netns, dst: SocketAddr, timeout: Duration) -> Result<Outcome> {
    let stream = match tcp_connect(ns, dst, timeout)? {
        Ok(s) => s,
        Err(outcome) => return Ok(outcome),
    };
    let msg = b"moat probe\n";
    match exchange_on(stream, msg, timeout) {
        Ok(echoed) if echoed == msg => Ok(Outcome::Answered),
        Ok(echoed) => bail!("tcp {dst}: echo came back different ({} bytes)", echoed.len()),
        Err(e) if is_timeout(&e) => Ok(Outcome::NoAnswer),
        Err(e) => Err(e),
    }
}

fn is_timeout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::WouldBlock || io.kind() == ErrorKind::TimedOut)
    })
}

fn unspecified_like(dst: SocketAddr) -> SocketAddr {
    match dst {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// Sends one datagram from `ns` to `dst` and returns the reply, `Err(NoAnswer)` after `timeout`, or
/// `Err(Refused)` on ICMP port unreachable.
pub fn udp_exchange(
    ns: &Netns,
    dst: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<std::result::Result<Vec<u8>, Outcome>> {
    let payload = payload.to_vec();
    ns.run_in(move || -> Result<std::result::Result<Vec<u8>, Outcome>> {
        let socket = UdpSocket::bind(unspecified_like(dst)).context("bind")?;
        socket.connect(dst).context("connect")?;
        socket.set_read_timeout(Some(timeout)).context("set_read_timeout")?;
        socket.send(&payload).context("send")?;
        let mut buf = vec![0u8; 65536];
        match socket.recv(&mut buf) {
            Ok(n) => Ok(Ok(buf[..n].to_vec())),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                Ok(Err(Outcome::NoAnswer))
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(Err(Outcome::Refused)),
            Err(e) => Err(e).context("recv"),
        }
    })?
    .with_context(|| format!("udp exchange from namespace {} to {dst}", ns.name()))
}

/// Whether a UDP echo server at `dst` answers a datagram from `ns`.
pub fn udp_reach(ns: &Netns, dst: SocketAddr, timeout: Duration) -> Result<Outcome> {
    let msg = b"moat probe";
    match udp_exchange(ns, dst, msg, timeout)? {
        Ok(reply) if reply == msg => Ok(Outcome::Answered),
        Ok(reply) => bail!("udp {dst}: echo came back different ({} bytes)", reply.len()),
        Err(outcome) => Ok(outcome),
    }
}

/// Counts of a `ping` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingReport {
    pub transmitted: u32,
    pub received: u32,
}

impl PingReport {
    pub fn outcome(&self) -> Outcome {
        if self.received > 0 { Outcome::Answered } else { Outcome::NoAnswer }
    }
}

/// `ping -c count -W wait_s dst` from `ns` (iputils); returns its counts whatever its exit status.
pub fn ping(ns: &Netns, dst: IpAddr, count: u32, wait_s: u32) -> Result<PingReport> {
    let mut cmd = ns.command("ping");
    cmd.arg(if dst.is_ipv6() { "-6" } else { "-4" });
    cmd.args(["-n", "-q", "-c", &count.to_string(), "-W", &wait_s.to_string(), &dst.to_string()]);
    let line = describe(&cmd);
    let out = cmd.stdin(std::process::Stdio::null()).output().with_context(|| format!("cannot start `{line}`"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_ping(&stdout).with_context(|| {
        format!("`{line}` ({}): no summary in output:\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr))
    })
}

/// Reads "3 packets transmitted, 3 received, …".
fn parse_ping(out: &str) -> Option<PingReport> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut fields = line.split(',').map(str::trim);
    let transmitted = fields.next()?.split_whitespace().next()?.parse().ok()?;
    let received = fields.next()?.split_whitespace().next()?.parse().ok()?;
    Some(PingReport { transmitted, received })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary() {
        let out = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\n--- 10.0.0.2 ping statistics ---\n\
                   3 packets transmitted, 2 received, 33.3333% packet loss, time 2003ms\n";
        assert_eq!(parse_ping(out), Some(PingReport { transmitted: 3, received: 2 }));
        let lost = "3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2030ms\n";
        assert_eq!(parse_ping(lost).unwrap().outcome(), Outcome::NoAnswer);
        assert_eq!(parse_ping("ping: connect: Network is unreachable\n"), None);
    }
}
