#!/usr/bin/env bash
# The one command that runs all of routelet's checks on a fresh Debian 12, as root:
#   bash scripts/test.sh
# 1. installs the missing interop tools (bird2 frr gobgpd exabgp iproute2 iputils-ping tcpdump)
#    without letting their services start in the host network namespace;
# 2. removes interop lab namespaces left behind by killed test runs (rl-it-*, dead owner PID);
# 3. cargo fmt --check, clippy -D warnings, interop harness sanity (daemon<->daemon),
#    cargo test --workspace.
# Env: SKIP_APT=1 skips step 1; SKIP_SANITY=1 skips the daemon<->daemon harness check.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '\n==> %s\n' "$*"; }
fail() { printf '\n*** FAILED: %s\n' "$*" >&2; exit 1; }

# step NAME CMD...: runs CMD, names the failed step.
step() {
    local name=$1
    shift
    log "$name: $*"
    local start=$SECONDS
    if ! "$@"; then
        fail "step '$name' ($*) after $((SECONDS - start)) s"
    fi
    echo "ok: $name ($((SECONDS - start)) s)"
}

[[ $(id -u) -eq 0 ]] || fail "must run as root (network namespaces, routing daemons)"

# ---------------------------------------------------------------- 1. packages
# tool (path or command) -> Debian package
declare -A NEED=(
    [bird]=bird2 [birdc]=bird2
    [/usr/lib/frr/zebra]=frr [/usr/lib/frr/bgpd]=frr [vtysh]=frr
    [gobgpd]=gobgpd [gobgp]=gobgpd
    [exabgp]=exabgp [/usr/bin/python3]=python3
    [ip]=iproute2 [ping]=iputils-ping [tcpdump]=tcpdump
    [cc]=gcc [/usr/include/stdio.h]=libc6-dev
)
have() { if [[ $1 == /* ]]; then [[ -e $1 ]]; else command -v "$1" >/dev/null 2>&1; fi; }

# Debian starts services from package postinst scripts; the interop tests must own every
# routing daemon (and none may run in the host namespace), so forbid starts while installing.
install_packages() {
    local -a pkgs=("$@")
    local policy=/usr/sbin/policy-rc.d had_policy=0
    [[ -e $policy ]] && had_policy=1
    if [[ $had_policy -eq 0 ]]; then
        printf '#!/bin/sh\n# routelet scripts/test.sh: no service starts during install\nexit 101\n' >"$policy"
        chmod 755 "$policy"
    fi
    local rc=0
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" || rc=$?
    [[ $had_policy -eq 0 ]] && rm -f "$policy"
    [[ $rc -eq 0 ]] || return $rc
    # On a systemd host the units are still enabled for the next boot: disable the ones we
    # just installed (only those), and stop them if something started them anyway.
    if [[ -d /run/systemd/system ]]; then
        local unit
        for unit in bird frr gobgpd exabgp; do
            if systemctl list-unit-files "$unit.service" >/dev/null 2>&1 \
                && systemctl is-enabled --quiet "$unit.service" 2>/dev/null; then
                echo "disabling host-namespace service $unit (installed just now)"
                systemctl disable --now "$unit.service" || true
            fi
        done
    fi
}

check_host_daemons() {
    # Report (never kill) routing daemons already running in the host namespace: their default
    # sockets/pid files do not clash with the labs, but the operator should know.
    local f
    for f in /run/frr/zebra.pid /run/frr/bgpd.pid /run/frr/watchfrr.pid /run/bird/bird.pid; do
        if [[ -s $f ]] && kill -0 "$(cat "$f")" 2>/dev/null; then
            echo "warning: a host-namespace daemon runs ($f, pid $(cat "$f")); the tests do not use it"
        fi
    done
}

ensure_tools() {
    local -a missing=()
    local tool
    for tool in "${!NEED[@]}"; do
        have "$tool" || missing+=("${NEED[$tool]}")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        echo "installing: ${missing[*]}"
        install_packages "${missing[@]}"
    else
        echo "all interop tools present"
    fi
    for tool in "${!NEED[@]}"; do
        have "$tool" || { echo "still missing after install: $tool" >&2; return 1; }
    done
    id frr >/dev/null 2>&1 || { echo "user frr missing (frr package broken?)" >&2; return 1; }
    mkdir -p /var/run/frr && chown frr:frr /var/run/frr
    command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; return 1; }
    check_host_daemons
}

# ---------------------------------------------------------------- 2. stale labs
cleanup_stale_labs() {
    local ns pid
    for ns in $(ip netns list | awk '{print $1}' | grep -E '^rl-it-.+-[0-9]+-[0-9]+$' || true); do
        pid=$(sed -E 's/^rl-it-.+-([0-9]+)-[0-9]+$/\1/' <<<"$ns")
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "removing stale lab namespace $ns (owner pid $pid gone)"
            ip netns pids "$ns" 2>/dev/null | while read -r p; do kill -9 "$p" 2>/dev/null || true; done
            ip netns del "$ns" || true
            rm -rf "/var/run/frr/$ns"
        fi
    done
}

if [[ ${SKIP_APT:-0} != 1 ]]; then
    step "tools" ensure_tools
fi
step "stale lab cleanup" cleanup_stale_labs

# ---------------------------------------------------------------- 3. cargo
step "format" cargo fmt --all --check
step "clippy" cargo clippy --workspace --all-targets -- -D warnings
if [[ ${SKIP_SANITY:-0} != 1 ]]; then
    # Daemon-to-daemon runs of the same lab library the routelet tests use: if these pass and
    # an interop test fails, the fault is routelet's, not the lab's.
    step "interop harness sanity" cargo test -p agent --tests -- --ignored sanity_
fi
TEST_LOG=$(mktemp /tmp/routelet-test.XXXXXX)
run_tests() {
    cargo test --workspace 2>&1 | tee "$TEST_LOG"
}
step "tests" run_tests

# One closing line with the totals over every test binary (cargo's own last line is that of
# the last doc-test crate, which may have none).
passed=$(sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed.*/\1/p' "$TEST_LOG" | awk '{s+=$1} END {print s+0}')
failed=$(sed -nE 's/^test result: .* ([0-9]+) failed.*/\1/p' "$TEST_LOG" | awk '{s+=$1} END {print s+0}')
rm -f "$TEST_LOG"
log "all checks passed"
echo "summary: $passed passed, $failed failed"
