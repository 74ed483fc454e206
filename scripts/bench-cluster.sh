#!/usr/bin/env bash
# Cluster benchmarks: what crossing nodes costs. Tern on one node and as a three-node cluster (with
# cluster.acknowledge local, the default, and cluster), and comqtt on one node and as its three-node
# cluster (serf gossip, raft, gRPC between nodes, Redis), all on this machine, each case against
# freshly started brokers. In a cluster the publishers connect to node 0 and the subscribers, in
# turn, to nodes 1 and 2, so every message crosses from one node to another.
#
# Usage: scripts/bench-cluster.sh [--quick] [--duration S] [--setups LIST] [--add] [--publish]
#   --quick          1 s of warm-up, 2 s measured and a 3 s drain per case (a smoke run)
#   --duration S     measured seconds per case (default 10; 2 with --quick)
#   --setups LIST    comma-separated, from tern-1,tern-3,tern-3-ack,comqtt-1,comqtt-3 (default: all)
#   --add            keep the results already in target/bench-cluster/RESULTS (those of the setups
#                    run again are replaced)
#   --publish        put the section into docs/benchmarks.md, in place of its "## Cluster" section
#                    (default: target/bench-cluster/benchmarks.md)
# Environment: TERN_BENCH_CACHE (default ~/.cache/tern-bench, shared with scripts/bench.sh) holds
# the comqtt builds; JOBS (default 1) is cargo's -j.
#
# Cases, for every setup: point-to-point with 10 pairs and fan-out from 1 publisher to 100
# subscribers, each at QoS 0 and 1, 64-byte payloads, at max rate and at a fixed 10,000 deliveries/s
# (1,000/s per point-to-point publisher, 100/s for the fan-out publisher). Cases run one after
# another and, within a case, setup after setup, so the setups compared in one case ran minutes
# apart at most. Every setup waits 1 s between the last SUBACK and the first PUBLISH (--settle), and
# the clients set TCP_NODELAY (--tcp-nodelay; scripts/bench.sh's do not).
#
# It installs what it needs: the Tern release build; comqtt v2.6.5 from the Go module proxy, once
# as scripts/bench.sh builds it (one node, in memory) and once its own cmd/cluster program; and
# redis-server from Debian, which comqtt's cluster mode needs and which this script starts on a
# loopback port for each comqtt cluster case. Nodes listen on 127.0.0.2 (node 0), 127.0.0.3 and
# 127.0.0.4; Redis on 127.0.0.1. Everything started is stopped on exit.
#
# Results: one JSON file per case in target/bench-cluster/RESULTS/, "unmeasured" records for what
# could not run; logs (and each Tern node's /metrics after each case) in target/bench-cluster/logs/.
# Nothing in the test suite runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

invocation="scripts/bench-cluster.sh${*:+ $*}"
quick=0
publish=0
add=0
duration=""
all_setups="tern-1,tern-3,tern-3-ack,comqtt-1,comqtt-3"
setups="$all_setups"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --publish) publish=1 ;;
        --add) add=1 ;;
        --duration) duration="$2"; shift ;;
        --setups) setups="$2"; shift ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done
for setup in ${setups//,/ }; do
    case ",$all_setups," in *",$setup,"*) ;; *) echo "unknown setup: $setup" >&2; exit 2 ;; esac
done

cache="${TERN_BENCH_CACHE:-$HOME/.cache/tern-bench}"
jobs="${JOBS:-1}"
out="$root/target/bench-cluster"
results="$out/RESULTS"
logs="$out/logs"
work="$out/work"
bench="$root/target/release/tern-bench"
broker_bin="$root/target/release/tern-broker"
node_ips=(127.0.0.2 127.0.0.3 127.0.0.4)
# The workload: pairs in point-to-point, subscribers in fan-out, and the fixed rates (per
# publisher) that make 10,000 deliveries/s in both.
p2p_pairs=10
fanout_subscribers=100
declare -A fixed_rate=([p2p]=1000 [fanout]=100)
declare -A clients=([p2p]=$p2p_pairs [fanout]=$fanout_subscribers)
if [ "$quick" = 1 ]; then
    timing=(--duration "${duration:-2}" --warmup 1 --drain-timeout 3)
else
    timing=(--duration "${duration:-10}" --warmup 2 --drain-timeout 5)
fi
# A cluster learns of a subscription made on another node after its SUBACK (Tern by a route
# delta over the peer link, comqtt through raft): every setup waits as long before publishing.
# TCP_NODELAY on the clients: without it the fixed-rate QoS 0 publishers (1,000/s each) wait for
# delayed ACKs, some 30 ms at p99 for every setup alike, which would hide what crossing nodes adds.
client_options=(--settle 1 --tcp-nodelay)

# step, has, as_root, json_string, build_go, install_comqtt_bench, go_module_version, tern_version
. "$root/scripts/lib/bench-common.sh"

# A record for the section's "Not measured" table.
unmeasured() { # setup scenario-or-empty reason
    local file="$results/unmeasured--$1--${2:-all}.json" scenario=null
    [ -n "$2" ] && scenario=$(json_string "$2")
    printf '{"unmeasured": {"broker": %s, "scenario": %s, "reason": %s}}\n' \
        "$(json_string "$(setup_name "$1")")" "$scenario" "$(json_string "$3")" > "$file"
    echo "not measured: $1 ${2:-} — $3" >&2
}

setup_name() {
    case "$1" in
        tern-1) echo "tern, 1 node" ;;
        tern-3) echo "tern, 3 nodes" ;;
        tern-3-ack) echo "tern, 3 nodes, cluster.acknowledge: cluster" ;;
        comqtt-1) echo "comqtt, 1 node" ;;
        comqtt-3) echo "comqtt, 3 nodes" ;;
    esac
}

# --- stopping what was started -------------------------------------------------------------------

# Every process this script started and has not stopped yet, and of those the ones to stop only
# once the others are gone (comqtt's Redis: its nodes write to it until they stop).
started=()
stop_last=()

stop_pids() { # pid...
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    local left=() kept
    for kept in "${started[@]}"; do
        case " $* " in *" $kept "*) ;; *) left+=("$kept") ;; esac
    done
    started=("${left[@]}")
}

# Stops everything started: the brokers first, then what they need.
stop_all() {
    local first=() pid
    for pid in "${started[@]}"; do
        case " ${stop_last[*]} " in *" $pid "*) ;; *) first+=("$pid") ;; esac
    done
    [ "${#first[@]}" -eq 0 ] || stop_pids "${first[@]}"
    [ "${#started[@]}" -eq 0 ] || stop_pids "${started[@]}"
    stop_last=()
}

cleanup() { stop_all; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a program in its own directory, its output in a log; sets $pid.
launch() { # dir log program args...
    local dir=$1 log=$2
    shift 2
    mkdir -p "$dir"
    (cd "$dir" && exec "$@") > "$log" 2>&1 &
    pid=$!
    started+=("$pid")
}

# --- setup ----------------------------------------------------------------------------------------

ulimit -n "$(ulimit -Hn)"
fd_limit=$(ulimit -n)
if [ "$add" = 1 ]; then
    for setup in ${setups//,/ }; do rm -f "$results/$setup--"*.json "$results/unmeasured--$setup--"*.json; done
else
    rm -rf "$results"
fi
rm -rf "$work"
mkdir -p "$results" "$logs" "$work" "$cache/bin"
echo "$invocation" >> "$results/COMMANDS"

step "building tern-broker and tern-bench (release)"
cargo build --release --locked -j "$jobs" -p tern-broker
cargo build --release --locked -j "$jobs" -p tern-bench



install_comqtt_cluster() {
    command -v redis-server >/dev/null ||
        { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
    # comqtt's own cluster program, as its cluster/README.md builds it (cmd/cluster/main.go).
    build_go comqtt-cluster "github.com/wind-c/comqtt/v2@$comqtt_version" github.com/wind-c/comqtt/v2/cmd/cluster
}

available=""
for setup in ${setups//,/ }; do
    case "$setup" in
        tern-*) available="$available,$setup"; continue ;;
        comqtt-1) what=comqtt_single ;;
        comqtt-3) what=comqtt_cluster ;;
    esac
    step "installing $setup"
    log="$logs/install-$setup.log"
    if "install_$what" > "$log" 2>&1; then
        available="$available,$setup"
    else
        unmeasured "$setup" "" "could not be built or installed here: $(grep -v '^\s*$' "$log" | tail -n 3 | tr '\n' ' ')"
    fi
done

# --- brokers --------------------------------------------------------------------------------------

# Each case gets port numbers of its own (MQTT at $port, the rest above it), the same on every node
# address, so nothing a stopped broker left in TIME_WAIT is in the way.
next_port=22000
port_free() { ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
pick_ports() {
    local ip free
    while :; do
        next_port=$((next_port + 10))
        free=1
        for ip in 127.0.0.1 "${node_ips[@]}"; do
            for offset in 0 1 2 3 4 5 6; do
                port_free "$ip" $((next_port + offset)) || free=0
            done
        done
        [ "$free" = 1 ] && break
    done
    port=$next_port
}

wait_listening() { # ip port pid log
    for _ in $(seq 150); do
        if ! kill -0 "$3" 2>/dev/null; then
            echo "exited at start:" >&2
            tail -n 5 "$4" >&2
            return 1
        fi
        port_free "$1" "$2" || return 0
        sleep 0.1
    done
    echo "nothing listens on $1:$2 after 15 s" >&2
    return 1
}

# Starts the setup. Sets pub_target (HOST:PORT), sub_targets (empty for one node), pids (every
# process to measure), broker_version, broker_cmd, nodes, variant and the changes array.
start_setup() { # setup case-name
    local setup=$1 name=$2 dir i ip
    pick_ports
    dir="$work/$setup-$name"
    pids=() changes=("open-file limit $fd_limit (ulimit -n, the machine's hard limit)")
    nodes=1 variant="" sub_targets=""
    pub_target="${node_ips[0]}:$port"
    case "$setup" in
        tern-1)
            mkdir -p "$dir"
            printf 'listeners:\n  - name: bench\n    bind: %s:%s\nauth:\n  allow_anonymous: true\n' \
                "${node_ips[0]}" "$port" > "$dir/tern.yaml"
            broker_cmd="tern-broker --config tern.yaml"
            broker_version=$(tern_version)
            changes+=("config file with one TCP listener on ${node_ips[0]}:PORT and auth.allow_anonymous: true (its behaviour without a file, on another address)")
            launch "$dir" "$logs/$setup-$name.log" "$broker_bin" --config "$dir/tern.yaml"
            pids=("$pid")
            wait_listening "${node_ips[0]}" "$port" "$pid" "$logs/$setup-$name.log"
            ;;
        tern-3|tern-3-ack)
            nodes=3
            broker_cmd="tern-broker --config node-N.yaml (3 processes)"
            broker_version=$(tern_version)
            changes+=("three nodes, one config file each: one TCP listener on the node's address (127.0.0.2, .3, .4) and auth.allow_anonymous: true; http.bind on the node's address (for /readyz); a cluster section with name, node_id, bind on the node's address and seeds: the first two nodes (as scripts/cluster.sh)")
            local acknowledge=""
            if [ "$setup" = tern-3-ack ]; then
                variant="cluster.acknowledge: cluster"
                acknowledge="  acknowledge: cluster"
                changes+=("cluster.acknowledge: cluster")
            fi
            for i in 0 1 2; do
                ip=${node_ips[$i]}
                mkdir -p "$dir"
                cat > "$dir/node-$i.yaml" <<YAML
listeners:
  - name: bench
    bind: $ip:$port
auth:
  allow_anonymous: true
http:
  bind: $ip:$((port + 1))
cluster:
  name: bench
  node_id: node-$i
  bind: $ip:$((port + 3))
  seeds: [${node_ips[0]}:$((port + 3)), ${node_ips[1]}:$((port + 3))]
$acknowledge
YAML
                launch "$dir" "$logs/$setup-$name-node-$i.log" "$broker_bin" --config "$dir/node-$i.yaml"
                pids+=("$pid")
                [ "$i" = 0 ] || sub_targets="${sub_targets:+$sub_targets,}$ip:$port"
            done
            # Ready: joined, and holding every live peer's routes and retained messages.
            for i in 0 1 2; do
                ip=${node_ips[$i]}
                local ready=0
                for _ in $(seq 300); do
                    if curl -sf "http://$ip:$((port + 1))/readyz" >/dev/null 2>&1; then ready=1; break; fi
                    kill -0 "${pids[$i]}" 2>/dev/null || break
                    sleep 0.1
                done
                if [ "$ready" = 0 ]; then
                    echo "node-$i did not become ready in 30 s:" >&2
                    tail -n 5 "$logs/$setup-$name-node-$i.log" >&2
                    return 1
                fi
            done
            ;;
        comqtt-1)
            broker_cmd="comqtt-bench -addr ${node_ips[0]}:PORT"
            broker_version=$(go_module_version comqtt-bench github.com/wind-c/comqtt/v2)
            changes+=("library defaults (mqtt.New(nil)), in memory, the allow-all auth hook and one TCP listener, as scripts/bench.sh runs it (its cmd/single also opens WebSocket, QUIC and HTTP listeners and stores sessions in bolt)")
            launch "$dir" "$logs/$setup-$name.log" "$cache/bin/comqtt-bench" -addr "${node_ips[0]}:$port"
            pids=("$pid")
            wait_listening "${node_ips[0]}" "$port" "$pid" "$logs/$setup-$name.log"
            ;;
        comqtt-3)
            nodes=3
            local redis_port=$((port + 6))
            broker_cmd="comqtt-cluster --conf node-N.yml (3 processes; its cmd/cluster) and redis-server"
            broker_version="$(go_module_version comqtt-cluster github.com/wind-c/comqtt/v2), $(redis-server --version | awk '{print $3}' | tr -d 'v=') (redis-server)"
            changes+=("its cmd/cluster program, one config file per node: serf gossip (discovery-way 0), hashicorp raft (raft-impl 0; node 0 bootstraps), gRPC between nodes (grpc-enable, as its example node configs have it), storage in Redis (the only storage its cluster mode takes), anonymous auth, MQTT options left at the library defaults, as one node has them")
            changes+=("nodes on 127.0.0.2, .3 and .4, each seeded with node 0; its WebSocket and HTTP listeners on ports of their own; the dashboard off")
            changes+=("log level warn (at its default, info, it logs a line for every message it forwards to another node)")
            changes+=("redis-server $(redis-server --version | awk '{print $3}' | tr -d 'v=') from Debian on 127.0.0.1, without persistence (--save '' --appendonly no), started for each case; its CPU is counted with the nodes'")
            launch "$dir/redis" "$logs/$setup-$name-redis.log" redis-server --bind 127.0.0.1 --port "$redis_port" \
                --save '' --appendonly no
            local redis_pid=$pid
            stop_last+=("$redis_pid")
            wait_listening 127.0.0.1 "$redis_port" "$redis_pid" "$logs/$setup-$name-redis.log" || return 1
            for i in 0 1 2; do
                ip=${node_ips[$i]}
                mkdir -p "$dir/node-$i"
                cat > "$dir/node-$i/node.yml" <<YAML
storage-way: 3
bridge-way: 0
pprof-enable: false
dashboard-enable: false
auth:
  way: 0
  datasource: 0
cluster:
  discovery-way: 0
  node-name: c0$i
  bind-addr: $ip
  bind-port: $((port + 3))
  members: [${node_ips[0]}:$((port + 3))]
  queue-depth: 10240
  raft-impl: 0
  raft-port: $((port + 4))
  raft-dir: $dir/node-$i/raft
  raft-bootstrap: $([ "$i" = 0 ] && echo true || echo false)
  raft-log-level: error
  grpc-enable: true
  grpc-port: $((port + 5))
  inbound-pool-size: 40960
  outbound-pool-size: 40960
  inout-pool-nonblocking: false
  nodes-file-dir: $dir/node-$i
  http-port: $((port + 2))
mqtt:
  tcp: $ip:$port
  ws: $ip:$((port + 1))
  http: $ip:$((port + 2))
redis:
  options:
    addr: 127.0.0.1:$redis_port
    db: 0
  prefix: comqtt
log:
  enable: true
  format: 0
  output: 0
  level: 4
YAML
                launch "$dir/node-$i" "$logs/$setup-$name-node-$i.log" "$cache/bin/comqtt-cluster" --conf node.yml
                pids+=("$pid")
                wait_listening "$ip" "$port" "$pid" "$logs/$setup-$name-node-$i.log" || return 1
                [ "$i" = 0 ] || sub_targets="${sub_targets:+$sub_targets,}$ip:$port"
            done
            pids+=("$redis_pid")
            # Formed: node 0 (the raft leader it bootstrapped) has made the others raft voters, and
            # every node sees three members by gossip.
            local formed=0
            for _ in $(seq 300); do
                if [ "$(grep -o '"id"' "$dir/node-0/raft/peers.json" 2>/dev/null | wc -l)" = 3 ]; then
                    formed=1
                    for i in 0 1 2; do
                        [ "$(curl -sf "http://${node_ips[$i]}:$((port + 2))/api/v1/cluster/nodes" | grep -o '"name"' | wc -l)" = 3 ] || formed=0
                    done
                    [ "$formed" = 1 ] && break
                fi
                sleep 0.1
            done
            if [ "$formed" = 0 ]; then
                echo "the comqtt cluster did not form in 30 s" >&2
                return 1
            fi
            # Let the followers hear from the leader before clients subscribe through them.
            sleep 1
            ;;
    esac
}

# Saves what each Tern node counted about the case (forwarded, dropped, resent), for the record,
# and says how many messages node 0 (the publishers') forwarded to the others: the proof that the
# case crossed nodes.
save_metrics() { # setup case-name
    case "$1" in tern-3*) ;; *) return 0 ;; esac
    for i in 0 1 2; do
        curl -sf "http://${node_ips[$i]}:$((port + 1))/metrics" > "$logs/$1-$2-node-$i.metrics" 2>/dev/null || true
    done
    local forwarded
    forwarded=$(awk '/^tern_cluster_forwarded_messages_total[{ ]/ { n += $NF } END { printf "%d", n }' \
        "$logs/$1-$2-node-0.metrics" 2>/dev/null || echo 0)
    echo "node-0 forwarded $forwarded messages to its peers" >&2
}

# Runs one case against one setup: fresh brokers, tern-bench, the brokers stopped again.
run_case() { # setup scenario case-name tern-bench-args...
    local setup=$1 scenario=$2 name=$3
    shift 3
    local file="$results/$setup--$scenario--$name.json" log="$logs/$setup--$scenario--$name.log"
    step "$setup: $scenario $name"
    if ! start_setup "$setup" "$scenario-$name"; then
        unmeasured "$setup" "$scenario" "$name: the brokers did not start (see target/bench-cluster/logs/)"
        stop_all
        return 0
    fi
    local extra=(--host "${pub_target%:*}" --port "${pub_target##*:}" --nodes "$nodes")
    [ -n "$sub_targets" ] && extra+=(--sub-targets "$sub_targets")
    [ -n "$variant" ] && extra+=(--variant "$variant")
    for change in "${changes[@]}"; do extra+=(--broker-change "$change"); done
    local pid_list
    pid_list=$(IFS=,; echo "${pids[*]}")
    if "$bench" "$scenario" "${extra[@]}" --broker-pid "$pid_list" --label "${setup%%-*}" \
        --broker-version "$broker_version" --broker-cmd "$broker_cmd" \
        --json "$file" "$@" 2> >(tee "$log" >&2); then
        :
    else
        sleep 0.2
        unmeasured "$setup" "$scenario" "$name: tern-bench failed: $(grep -v '^\[' "$log" | tail -n 2 | tr '\n' ' ')"
    fi
    save_metrics "$setup" "$scenario-$name"
    stop_all
}

# --- cases --------------------------------------------------------------------------------------

for scenario in p2p fanout; do
    for qos in 0 1; do
        for load in max fixed; do
            rate=0
            [ "$load" = fixed ] && rate=${fixed_rate[$scenario]}
            for setup in ${available//,/ }; do
                run_case "$setup" "$scenario" "q$qos-64B-$load" \
                    --clients "${clients[$scenario]}" --qos "$qos" --payload 64 --rate "$rate" \
                    "${client_options[@]}" "${timing[@]}"
            done
        done
    done
done

# --- report -------------------------------------------------------------------------------------

if [ "$publish" = 1 ]; then
    page="$root/docs/benchmarks.md"
else
    page="$out/benchmarks.md"
fi
step "report"
report_commands=()
while IFS= read -r line; do report_commands+=(--command "$line"); done < "$results/COMMANDS"
"$bench" report --cluster --results "$results" --markdown "$page" "${report_commands[@]}"
echo "results: $results" >&2
echo "section: $page (## Cluster)" >&2
