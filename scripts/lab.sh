#!/usr/bin/env bash
# The main job, for a newcomer: build routelet, build a whole cluster out of network namespaces
# on this machine (`routelet lab up`: 2 racks, 4 nodes, a ToR, the Kubernetes API stand-in, one
# agent per node, two pods per node through the CNI plugin, a LoadBalancer Service), probe
# everything (`routelet lab check`: every pod pair, node to pod, external client to the
# LoadBalancer IP, with the path each took), and leave it up to look at.
#
#   sudo ./scripts/lab.sh                  # up + check (extra arguments go to `lab up`)
#   sudo ./scripts/lab.sh --backend vxlan  # another backend (bgp | host-gw | vxlan)
#   sudo target/release/routelet lab down  # remove everything the lab made
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then echo "lab: run as root (network namespaces)" >&2; exit 1; fi
if ! command -v ip >/dev/null || ! command -v bridge >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi
cargo build -q --release --bin routelet
BIN="$PWD/target/release/routelet"

"$BIN" lab up "$@"
"$BIN" lab check
echo
echo "The lab is still up. Look inside (docs/lab.md), then remove it with:"
echo "  sudo $BIN lab down"
