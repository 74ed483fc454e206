#!/usr/bin/env bash
# A local Tern cluster for trying things out: N broker processes on 127.0.0.2, 127.0.0.3, … (MQTT on
# 1883, HTTP on 9090, gossip and peer links on 4370 at each address), built from this checkout.
#
# Usage: scripts/cluster.sh up [N]   (default 3; builds the broker in release mode first)
#        scripts/cluster.sh status   (each node's view of the cluster)
#        scripts/cluster.sh down     (stops the nodes and removes their files)
#
# Files (configurations, logs, pids, the admin token) live in ${TERN_CLUSTER_DIR:-/tmp/tern-cluster}.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
dir="${TERN_CLUSTER_DIR:-${TMPDIR:-/tmp}/tern-cluster}"
binary="$root/target/release/tern-broker"

node_ip() { echo "127.0.0.$(($1 + 2))"; }

up() {
    local count=${1:-3}
    if [ "$count" -lt 1 ] || [ "$count" -gt 50 ]; then
        echo "a local cluster has 1 to 50 nodes" >&2
        exit 2
    fi
    if [ -d "$dir" ] && ls "$dir"/*.pid >/dev/null 2>&1; then
        echo "a cluster is already running in $dir; run '$0 down' first" >&2
        exit 1
    fi
    cargo build --release --locked -p tern-broker
    mkdir -p "$dir"
    head -c 24 /dev/urandom | base64 > "$dir/admin-token"
    local seeds="$(node_ip 0):4370"
    if [ "$count" -gt 1 ]; then seeds="$seeds, $(node_ip 1):4370"; fi
    for ((i = 0; i < count; i++)); do
        local ip
        ip=$(node_ip "$i")
        cat > "$dir/node-$i.yaml" <<YAML
listeners:
  - name: mqtt
    bind: $ip:1883
auth:
  allow_anonymous: true
http:
  bind: $ip:9090
  admin_token_file: $dir/admin-token
cluster:
  name: local
  node_id: node-$i
  bind: $ip:4370
  seeds: [$seeds]
YAML
        "$binary" --config "$dir/node-$i.yaml" > "$dir/node-$i.log" 2>&1 &
        echo $! > "$dir/node-$i.pid"
    done
    for ((i = 0; i < count; i++)); do
        local ip
        ip=$(node_ip "$i")
        for _ in $(seq 1 100); do
            if curl -sf "http://$ip:9090/readyz" >/dev/null 2>&1; then break; fi
            sleep 0.1
        done
        if curl -sf "http://$ip:9090/readyz" >/dev/null 2>&1; then
            echo "node-$i ready: mqtt://$ip:1883"
        else
            echo "node-$i did not become ready; see $dir/node-$i.log" >&2
            exit 1
        fi
    done
    echo
    echo "Try it: mosquitto_sub -h $(node_ip 0) -t 'demo/#' -v &  mosquitto_pub -h $(node_ip $((count - 1))) -t demo/hello -m world"
    echo "Stop it: $0 down"
}

status() {
    for pid_file in "$dir"/node-*.pid; do
        [ -e "$pid_file" ] || { echo "no cluster running in $dir"; return; }
        local i=${pid_file##*/node-}
        i=${i%.pid}
        local ip
        ip=$(node_ip "$i")
        echo "node-$i ($ip):"
        curl -s -H "Authorization: Bearer $(cat "$dir/admin-token")" "http://$ip:9090/api/v1/cluster" ||
            echo "  not answering"
        echo
    done
}

down() {
    for pid_file in "$dir"/node-*.pid; do
        [ -e "$pid_file" ] || continue
        kill "$(cat "$pid_file")" 2>/dev/null || true
    done
    for pid_file in "$dir"/node-*.pid; do
        [ -e "$pid_file" ] || continue
        local pid
        pid=$(cat "$pid_file")
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
    echo "stopped"
}

case "${1:-}" in
    up) up "${2:-3}" ;;
    status) status ;;
    down) down ;;
    *)
        sed -n '2,8p' "$0"
        exit 2
        ;;
esac
