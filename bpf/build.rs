//! Compiles `src/redirect.bpf.c` into `$OUT_DIR/redirect.bpf.o` with clang through libbpf-cargo.
//! Nothing generated is committed; `src/lib.rs` embeds the object with `include_bytes!`.

use libbpf_cargo::SkeletonBuilder;
use std::env;
use std::path::PathBuf;

const SOURCE: &str = "src/redirect.bpf.c";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR not set by cargo")?);
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    // Debian's clang targeting BPF does not search the multiarch include directory, where
    // `asm/types.h` (pulled in by the kernel UAPI headers) lives.
    let multiarch = match target_arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => return Err(format!("no multiarch include path known for {other}").into()),
    };
    SkeletonBuilder::new()
        .source(SOURCE)
        .obj(out_dir.join("redirect.bpf.o"))
        .clang_args([format!("-I/usr/include/{multiarch}"), "-O2".to_owned(), "-Wall".to_owned()])
        .build()
        .map_err(|e| format!("compiling {SOURCE} with clang failed (is clang installed? see README): {e:#}"))?;
    println!("cargo:rerun-if-changed={SOURCE}");
    Ok(())
}
