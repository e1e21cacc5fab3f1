#!/usr/bin/env bash
# BGP convergence benchmark: N ExaBGP feeders, each announcing P unique IPv4 /32s, all peering
# with one target (routelet or BIRD) over a bridge. Measures, per target, in the same run on the
# same machine with the same feeders:
#   rib_s    seconds from feeder start until all N*P prefixes are in the target's RIB
#   first_s  seconds from feeder start until the target has its first route (the feeders'
#            own start-up, identical for both targets, ends about here)
#   kernel_s seconds from feeder start until all N*P are in the target's kernel table
#            (polled from /proc/net/fib_triestat; at the end the routes are counted exactly
#            with `ip route show proto 200` / `proto bird`)
#   cpu_s    CPU seconds (user + system) the target used until then
#   peak RSS of the target (VmHWM) and its RSS at the end (VmRSS), after convergence.
#
# Usage (root):  bash bench/bgp_convergence.sh
#   N=10 P=100000 (default)  |  QUICK=1 -> N=2 P=1000  |  TARGETS="routelet bird" (default)
#   TIMEOUT=600 (seconds per target)  KEEP=1 keeps the work dir
#   WRAP="valgrind --tool=massif --massif-out-file=/tmp/massif.out" prefixes the routelet command
# Everything runs in namespaces rl-bench-<pid>-*; all of them and every PID started here are
# removed on exit (trap EXIT), whatever happens.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

if [[ ${QUICK:-0} == 1 ]]; then
    N=${N:-2}
    P=${P:-1000}
else
    N=${N:-10}
    P=${P:-100000}
fi
TARGETS=${TARGETS:-routelet bird}
TIMEOUT=${TIMEOUT:-600}
TOTAL=$((N * P))
TAG="rl-bench-$$"
WORK=$(mktemp -d "/tmp/$TAG.XXXX")
PIDS=()
NSS=()

die() { echo "bench: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root"
((N >= 1 && N <= 250)) || die "N must be 1..250"
((TOTAL <= 4194304)) || die "N*P must be <= 4194304 (prefixes are /32s in 10.64.0.0/10)"
for t in ip exabgp python3; do command -v "$t" >/dev/null || die "$t missing"; done

cleanup() {
    local p ns
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
    for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    NSS=()
}
on_exit() {
    cleanup
    if [[ ${KEEP:-0} == 1 ]]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

mkns() {
    ip netns add "$1"
    NSS+=("$1")
    ip -n "$1" link set lo up
    ip netns exec "$1" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
}

# hub (bridge) + target 10.1.0.1/16 + feeders 10.1.1.i/16
topology() {
    mkns "$TAG-hub"
    ip -n "$TAG-hub" link add br0 type bridge
    ip -n "$TAG-hub" link set br0 up
    mkns "$TAG-t"
    ip link add eth0 netns "$TAG-t" type veth peer name t0 netns "$TAG-hub"
    ip -n "$TAG-hub" link set t0 master br0 up
    ip -n "$TAG-t" addr add 10.1.0.1/16 dev eth0
    ip -n "$TAG-t" link set eth0 up
    local i
    for i in $(seq "$N"); do
        mkns "$TAG-f$i"
        ip link add eth0 netns "$TAG-f$i" type veth peer name f$i netns "$TAG-hub"
        ip -n "$TAG-hub" link set "f$i" master br0 up
        ip -n "$TAG-f$i" addr add "10.1.1.$i/16" dev eth0
        ip -n "$TAG-f$i" link set eth0 up
    done
}

# Feeder i announces prefixes (i-1)*P .. i*P-1 as /32s of 10.64.0.0/10 (static routes,
# next-hop self; ExaBGP 4.2 ignores `attributes ... nlri` groups in `static`).
gen_feeders() {
    python3 - "$WORK" "$N" "$P" <<'PY'
import ipaddress, sys
work, n, p = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base = int(ipaddress.IPv4Address("10.64.0.0"))
for i in range(1, n + 1):
    first = (i - 1) * p
    lines = []
    for k in range(first, first + p):
        lines.append(f"    route {ipaddress.IPv4Address(base + k)}/32 next-hop self;")
    with open(f"{work}/feeder{i}.conf", "w") as f:
        f.write(f"""neighbor 10.1.0.1 {{
  router-id 10.1.1.{i};
  local-address 10.1.1.{i};
  local-as {65100 + i};
  peer-as 65000;
  hold-time 90;
  family {{ ipv4 unicast; }}
  static {{
""" + "\n".join(lines) + "\n  }\n}\n")
PY
}

start_feeders() {
    local i
    for i in $(seq "$N"); do
        env exabgp.daemon.user=root exabgp.daemon.daemonize=false exabgp.api.cli=false \
            exabgp.log.destination=stdout \
            ip netns exec "$TAG-f$i" exabgp "$WORK/feeder$i.conf" >"$WORK/feeder$i.log" 2>&1 &
        PIDS+=($!)
    done
}

start_target() {
    local target=$1 i
    case $target in
    routelet)
        {
            echo "router_id: 10.1.0.1"
            echo "asn: 65000"
            echo "listen_port: 179"
            echo "socket: $WORK/routelet.sock"
            echo 'metrics_address: ""'
            echo "max_paths: 4"
            echo "neighbors:"
            for i in $(seq "$N"); do
                echo "  - {address: 10.1.1.$i, asn: $((65100 + i)), passive: true, hold_time: 90, families: [ipv4_unicast], export: none}"
            done
            echo "originate: []"
            echo "kernel: {install: true, table: 254}"
        } >"$WORK/routelet.yaml"
        ip netns exec "$TAG-t" ${WRAP:-} "$ROUTELET" speaker --config "$WORK/routelet.yaml" >"$WORK/routelet.log" 2>&1 &
        ;;
    bird)
        {
            echo "router id 10.1.0.1;"
            echo "protocol device {}"
            echo "protocol kernel { ipv4 { export where source = RTS_BGP; }; merge paths on; }"
            for i in $(seq "$N"); do
                echo "protocol bgp f$i { local 10.1.0.1 as 65000; neighbor 10.1.1.$i as $((65100 + i)); passive on; ipv4 { import all; export none; }; }"
            done
        } >"$WORK/bird.conf"
        ip netns exec "$TAG-t" bird -f -c "$WORK/bird.conf" -s "$WORK/bird.ctl" -P "$WORK/bird.pid" >"$WORK/bird.log" 2>&1 &
        ;;
    esac
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    for _ in $(seq 100); do
        rib_count "$target" >/dev/null 2>&1 && return 0
        kill -0 "$TARGET_PID" 2>/dev/null || { tail -20 "$WORK/$target.log"; die "$target exited at start"; }
        sleep 0.1
    done
    tail -20 "$WORK/$target.log"
    die "$target control socket never answered"
}

rib_count() {
    case $1 in
    routelet)
        "$ROUTELET" status --socket "$WORK/routelet.sock" --json --summary |
            sed -nE 's/.*"rib_size": *([0-9]+).*/\1/p'
        ;;
    bird)
        birdc -s "$WORK/bird.ctl" show route where source = RTS_BGP count |
            sed -nE 's/.* for ([0-9]+) networks.*/\1/p' | head -1
        ;;
    esac
}

# Routes in the target's main table, cheaply: the FIB trie statistics (constant-size) minus
# the routes that were there before the feeders started. `ip route show` of a million routes
# takes seconds and would compete with the target for CPU at every poll.
main_table_prefixes() {
    ip netns exec "$TAG-t" cat /proc/net/fib_triestat |
        awk '/^Main:/ {m=1} m && /Prefixes:/ {print $2; exit}'
}

kernel_count() {
    echo $(($(main_table_prefixes) - KERNEL_BASE))
}

# Exact count of the target's own routes (checked once at the end).
kernel_count_proto() {
    local proto=200
    [[ $1 == bird ]] && proto=bird
    ip -n "$TAG-t" -4 route show proto "$proto" | wc -l
}

RESULTS=()
FAILED=0
run_target() {
    local target=$1
    echo "== target $target: $N feeders x $P prefixes = $TOTAL"
    topology
    gen_feeders
    start_target "$target"
    local t0 t_first="" t_rib="" t_kernel="" r k deadline
    KERNEL_BASE=$(main_table_prefixes)
    t0=$(now)
    start_feeders
    deadline=$(($(date +%s) + TIMEOUT))
    while :; do
        kill -0 "$TARGET_PID" 2>/dev/null || { tail -20 "$WORK/$target.log"; die "$target died"; }
        r=$(rib_count "$target" 2>/dev/null || echo 0)
        k=$(kernel_count "$target")
        [[ -z $t_first && (${r:-0} -gt 0 || $k -gt 0) ]] && t_first=$(elapsed "$t0" "$(now)")
        [[ -z $t_rib && ${r:-0} -ge $TOTAL ]] && t_rib=$(elapsed "$t0" "$(now)")
        [[ -z $t_kernel && $k -ge $TOTAL ]] && t_kernel=$(elapsed "$t0" "$(now)")
        [[ -n $t_rib && -n $t_kernel ]] && break
        if (($(date +%s) > deadline)); then
            echo "timeout: rib=$r kernel=$k of $TOTAL"
            FAILED=1
            t_rib=${t_rib:-timeout}
            t_kernel=${t_kernel:-timeout}
            break
        fi
        printf '\r  t=%ss rib=%s kernel=%s   ' "$(elapsed "$t0" "$(now)")" "$r" "$k"
        sleep 0.2
    done
    local own
    own=$(kernel_count_proto "$target")
    if [[ $own != "$TOTAL" ]]; then
        echo "kernel table has $own routes of $target, expected $TOTAL"
        FAILED=1
    fi
    echo
    local rss rss_now cpu
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$TARGET_PID/status" 2>/dev/null || echo "?")
    # utime + stime of the target (fields 14, 15 of /proc/PID/stat; the comm field has no spaces).
    cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$TARGET_PID/stat" 2>/dev/null || echo "?")
    rss_now=$(awk '/VmRSS/ {print $2}' "/proc/$TARGET_PID/status" 2>/dev/null || echo "?")
    RESULTS+=("$(printf '%-9s %8s %8s %8s %10s %8s %12s %12s' "$target" "$TOTAL" "${t_first:-?}" "$t_rib" "$t_kernel" "$cpu" "$rss" "$rss_now")")
    cleanup
}

if [[ " $TARGETS " == *" routelet "* ]]; then
    echo "building routelet (release)..."
    cargo build --release -p agent --bin routelet
    ROUTELET="${CARGO_TARGET_DIR:-$REPO/target}/release/routelet"
    [[ -x $ROUTELET ]] || die "no binary at $ROUTELET"
fi
if [[ " $TARGETS " == *" bird "* ]]; then
    command -v bird >/dev/null || die "bird missing"
fi

for target in $TARGETS; do
    run_target "$target"
done

echo
echo "BGP convergence: $N feeders x $P prefixes (ExaBGP $(exabgp --version 2>/dev/null | sed -n 's/^ExaBGP : //p')), $(nproc) CPUs, $(uname -r)"
printf '%-9s %8s %8s %8s %10s %8s %12s %12s\n' target prefixes first_s rib_s kernel_s cpu_s peak_rss_kib rss_end_kib
for line in "${RESULTS[@]}"; do echo "$line"; done
echo
echo "reproduce: sudo N=$N P=$P TARGETS=\"$TARGETS\" bash bench/bgp_convergence.sh"
[[ $FAILED == 0 ]] || die "some target did not converge within ${TIMEOUT}s"
