//! Named network namespaces, the [`Lab`] that owns them, and running code inside them.

use anyhow::{Context, Result, bail, ensure};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where `ip netns` keeps its namespace handles.
const NETNS_DIR: &str = "/run/netns";

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// Labs created by this process so far: makes names unique per process.
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `cmd` with no stdin, and returns its stdout; fails with the command line, exit status and stderr.
pub fn run_checked(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot start `{line}`"))?;
    if !out.status.success() {
        bail!("`{line}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `program arg1 arg2 …` for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

fn ip(args: &[&str]) -> Result<String> {
    run_checked(Command::new("ip").args(args))
}

/// A network namespace created by a [`Lab`]. Only a name: cheap to clone; the lab that created it deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// The name `ip netns` knows it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace handle, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// `ip netns exec <name> <program>`: add arguments and run it as any `Command`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args…` inside the namespace and returns its stdout; fails with its stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        run_checked(self.command(program).args(args)).with_context(|| format!("in namespace {}", self.name))
    }

    /// Runs `ip -n <name> args…` (iproute2 switches namespace itself; no extra process).
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run_checked(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Sets a sysctl of this namespace, e.g. `("net/ipv6/conf/all/disable_ipv6", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = Path::new("/proc/sys").join(key);
        let value = value.to_owned();
        // /proc/sys/net resolves against the network namespace of the thread that opens it.
        self.run_in(move || std::fs::write(&path, value).with_context(|| format!("cannot write {}", path.display())))?
            .with_context(|| format!("sysctl {key} in namespace {}", self.name))
    }

    fn open(&self) -> Result<File> {
        File::open(self.path()).with_context(|| format!("cannot open namespace handle {}", self.path().display()))
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its result.
    ///
    /// A panic in `f` is resumed on the calling thread (in a test it is the assertion that failed).
    pub fn run_in<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let handle = self.open()?;
        let name = self.name.clone();
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name(format!("netns:{name}"))
                .spawn_scoped(scope, move || -> Result<T> {
                    enter(&handle, &name)?;
                    Ok(f())
                })
                .context("cannot spawn a namespace thread")?;
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` on a new thread inside this namespace and returns at once; [`NsThread::join`] gets the result.
    pub fn spawn_in<F, T>(&self, f: F) -> Result<NsThread<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let handle = self.open()?;
        let name = self.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("netns:{name}"))
            .spawn(move || -> Result<T> {
                enter(&handle, &name)?;
                Ok(f())
            })
            .context("cannot spawn a namespace thread")?;
        Ok(NsThread { thread })
    }
}

/// Moves the calling thread (only it: a network namespace is per thread) into the namespace behind `handle`.
fn enter(handle: &File, name: &str) -> Result<()> {
    setns(handle, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into network namespace {name}"))
}

/// A thread running inside a namespace, started by [`Netns::spawn_in`].
#[derive(Debug)]
pub struct NsThread<T> {
    thread: JoinHandle<Result<T>>,
}

impl<T> NsThread<T> {
    /// Waits for the thread; a panic in it is resumed on the caller.
    pub fn join(self) -> Result<T> {
        match self.thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Owner of a set of namespaces (and the veths inside them) and of a scratch directory; deletes all of it on drop.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    index: u32,
    namespaces: Vec<Netns>,
    workdir: PathBuf,
}

impl Lab {
    /// A lab whose names start with [`super::DEFAULT_PREFIX`].
    pub fn new() -> Result<Self> {
        Self::with_prefix(super::DEFAULT_PREFIX)
    }

    /// A lab whose names start with `prefix` (lowercase letters and digits).
    pub fn with_prefix(prefix: &str) -> Result<Self> {
        ensure!(
            !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "lab prefix {prefix:?} must be lowercase letters and digits"
        );
        let index = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{prefix}-{}-{index}", std::process::id());
        let workdir = std::env::temp_dir().join(&tag);
        // A directory of that name can only be debris of an earlier process with the same pid.
        if workdir.exists() {
            std::fs::remove_dir_all(&workdir).with_context(|| format!("cannot clear {}", workdir.display()))?;
        }
        std::fs::create_dir_all(&workdir).with_context(|| format!("cannot create {}", workdir.display()))?;
        Ok(Self { tag, index, namespaces: Vec::new(), workdir })
    }

    /// `<prefix>-<pid>-<n>`: the start of every name this lab creates.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The per-process number of this lab (0, 1, …): use it to make addresses unique per lab.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// A scratch directory (rule files, ready/stats files, logs) removed with the lab.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// Namespaces created so far, in creation order.
    pub fn namespaces(&self) -> &[Netns] {
        &self.namespaces
    }

    /// Creates namespace `<tag>-<role>` with its loopback up.
    pub fn add_netns(&mut self, role: &str) -> Result<Netns> {
        ensure!(
            !role.is_empty() && role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "namespace role {role:?} must be letters, digits, '-' or '_'"
        );
        let ns = Netns { name: format!("{}-{role}", self.tag) };
        ip(&["netns", "add", ns.name()]).with_context(|| format!("creating network namespace {}", ns.name()))?;
        // Registered before anything else can fail, so that drop deletes it.
        self.namespaces.push(ns.clone());
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates a veth pair with one end `a_if` in `a` and the other `b_if` in `b`, both with `queues` TX and RX
    /// queues (both ends need the same count: native XDP on a veth requires at least as many RX queues as its peer
    /// has TX queues). Both ends stay down.
    pub fn add_veth(&self, a: &Netns, a_if: &str, b: &Netns, b_if: &str, queues: u32) -> Result<()> {
        for name in [a_if, b_if] {
            check_ifname(name)?;
        }
        ensure!(queues >= 1, "a veth needs at least one queue");
        let q = queues.to_string();
        ip(&[
            "link",
            "add",
            a_if,
            "netns",
            a.name(),
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])
        .with_context(|| format!("creating veth {}:{a_if} <-> {}:{b_if}", a.name(), b.name()))?;
        Ok(())
    }

    /// Writes `files` (name, content) into a new directory `<workdir>/<dir>` and returns its path.
    pub fn write_files(&self, dir: &str, files: &[(&str, &str)]) -> Result<PathBuf> {
        let path = self.workdir.join(dir);
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        for (name, content) in files {
            let file = path.join(name);
            std::fs::write(&file, content).with_context(|| format!("cannot write {}", file.display()))?;
        }
        Ok(path)
    }

    /// Deletes everything now and reports what could not be deleted (drop does the same, printing errors).
    pub fn teardown(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        while let Some(ns) = self.namespaces.pop() {
            if let Err(err) = delete_netns(ns.name()) {
                errors.push(format!("{err:#}"));
            }
        }
        if self.workdir.exists() {
            if let Err(err) = std::fs::remove_dir_all(&self.workdir) {
                errors.push(format!("cannot remove {}: {err}", self.workdir.display()));
            }
        }
        if errors.is_empty() { Ok(()) } else { bail!("lab {} teardown: {}", self.tag, errors.join("; ")) }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(err) = self.teardown() {
            eprintln!("moat lab: {err:#}");
        }
    }
}

fn check_ifname(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty() && name.len() <= IFNAME_MAX && !name.contains(['/', ':', ' ']) && name != "." && name != "..",
        "{name:?} is not a valid interface name (1..={IFNAME_MAX} bytes, no '/', ':' or space)"
    );
    Ok(())
}

/// Kills what still runs in namespace `name`, then deletes it (its interfaces go with it).
fn delete_netns(name: &str) -> Result<()> {
    let pids = ip(&["netns", "pids", name]).unwrap_or_default();
    let me = std::process::id();
    let mut victims = Vec::new();
    for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        if u32::try_from(pid).is_ok_and(|p| p == me) {
            continue;
        }
        // Ignoring ESRCH: the process may have exited since the listing.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        victims.push(pid);
    }
    // Give killed processes a moment to go, so that their interfaces (XDP programs, AF_XDP sockets) go with the
    // namespace instead of lingering in an unnamed one.
    let deadline = Instant::now() + Duration::from_secs(2);
    while victims.iter().any(|pid| Path::new(&format!("/proc/{pid}")).exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    ip(&["netns", "del", name]).with_context(|| format!("deleting network namespace {name}"))?;
    Ok(())
}

/// Whether `pid` is a running process (a zombie, killed but not yet reaped, counts as gone).
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // "pid (comm) S …": the state follows the last ')', since comm may itself contain parentheses.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Deletes namespaces (and scratch directories) named `<prefix>-<pid>-…` whose process `<pid>` no longer exists:
/// the debris of runs that were killed before their labs could clean up. Live labs of other processes are left
/// alone. Returns the namespaces deleted.
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let stale = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else { return false };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { return false };
        pid != std::process::id() && !process_alive(pid)
    };
    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if stale(&name) {
                delete_netns(&name).with_context(|| format!("removing stale namespace {name}"))?;
                removed.push(name);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if stale(&name) && entry.path().is_dir() {
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing stale directory {}", entry.path().display()))?;
            }
        }
    }
    Ok(removed)
}
