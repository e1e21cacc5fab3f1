#!/usr/bin/env bash
# Pod-to-pod TCP throughput on the direct path (host-gw backend) and through VXLAN (vxlan
# backend), against host-to-host on the same underlay, in `routelet lab` (two nodes on one
# rack). A benchmark, not a test: it prints the numbers and the ratios.
#
#   sudo bash bench/datapath_throughput.sh            # 3 runs of 10 s per path
#   RUNS=5 SECONDS_PER_RUN=20 sudo bash bench/datapath_throughput.sh
#
# Needs iperf3 (apt-get install iperf3). Everything runs inside the lab's namespaces; the
# iperf3 servers are started with a pid file and stopped by that PID.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=${RUNS:-3}
SECS=${SECONDS_PER_RUN:-10}
PREFIX=rlbench$$
STATE=/run/$PREFIX
BIN=${ROUTELET:-target/release/routelet}

[[ $(id -u) -eq 0 ]] || { echo "run as root" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "iperf3 missing: apt-get install iperf3" >&2; exit 1; }
[[ -x $BIN ]] || cargo build --release --bin routelet

PIDFILES=()
cleanup() {
    for f in "${PIDFILES[@]}"; do
        [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
    "$BIN" lab down --state-dir "$STATE" --prefix "$PREFIX" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Address of eth0 in namespace $1.
addr_of() { ip -n "$1" -4 -j addr show dev eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["addr_info"][0]["local"])'; }

# iperf3 from namespace $1 to $3, server in namespace $2; prints the median Gbit/s of RUNS.
measure() {
    local client=$1 server=$2 target=$3 pidfile
    pidfile=$(mktemp /tmp/rlbench-iperf.XXXXXX)
    PIDFILES+=("$pidfile")
    local results=()
    for ((r = 0; r < RUNS; r++)); do
        ip netns exec "$server" iperf3 -s -D -1 --pidfile "$pidfile" >/dev/null 2>&1 || true
        sleep 0.3
        local bps
        bps=$(ip netns exec "$client" iperf3 -c "$target" -t "$SECS" -J |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
        results+=("$bps")
    done
    [[ -f $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
    printf '%s\n' "${results[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.2f\n", a[int((NR+1)/2)]/1e9}'
}

declare -A GBPS
for backend in host-gw vxlan; do
    "$BIN" lab up --nodes 2 --racks 1 --backend "$backend" --prefix "$PREFIX" --state-dir "$STATE" >/dev/null
    pod2=$(addr_of "$PREFIX-n2-p1")
    GBPS[$backend]=$(measure "$PREFIX-n1-p1" "$PREFIX-n2-p1" "$pod2")
    if [[ $backend == host-gw ]]; then
        node2=$(addr_of "$PREFIX-n2")
        GBPS[host]=$(measure "$PREFIX-n1" "$PREFIX-n2" "$node2")
    fi
    "$BIN" lab down --state-dir "$STATE" --prefix "$PREFIX" >/dev/null
done

echo "TCP throughput, median of $RUNS x ${SECS}s (iperf3, one stream), two nodes on one rack:"
printf '  host-to-host (node eth0 -> node eth0): %6s Gbit/s  1.00\n' "${GBPS[host]}"
for k in host-gw vxlan; do
    ratio=$(awk -v a="${GBPS[$k]}" -v b="${GBPS[host]}" 'BEGIN {printf "%.2f", a / b}')
    label=$([[ $k == host-gw ]] && echo "pod-to-pod, direct route (host-gw)" || echo "pod-to-pod, VXLAN (vxlan backend)")
    printf '  %-38s: %6s Gbit/s  %s\n' "$label" "${GBPS[$k]}" "$ratio"
done
