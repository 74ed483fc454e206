#!/usr/bin/env bash
# Side-by-side benchmarks: Tern, Mosquitto, rumqttd, mochi-mqtt and comqtt, one broker at a time on
# this machine, every tern-bench scenario against a freshly started broker for each case.
#
# Usage: scripts/bench.sh [--quick] [--duration S] [--brokers LIST] [--scenarios LIST] [--publish]
#   --quick            a few seconds per case and smaller client counts (a smoke run)
#   --duration S       measured seconds per throughput case (default 10; 2 with --quick)
#   --brokers LIST     comma-separated, from tern,mosquitto,rumqttd,mochi,comqtt (default: all)
#   --scenarios LIST   comma-separated, from p2p,fanout,fanin,shared,connections,stresser (default: all)
#   --add              keep the results already in target/bench/RESULTS (a broker measured later
#                      joins the same page; its own earlier results of the scenarios run are replaced)
#   --publish          write the page to docs/benchmarks.md and docs/benchmarks/*.svg
#                      (default: target/bench/benchmarks.md and target/bench/benchmarks/)
# Environment: TERN_BENCH_CACHE (default ~/.cache/tern-bench) holds the peer brokers and tools it
# builds; JOBS (default 1) is cargo's -j.
#
# It installs what it needs: Mosquitto from Debian, rumqttd from crates.io, mochi-mqtt and comqtt
# built from the Go module proxy (a small main.go of ours per broker), and mqtt-stresser from the Go
# module proxy for the seeds' cases (the built-in equivalent runs when it cannot be had). A broker
# that cannot be built is recorded as not measured, with the reason, and the run goes on.
#
# Results: one JSON file per case in target/bench/RESULTS/ (emptied first), plus "unmeasured"
# records; broker logs in target/bench/logs/. Nothing in the test suite runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

invocation="scripts/bench.sh${*:+ $*}"
quick=0
publish=0
add=0
duration=""
brokers="tern,mosquitto,rumqttd,mochi,comqtt"
scenarios="p2p,fanout,fanin,shared,connections,stresser"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --publish) publish=1 ;;
        --add) add=1 ;;
        --duration) duration="$2"; shift ;;
        --brokers) brokers="$2"; shift ;;
        --scenarios) scenarios="$2"; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done

cache="${TERN_BENCH_CACHE:-$HOME/.cache/tern-bench}"
jobs="${JOBS:-1}"
out="$root/target/bench"
results="$out/RESULTS"
logs="$out/logs"
work="$out/work"
bench="$root/target/release/tern-bench"
rumqttd_version="0.20.0"
export GOFLAGS=-mod=mod GOMAXPROCS=1 GOTOOLCHAIN=local

# step, has, as_root, json_string, build_go, install_comqtt_bench, go_module_version, tern_version
. "$root/scripts/lib/bench-common.sh"

# A record for the page's "Not measured" table.
unmeasured() { # broker scenario-or-empty reason
    local file="$results/unmeasured--$1--${2:-all}.json" scenario=null
    [ -n "$2" ] && scenario=$(json_string "$2")
    printf '{"unmeasured": {"broker": %s, "scenario": %s, "reason": %s}}\n' \
        "$(json_string "$1")" "$scenario" "$(json_string "$3")" > "$file"
    echo "not measured: $1 ${2:-} — $3" >&2
}

# --- setup --------------------------------------------------------------------------------------

ulimit -n "$(ulimit -Hn)"
fd_limit=$(ulimit -n)
if [ "$add" = 1 ]; then
    for broker in ${brokers//,/ }; do
        for scenario in ${scenarios//,/ }; do
            rm -f "$results/$broker--$scenario--"*.json "$results/unmeasured--$broker--$scenario"*.json
        done
        rm -f "$results/unmeasured--$broker--all.json"
    done
    rm -rf "$work"
else
    rm -rf "$results" "$work"
fi
mkdir -p "$results" "$logs" "$work" "$cache/bin"
# Every run that contributed to the results, in order, for the page.
echo "$invocation" >> "$results/COMMANDS"

step "building tern-broker and tern-bench (release)"
# Separately, so the broker is built with exactly its own features, as users build it.
cargo build --release --locked -j "$jobs" -p tern-broker
cargo build --release --locked -j "$jobs" -p tern-bench

# Each install_* prints why it failed on stderr and returns non-zero; the caller records it.
install_mosquitto() {
    command -v mosquitto >/dev/null && return 0
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto
}

install_rumqttd() {
    [ -x "$cache/rumqttd/bin/rumqttd" ] && return 0
    # Not --locked: the lock file shipped in rumqttd 0.20.0 pins metrics 0.22.1, which current
    # compilers refuse (E0521); cargo picks the newest compatible versions instead.
    cargo install rumqttd --version "$rumqttd_version" --root "$cache/rumqttd" -j "$jobs"
}

install_mochi() {
    build_go mochi-bench github.com/mochi-mqtt/server/v2@latest <<'GO'
// Command mochi-bench: a mochi-mqtt broker with the library's default options, the allow-all
// auth hook and one TCP listener (-addr), as mochi's own cmd/main.go sets it up.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "TCP listen address")
	flag.Parse()
	server := mqtt.New(nil)
	if err := server.AddHook(new(auth.AllowHook), nil); err != nil {
		log.Fatal(err)
	}
	if err := server.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: *addr})); err != nil {
		log.Fatal(err)
	}
	if err := server.Serve(); err != nil {
		log.Fatal(err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	_ = server.Close()
}
GO
}

install_comqtt() { install_comqtt_bench; }

install_stresser() {
    command -v go >/dev/null || { echo "go is not installed" >&2; return 1; }
    [ -x "$cache/bin/mqtt-stresser" ] && return 0
    GOBIN="$cache/bin" go install github.com/inovex/mqtt-stresser@latest
}

available=""
for broker in ${brokers//,/ }; do
    step "installing $broker"
    case "$broker" in
        tern) available="$available,tern"; continue ;;
        mosquitto|rumqttd|mochi|comqtt) ;;
        *) echo "unknown broker: $broker" >&2; exit 2 ;;
    esac
    log="$logs/install-$broker.log"
    if "install_$broker" > "$log" 2>&1; then
        available="$available,$broker"
    else
        unmeasured "$broker" "" "could not be built or installed here: $(grep -v '^\s*$' "$log" | tail -n 3 | tr '\n' ' ')"
    fi
done

stresser_bin=""
if has "$scenarios" stresser; then
    step "installing mqtt-stresser"
    if install_stresser > "$logs/install-mqtt-stresser.log" 2>&1; then
        stresser_bin="$cache/bin/mqtt-stresser"
    else
        unmeasured "mqtt-stresser" "stresser" "mqtt-stresser could not be installed ($(grep -v '^\s*$' "$logs/install-mqtt-stresser.log" | tail -n 2 | tr '\n' ' ')); tern-bench's built-in equivalent ran instead"
    fi
fi

# --- brokers --------------------------------------------------------------------------------------

next_port=21000
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
    next_port=$((next_port + 1))
    while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
    port=$next_port
}

# Starts $1 on a fresh port with its defaults plus what $2 (extra connections needed, or 0) asks.
# Sets broker_pid, port, broker_version, broker_cmd and the changes array.
start_broker() { # name extra_connections
    local name=$1 extra=$2 dir
    pick_port
    dir="$work/$name-$port"
    mkdir -p "$dir"
    changes=("open-file limit $fd_limit (ulimit -n, the machine's hard limit)")
    case "$name" in
        tern)
            printf 'listeners:\n  - name: bench\n    bind: 127.0.0.1:%s\nauth:\n  allow_anonymous: true\n' "$port" > "$dir/tern.yaml"
            broker_cmd="tern-broker --config tern.yaml"
            broker_version=$(tern_version)
            changes+=("config file with one TCP listener on 127.0.0.1:PORT and auth.allow_anonymous: true (its behaviour without a file, on another port)")
            "$root/target/release/tern-broker" --config "$dir/tern.yaml" > "$logs/$name-$port.log" 2>&1 &
            ;;
        mosquitto)
            printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$dir/mosquitto.conf"
            broker_cmd="mosquitto -c mosquitto.conf"
            broker_version=$(dpkg-query -W -f='${Version}' mosquitto 2>/dev/null || mosquitto -h | head -n 1)
            changes+=("config file: listener PORT 127.0.0.1 and allow_anonymous true (its behaviour without a file, on another port)")
            mosquitto -c "$dir/mosquitto.conf" > "$logs/$name-$port.log" 2>&1 &
            ;;
        rumqttd)
            local max_connections=10010
            if [ "$extra" -gt 10000 ]; then
                max_connections=$((extra + 100))
                changes+=("router.max_connections raised from 10010 to $max_connections")
            fi
            cat > "$dir/rumqttd.toml" <<TOML
id = 0

[router]
id = 0
max_connections = $max_connections
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
TOML
            broker_cmd="rumqttd -c rumqttd.toml"
            broker_version="$rumqttd_version"
            changes+=("config: the router and v4 listener settings of its bundled rumqttd.toml, listening on 127.0.0.1:PORT; that file's v5, WebSocket, console and Prometheus listeners left out")
            changes+=("built by cargo install without --locked (its lock file pins metrics 0.22.1, which current Rust refuses)")
            "$cache/rumqttd/bin/rumqttd" -c "$dir/rumqttd.toml" > "$logs/$name-$port.log" 2>&1 &
            ;;
        mochi)
            broker_cmd="mochi-bench -addr 127.0.0.1:PORT"
            broker_version=$(go_module_version mochi-bench github.com/mochi-mqtt/server/v2)
            changes+=("library defaults (mqtt.New(nil)), the allow-all auth hook and one TCP listener, as its cmd/main.go has them, without that program's WebSocket and HTTP stats listeners")
            "$cache/bin/mochi-bench" -addr "127.0.0.1:$port" > "$logs/$name-$port.log" 2>&1 &
            ;;
        comqtt)
            broker_cmd="comqtt-bench -addr 127.0.0.1:PORT"
            broker_version=$(go_module_version comqtt-bench github.com/wind-c/comqtt/v2)
            changes+=("library defaults (mqtt.New(nil)), in memory, the allow-all auth hook and one TCP listener (its cmd/single also opens WebSocket, QUIC and HTTP listeners and stores sessions in bolt)")
            "$cache/bin/comqtt-bench" -addr "127.0.0.1:$port" > "$logs/$name-$port.log" 2>&1 &
            ;;
    esac
    broker_pid=$!
    for _ in $(seq 100); do
        if ! kill -0 "$broker_pid" 2>/dev/null; then
            echo "$name exited at start:" >&2
            tail -n 5 "$logs/$name-$port.log" >&2
            return 1
        fi
        port_free "$port" || return 0
        sleep 0.1
    done
    echo "$name did not listen on $port within 10 s" >&2
    return 1
}

stop_broker() {
    kill -TERM "$broker_pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
}

# Runs one case: a fresh broker, tern-bench against it, the broker stopped again.
run_case() { # broker scenario case-name extra-connections tern-bench-args...
    local broker=$1 scenario=$2 name=$3 extra=$4
    shift 4
    local file="$results/$broker--$scenario--$name.json" log="$logs/$broker--$scenario--$name.log"
    step "$broker: $scenario $name"
    if ! start_broker "$broker" "$extra"; then
        unmeasured "$broker" "$scenario" "$name: the broker did not start (see target/bench/logs/)"
        stop_broker
        return 0
    fi
    local change_args=()
    for change in "${changes[@]}"; do change_args+=(--broker-change "$change"); done
    if "$bench" "$scenario" --port "$port" --broker-pid "$broker_pid" --label "$broker" \
        --broker-version "$broker_version" --broker-cmd "$broker_cmd" "${change_args[@]}" \
        --json "$file" "$@" 2> >(tee "$log" >&2); then
        :
    else
        sleep 0.2
        unmeasured "$broker" "$scenario" "$name: tern-bench failed: $(grep -v '^\[' "$log" | tail -n 2 | tr '\n' ' ')"
    fi
    stop_broker
}

# --- cases --------------------------------------------------------------------------------------

if [ "$quick" = 1 ]; then
    timing=(--duration "${duration:-2}" --warmup 1 --drain-timeout 3)
    p2p_n=10 fanout_n=100 fanin_n=100 shared_n=10 conn_n=1000 stresser_msgs=1000 hold=2
    loads="max"
else
    timing=(--duration "${duration:-10}" --warmup 2 --drain-timeout 5)
    p2p_n=100 fanout_n=1000 fanin_n=1000 shared_n=100 conn_n=10000 stresser_msgs=10000 hold=10
    loads="max fixed"
fi
# Fixed load: 10,000 deliveries/s in every scenario, for latency at equal load.
declare -A fixed_rate=([p2p]=100 [fanout]=10 [fanin]=10 [shared]=100)
declare -A clients=([p2p]=$p2p_n [fanout]=$fanout_n [fanin]=$fanin_n [shared]=$shared_n)

for broker in ${available//,/ }; do
    for scenario in p2p fanout fanin shared; do
        has "$scenarios" "$scenario" || continue
        for load in $loads; do
            rate=0
            [ "$load" = fixed ] && rate=${fixed_rate[$scenario]}
            for qos in 0 1 2; do
                for payload in 64 1024; do
                    run_case "$broker" "$scenario" "q$qos-${payload}B-$load" 0 \
                        --clients "${clients[$scenario]}" --qos "$qos" --payload "$payload" --rate "$rate" "${timing[@]}"
                done
            done
        done
    done
    if has "$scenarios" connections; then
        if [ "$quick" = 1 ]; then
            run_case "$broker" connections "$conn_n" 0 --clients "$conn_n" --duration "$hold" --workers 2 --sources 2
        else
            run_case "$broker" connections "$conn_n" "$conn_n" --clients "$conn_n" --duration "$hold"
            # As many as one broker process may hold under the open-file limit, over several
            # source addresses and two load-generator processes.
            most=$((fd_limit - 1000))
            run_case "$broker" connections "max" "$most" --clients "$most" --duration "$hold" \
                --workers 2 --sources $((most / 20000 + 1))
        fi
    fi
    if has "$scenarios" stresser; then
        stresser_args=()
        [ -n "$stresser_bin" ] && stresser_args=(--stresser-bin "$stresser_bin")
        for n in 2 10 100; do
            run_case "$broker" stresser "${n}x$stresser_msgs" 0 --clients "$n" --messages "$stresser_msgs" "${stresser_args[@]}"
        done
    fi
done

# --- report -------------------------------------------------------------------------------------

if [ "$publish" = 1 ]; then
    page="$root/docs/benchmarks.md" charts="$root/docs/benchmarks"
else
    page="$out/benchmarks.md" charts="$out/benchmarks"
fi
step "report"
report_commands=()
while IFS= read -r line; do report_commands+=(--command "$line"); done < "$results/COMMANDS"
"$bench" report --results "$results" --markdown "$page" --svg-dir "$charts" --svg-href benchmarks \
    "${report_commands[@]}"
echo "results: $results" >&2
echo "page:    $page" >&2
