//! Random policy models and flows for the equivalence tests (compiled vs evaluator, incremental
//! vs full compile): namespaces, pods with labels, named ports, IPv4 and IPv6 (sometimes
//! colliding), network sets, a host endpoint, tiers, Kubernetes and Calico policies with every
//! rule field, and flows aimed at range edges. Each resource has its own generator so change
//! sequences can be built from the same distribution.
#![allow(clippy::cast_possible_truncation)]

use moat_control::model::{Action, IcmpMatch, Port, Protocol};
use moat_control::resolve::Resolved;
use moat_fastpath::classify::FlowKey;
use std::fmt::Write as _;
use std::net::IpAddr;

/// SplitMix64: deterministic, seedable, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

pub const APPS: [&str; 4] = ["web", "db", "api", "cache"];
pub const NAMED: [(&str, &str, u16); 5] =
    [("http", "TCP", 80), ("http", "TCP", 8080), ("dns", "UDP", 53), ("metrics", "TCP", 9090), ("sctp-x", "SCTP", 80)];

pub struct Gen {
    pub rng: Rng,
    pub namespaces: Vec<String>,
    pub pod_ips: Vec<IpAddr>,
    pub other_ips: Vec<IpAddr>,
    pub has_host: bool,
}

impl Gen {
    pub fn selector(&mut self) -> String {
        let r = &mut self.rng;
        match r.below(9) {
            0 => "all()".into(),
            1 => format!("app == '{}'", r.pick(&APPS)),
            2 => format!("app in {{'{}', '{}'}}", r.pick(&APPS), r.pick(&APPS)),
            3 => format!("app != '{}'", r.pick(&APPS)),
            4 => "has(tier)".into(),
            5 => format!("app == '{}' && tier == 'fe'", r.pick(&APPS)),
            6 => format!("kind == '{}'", r.pick(&["external", "partner"])),
            7 => "node == 'n1'".into(),
            _ => format!("!has(tier) || app == '{}'", r.pick(&APPS)),
        }
    }

    pub fn net(&mut self) -> String {
        format!("'{}'", self.net_text())
    }

    pub fn net_text(&mut self) -> String {
        let r = &mut self.rng;
        let v4 = !r.chance(25);
        if v4 {
            match r.below(6) {
                0 => "0.0.0.0/0".into(),
                1 => format!("10.0.{}.0/24", r.below(2)),
                2 => format!("10.0.{}.{}/32", r.below(2), r.below(12)),
                3 => "10.0.0.0/23".into(),
                4 => format!("10.0.0.{}/30", r.below(8) * 4),
                _ => format!("203.0.113.{}/{}", r.below(4) * 64, 26),
            }
        } else {
            match r.below(4) {
                0 => "::/0".into(),
                1 => format!("fd00::{:x}/128", r.below(12)),
                2 => "fd00::/120".into(),
                _ => "2001:db8::/64".into(),
            }
        }
    }

    pub fn port(&mut self) -> String {
        let r = &mut self.rng;
        match r.below(7) {
            0 => "80".into(),
            1 => "53".into(),
            2 => "1000:2000".into(),
            3 => "0:79".into(),
            4 => "65535".into(),
            5 => format!("'{}'", r.pick(&NAMED).0),
            _ => "8080:9090".into(),
        }
    }

    /// A Calico entity rule (source or destination).
    pub fn entity(&mut self, namespaced: bool, with_ports: bool) -> String {
        let mut f = Vec::new();
        if self.rng.chance(25) {
            let n: Vec<String> = (0..1 + self.rng.below(2)).map(|_| self.net()).collect();
            f.push(format!("nets: [{}]", n.join(", ")));
        }
        if self.rng.chance(15) {
            f.push(format!("notNets: [{}]", self.net()));
        }
        if self.rng.chance(40) {
            f.push(format!("selector: \"{}\"", self.selector()));
        }
        if self.rng.chance(15) {
            f.push(format!("notSelector: \"{}\"", self.selector()));
        }
        if self.rng.chance(20) {
            let ns = match self.rng.below(4) {
                0 => "all()".into(),
                1 if !namespaced => "global()".into(),
                _ => format!("env == '{}'", self.rng.pick(&["prod", "dev"])),
            };
            f.push(format!("namespaceSelector: \"{ns}\""));
        }
        if self.rng.chance(8) {
            f.push("serviceAccounts: {names: [default]}".into());
        }
        if with_ports && self.rng.chance(50) {
            let p: Vec<String> = (0..1 + self.rng.below(2)).map(|_| self.port()).collect();
            f.push(format!("ports: [{}]", p.join(", ")));
        }
        if with_ports && self.rng.chance(20) {
            let p: Vec<String> = (0..1 + self.rng.below(3)).map(|_| self.port()).collect();
            f.push(format!("notPorts: [{}]", p.join(", ")));
        }
        format!("{{{}}}", f.join(", "))
    }

    pub fn calico_rule(&mut self, namespaced: bool) -> String {
        let action = *self.rng.pick(&["Allow", "Allow", "Deny", "Deny", "Pass", "Log"]);
        let mut f = vec![format!("action: {action}")];
        let proto = *self.rng.pick(&["", "", "TCP", "TCP", "UDP", "SCTP", "ICMP", "ICMPv6", "UDPLite", "47"]);
        if !proto.is_empty() {
            f.push(format!("protocol: {proto}"));
        } else if self.rng.chance(15) {
            f.push(format!("notProtocol: {}", self.rng.pick(&["TCP", "UDP", "ICMP"])));
        }
        if (proto == "ICMP" || proto == "ICMPv6") && self.rng.chance(60) {
            let field = if self.rng.chance(50) { "icmp" } else { "notICMP" };
            let t = *self.rng.pick(&[0u8, 3, 8, 128, 255]);
            if self.rng.chance(50) {
                f.push(format!("{field}: {{type: {t}, code: {}}}", self.rng.pick(&[0u8, 1, 255])));
            } else {
                f.push(format!("{field}: {{type: {t}}}"));
            }
        }
        let with_ports = matches!(proto, "TCP" | "UDP" | "SCTP" | "UDPLite");
        if self.rng.chance(50) {
            let src_ports = with_ports && self.rng.chance(30);
            f.push(format!("source: {}", self.entity(namespaced, src_ports)));
        }
        if self.rng.chance(60) {
            f.push(format!("destination: {}", self.entity(namespaced, with_ports)));
        }
        format!("{{{}}}", f.join(", "))
    }

    pub fn k8s_peer(&mut self) -> String {
        match self.rng.below(5) {
            0 => format!("{{podSelector: {{matchLabels: {{app: {}}}}}}}", self.rng.pick(&APPS)),
            1 => format!("{{namespaceSelector: {{matchLabels: {{env: {}}}}}}}", self.rng.pick(&["prod", "dev"])),
            2 => format!(
                "{{namespaceSelector: {{}}, podSelector: {{matchExpressions: [{{key: app, operator: In, values: [{}]}}]}}}}",
                self.rng.pick(&APPS)
            ),
            3 => "{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}}".into(),
            _ => "{ipBlock: {cidr: '::/0'}}".into(),
        }
    }

    pub fn k8s_policy(&mut self, name: &str, staged: bool) -> String {
        let ns = self.rng.pick(&self.namespaces).clone();
        let sel = if self.rng.chance(30) {
            "{}".to_string()
        } else {
            format!("{{matchLabels: {{app: {}}}}}", self.rng.pick(&APPS))
        };
        let mut types = Vec::new();
        let mut body = String::new();
        for (dir, peer) in [("ingress", "from"), ("egress", "to")] {
            if !self.rng.chance(60) {
                continue;
            }
            types.push(if dir == "ingress" { "Ingress" } else { "Egress" });
            let n = self.rng.below(3);
            let mut rules = Vec::new();
            for _ in 0..n {
                let mut r = Vec::new();
                if self.rng.chance(70) {
                    let peers: Vec<String> = (0..1 + self.rng.below(2)).map(|_| self.k8s_peer()).collect();
                    r.push(format!("{peer}: [{}]", peers.join(", ")));
                }
                if self.rng.chance(60) {
                    let p = match self.rng.below(4) {
                        0 => "{port: 80}".to_string(),
                        1 => format!("{{port: {}, protocol: UDP}}", self.rng.pick(&["53", "dns"])),
                        2 => "{port: 1000, endPort: 2000}".into(),
                        _ => format!("{{port: {}}}", self.rng.pick(&["http", "metrics"])),
                    };
                    r.push(format!("ports: [{p}]"));
                }
                rules.push(format!("{{{}}}", r.join(", ")));
            }
            let _ = writeln!(body, "  {dir}: [{}]", rules.join(", "));
        }
        let kind = if staged {
            "projectcalico.org/v3\nkind: StagedKubernetesNetworkPolicy"
        } else {
            "networking.k8s.io/v1\nkind: NetworkPolicy"
        };
        format!(
            "apiVersion: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  podSelector: {sel}\n  policyTypes: [{}]\n{body}",
            types.join(", ")
        )
    }

    pub fn calico_policy(&mut self, name: &str, tiers: &[String]) -> String {
        let global = self.rng.chance(50);
        let tier = self.rng.pick(tiers).clone();
        let full = if tier == "default" { name.to_string() } else { format!("{tier}.{name}") };
        let staged = self.rng.chance(10);
        let host_stage = global && self.has_host && self.rng.chance(25);
        let (kind, meta) = match (global, staged) {
            (true, false) => ("GlobalNetworkPolicy", format!("{{name: {full}}}")),
            (true, true) => ("StagedGlobalNetworkPolicy", format!("{{name: {full}}}")),
            (false, s) => {
                let ns = self.rng.pick(&self.namespaces).clone();
                (if s { "StagedNetworkPolicy" } else { "NetworkPolicy" }, format!("{{name: {full}, namespace: {ns}}}"))
            }
        };
        let mut spec = vec![format!("tier: {tier}")];
        if self.rng.chance(70) {
            spec.push(format!("order: {}", self.rng.pick(&[1, 10, 100, 100, 1000])));
        }
        let sel = if host_stage { "node == 'n1'".to_string() } else { self.selector() };
        spec.push(format!("selector: \"{sel}\""));
        if global && self.rng.chance(15) {
            spec.push(format!("namespaceSelector: \"env == '{}'\"", self.rng.pick(&["prod", "dev"])));
        }
        let mut types = Vec::new();
        let pre_dnat = host_stage && self.rng.chance(50);
        if host_stage {
            spec.push("applyOnForward: true".into());
            spec.push(if pre_dnat { "preDNAT: true".into() } else { "doNotTrack: true".into() });
        }
        for dir in ["ingress", "egress"] {
            if !self.rng.chance(65) || (pre_dnat && dir == "egress") {
                continue;
            }
            types.push(if dir == "ingress" { "Ingress" } else { "Egress" });
            let rules: Vec<String> = (0..self.rng.below(4)).map(|_| self.calico_rule(!global)).collect();
            spec.push(format!("{dir}: [{}]", rules.join(", ")));
        }
        if types.is_empty() {
            types.push("Ingress");
        }
        spec.push(format!("types: [{}]", types.join(", ")));
        format!("apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {meta}\nspec: {{{}}}\n", spec.join(", "))
    }

    pub fn new(seed: u64) -> Gen {
        Gen { rng: Rng(seed), namespaces: vec![], pod_ips: vec![], other_ips: vec![], has_host: false }
    }

    pub fn namespace_doc(&mut self, ns: &str) -> String {
        let env = self.rng.pick(&["prod", "dev"]);
        let extra = if self.rng.chance(20) { ", team: a" } else { "" };
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{env: {env}{extra}}}}}\n")
    }

    /// Pod `p{i}` in a random namespace; its addresses are added to `pod_ips`.
    pub fn pod_doc(&mut self, i: usize) -> String {
        let ns = self.rng.pick(&self.namespaces).clone();
        self.pod_in(i, &ns)
    }

    pub fn pod_in(&mut self, i: usize, ns: &str) -> String {
        let mut labels = vec![format!("app: {}", self.rng.pick(&APPS))];
        if self.rng.chance(40) {
            labels.push("tier: fe".into());
        }
        // Mostly distinct addresses; sometimes a collision (the first owner wins).
        let v4: IpAddr = format!("10.0.{}.{}", self.rng.below(2), if self.rng.chance(10) { 1 } else { i % 250 + 1 })
            .parse()
            .unwrap();
        let mut ips = vec![v4];
        if self.rng.chance(30) {
            ips.push(format!("fd00::{:x}", i + 1).parse().unwrap());
        }
        self.pod_ips.extend(ips.iter().copied());
        let ports: Vec<String> = (0..self.rng.below(3))
            .map(|_| {
                let (n, p, port) = *self.rng.pick(&NAMED);
                format!("{{name: {n}, containerPort: {port}, protocol: {p}}}")
            })
            .collect();
        let sa = if self.rng.chance(15) { "spec: {serviceAccountName: robot, " } else { "spec: {" };
        let ips_yaml: Vec<String> = ips.iter().map(|ip| format!("{{ip: '{ip}'}}")).collect();
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: {ns}, labels: {{{}}}}}\n{sa}containers: [{{name: c, ports: [{}]}}]}}\nstatus: {{podIPs: [{}]}}\n",
            labels.join(", "),
            ports.join(", "),
            ips_yaml.join(", ")
        )
    }

    /// Network set `i`: global (`gs{i}`) or namespaced (`s{i}`).
    pub fn netset_doc(&mut self, i: usize) -> String {
        let nets: Vec<String> = (0..1 + self.rng.below(2)).map(|_| self.net()).collect();
        let kind = self.rng.pick(&["external", "partner"]);
        if self.rng.chance(50) {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: gs{i}, labels: {{kind: {kind}}}}}\nspec: {{nets: [{}]}}\n",
                nets.join(", ")
            )
        } else {
            let ns = self.rng.pick(&self.namespaces).clone();
            format!(
                "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {{name: s{i}, namespace: {ns}, labels: {{kind: {kind}}}}}\nspec: {{nets: [{}]}}\n",
                nets.join(", ")
            )
        }
    }

    pub fn host_doc(&mut self) -> String {
        let profiles = if self.rng.chance(50) { "[projectcalico-default-allow]" } else { "[]" };
        let app = self.rng.pick(&APPS);
        let ips = if self.rng.chance(80) { "[192.168.50.1, 'fd00::50']" } else { "[192.168.50.2, '10.0.0.1']" };
        format!(
            "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: n1-eth0, labels: {{node: n1, app: {app}}}}}\nspec: {{node: n1, interfaceName: eth0, expectedIPs: {ips}, profiles: {profiles}, ports: [{{name: http, port: 8080, protocol: TCP}}]}}\n"
        )
    }

    pub fn tier_doc(&mut self, name: &str, order: usize) -> String {
        let default = if self.rng.chance(40) { ", defaultAction: Pass" } else { "" };
        format!(
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: {name}}}\nspec: {{order: {order}{default}}}\n"
        )
    }

    /// Policy `k{i}` (Kubernetes) or `c{i}` (Calico), at random.
    pub fn policy_doc(&mut self, i: usize, tiers: &[String]) -> String {
        if self.rng.chance(30) {
            let staged = self.rng.chance(10);
            self.k8s_policy(&format!("k{i}"), staged)
        } else {
            self.calico_policy(&format!("c{i}"), tiers)
        }
    }

    pub fn model(&mut self) -> String {
        let mut docs = Vec::new();
        let nns = 1 + self.rng.below(3);
        self.namespaces = (0..nns).map(|i| format!("ns{i}")).collect();
        for ns in self.namespaces.clone() {
            docs.push(self.namespace_doc(&ns));
        }
        let npods = 2 + self.rng.below(7);
        self.pod_ips.clear();
        for i in 0..npods {
            docs.push(self.pod_doc(i));
        }
        for i in 0..self.rng.below(3) {
            docs.push(self.netset_doc(i));
        }
        self.has_host = self.rng.chance(40);
        if self.has_host {
            docs.push(self.host_doc());
        }
        let mut tiers = vec!["default".to_string()];
        for (i, t) in ["first", "second"].iter().enumerate().take(self.rng.below(3)) {
            docs.push(self.tier_doc(t, (i + 1) * 10));
            tiers.push((*t).to_string());
        }
        for i in 0..1 + self.rng.below(6) {
            docs.push(self.policy_doc(i, &tiers));
        }
        self.other_ips = [
            "10.0.0.0",
            "10.0.1.255",
            "10.0.2.0",
            "203.0.113.0",
            "203.0.113.63",
            "203.0.113.64",
            "0.0.0.0",
            "255.255.255.255",
            "192.168.50.1",
            "192.168.50.2",
            "::",
            "fd00::",
            "fd00::ff",
            "fd00::100",
            "2001:db8::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fd00::50",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        docs.join("---\n")
    }

    /// Rules past the validator: the compiler must still agree with the evaluator.
    pub fn mutate(&mut self, r: &mut Resolved) {
        for t in &mut r.tiers {
            for p in &mut t.policies {
                for rule in p.ingress.iter_mut().chain(p.egress.iter_mut()) {
                    if !self.rng.chance(25) {
                        continue;
                    }
                    match self.rng.below(8) {
                        0 => rule.protocol = None,
                        1 => rule.protocol = Some(Protocol::Number(self.rng.below(256) as u8)),
                        2 => rule.not_icmp = Some(IcmpMatch { icmp_type: Some(8), code: None }),
                        3 => rule.icmp = Some(IcmpMatch { icmp_type: Some(*self.rng.pick(&[0u8, 8])), code: Some(0) }),
                        4 => rule.ip_version = Some(*self.rng.pick(&[4u8, 6])),
                        5 => rule.destination.not_ports.push(Port::Named("http".into())),
                        6 => rule.source.ports.push(Port::Range { min: 0, max: 0 }),
                        _ => rule.action = *self.rng.pick(&[Action::Allow, Action::Deny, Action::Pass, Action::Log]),
                    }
                }
            }
        }
    }

    pub fn flow(&mut self) -> FlowKey {
        let pool: Vec<IpAddr> = self.pod_ips.iter().chain(&self.other_ips).copied().collect();
        let src = *self.rng.pick(&pool);
        let same: Vec<IpAddr> = pool.iter().copied().filter(|ip| ip.is_ipv4() == src.is_ipv4()).collect();
        let dst = *self.rng.pick(&same);
        let protocol = *self.rng.pick(&[6u8, 6, 6, 17, 17, 132, 1, 58, 136, 47, 0, 255]);
        let port = |r: &mut Rng| {
            *r.pick(&[0u16, 1, 53, 79, 80, 81, 999, 1000, 1500, 2000, 2001, 8080, 9090, 9091, 65534, 65535])
        };
        let (src_port, dst_port) =
            if [6, 17, 132].contains(&protocol) { (port(&mut self.rng), port(&mut self.rng)) } else { (0, 0) };
        let icmp = if (protocol == 1 || protocol == 58) && !self.rng.chance(15) {
            Some((*self.rng.pick(&[0u8, 3, 8, 128, 255]), *self.rng.pick(&[0u8, 1, 255])))
        } else {
            None
        };
        FlowKey { src, dst, protocol, src_port, dst_port, icmp }
    }
}
