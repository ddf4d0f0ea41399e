//! The fastpath's end of the link: a thread that listens on the control socket, serves one agent
//! at a time, validates and publishes tables, answers, and forwards counters.
//!
//! The thread never touches a worker: it publishes through the [`TableHandle`] (workers pick the
//! new table up at their next batch) and takes counters from a slot the `moat run` main loop
//! fills. When the agent goes away — clean exit, crash, SIGKILL — the thread only notes it: the
//! table in force and every tracked connection stay, and the next agent to connect is told the
//! generation and the stages in force.

use super::frame::{Frame, FrameReader, hello_payload, parse_hello, write_frame};
use super::message::{Ack, AgentHello, AgentMessage, FastpathHello, FastpathMessage, Nack, Stats};
use super::table::{Limits, StageCache, build_table};
use super::{LinkError, PROTOCOL_VERSION, software};
use crate::classify::TableHandle;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket};
use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Settings of the fastpath's control socket.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub path: PathBuf,
    /// File mode of the socket (0o600: only the fastpath's user may connect).
    pub mode: u32,
    /// Largest frame accepted (one table); larger ones are skipped and refused.
    pub max_frame: usize,
    pub limits: Limits,
}

/// Whether an agent is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkState {
    /// No agent connected (yet, or any more).
    #[default]
    Listening,
    /// An agent passed the hello exchange.
    Connected,
}

impl LinkState {
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Listening => "listening",
            LinkState::Connected => "connected",
        }
    }
}

/// What the link has done, for the stats file and the Stats messages.
#[derive(Debug, Clone, Default)]
pub struct LinkStatus {
    pub state: LinkState,
    /// The connected agent (`software pid node`).
    pub agent: Option<String>,
    /// Agents that passed the hello exchange.
    pub connects: u64,
    pub disconnects: u64,
    /// Connections refused at the hello (wrong magic or version, undecodable hello).
    pub refused_peers: u64,
    pub tables_applied: u64,
    pub tables_refused: u64,
    pub last_refusal: Option<String>,
    /// The last link-level error (I/O, refused peer).
    pub last_error: Option<String>,
    pub stages_cached: usize,
    /// Stages built from received specs since start.
    pub stages_built: u64,
    /// Decoding, validation and build of the last applied table.
    pub last_build: Option<Duration>,
}

impl LinkStatus {
    /// Named counters for [`Stats::link`].
    pub fn named(&self) -> Vec<(String, u64)> {
        [
            ("connected", u64::from(self.state == LinkState::Connected)),
            ("connects", self.connects),
            ("disconnects", self.disconnects),
            ("refused_peers", self.refused_peers),
            ("tables_applied", self.tables_applied),
            ("tables_refused", self.tables_refused),
            ("stages_cached", self.stages_cached as u64),
            ("stages_built", self.stages_built),
            ("last_build_us", self.last_build.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves consistent data even if a panic unwinds through it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running link thread; stops (and removes the socket file) on [`LinkServer::stop`] or drop.
#[derive(Debug)]
pub struct LinkServer {
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<LinkStatus>>,
    stats: Arc<Mutex<Option<Stats>>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{path}: {what}")]
    Socket { path: String, what: String },
    #[error("cannot start the control link thread: {0}")]
    Thread(std::io::Error),
}

fn socket_error(path: &Path, what: impl std::fmt::Display) -> ServerError {
    ServerError::Socket { path: path.display().to_string(), what: what.to_string() }
}

/// Binds the socket with its final mode before anyone can connect: bind, chmod, then listen (a
/// connect before `listen` is refused, so there is no window with a wider mode). A stale socket
/// file (nobody listening) is removed; a live one, or a file that is not a socket, is an error.
fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener, ServerError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(socket_error(path, "another process is listening on this socket"));
            }
            std::fs::remove_file(path)
                .map_err(|e| socket_error(path, format!("cannot remove the stale socket: {e}")))?;
        }
        Ok(_) => return Err(socket_error(path, "exists and is not a socket; refusing to replace it")),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(socket_error(path, e)),
    }
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| socket_error(path, format!("socket: {e}")))?;
    let addr = UnixAddr::new(path).map_err(|e| socket_error(path, format!("address: {e}")))?;
    bind(fd.as_raw_fd(), &addr).map_err(|e| socket_error(path, format!("bind: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| socket_error(path, format!("chmod {mode:o}: {e}")))?;
    listen(&fd, Backlog::MAXCONN).map_err(|e| socket_error(path, format!("listen: {e}")))?;
    let listener = UnixListener::from(fd);
    listener.set_nonblocking(true).map_err(|e| socket_error(path, e))?;
    Ok(listener)
}

impl LinkServer {
    /// Binds the socket (errors are reported here, before the thread starts) and starts serving.
    pub fn start(config: ServerConfig, tables: Arc<TableHandle>) -> Result<LinkServer, ServerError> {
        let listener = bind_socket(&config.path, config.mode)?;
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(LinkStatus::default()));
        let stats = Arc::new(Mutex::new(None));
        let mut serve = Serve {
            listener,
            tables,
            config: config.clone(),
            status: Arc::clone(&status),
            stats: Arc::clone(&stats),
            cache: StageCache::default(),
            conn: None,
            started: Instant::now(),
        };
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("moat-control-link".into())
            .spawn(move || serve.run(&thread_stop))
            .map_err(ServerError::Thread)?;
        Ok(LinkServer { stop, status, stats, thread: Some(thread), path: config.path })
    }

    pub fn status(&self) -> LinkStatus {
        lock(&self.status).clone()
    }

    /// Hands counters to the link; the newest replaces one not yet sent.
    pub fn send_stats(&self, stats: Stats) {
        *lock(&self.stats) = Some(stats);
    }

    pub fn stop(mut self) -> LinkStatus {
        self.shutdown();
        self.status()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for LinkServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    reader: FrameReader,
    /// `None` until the agent's hello arrived.
    agent: Option<AgentHello>,
    /// Who connected, as the kernel says (`SO_PEERCRED`: uid, gid, pid), for the log: the hello's
    /// pid is the peer's own claim.
    peer: Option<(u32, u32, i32)>,
}

struct Serve {
    listener: UnixListener,
    tables: Arc<TableHandle>,
    config: ServerConfig,
    status: Arc<Mutex<LinkStatus>>,
    stats: Arc<Mutex<Option<Stats>>>,
    cache: StageCache,
    conn: Option<Conn>,
    started: Instant,
}

/// How long one answer may take to be written before the agent is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes a whole frame on a non-blocking socket: blocking (with a timeout) for the write only,
/// so a frame is never cut in the middle by `WouldBlock`.
fn send_frame(stream: &mut UnixStream, payload: &[u8]) -> Result<(), LinkError> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let result = write_frame(stream, payload);
    stream.set_nonblocking(true)?;
    result
}

fn send_msg(stream: &mut UnixStream, msg: &FastpathMessage) -> Result<(), LinkError> {
    let bytes = postcard::to_allocvec(msg)?;
    send_frame(stream, &bytes)
}

impl Serve {
    fn run(&mut self, stop: &AtomicBool) {
        tracing::info!(socket = %self.config.path.display(), version = PROTOCOL_VERSION,
            "control link listening; fail closed until an agent sends a valid table");
        while !stop.load(Ordering::Relaxed) {
            let (listener_ready, conn_ready) = self.wait();
            if listener_ready {
                self.accept();
            }
            if conn_ready {
                self.read();
            }
            self.forward_stats();
        }
        if self.conn.take().is_some() {
            tracing::info!("control link closed (stopping)");
        }
    }

    /// Waits up to 50 ms for a connection or data.
    fn wait(&self) -> (bool, bool) {
        let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        if let Some(c) = &self.conn {
            fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
        }
        if poll(&mut fds, 50u16).is_err() {
            // EINTR (a signal for the main thread): just look again.
            return (false, false);
        }
        let ready = |fd: Option<&PollFd<'_>>| fd.and_then(PollFd::revents).is_some_and(|r| !r.is_empty());
        (ready(fds.first()), ready(fds.get(1)))
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.greet(stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "control link: accept failed");
                    return;
                }
            }
        }
    }

    /// A new connection: it replaces the current one (a restarted agent must not wait for a
    /// dead one's connection to time out), and gets our hello at once.
    fn greet(&mut self, mut stream: UnixStream) {
        if let Some(old) = self.conn.take() {
            tracing::warn!(agent = ?old.agent.map(|a| a.pid), "control link: a new agent connected; dropping the previous connection");
            self.disconnected();
        }
        let table = self.tables.load();
        let hello = FastpathHello {
            software: software(),
            pid: std::process::id(),
            generation: table.generation(),
            origin: table.origin().to_owned(),
            stages: self.cache.ids(),
            tables_applied: lock(&self.status).tables_applied,
        };
        let sent = stream
            .set_nonblocking(true)
            .map_err(LinkError::from)
            .and_then(|()| postcard::to_allocvec(&hello).map_err(LinkError::from))
            .and_then(|body| send_frame(&mut stream, &hello_payload(PROTOCOL_VERSION, &body)));
        match sent {
            Ok(()) => {
                let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                    .ok()
                    .map(|c| (c.uid(), c.gid(), c.pid()));
                self.conn = Some(Conn { stream, reader: FrameReader::new(self.config.max_frame), agent: None, peer });
            }
            Err(e) => tracing::warn!(error = %e, "control link: cannot greet a new connection"),
        }
    }

    fn disconnected(&mut self) {
        let mut s = lock(&self.status);
        if s.state == LinkState::Connected {
            s.disconnects += 1;
        }
        s.state = LinkState::Listening;
        s.agent = None;
    }

    fn read(&mut self) {
        loop {
            let Some(conn) = self.conn.as_mut() else { return };
            let frame = match conn.reader.poll(&mut conn.stream) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    let generation = self.tables.generation();
                    match e {
                        LinkError::Closed => tracing::warn!(
                            generation,
                            "control link: the agent disconnected; enforcing the table in force and keeping every tracked connection"
                        ),
                        e => {
                            tracing::warn!(error = %e, generation, "control link: connection lost; enforcing the table in force")
                        }
                    }
                    self.conn = None;
                    self.disconnected();
                    return;
                }
            };
            let result = if conn.agent.is_none() { self.hello(frame) } else { self.message(frame) };
            if let Err(e) = result {
                tracing::error!(error = %e, "control link: dropping the connection");
                lock(&self.status).last_error = Some(e.to_string());
                self.conn = None;
                self.disconnected();
                return;
            }
        }
    }

    fn hello(&mut self, frame: Frame) -> Result<(), LinkError> {
        let payload = match frame {
            Frame::Data(p) => p,
            Frame::Oversized(len) => {
                lock(&self.status).refused_peers += 1;
                return Err(LinkError::TooLarge { len, max: self.config.max_frame });
            }
        };
        let parsed = parse_hello(&payload).and_then(|(version, body)| {
            if version != PROTOCOL_VERSION {
                return Err(LinkError::Version { peer: version, ours: PROTOCOL_VERSION });
            }
            Ok(postcard::from_bytes::<AgentHello>(body)?)
        });
        let agent = match parsed {
            Ok(a) => a,
            Err(e) => {
                let mut s = lock(&self.status);
                s.refused_peers += 1;
                drop(s);
                return Err(e);
            }
        };
        let peer = self.conn.as_ref().and_then(|c| c.peer);
        tracing::info!(agent = %agent.software, pid = agent.pid, node = ?agent.node,
            peer_uid = ?peer.map(|p| p.0), peer_gid = ?peer.map(|p| p.1), peer_pid = ?peer.map(|p| p.2),
            generation = self.tables.generation(), stages = self.cache.len(), "control link: agent connected");
        let mut s = lock(&self.status);
        s.state = LinkState::Connected;
        s.connects += 1;
        s.agent = Some(format!("{} pid {}", agent.software, agent.pid));
        drop(s);
        if let Some(conn) = self.conn.as_mut() {
            conn.agent = Some(agent);
        }
        Ok(())
    }

    fn message(&mut self, frame: Frame) -> Result<(), LinkError> {
        let generation = self.tables.generation();
        let msg = match frame {
            Frame::Oversized(len) => {
                Err(format!("frame of {len} bytes exceeds the limit of {}", self.config.max_frame))
            }
            Frame::Data(bytes) => {
                postcard::from_bytes::<AgentMessage>(&bytes).map_err(|e| format!("cannot decode the message: {e}"))
            }
        };
        let answer = match msg {
            Err(reason) => self.refused(None, reason, generation),
            Ok(AgentMessage::Ping { nonce }) => FastpathMessage::Pong { nonce },
            Ok(AgentMessage::Table(table)) => {
                let id = table.id;
                let started = Instant::now();
                let in_force = self.tables.load_full();
                match build_table(table, &self.cache, &in_force, &self.config.limits) {
                    Err(refusal) => self.refused(Some(id), refusal.0, generation),
                    Ok(mut built) => {
                        drop(in_force);
                        let took = started.elapsed();
                        self.cache.replace(&mut built);
                        let patch = built.patch;
                        let generation = self.tables.publish(built.table);
                        let mut s = lock(&self.status);
                        s.tables_applied += 1;
                        s.stages_cached = self.cache.len();
                        s.stages_built += u64::from(built.stages_built);
                        s.last_build = Some(took);
                        drop(s);
                        tracing::info!(
                            generation,
                            id,
                            patch,
                            stages_built = built.stages_built,
                            stages_reused = built.stages_reused,
                            build_ms = took.as_secs_f64() * 1e3,
                            "control link: table applied"
                        );
                        FastpathMessage::Ack(Ack {
                            id,
                            generation,
                            stages_built: built.stages_built,
                            stages_reused: built.stages_reused,
                            build_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                        })
                    }
                }
            }
        };
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        send_msg(&mut conn.stream, &answer)
    }

    fn refused(&self, id: Option<u64>, reason: String, generation: u64) -> FastpathMessage {
        tracing::warn!(id, reason = %reason, generation, "control link: table refused; the table in force stays");
        let mut s = lock(&self.status);
        s.tables_refused += 1;
        s.last_refusal = Some(reason.clone());
        FastpathMessage::Nack(Nack { id, reason, generation })
    }

    fn forward_stats(&mut self) {
        let Some(mut stats) = lock(&self.stats).take() else { return };
        let Some(conn) = self.conn.as_mut().filter(|c| c.agent.is_some()) else { return };
        let status = lock(&self.status).clone();
        stats.link = status.named();
        // The counters were taken a moment ago, maybe before a table this thread applied since:
        // the generation is the one in force now, so the agent never sees it go back.
        let table = self.tables.load();
        stats.generation = table.generation();
        stats.origin = table.origin().to_owned();
        stats.last_refusal = status.last_refusal;
        stats.uptime_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Err(e) = send_msg(&mut conn.stream, &FastpathMessage::Stats(stats)) {
            tracing::warn!(error = %e, "control link: cannot send counters; dropping the connection");
            self.conn = None;
            self.disconnected();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{RuleTable, Verdict, acl};
    use crate::control_link::table::TableEncoder;
    use crate::control_link::{Client, TableBody, TableMsg};
    use std::collections::HashSet;

    fn socket_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("moat-link-{}-{name}.sock", std::process::id()))
    }

    fn server(name: &str) -> (LinkServer, Arc<TableHandle>, PathBuf) {
        let path = socket_path(name);
        let tables = TableHandle::new(RuleTable::fail_closed());
        let config = ServerConfig { path: path.clone(), mode: 0o600, max_frame: 1 << 20, limits: Limits::default() };
        (LinkServer::start(config, Arc::clone(&tables)).unwrap(), tables, path)
    }

    fn hello() -> AgentHello {
        AgentHello { software: software(), pid: 1, node: None }
    }

    fn answer(client: &mut Client) -> FastpathMessage {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match client.recv(Duration::from_millis(100)).unwrap() {
                Some(FastpathMessage::Stats(_)) | None => assert!(Instant::now() < deadline, "no answer"),
                Some(m) => return m,
            }
        }
    }

    fn acl_table(id: u64, text: &str) -> AgentMessage {
        let t = RuleTable::new(acl::parse(text, "t.acl").unwrap(), Verdict::Deny, "t");
        AgentMessage::Table(TableEncoder::new().encode(&Arc::new(t), id, &HashSet::new(), None).unwrap())
    }

    #[test]
    fn tables_are_applied_refused_and_kept_across_agents() {
        let (server, tables, path) = server("apply");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut client = Client::connect(&path, &hello(), Duration::from_secs(20)).unwrap();
        assert_eq!(client.peer().generation, 0, "a fresh fastpath fails closed");
        client.send(&acl_table(1, "allow tcp any any 80\n")).unwrap();
        let FastpathMessage::Ack(ack) = answer(&mut client) else { panic!("not acked") };
        assert_eq!((ack.id, ack.generation), (1, 1));
        assert_eq!(tables.generation(), 1);

        // Garbage and an oversized frame: refused, the table stays, the connection too.
        client.send_raw(&[0xff, 0xff, 0xff]).unwrap();
        let FastpathMessage::Nack(nack) = answer(&mut client) else { panic!("garbage not refused") };
        assert!(nack.id.is_none() && nack.reason.contains("cannot decode"), "{nack:?}");
        client.send_raw(&vec![0u8; 2 << 20]).unwrap();
        let FastpathMessage::Nack(nack) = answer(&mut client) else { panic!("oversized not refused") };
        assert!(nack.reason.contains("exceeds the limit"), "{nack:?}");
        client.send(&AgentMessage::Ping { nonce: 9 }).unwrap();
        assert_eq!(answer(&mut client), FastpathMessage::Pong { nonce: 9 });
        assert_eq!(tables.generation(), 1);

        // A second agent replaces the first; it learns the generation in force.
        let mut second = Client::connect(&path, &hello(), Duration::from_secs(20)).unwrap();
        assert_eq!(second.peer().generation, 1);
        let mut bad = acl_table(2, "allow any any any\n");
        if let AgentMessage::Table(TableMsg { body: TableBody::Acl { rules, .. }, .. }) = &mut bad {
            rules.clear();
        }
        second.send(&bad).unwrap();
        let FastpathMessage::Ack(ack) = answer(&mut second) else { panic!() };
        assert_eq!(ack.generation, 2);
        drop(second);
        let status = server.stop();
        assert_eq!((status.tables_applied, status.tables_refused, status.connects), (2, 2, 2));
        assert!(!path.exists(), "the socket file is removed at stop");
    }

    #[test]
    fn other_versions_and_strangers_are_refused() {
        let (server, _tables, path) = server("version");
        let err = Client::connect_with_version(&path, 99, &hello(), Duration::from_secs(20)).unwrap_err();
        // The agent side reads the fastpath's hello and refuses it too.
        assert!(matches!(err, LinkError::Version { .. } | LinkError::Closed | LinkError::Io(_)), "{err}");
        let mut stranger = UnixStream::connect(&path).unwrap();
        write_frame(&mut stranger, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while lock(&server.status).refused_peers < 2 {
            assert!(Instant::now() < deadline, "not refused");
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = server.stop();
        assert!(status.last_error.unwrap().contains("magic"));
    }

    #[test]
    fn a_live_socket_is_not_taken_over_and_a_stale_one_is_replaced() {
        let (server, _tables, path) = server("stale");
        let tables = TableHandle::new(RuleTable::fail_closed());
        let config = ServerConfig { path: path.clone(), mode: 0o600, max_frame: 1024, limits: Limits::default() };
        let err = LinkServer::start(config.clone(), Arc::clone(&tables)).unwrap_err();
        assert!(err.to_string().contains("another process"), "{err}");
        drop(server);
        // A socket file nobody listens on, as a killed fastpath leaves it.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let again = LinkServer::start(config, tables).unwrap();
        drop(again);
    }
}
