//! `kubectl moat`: the kubectl plugin. The `moat` binary is the plugin: installed (or linked) as
//! `kubectl-moat` on the `PATH`, kubectl runs it for `kubectl moat …`; `moat kubectl …` does the same.
//!
//! * `explain --from NS/POD --to NS/POD --port N/PROTO`: which tier, policy and rule decide a flow,
//!   on both sides, exactly as moat enforces it. The cluster's objects are read through the same
//!   Kubernetes source the agent uses (`moat_control::source::kube`: every kind moat reads, strict
//!   validation, the first model only once every initial list is complete), then the reference
//!   evaluator explains the flow — the oracle the compiled dataplane is tested against.
//! * `status`: per node, what each moat pod enforces — table generation, readiness, counters —
//!   read from the agent's `/status` endpoint through the API server's pod proxy, so it needs no
//!   network path to the nodes, only RBAC for `pods/proxy` in moat's namespace.
//!
//! The cluster comes from `--kubeconfig`/`--context`, else as kubectl finds it (`KUBECONFIG`,
//! `~/.kube/config`, in-cluster).

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use moat_control::Evaluator;
use moat_control::evaluate::FlowQuery;
use moat_control::model::Protocol;
use moat_control::source::kube::{KubeSource, KubeSourceConfig};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `kubectl moat`: explain moat's policy decisions and show what every node enforces.
#[derive(Debug, Parser)]
#[command(name = "kubectl-moat", version)]
pub struct KubectlCli {
    #[command(flatten)]
    pub args: KubectlArgs,
}

#[derive(Debug, Args)]
pub struct KubectlArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(subcommand)]
    pub command: KubectlCommand,
}

/// Which cluster.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Path to a kubeconfig file (default: as kubectl finds it).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// How long to wait for the API server.
    #[arg(long, global = true, default_value_t = 30)]
    pub timeout_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum KubectlCommand {
    /// Which tier, policy and rule decide a flow between two pods (or addresses).
    Explain(ExplainArgs),
    /// Table generation and counters of moat on every node.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Source: NS/POD or an IP address.
    #[arg(long)]
    pub from: String,
    /// Destination: NS/POD or an IP address.
    #[arg(long)]
    pub to: String,
    /// `PORT/PROTOCOL` (`80/TCP`, `53/UDP`), or a protocol without ports (`ICMP`, `ICMPv6`, a number).
    #[arg(long, default_value = "TCP")]
    pub port: String,
    /// ICMP type (with `--port ICMP` or `ICMPv6`).
    #[arg(long)]
    pub icmp_type: Option<u8>,
    #[arg(long)]
    pub icmp_code: Option<u8>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Namespace moat runs in.
    #[arg(long, short = 'n', default_value = "moat-system")]
    pub namespace: String,
    /// Label selector of moat's pods.
    #[arg(long, short = 'l', default_value = "app.kubernetes.io/name=moat")]
    pub selector: String,
    /// Port of the agent's metrics and status endpoint.
    #[arg(long, default_value_t = 9464)]
    pub port: u16,
    /// Print the nodes' status documents as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: KubectlArgs) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_secs(args.cluster.timeout_secs.max(1));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    let config = runtime.block_on(kube_config(&args.cluster))?;
    match args.command {
        KubectlCommand::Explain(explain_args) => explain(config, explain_args, timeout),
        KubectlCommand::Status(status_args) => runtime.block_on(status(config, status_args, timeout)),
    }
}

async fn kube_config(cluster: &ClusterArgs) -> anyhow::Result<kube::Config> {
    let options = kube::config::KubeConfigOptions { context: cluster.context.clone(), ..Default::default() };
    match &cluster.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.context("kubeconfig")
        }
        None if cluster.context.is_some() => kube::Config::from_kubeconfig(&options).await.context("kubeconfig"),
        None => kube::Config::infer().await.context("finding the cluster (KUBECONFIG, ~/.kube/config, in-cluster)"),
    }
}

/// `80/TCP` → (TCP, Some(80)); `ICMP` → (ICMP, None).
fn parse_port(spec: &str) -> anyhow::Result<(Protocol, Option<u16>)> {
    let (port, protocol) = match spec.split_once('/') {
        Some((port, protocol)) => {
            let port: u16 = port.parse().with_context(|| format!("--port {spec:?}: {port:?} is not a port number"))?;
            (Some(port), protocol)
        }
        None => match spec.parse::<u16>() {
            Ok(port) => (Some(port), "TCP"),
            Err(_) => (None, spec),
        },
    };
    let protocol = Protocol::parse(protocol).with_context(|| {
        format!("--port {spec:?}: unknown protocol {protocol:?} (TCP, UDP, SCTP, ICMP, ICMPv6, 1-255)")
    })?;
    Ok((protocol, port))
}

fn explain(config: kube::Config, args: ExplainArgs, timeout: Duration) -> anyhow::Result<ExitCode> {
    let (protocol, dst_port) = parse_port(&args.port)?;
    let (handle, mut updates) = KubeSource::start_thread(Some(config), KubeSourceConfig::default())
        .context("starting the Kubernetes source")?;
    let first = updates.blocking_next(timeout);
    let status = handle.status();
    handle.stop();
    let update = match first {
        Ok(update) => update,
        Err(err) => {
            let missing: Vec<String> = status
                .kinds
                .values()
                .filter(|k| k.served && !k.listed)
                .map(|k| format!("{} {}", k.api_version, k.last_error.as_deref().unwrap_or("not listed yet")))
                .collect();
            bail!("no complete view of the cluster within {timeout:?} ({err}); not listed: {}", missing.join("; "))
        }
    };
    for problem in update.problems.iter() {
        eprintln!("warning: {problem}");
    }
    let evaluator = Evaluator::new(&update.snapshot.model);
    let query = FlowQuery {
        src: args.from,
        dst: args.to,
        protocol,
        dst_port,
        src_port: None,
        icmp_type: args.icmp_type,
        icmp_code: args.icmp_code,
    };
    match evaluator.explain(&query) {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("error: {err}");
            Ok(ExitCode::from(1))
        }
    }
}

async fn status(config: kube::Config, args: StatusArgs, timeout: Duration) -> anyhow::Result<ExitCode> {
    use k8s_openapi::api::core::v1::Pod;
    let client = kube::Client::try_from(config).context("Kubernetes client")?;
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &args.namespace);
    let list = tokio::time::timeout(timeout, pods.list(&kube::api::ListParams::default().labels(&args.selector)))
        .await
        .context("listing moat's pods: timed out")?
        .with_context(|| format!("listing pods {} in namespace {}", args.selector, args.namespace))?;
    if list.items.is_empty() {
        eprintln!("no pods match {} in namespace {}", args.selector, args.namespace);
        return Ok(ExitCode::from(1));
    }
    let mut rows = Vec::new();
    let mut failed = false;
    for pod in &list.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| "-".into());
        let path = format!("/api/v1/namespaces/{}/pods/{name}:{}/proxy/status", args.namespace, args.port);
        let request = http::Request::get(&path).body(Vec::new()).context("building the proxy request")?;
        let answer = tokio::time::timeout(timeout, client.request_text(request)).await;
        let document = match answer {
            Ok(Ok(text)) => serde_json::from_str::<Value>(&text).map_err(|e| format!("not a status document: {e}")),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        failed |= document.is_err();
        rows.push((node, name, document));
    }
    if args.json {
        for (node, pod, document) in &rows {
            let line = match document {
                Ok(doc) => serde_json::json!({"node": node, "pod": pod, "status": doc}),
                Err(err) => serde_json::json!({"node": node, "pod": pod, "error": err}),
            };
            println!("{line}");
        }
    } else {
        print!("{}", status_table(&rows));
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// One line per node: generation, readiness, traffic and drops summed over workers, tracked flows.
fn status_table(rows: &[(String, String, Result<Value, String>)]) -> String {
    let mut out = format!(
        "{:<20} {:<28} {:>10} {:<6} {:>12} {:>12} {:>10} {:>9}  {}\n",
        "NODE", "POD", "GENERATION", "READY", "RX", "TX", "DROPPED", "FLOWS", "LAST ERROR"
    );
    for (node, pod, document) in rows {
        let line = match document {
            Ok(doc) => {
                let workers = doc["workers"].as_array().cloned().unwrap_or_default();
                let sum = |f: &dyn Fn(&Value) -> u64| workers.iter().map(f).sum::<u64>();
                let dropped =
                    sum(&|w| w["dropped"].as_object().map_or(0, |d| d.values().filter_map(Value::as_u64).sum()));
                let flows = sum(&|w| w["conntrack"]["occupancy"].as_u64().unwrap_or(0));
                let generation = doc["table"]["generation"].as_u64().map_or("-".to_owned(), |g| g.to_string());
                let ready = match doc["ready"].as_bool() {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                };
                let error = doc["table"]["last_reload_error"].as_str().unwrap_or("");
                format!(
                    "{node:<20} {pod:<28} {generation:>10} {ready:<6} {:>12} {:>12} {dropped:>10} {flows:>9}  {error}\n",
                    sum(&|w| w["rx"].as_u64().unwrap_or(0)),
                    sum(&|w| w["tx"].as_u64().unwrap_or(0)),
                )
            }
            Err(err) => format!("{node:<20} {pod:<28} {:>10} {:<6} unreachable: {err}\n", "-", "-"),
        };
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn port_specs_parse_like_kubectl_writes_them() {
        assert_eq!(parse_port("80/TCP").unwrap(), (Protocol::Tcp, Some(80)));
        assert_eq!(parse_port("53/udp").unwrap(), (Protocol::Udp, Some(53)));
        assert_eq!(parse_port("443").unwrap(), (Protocol::Tcp, Some(443)));
        assert_eq!(parse_port("ICMP").unwrap().1, None);
        assert!(parse_port("http/TCP").unwrap_err().to_string().contains("not a port number"));
        assert!(parse_port("80/QUIC").unwrap_err().to_string().contains("unknown protocol"));
    }

    #[test]
    fn the_status_table_sums_workers_and_shows_unreachable_nodes() {
        let doc = json!({
            "ready": true,
            "table": {"generation": 7},
            "workers": [
                {"rx": 10, "tx": 8, "dropped": {"policy_denied": 2}, "conntrack": {"occupancy": 3}},
                {"rx": 5, "tx": 5, "dropped": {}, "conntrack": {"occupancy": 1}},
            ],
        });
        let rows = vec![
            ("node-a".to_owned(), "moat-abc".to_owned(), Ok(doc)),
            ("node-b".to_owned(), "moat-def".to_owned(), Err("connection refused".to_owned())),
        ];
        let table = status_table(&rows);
        let a = table.lines().find(|l| l.starts_with("node-a")).unwrap();
        let cells: Vec<&str> = a.split_whitespace().collect();
        assert_eq!(&cells[2..8], ["7", "yes", "15", "13", "2", "4"]);
        assert!(table.lines().any(|l| l.starts_with("node-b") && l.contains("unreachable: connection refused")));
    }
}
