#!/usr/bin/env bash
# Fuzz smoke test: run every cargo-fuzz target of moat-control for SECONDS (default 20) each and
# exit non-zero if any of them finds a crash. Installs cargo-fuzz if it is missing and seeds the
# corpora from seeds/selectors.txt (one selector a line) and from the crate's example manifests,
# flows and kubectl fixtures (corpus/ and artifacts/ are git-ignored).
#
#   control/fuzz/smoke.sh [SECONDS]
#
# Targets: selector_roundtrip (parse → print → parse gives the same selector, never a panic),
# manifest_load (load_str, the model, resolution and evaluation on arbitrary text, never a panic)
# and flow_query (`moat policy eval` input lines and `explain` against the example cluster).
# Each target uses dicts/<target>.dict when present.
#
# The machine has a stable toolchain only; cargo-fuzz needs nightly flags (-Zsanitizer, coverage
# instrumentation), which RUSTC_BOOTSTRAP=1 unlocks on stable. The sanitizer runtimes ship with the
# stable x86_64 Linux standard library, so AddressSanitizer works too.
set -euo pipefail

seconds="${1:-20}"
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
control_dir="$(dirname "$fuzz_dir")"

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# Seeds: one file per selector line; the example manifests and kubectl fixtures as they are.
seed_corpus() {
    local target="$1" corpus="$2"
    case "$target" in
        selector_roundtrip)
            local i=0
            while IFS= read -r line || [[ -n "$line" ]]; do
                printf '%s' "$line" >"$corpus/seed-$i"
                i=$((i + 1))
            done <"$fuzz_dir/seeds/selectors.txt"
            ;;
        manifest_load)
            for f in "$control_dir"/examples/policy/*.yaml "$control_dir"/tests/fixtures/kubectl/*.yaml; do
                cp "$f" "$corpus/seed-$(basename "$(dirname "$f")")-$(basename "$f")"
            done
            ;;
        flow_query)
            cp "$control_dir/examples/policy/flows.jsonl" "$corpus/seed-flows.jsonl"
            ;;
    esac
}

cd "$control_dir"
# The fuzz crate is its own workspace with its own target dir (fuzz/target): keep a caller's
# CARGO_TARGET_DIR for the main workspace from redirecting it.
unset CARGO_TARGET_DIR
status=0
for target in $(cargo fuzz list); do
    corpus="$fuzz_dir/corpus/$target"
    mkdir -p "$corpus"
    seed_corpus "$target" "$corpus"
    dict=()
    if [[ -f "$fuzz_dir/dicts/$target.dict" ]]; then
        dict=(-dict="$fuzz_dir/dicts/$target.dict")
    fi
    # Manifests need room for a few documents; selectors stay short.
    max_len=1024
    [[ "$target" == manifest_load ]] && max_len=4096
    echo "smoke: fuzzing $target for ${seconds}s" >&2
    if ! cargo fuzz run "$target" "$corpus" -- -max_total_time="$seconds" -max_len="$max_len" \
        "${dict[@]}" -print_final_stats=1; then
        echo "smoke: $target FAILED (crash input under $fuzz_dir/artifacts/$target)" >&2
        status=1
    fi
done
exit "$status"
