#!/usr/bin/env bash
# Fuzz smoke test: run every cargo-fuzz target of moat-wire for SECONDS (default 20) each and exit
# non-zero if any of them finds a crash. Installs cargo-fuzz if it is missing and seeds the corpus
# from the frame builder (corpus/ and artifacts/ are git-ignored).
#
#   fastpath/wire/fuzz/smoke.sh [SECONDS]
#
# The machine has a stable toolchain only; cargo-fuzz needs nightly flags (-Zsanitizer, coverage
# instrumentation), which RUSTC_BOOTSTRAP=1 unlocks on stable. The sanitizer runtimes ship with the
# stable x86_64 Linux standard library, so AddressSanitizer works too.
set -euo pipefail

seconds="${1:-20}"
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wire_dir="$(dirname "$fuzz_dir")"

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# Seeds come from the builder (an example of the moat-wire crate, built in the caller's target dir).
seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
cargo run --quiet --manifest-path "$wire_dir/Cargo.toml" --example fuzz_seeds -- "$seeds"

cd "$wire_dir"
# The fuzz crate is its own workspace with its own target dir (fuzz/target): keep a caller's
# CARGO_TARGET_DIR for the main workspace from redirecting it.
unset CARGO_TARGET_DIR
status=0
for target in $(cargo fuzz list); do
    corpus="$fuzz_dir/corpus/$target"
    mkdir -p "$corpus"
    cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
    echo "smoke: fuzzing $target for ${seconds}s" >&2
    if ! cargo fuzz run "$target" "$corpus" -- -max_total_time="$seconds" -max_len=4096 -print_final_stats=1; then
        echo "smoke: $target FAILED (crash input under $fuzz_dir/artifacts/$target)" >&2
        status=1
    fi
done
exit "$status"
