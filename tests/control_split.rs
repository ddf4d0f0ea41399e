//! Control and fastpath as two processes: `moat agent` compiles policy and hands tables over the control
//! socket to `moat run --control-socket` (the fastpath), which validates each before swapping it in.
//! Topology as everywhere: `client ns ─ veth ─ [moat run] ─ veth ─ server ns`, real TCP and UDP.
//!
//! * the split enforces a manifests directory, an edit reaches the dataplane, and the fastpath fails
//!   closed until the first table;
//! * the agent is SIGKILLed and restarted under traffic: a long-lived TCP connection and a stream of
//!   numbered UDP datagrams cross without a loss, and the generation goes on;
//! * the fastpath is killed and restarted: it fails closed until the agent resends the table;
//! * corrupt frames and tables with dangling indices are refused (Nack) and the table in force stays;
//! * a protocol version mismatch is refused, with a clear error, by both sides;
//! * `/metrics` is valid Prometheus text with the expected series, `/readyz` flips at the first ack;
//! * with the Kubernetes source (kubesim as the API server): a pod relabel changes enforcement, and
//!   an API outage keeps the last table in force.
// A test binary: a panic is the assertion, in helpers as in test bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use moat::lab::probe::{self, Outcome, TcpEchoServer};
use moat::lab::{AgentOptions, AgentProcess, Lab, MoatOptions, MoatProcess, WireTopology};
use moat_fastpath::control_link::frame::{hello_payload, write_frame};
use moat_fastpath::control_link::{
    AgentHello, AgentMessage, Client, FastpathMessage, LinkError, PROTOCOL_VERSION, TableBody, TableEncoder,
};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{BLOCKED_AFTER, CONNECT, sock};

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// Default deny in both namespaces; clients may open TCP to `tcp_ports` and UDP 9000 on the servers.
fn policy(tcp_ports: &[u16]) -> String {
    let ports: Vec<String> = tcp_ports
        .iter()
        .map(|p| format!("{{protocol: TCP, port: {p}}}"))
        .chain(std::iter::once("{protocol: UDP, port: 9000}".to_owned()))
        .collect();
    let ports = ports.join(", ");
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: default-deny, namespace: clients}}\n\
         spec: {{podSelector: {{}}, policyTypes: [Ingress, Egress]}}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: default-deny, namespace: servers}}\n\
         spec: {{podSelector: {{}}, policyTypes: [Ingress, Egress]}}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: to-servers, namespace: clients}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: client}}}}\n  policyTypes: [Egress]\n  egress:\n\
         \x20 - to: [{{namespaceSelector: {{matchLabels: {{side: servers}}}}}}]\n    ports: [{ports}]\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: from-clients, namespace: servers}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: server}}}}\n  policyTypes: [Ingress]\n  ingress:\n\
         \x20 - from: [{{namespaceSelector: {{matchLabels: {{side: clients}}}}}}]\n    ports: [{ports}]\n"
    )
}

/// A lab with the wire, the manifests directory and the socket path; the fastpath and agent are started by the
/// tests. Failures print both processes' logs.
struct Split {
    lab: Lab,
    topo: WireTopology,
    socket: PathBuf,
    manifests: PathBuf,
}

impl Split {
    fn new(test: &str, tcp_ports: &[u16]) -> Option<Split> {
        let (lab, topo) = support::wire(test, 1)?;
        let cluster = support::cluster(&topo);
        let manifests = lab
            .write_files("manifests", &[("00-cluster.yaml", &cluster), ("50-policy.yaml", &policy(tcp_ports))])
            .unwrap();
        let socket = lab.workdir().join("control.sock");
        Some(Split { lab, topo, socket, manifests })
    }

    fn fastpath(&self, extra: &[&str]) -> MoatProcess {
        let mut opts = MoatOptions::fastpath(MOAT, &self.socket).wire(&self.topo.if_a, &self.topo.if_b).queues(1);
        opts.extra_args = extra.iter().map(|a| (*a).to_owned()).collect();
        if let Ok(mode) = std::env::var("MOAT_E2E_XDP_MODE") {
            opts = opts.xdp_mode(&mode);
        }
        if let Ok(log) = std::env::var("MOAT_LOG") {
            opts.env.push(("MOAT_LOG".to_owned(), log));
        }
        MoatProcess::start(&self.topo.moat, self.lab.workdir(), &opts).unwrap_or_else(|e| panic!("fastpath: {e:#}"))
    }

    fn agent(&self) -> AgentProcess {
        let mut opts = AgentOptions::manifests(MOAT, &self.socket, &self.manifests);
        opts.env.push(("NODE_NAME".to_owned(), "node-under-test".to_owned()));
        AgentProcess::start(self.lab.workdir(), &opts).unwrap_or_else(|e| panic!("agent: {e:#}"))
    }

    fn edit_policy(&self, tcp_ports: &[u16]) {
        std::fs::write(self.manifests.join("50-policy.yaml"), policy(tcp_ports)).unwrap();
    }

    fn reach(&self, port: u16, wait: Duration) -> Outcome {
        probe::tcp_reach(&self.topo.client.ns, sock(self.topo.server.ipv4, port), wait).unwrap()
    }
}

/// Panics with `what` and the logs of both processes.
#[track_caller]
fn fail(what: &str, fastpath: Option<&MoatProcess>, agent: Option<&AgentProcess>) -> ! {
    panic!(
        "{what}\n--- fastpath log ---\n{}\n--- agent log ---\n{}",
        fastpath.map(MoatProcess::log).unwrap_or_default(),
        agent.map(AgentProcess::log).unwrap_or_default()
    )
}

/// Waits (liveness bound, never a performance assertion) until `probe` holds.
#[track_caller]
fn eventually(
    what: &str,
    fastpath: Option<&MoatProcess>,
    agent: Option<&AgentProcess>,
    mut probe: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !probe() {
        if Instant::now() > deadline {
            fail(&format!("{what}: not seen within 30 s"), fastpath, agent);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A log without its colour escapes (`ESC [ … m`).
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().take_while(|&c| c != 'm').for_each(drop);
        } else {
            out.push(c);
        }
    }
    out
}

fn status(agent: &AgentProcess) -> serde_json::Value {
    let (code, body) = agent.get("/status").unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn ready(agent: &AgentProcess) -> bool {
    agent.get("/readyz").is_ok_and(|(code, _)| code == 200)
}

/// Sends `msg` on a live connection and reads the echo.
fn echo_on(stream: &mut TcpStream, msg: &[u8]) -> bool {
    stream.set_read_timeout(Some(CONNECT)).unwrap();
    if stream.write_all(msg).is_err() {
        return false;
    }
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).is_ok() && back == msg
}

fn link_stats(stats: &moat::lab::MoatStats) -> &serde_json::Value {
    &stats.raw["control_link"]
}

#[test]
fn the_split_enforces_a_manifests_directory_and_edits_reach_the_dataplane() {
    let Some(split) = Split::new("the_split_enforces_a_manifests_directory_and_edits_reach_the_dataplane", &[80])
    else {
        return;
    };
    let s = &split.topo.server;
    let _web = TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    let _alt = TcpEchoServer::start(&s.ns, sock(s.ipv4, 8080)).unwrap();

    // No agent yet: the fastpath enforces its fail-closed generation 0.
    let fastpath = split.fastpath(&[]);
    if split.reach(80, BLOCKED_AFTER) != Outcome::NoAnswer {
        fail("a fastpath without a table must fail closed", Some(&fastpath), None);
    }

    let agent = split.agent();
    eventually("the agent's table allows TCP 80", Some(&fastpath), Some(&agent), || {
        split.reach(80, Duration::from_millis(500)) == Outcome::Answered
    });
    if split.reach(8080, BLOCKED_AFTER) != Outcome::NoAnswer {
        fail("TCP 8080 is not allowed yet", Some(&fastpath), Some(&agent));
    }
    let payload = support::pattern(64 * 1024, 3);
    let echoed = probe::tcp_exchange(&split.topo.client.ns, sock(s.ipv4, 80), &payload, CONNECT).unwrap();
    assert!(echoed == payload, "64 KiB over the split came back different");

    // An edit of the directory the agent watches reaches the dataplane.
    split.edit_policy(&[80, 8080]);
    eventually("the edited policy allows TCP 8080", Some(&fastpath), Some(&agent), || {
        split.reach(8080, Duration::from_millis(500)) == Outcome::Answered
    });
    let st = status(&agent);
    assert_eq!(st["generation"], 2, "{st:#}");
    assert_eq!(st["node"], "node-under-test");
    // The edit derives from the table in force: it travelled as a patch.
    assert!(plain(&fastpath.log()).contains("patch=true"), "{}", fastpath.log());
    agent.stop().unwrap();
    let stats = support::stop_moat(fastpath);
    assert_eq!(stats.raw["table"]["generation"], 2, "{:#}", stats.raw);
    let link = link_stats(&stats);
    assert_eq!(link["tables_applied"], 2, "{link:#}");
    assert_eq!(link["tables_refused"], 0, "{link:#}");
    assert_eq!(link["state"], "listening", "the agent left: {link:#}");
    assert!(support::policy_drops(&stats) > 0, "the blocked probes are policy drops");
}

#[test]
fn restarting_the_agent_under_traffic_loses_no_established_traffic() {
    let Some(split) = Split::new("restarting_the_agent_under_traffic_loses_no_established_traffic", &[80]) else {
        return;
    };
    let (c, s) = (split.topo.client.clone(), split.topo.server.clone());
    let _web = TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    let fastpath = split.fastpath(&[]);
    let agent = split.agent();
    eventually("the first table", Some(&fastpath), Some(&agent), || ready(&agent));

    // Receiver of numbered datagrams, with room for all of them (a receiver thread not scheduled for a
    // while must not lose what moat forwarded).
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let server_ip = s.ipv4;
    let receiver =
        s.ns.spawn_in(move || {
            let socket = UdpSocket::bind(sock(server_ip, 9000)).unwrap();
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &(32 << 20)).unwrap();
            bound_tx.send(()).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut seen = HashSet::new();
            let mut buf = [0u8; 64];
            while let Ok(n) = socket.recv(&mut buf) {
                if n >= 4 {
                    seen.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                }
            }
            seen
        })
        .unwrap();
    bound_rx.recv().unwrap();
    // Sender: paced numbered datagrams until told to stop.
    let sending = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&sending);
    let sender =
        c.ns.spawn_in(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            let mut seq = 0u32;
            while flag.load(Ordering::Relaxed) {
                socket.send_to(&seq.to_be_bytes(), sock(server_ip, 9000)).unwrap();
                seq += 1;
                if seq % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            seq
        })
        .unwrap();

    // A long-lived connection, established before the agent dies.
    let mut conn = match probe::tcp_connect(&c.ns, sock(s.ipv4, 80), CONNECT).unwrap() {
        Ok(stream) => stream,
        Err(outcome) => fail(&format!("TCP 80: {outcome:?}"), Some(&fastpath), Some(&agent)),
    };
    assert!(echo_on(&mut conn, b"before"), "echo before the crash");
    std::thread::sleep(Duration::from_millis(300));
    agent.kill();

    // No control process: the fastpath keeps enforcing, established and new flows alike.
    for i in 0..5 {
        if !echo_on(&mut conn, format!("agent down {i}").as_bytes()) {
            fail("the long-lived connection stalled while the agent was down", Some(&fastpath), None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if split.reach(80, CONNECT) != Outcome::Answered {
        fail("new connections must pass while the agent is down", Some(&fastpath), None);
    }

    let agent = split.agent();
    eventually("the restarted agent's table", Some(&fastpath), Some(&agent), || ready(&agent));
    let st = status(&agent);
    assert_eq!(st["generation"], 2, "the generation goes on: {st:#}");
    assert_eq!(st["agent"]["stages_sent"], 0, "the fastpath held every stage already: {st:#}");
    assert!(echo_on(&mut conn, b"after the restart"), "the connection survives the restart");
    std::thread::sleep(Duration::from_millis(300));
    sending.store(false, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let seen = receiver.join().unwrap();
    let missing: Vec<u32> = (0..sent).filter(|n| !seen.contains(n)).take(10).collect();
    if !missing.is_empty() {
        fail(
            &format!("{} of {sent} datagrams lost, first {missing:?}", sent as usize - seen.len()),
            Some(&fastpath),
            Some(&agent),
        );
    }
    eprintln!("{sent} datagrams crossed while the agent was killed and restarted");
    drop(conn);
    agent.stop().unwrap();
    let stats = support::stop_moat(fastpath);
    let link = link_stats(&stats);
    assert_eq!(link["connects"], 2, "{link:#}");
    assert_eq!(stats.raw["table"]["generation"], 2);
    let ct = &stats.raw["workers"][0]["conntrack"];
    assert_eq!(ct["revoked"], 0, "no flow was cut: {ct}");
    assert!(ct["revalidations"].as_u64().unwrap_or(0) >= 1, "the new generation re-checked the live flows: {ct}");
}

#[test]
fn a_restarted_fastpath_fails_closed_until_the_agent_resends_the_table() {
    let Some(split) = Split::new("a_restarted_fastpath_fails_closed_until_the_agent_resends_the_table", &[80]) else {
        return;
    };
    let s = &split.topo.server;
    let _web = TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    let first = split.fastpath(&[]);
    let agent = split.agent();
    eventually("the first fastpath's table", Some(&first), Some(&agent), || {
        split.reach(80, Duration::from_millis(500)) == Outcome::Answered
    });
    // Hold the agent still so the new fastpath's fail-closed start can be observed, then crash the fastpath.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.pid().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    first.kill_hard();
    let second = split.fastpath(&[]);
    let blocked = split.reach(80, BLOCKED_AFTER);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    if blocked != Outcome::NoAnswer {
        fail(
            &format!("a restarted fastpath must fail closed until it has a table: {blocked:?}"),
            Some(&second),
            Some(&agent),
        );
    }
    eventually("the agent resends the table to the new fastpath", Some(&second), Some(&agent), || {
        split.reach(80, Duration::from_millis(500)) == Outcome::Answered
    });
    let st = status(&agent);
    assert_eq!(st["generation"], 1, "a new fastpath counts from 1: {st:#}");
    assert_eq!(st["agent"]["connects"], 2, "{st:#}");
    assert!(agent.log().contains("failing closed (generation 0)"), "{}", agent.log());
    agent.stop().unwrap();
    let stats = support::stop_moat(second);
    assert_eq!(link_stats(&stats)["tables_applied"], 1);
}

/// Connects to the fastpath as an agent would.
fn raw_client(socket: &Path) -> Client {
    let hello = AgentHello { software: "control_split test".into(), pid: std::process::id(), node: None };
    Client::connect(socket, &hello, CONNECT).unwrap()
}

/// The next answer that is not a counters message.
fn answer(client: &mut Client) -> FastpathMessage {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.recv(Duration::from_millis(200)).unwrap() {
            Some(FastpathMessage::Stats(_)) | None => assert!(Instant::now() < deadline, "no answer from the fastpath"),
            Some(m) => return m,
        }
    }
}

#[track_caller]
fn expect_nack(client: &mut Client, containing: &str) {
    match answer(client) {
        FastpathMessage::Nack(n) => {
            assert!(n.reason.contains(containing), "refused for another reason than {containing:?}: {}", n.reason);
            assert_eq!(n.generation, 1, "the table in force stays");
        }
        other => panic!("expected a refusal ({containing}), got {other:?}"),
    }
}

#[test]
fn corrupt_frames_and_inconsistent_tables_are_refused_and_the_table_in_force_stays() {
    let test = "corrupt_frames_and_inconsistent_tables_are_refused_and_the_table_in_force_stays";
    let Some(split) = Split::new(test, &[80]) else { return };
    let s = &split.topo.server;
    let _web = TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    let _alt = TcpEchoServer::start(&s.ns, sock(s.ipv4, 8080)).unwrap();
    let fastpath = split.fastpath(&["--max-table-bytes", "1048576"]);
    let agent = split.agent();
    eventually("the agent's table", Some(&fastpath), Some(&agent), || ready(&agent));
    agent.kill();

    // The test is the agent now, with a table allowing 8080 too, compiled as the agent would.
    split.edit_policy(&[80, 8080]);
    let snapshot = moat_control::source::manifests::ManifestDir::new(&split.manifests).load().unwrap();
    let mut pipeline = moat_control::pipeline::Pipeline::new();
    let table = Arc::new(pipeline.build(&snapshot, "test").unwrap().0);
    let mut client = raw_client(&split.socket);
    assert_eq!(client.peer().generation, 1);
    let known: HashSet<_> = client.peer().stages.iter().copied().collect();
    let mut encoder = TableEncoder::new();
    let good = encoder.encode(&table, 7, &known, None).unwrap();
    let send = |client: &mut Client, f: &dyn Fn(&mut moat_fastpath::control_link::PolicyMsg)| {
        let mut msg = good.clone();
        let TableBody::Policy(p) = &mut msg.body else { panic!("a policy table") };
        f(p);
        client.send(&AgentMessage::Table(msg)).unwrap();
    };

    client.send_raw(b"\x00\x07 not postcard at all \xff\xff\xff\xff").unwrap();
    expect_nack(&mut client, "cannot decode");
    client.send_raw(&vec![0u8; 2 << 20]).unwrap();
    expect_nack(&mut client, "exceeds the limit");
    send(&mut client, &|p| p.chains.iter_mut().flat_map(|c| c.steps.iter_mut()).next().unwrap().policies.push(9999));
    expect_nack(&mut client, "refers to missing policy 9999");
    send(&mut client, &|p| p.endpoints[0].chains[0] = 9999);
    expect_nack(&mut client, "missing chain 9999");
    send(&mut client, &|p| p.stages.push(moat_fastpath::control_link::StageId([7; 16])));
    expect_nack(&mut client, "neither sent nor held");
    send(&mut client, &|p| {
        if let Some(stage) = p.new_stages.first_mut() {
            stage.specs.push(0);
        } else {
            p.new_stages.push(moat_fastpath::control_link::StageMsg { id: p.stages[0], specs: vec![1, 2, 3] });
        }
    });
    expect_nack(&mut client, "does not match its id");
    // A patch against a generation that is not in force.
    split.edit_policy(&[80, 8080, 8081]);
    let snapshot = moat_control::source::manifests::ManifestDir::new(&split.manifests).load().unwrap();
    let derived = Arc::new(pipeline.build(&snapshot, "test").unwrap().0);
    let patch = encoder.encode(&derived, 8, &known, Some((&table, 5))).unwrap();
    assert!(matches!(patch.body, TableBody::Patch(_)), "a derived table travels as a patch");
    client.send(&AgentMessage::Table(patch)).unwrap();
    expect_nack(&mut client, "patch for generation 5, but generation 1 is in force");

    // Through all of it the first table decided: 80 passes, 8080 does not.
    if split.reach(80, CONNECT) != Outcome::Answered || split.reach(8080, BLOCKED_AFTER) != Outcome::NoAnswer {
        fail("the table in force must stay after refusals", Some(&fastpath), None);
    }
    // The connection is still usable: the valid table is applied.
    client.send(&AgentMessage::Table(good.clone())).unwrap();
    match answer(&mut client) {
        FastpathMessage::Ack(ack) => assert_eq!((ack.id, ack.generation), (7, 2)),
        other => panic!("the valid table was not applied: {other:?}"),
    }
    if split.reach(8080, CONNECT) != Outcome::Answered {
        fail("the valid table allows 8080", Some(&fastpath), None);
    }
    drop(client);
    let stats = support::stop_moat(fastpath);
    let link = link_stats(&stats);
    assert_eq!(link["tables_refused"], 7, "{link:#}");
    assert!(link["last_refusal"].as_str().unwrap().contains("generation 5"), "{link:#}");
}

#[test]
fn a_fastpath_refuses_an_agent_of_another_protocol_version() {
    let Some(split) = Split::new("a_fastpath_refuses_an_agent_of_another_protocol_version", &[80]) else { return };
    let fastpath = split.fastpath(&[]);
    let hello = AgentHello { software: "moat 99".into(), pid: 1, node: None };
    let err = Client::connect_with_version(&split.socket, PROTOCOL_VERSION + 1, &hello, CONNECT).unwrap_err();
    match err {
        LinkError::Version { peer, ours } => assert_eq!((peer, ours), (PROTOCOL_VERSION, PROTOCOL_VERSION + 1)),
        other => panic!("expected a version refusal, got {other}"),
    }
    let expected = format!(
        "the peer speaks moat control protocol version {}, this process speaks version {PROTOCOL_VERSION}",
        PROTOCOL_VERSION + 1
    );
    eventually("the fastpath logs the refusal", Some(&fastpath), None, || fastpath.log().contains(&expected));
    let stats = support::stop_moat(fastpath);
    assert_eq!(link_stats(&stats)["refused_peers"], 1);
    assert_eq!(stats.raw["table"]["generation"], 0, "nothing was applied");
}

/// No root needed: a fake fastpath that answers with another version.
#[test]
fn an_agent_refuses_a_fastpath_of_another_protocol_version() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("rules.acl"), "allow tcp any any 80\n").unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let agent = AgentProcess::start(dir.path(), &AgentOptions::manifests(MOAT, &socket, &manifests)).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    // Our hello: the right magic, another version, a body the agent must not even try to read.
    write_frame(&mut conn, &hello_payload(PROTOCOL_VERSION + 1, b"\xff\xff")).unwrap();
    let expected = format!(
        "the peer speaks moat control protocol version {}, this process speaks version {PROTOCOL_VERSION}",
        PROTOCOL_VERSION + 1
    );
    eventually("the agent logs the refusal", None, Some(&agent), || agent.log().contains(&expected));
    let (code, metrics) = agent.get("/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("moat_agent_last_error{component=\"fastpath\",error=\"protocol version mismatch"),
        "{metrics}"
    );
    assert_eq!(agent.get("/readyz").unwrap().0, 503);
    agent.stop().unwrap();
}

/// A Prometheus text-format (0.0.4) parser strict enough to catch what a scraper refuses: every sample
/// belongs to a family declared once by `# TYPE` before it, names and labels are well-formed, values
/// parse. Returns samples as `name{sorted labels}` → value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .enumerate()
                .all(|(i, ch)| ch.is_ascii_alphabetic() || ch == '_' || ch == ':' || (i > 0 && ch.is_ascii_digit()))
    };
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = BTreeSet::new();
    let mut samples = BTreeMap::new();
    let mut current: Option<String> = None;
    for (no, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", no + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(name_ok(name), "{}", at());
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{}", at());
                    assert!(
                        families.insert(name.to_owned(), kind.to_owned()).is_none(),
                        "family declared twice: {}",
                        at()
                    );
                    current = Some(name.to_owned());
                }
                (Some("HELP"), Some(name), _) => {
                    assert!(helped.insert(name.to_owned()), "HELP twice: {}", at());
                }
                _ => {}
            }
            continue;
        }
        assert!(!line.starts_with('#'), "{}", at());
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {}", at()));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {}", at())),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {}", at()));
                let mut labels = Vec::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|&ch| ch != '=').collect();
                    assert!(name_ok(&key), "bad label name {key:?}: {}", at());
                    assert_eq!(chars.next(), Some('"'), "{}", at());
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('n') => value.push('\n'),
                                Some(ch @ ('\\' | '"')) => value.push(ch),
                                other => panic!("bad escape {other:?}: {}", at()),
                            },
                            Some('"') => break,
                            Some(ch) => value.push(ch),
                            None => panic!("unterminated label value: {}", at()),
                        }
                    }
                    labels.push(format!("{key}={value:?}"));
                    match chars.next() {
                        Some(',') | None => {}
                        other => panic!("expected , got {other:?}: {}", at()),
                    }
                }
                labels.sort();
                (name, labels)
            }
        };
        assert!(name_ok(name), "{}", at());
        let family = current.as_deref().unwrap_or_else(|| panic!("sample before any TYPE: {}", at()));
        let kind = families.get(family).map(String::as_str);
        let belongs = name == family
            || (kind == Some("histogram") && [family, "_bucket"].concat() == name)
            || (matches!(kind, Some("histogram" | "summary"))
                && ([family, "_sum"].concat() == name || [family, "_count"].concat() == name));
        assert!(belongs, "sample of another family than {family}: {}", at());
        samples.insert(format!("{name}{{{}}}", labels.join(",")), value);
    }
    samples
}

#[test]
fn metrics_are_prometheus_text_and_readyz_flips_at_the_first_ack() {
    let Some(split) = Split::new("metrics_are_prometheus_text_and_readyz_flips_at_the_first_ack", &[80]) else {
        return;
    };
    let s = &split.topo.server;
    let _web = TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    // The agent first: alive, not ready (no fastpath yet).
    let agent = split.agent();
    assert_eq!(agent.get("/healthz").unwrap().0, 200);
    let (code, why) = agent.get("/readyz").unwrap();
    assert_eq!(code, 503, "{why}");
    let early = parse_prometheus(&agent.get("/metrics").unwrap().1);
    assert_eq!(early.get("moat_agent_ready{}"), Some(&0.0));

    let fastpath = split.fastpath(&[]);
    eventually("/readyz after the first acknowledgement", Some(&fastpath), Some(&agent), || ready(&agent));
    // Traffic, allowed and denied, so that counters move.
    assert_eq!(split.reach(80, CONNECT), Outcome::Answered);
    assert_eq!(split.reach(81, BLOCKED_AFTER), Outcome::NoAnswer);
    eventually("counters of the traffic", Some(&fastpath), Some(&agent), || {
        let m = parse_prometheus(&agent.get("/metrics").unwrap().1);
        m.iter().any(|(k, v)| {
            k.starts_with("moat_worker_dropped_packets_total{") && k.contains("policy_denied") && *v > 0.0
        }) && m.iter().any(|(k, v)| k.starts_with("moat_conntrack_inserts_total{") && *v >= 2.0)
    });
    let (code, text) = agent.get("/metrics").unwrap();
    assert_eq!(code, 200);
    let m = parse_prometheus(&text);
    let pair = format!("pair=\"{}\"", split.topo.wire());
    let worker = |name: &str| {
        m.iter()
            .find(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains(&pair) && k.contains("queue=\"0\""))
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {name} for the worker in\n{text}"))
    };
    assert!(worker("moat_worker_rx_packets_total") > 0.0);
    assert!(worker("moat_worker_tx_packets_total") > 0.0);
    assert!(worker("moat_worker_rx_bytes_total") > 0.0);
    assert!(worker("moat_worker_tx_bytes_total") > 0.0);
    worker("moat_worker_handoffs_total");
    assert!(worker("moat_conntrack_capacity") > 0.0);
    worker("moat_conntrack_occupancy");
    worker("moat_conntrack_evictions_total");
    worker("moat_conntrack_invalid_total");
    assert_eq!(worker("moat_worker_table_generation"), 1.0);
    for series in [
        "moat_table_generation{}",
        "moat_agent_ready{}",
        "moat_agent_compile_seconds{}",
        "moat_agent_update_latency_seconds_count{}",
        "moat_agent_update_latency_seconds_bucket{le=\"+Inf\"}",
        "moat_agent_source_synced{source=\"manifests\"}",
        "moat_agent_fastpath_connected{}",
    ] {
        assert!(m.contains_key(series), "no {series} in\n{text}");
    }
    assert_eq!(m["moat_table_generation{}"], 1.0);
    assert_eq!(m["moat_agent_ready{}"], 1.0);
    assert_eq!(m["moat_agent_update_latency_seconds_count{}"], 1.0);
    assert!(m["moat_agent_compile_seconds{}"] > 0.0);

    // /status: the stats-file shape, live.
    let st = status(&agent);
    assert_eq!(st["node"], "node-under-test");
    let w = &st["workers"][0];
    assert!(w["rx"].as_u64().unwrap() > 0 && w["dropped"]["policy_denied"].as_u64().unwrap() > 0, "{st:#}");
    assert!(w["conntrack"]["inserts"].as_u64().unwrap() >= 2, "{st:#}");
    agent.stop().unwrap();
    support::stop_moat(fastpath);
}

/// The Kubernetes source through the agent, with kubesim as the API server.
#[test]
fn the_agent_follows_the_kubernetes_api_and_an_outage_keeps_the_last_table() {
    let test = "the_agent_follows_the_kubernetes_api_and_an_outage_keeps_the_last_table";
    let Some((lab, topo)) = support::wire(test, 1) else { return };
    let (c, s) = (&topo.client, &topo.server);
    let _web = TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    // Servers accept TCP 80 only from pods labelled access=granted; the client pod has no such label yet.
    let cluster = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: clients, labels: {{side: clients}}}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: servers, labels: {{side: servers}}}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: clients, labels: {{app: client}}}}\n\
         spec: {{containers: [{{name: c, image: x}}]}}\n\
         status: {{phase: Running, podIP: \"{}\", podIPs: [{{ip: \"{}\"}}]}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: server, namespace: servers, labels: {{app: server}}}}\n\
         spec: {{containers: [{{name: c, image: x}}]}}\n\
         status: {{phase: Running, podIP: \"{}\", podIPs: [{{ip: \"{}\"}}]}}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: web, namespace: servers}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: server}}}}\n  policyTypes: [Ingress]\n  ingress:\n\
         \x20 - from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{access: granted}}}}}}]\n\
         \x20   ports: [{{protocol: TCP, port: 80}}]\n",
        c.ipv4, c.ipv4, s.ipv4, s.ipv4
    );
    let sim = moat_kubesim::KubeSim::start(moat_kubesim::SimConfig::default()).unwrap();
    sim.apply_yaml(&cluster).unwrap();
    let kubeconfig = lab.workdir().join("kubeconfig");
    std::fs::write(&kubeconfig, sim.kubeconfig()).unwrap();
    let socket = lab.workdir().join("control.sock");
    let mut opts = MoatOptions::fastpath(MOAT, &socket).wire(&topo.if_a, &topo.if_b).queues(1);
    if let Ok(mode) = std::env::var("MOAT_E2E_XDP_MODE") {
        opts = opts.xdp_mode(&mode);
    }
    let fastpath = MoatProcess::start(&topo.moat, lab.workdir(), &opts).unwrap();
    let mut agent_opts = AgentOptions::kubernetes(MOAT, &socket, &kubeconfig);
    // Retries every 0.5 s at most, so that the end of the outage is noticed well within the waits.
    agent_opts.extra_args = vec!["--watch-retry-max-ms".into(), "500".into()];
    let agent = AgentProcess::start(lab.workdir(), &agent_opts).unwrap();
    let reach = |wait| probe::tcp_reach(&c.ns, sock(s.ipv4, 80), wait).unwrap();
    eventually("the first table from the API", Some(&fastpath), Some(&agent), || ready(&agent));
    if reach(BLOCKED_AFTER) != Outcome::NoAnswer {
        fail("the client has no access label yet", Some(&fastpath), Some(&agent));
    }

    // A relabel at the API server reaches the dataplane.
    sim.relabel("v1", "Pod", Some("clients"), "client", &[("access", Some("granted"))]).unwrap();
    eventually("the relabelled client is allowed", Some(&fastpath), Some(&agent), || {
        reach(Duration::from_millis(500)) == Outcome::Answered
    });
    let generation = status(&agent)["generation"].as_u64().unwrap();

    // API outage: the agent notices, nothing is published, the last table stays in force.
    sim.outage(true);
    eventually("the agent notices the outage", Some(&fastpath), Some(&agent), || {
        agent.get("/metrics").unwrap().1.contains("moat_agent_last_error{component=\"source\"")
    });
    for _ in 0..3 {
        if reach(CONNECT) != Outcome::Answered {
            fail("the last table must stay in force during an API outage", Some(&fastpath), Some(&agent));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(status(&agent)["generation"].as_u64().unwrap(), generation, "nothing published during the outage");
    assert!(ready(&agent), "an outage does not make the agent unready: the fastpath enforces the last table");

    // The API comes back; a later change still arrives.
    sim.outage(false);
    sim.relabel("v1", "Pod", Some("clients"), "client", &[("access", None)]).unwrap();
    eventually("the access label removed after the outage", Some(&fastpath), Some(&agent), || {
        reach(Duration::from_millis(500)) == Outcome::NoAnswer
    });
    agent.stop().unwrap();
    let stats = support::stop_moat(fastpath);
    assert!(stats.raw["table"]["generation"].as_u64().unwrap() >= 3, "{:#}", stats.raw["table"]);
}
