use super::classbench::*;
use super::*;
use std::path::Path;

#[test]
#[ignore]
fn dev_classbench_stats() {
    let dir = Path::new("/work/shared/classbench");
    let sets = std::env::var("SETS").unwrap_or("lyxocs_ruleSet/acl1_1k".into());
    for name in sets.split(',') {
        let filters = read_filters(&dir.join(name)).unwrap();
        let rules = to_rules(&filters);
        let t = std::time::Instant::now();
        let mut o = BuildOptions::default();
        let env = |k: &str| std::env::var(k).ok().map(|v| v.parse::<f64>().unwrap());
        if let Some(v) = env("BINTH") { o.binth = v as usize; }
        if let Some(v) = env("SPFAC") { o.spfac = v; }
        if let Some(v) = env("MAXB") { o.max_bits = v as u32; }
        if let Some(v) = env("ROOTB") { o.root_max_bits = v as u32; }
        if let Some(v) = env("SMALL") { o.small_prefix = v as u32; }
        if let Some(v) = env("MERGE") { o.merge_below = v as usize; }
        if let Some(v) = env("LEAFMAX") { o.leaf_max = v as usize; }
        let c = Classifier::build_with(&rules, &o).unwrap();
        let build = t.elapsed();
        let tp = dir.join(format!("{name}_trace"));
        let trace = if tp.exists() { read_trace(&tp).unwrap() } else { read_trace(&dir.join(format!("{name}_trace.GENERATED"))).unwrap() };
        let mut trace = trace;
        // shuffle
        let mut s = 0x9e3779b97f4a7c15u64;
        for i in (1..trace.len()).rev() { s ^= s << 13; s ^= s >> 7; s ^= s << 17; trace.swap(i, (s % (i as u64 + 1)) as usize); }
        let keys: Vec<[u32; 8]> = trace.iter().map(|h| Classifier::ipv4_key(&h.key()).unwrap()).collect();
        let mut out = vec![0u32; keys.len()];
        let iters = 5;
        let t = std::time::Instant::now();
        for _ in 0..iters { c.lookup_batch_ipv4(&keys, &mut out); }
        let ns = t.elapsed().as_nanos() as f64 / (iters * keys.len()) as f64;
        let fk: Vec<FlowKey> = trace.iter().map(|h| h.key()).collect();
        let mut single = 0u64;
        let t = std::time::Instant::now();
        for k in &fk { single = single.wrapping_add(c.lookup(k).map_or(0, |m| m.rule_index as u64)); }
        let ns1 = t.elapsed().as_nanos() as f64 / fk.len() as f64;
        let lin = LinearScan::new(&filters);
        let check = std::env::var("CHECK").is_ok();
        let mut mism = 0;
        if check { for (h, &o) in trace.iter().zip(&out) { let want = lin.first_match(h).unwrap_or(u32::MAX); if want != o { mism += 1; } } }
        let (mut st, mut bl, mut tr) = (0, 0, 0);
        for k in &fk { let (a, b, c2) = c.cost(k); st += a; bl += b; tr += c2; }
        let n = fk.len() as f64;
        println!("{name}: steps={:.2} blocks={:.2} trees={:.2}", st as f64 / n, bl as f64 / n, tr as f64 / n);
        println!("{name}: rules={} build={:?} bytes={} stats={:?} batch={ns:.1}ns single={ns1:.1}ns mism={mism} ({single})", rules.len(), build, c.bytes(), c.stats());
    }
}
