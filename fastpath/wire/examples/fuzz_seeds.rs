//! Writes fuzz seeds made by the frame builder into a directory: the traffic mix, one malformed
//! frame per drop reason, and ICMP errors with quotes of every length. Seeds are generated, not
//! committed (the corpus directory is git-ignored).
//!
//! `cargo run -p moat-wire --example fuzz_seeds -- DIR`

use std::path::PathBuf;
use std::process::ExitCode;

use moat_wire::DropReason;
use moat_wire::builder::{build_frame, samples};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz_seeds DIR");
        return ExitCode::FAILURE;
    };
    match write_seeds(&dir) {
        Ok(n) => {
            println!("wrote {n} seeds to {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fuzz_seeds: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_seeds(dir: &std::path::Path) -> Result<usize, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let mut buf = [0u8; 2048];
    let mut count = 0;
    let mut write = |name: &str, frame: &[u8]| -> std::io::Result<()> {
        count += 1;
        std::fs::write(dir.join(format!("seed-{name}")), frame)
    };
    for sample in samples::traffic_mix() {
        let n = build_frame(&sample.spec, &mut buf)?;
        write(sample.name, buf.get(..n).unwrap_or_default())?;
    }
    for reason in DropReason::ALL {
        let n = samples::malformed(reason, &mut buf)?;
        write(reason.name(), buf.get(..n).unwrap_or_default())?;
    }
    for quote_len in [0, 19, 20, 24, 28, 60] {
        let n = samples::icmp_port_unreachable(quote_len, &mut buf)?;
        write(&format!("icmp_unreachable_quote_{quote_len}"), buf.get(..n).unwrap_or_default())?;
    }
    Ok(count)
}
