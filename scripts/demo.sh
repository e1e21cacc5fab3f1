#!/usr/bin/env bash
# routelet demo: routelet's BGP speaker and BIRD 2 peer over a veth pair between two network
# namespaces, exchange routes, and install them in each namespace's kernel. Everything runs
# inside namespaces this script creates; all of it is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then echo "demo: run as root (network namespaces)" >&2; exit 1; fi
if ! command -v bird >/dev/null || ! command -v ip >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bird2 iproute2 >/dev/null
fi
cargo build -q --bin routelet
BIN="$PWD/target/debug/routelet"

P="rl-demo-$$"; A="$P-node"; B="$P-tor"
WORK=$(mktemp -d /tmp/routelet-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$A"; ip netns add "$B"
ip link add "${P}a" netns "$A" type veth peer name "${P}b" netns "$B"
ip -n "$A" link set lo up; ip -n "$B" link set lo up
ip -n "$A" addr add 10.0.0.1/30 dev "${P}a"; ip -n "$B" addr add 10.0.0.2/30 dev "${P}b"
ip -n "$A" link set "${P}a" up; ip -n "$B" link set "${P}b" up

cat > "$WORK/routelet.yaml" <<YAML
router_id: 10.0.0.1
asn: 65001
socket: $WORK/routelet.sock
neighbors:
  - address: 10.0.0.2
    asn: 65000
    hold_time: 9
originate:
  - prefix: 10.244.1.0/24
YAML
cat > "$WORK/bird.conf" <<CONF
router id 10.0.0.2;
protocol device {}
protocol direct { ipv4; }
protocol kernel { ipv4 { export all; }; learn; }
protocol static { ipv4; route 10.245.0.0/24 unreachable; route 10.245.1.0/24 unreachable; }
protocol bgp node1 {
  local 10.0.0.2 as 65000; neighbor 10.0.0.1 as 65001;
  hold time 9;
  ipv4 { import all; export all; };
}
CONF

ip netns exec "$B" bird -f -c "$WORK/bird.conf" -s "$WORK/bird.ctl" -P "$WORK/bird.pid" &
PIDS+=($!)
ip netns exec "$A" "$BIN" speaker --config "$WORK/routelet.yaml" 2>"$WORK/routelet.log" &
PIDS+=($!)

echo "waiting for the session..."
for _ in $(seq 1 60); do
  if "$BIN" status --socket "$WORK/routelet.sock" --json 2>/dev/null | grep -q '"established"' &&
     [ "$(ip -n "$A" route show proto 200 | wc -l)" -ge 2 ]; then break; fi
  sleep 0.5
done
echo; echo "== routelet status (node namespace)"
"$BIN" status --socket "$WORK/routelet.sock"
echo "== kernel routes routelet installed in the node namespace (proto 200)"
ip -n "$A" route show proto 200
echo; echo "== BIRD's view (ToR namespace)"
ip netns exec "$B" birdc -s "$WORK/bird.ctl" show route | sed 1d
echo "== kernel routes BIRD installed in the ToR namespace"
ip -n "$B" route show proto bird
